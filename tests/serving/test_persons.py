"""``DELETE /persons/{person_id}`` (issue #13): the route's logic on a real workspace."""

from __future__ import annotations

from starlette.testclient import TestClient

from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.ingest import ingest_rows
from features.privacy.receipts import verify_receipt
from features.workspace import Workspace
from serving.persons import persons_app


def _workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").ensure()
    rows = [
        {
            "event_id": f"e{n}",
            "event_type": "page_view",
            "timestamp": "2026-01-02T10:00:00Z",
            "user_id": user,
            "anonymous_id": anon,
            "session_id": f"s{n}",
        }
        for n, (user, anon) in enumerate(
            [("user-one", "device-one"), (None, "device-one"), ("user-two", "device-two")]
        )
    ]
    assert ingest_rows(iter(rows), EventLog(ws.event_log_dir), ws.quarantine_dir, "t").rejected == 0
    IdentityGraph.for_workspace(ws).link("device-one", "user-one", source="test")
    return ws


def test_delete_person_erases_every_linked_id_and_answers_the_signed_receipt(tmp_path) -> None:
    ws = _workspace(tmp_path)
    client = TestClient(persons_app(lambda: ws))

    answer = client.delete("/persons/user-one")

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    receipt = answer.json()
    assert (
        receipt["receipt"]["stores"]["event_log"] == 2
    )  # user-one's event and device-one's anonymous one
    assert verify_receipt(receipt, ws)["total"] == receipt["receipt"]["total"]
    assert (
        "user-one" not in answer.text and "device-one" not in answer.text and "path" not in receipt
    )
    assert sorted(EventLog(ws.event_log_dir).read()["event_id"]) == ["e2"]


def test_delete_unknown_person_is_a_receipt_not_a_404(tmp_path) -> None:
    ws = _workspace(tmp_path)
    answer = TestClient(persons_app(lambda: ws)).delete("/persons/device-nine?id_kind=anonymous")
    assert answer.status_code == 200
    assert answer.json()["receipt"]["nothing_held"] is True


def test_delete_person_bad_input_is_400_naming_the_field(tmp_path) -> None:
    client = TestClient(persons_app(lambda: _workspace(tmp_path)))
    bad_kind = client.delete("/persons/user-one?id_kind=email")
    assert bad_kind.status_code == 400
    assert bad_kind.json()["error"].startswith("id_kind: 'email' is not one of user, anonymous")
    too_long = client.delete("/persons/" + "x" * 300)
    assert too_long.status_code == 400
    assert too_long.json()["error"].startswith("person_id: has 300 characters")


def test_delete_person_before_the_service_started_is_503() -> None:
    answer = TestClient(persons_app(lambda: None)).delete("/persons/user-one")
    assert answer.status_code == 503
