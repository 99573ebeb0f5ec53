"""Erasure building blocks (issue #13): the event log's rewrite, the quarantine match, keyed
pseudonyms and receipt keys."""

from __future__ import annotations

import json
import stat

import pytest

from features.eventlog import EventLog
from features.ingest import ingest_rows
from features.privacy.person import Person
from features.privacy.receipts import (
    PSEUDONYM_KEY_FILE,
    SIGNING_KEY_FILE,
    ReceiptError,
    pseudonym,
    sign_receipt,
    verify_receipt,
)
from features.privacy.stores import QuarantineStore
from features.quarantine import Quarantine
from features.workspace import Workspace


def _event(event_id: str, day: int, user_id: str | None, anonymous_id: str | None) -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "timestamp": f"2026-01-0{day}T10:00:00Z",
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "session_id": "s",
    }


def test_erase_people_rewrites_only_their_parts(tmp_path) -> None:
    log = EventLog(tmp_path / "events")
    rows = [
        _event("a", 1, "u1", "d1"),
        _event("b", 1, None, "d1"),  # their device before login
        _event("c", 1, "u10", "d1"),  # another user on their device: kept, device id blanked
        _event("d", 2, "u1", None),  # the only event of day 2: the part goes
        _event("e", 3, "u2", "d2"),  # another day, another person: untouched
    ]
    assert ingest_rows(iter(rows), log, tmp_path / "q", "t").rejected == 0
    (day3,) = (tmp_path / "events" / "event_date=2026-01-03").glob("*.parquet")
    before = day3.stat().st_mtime_ns

    assert log.erase_people(["u1"], ["d1"]) == 3

    left = EventLog(tmp_path / "events").read()
    assert left["event_id"].tolist() == ["c", "e"]
    assert left["user_id"].tolist() == ["u10", "u2"]
    assert left["anonymous_id"].isna().tolist() == [True, False]
    assert not list((tmp_path / "events").glob("event_date=2026-01-02/*.parquet"))
    assert day3.stat().st_mtime_ns == before
    assert log.existing(["a", "b", "c"]) == {"c"}  # this instance's index forgot them
    assert log.erase_people(["u1"], ["d1"]) == 0  # a rerun is a no-op


def test_quarantine_matches_whole_ids_only(tmp_path) -> None:
    ws = Workspace(tmp_path).ensure()
    Quarantine(ws.quarantine_dir).write(
        "in.jsonl",
        [
            {"row": 1, "reason": "r", "raw": {"user_id": "u1"}},
            {"row": 2, "reason": "r", "raw": {"user_id": "u10"}},
            {"row": 3, "reason": "r", "raw": '{"anonymous_id": "d1", "x": ...[truncated]'},
        ],
    )
    store = QuarantineStore(ws)
    person = Person(("u1", "anon:d1"))
    assert [r["row"] for r in store.export(person)] == [1, 3]
    assert store.erase(person) == 2
    (path,) = ws.quarantine_dir.glob("*.jsonl")
    assert [json.loads(line)["row"] for line in path.read_text().splitlines()] == [2]


def test_pseudonyms_are_keyed_per_workspace_and_keys_are_private(tmp_path) -> None:
    one, two = Workspace(tmp_path / "one"), Workspace(tmp_path / "two")
    assert pseudonym(one, "u1") == pseudonym(one, "u1") != pseudonym(two, "u1")
    assert pseudonym(one, "u1") != pseudonym(one, "u2")
    assert "u1" not in pseudonym(one, "u1") and pseudonym(one, "u1").startswith("p1_")
    receipt = sign_receipt(one, {"person": pseudonym(one, "u1"), "total": 0})
    for name in (PSEUDONYM_KEY_FILE, SIGNING_KEY_FILE):
        assert stat.S_IMODE((one.secrets_dir / name).stat().st_mode) == 0o600
    assert verify_receipt(receipt, one)["total"] == 0
    assert verify_receipt(receipt)["total"] == 0  # the embedded key: integrity only
    sign_receipt(two, {"person": "p1_x", "total": 0})
    with pytest.raises(ReceiptError, match="another key"):
        verify_receipt(receipt, two)
    with pytest.raises(ReceiptError, match="not a receipt"):
        verify_receipt({"receipt": {}})
