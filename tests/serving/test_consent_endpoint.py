"""``POST /consent`` and ``GET /consent`` (issue #12): the endpoint logic over a real ledger
(SQLite) through Starlette's TestClient on its ASGI app; the real service is
``tests/integration/test_consent_http.py``."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from features import database
from features.consent.check import ConsentCheck
from features.consent.ledger import ConsentLedger
from features.consent.policy import load_policy
from features.identity.graph import IdentityGraph
from serving.consent import ConsentEndpoint, consent_app

POLICY = load_policy()


@pytest.fixture
def counted() -> Counter:
    return Counter()


@pytest.fixture
def endpoint(tmp_path, counted) -> ConsentEndpoint:
    engine = database.engine(f"sqlite:///{tmp_path / 'tailor.db'}")
    graph = IdentityGraph(engine, prefix="g_")
    check = ConsentCheck(ConsentLedger(engine, POLICY, graph, prefix="c_"))
    return ConsentEndpoint(check, "X-Country", lambda o, p: counted.update([(o, p)]))


@pytest.fixture
def client(endpoint) -> TestClient:
    return TestClient(consent_app(lambda: endpoint))


def test_a_banner_choice_is_stored_and_answered(client, counted) -> None:
    body = {
        "anonymous_id": "a1",
        "purposes": {"analytics": True, "personalization": False, "marketing": False},
        "policy_version": POLICY.policy_version,
        "source": "banner",
    }
    reply = client.post("/consent", json=body, headers={"X-Country": "fr"})
    assert reply.status_code == 201, reply.text
    answer = reply.json()
    assert answer["record"]["anonymous_id"] == "a1" and answer["record"]["country"] == "FR"
    state = answer["state"]
    assert state["regime"] == "opt-in" and state["needs_banner"] is False
    assert state["purposes"]["personalization"] == {
        "allowed": False,
        "reason": "personalization refused",
        "choice": False,
        "chosen_at": answer["record"]["recorded_at"],
        "policy_version": POLICY.policy_version,
    }
    assert counted == Counter({("accepted", "analytics"): 1, ("refused", "personalization"): 1,
                               ("refused", "marketing"): 1})  # fmt: skip
    got = client.get("/consent", params={"anonymous_id": "a1"}, headers={"X-Country": "FR"})
    assert got.status_code == 200 and got.headers["cache-control"] == "no-store"
    assert got.json()["purposes"]["analytics"]["allowed"] is True
    assert [h["same_id"] for h in got.json()["history"]] == [True]


def test_get_for_a_stranger_under_each_regime_and_gpc(client) -> None:
    eu = client.get("/consent", params={"user_id": "nobody"}, headers={"X-Country": "DE"}).json()
    assert eu["needs_banner"] is True and eu["history"] == []
    assert {p: v["allowed"] for p, v in eu["purposes"].items()} == {
        "necessary": True, "analytics": False, "personalization": False, "marketing": False
    }  # fmt: skip
    us = client.get("/consent", params={"user_id": "nobody", "country": "US"},
                    headers={"Sec-GPC": "1"}).json()  # fmt: skip
    assert us["regime"] == "opt-out"
    assert us["purposes"]["marketing"]["reason"] == "marketing refused by Sec-GPC"
    assert us["purposes"]["personalization"]["allowed"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"purposes": {"analytics": True}}, "user_id"),
        ({"user_id": "u", "purposes": {"ads": True}}, "purposes.ads"),
        ({"user_id": "u", "purposes": {"analytics": 1}}, "purposes.analytics"),
        ({"user_id": "u"}, "purposes"),
        ({"user_id": "u", "purposes": {"analytics": True}, "colour": 1}, "colour"),
        ({"user_id": "u", "purposes": {"analytics": True}, "source": "x"}, "source"),
        ({"user_id": "u", "purposes": {"analytics": True}, "timestamp": "soon"}, "timestamp"),
        ({"user_id": "u", "purposes": {"analytics": True}, "country": "France"}, "country"),
        ([1, 2], "body"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, endpoint, counted, body, field) -> None:
    reply = client.post("/consent", json=body)
    assert reply.status_code == 400
    assert reply.json()["detail"] == {"field": field}
    assert reply.json()["error"].startswith(f"{field}:")
    assert endpoint.check.ledger.counts()["records"] == 0
    assert counted == Counter({("rejected", ""): 1})


def test_get_without_an_id_names_the_field(client) -> None:
    reply = client.get("/consent")
    assert reply.status_code == 400 and reply.json()["detail"] == {"field": "user_id"}


def test_a_ledger_that_cannot_be_written_is_a_503_and_nothing_is_stored(
    tmp_path, endpoint, counted
) -> None:
    endpoint.check.ledger.create()
    broken_engine = sa.create_engine(f"sqlite:///{tmp_path}/missing/{uuid.uuid4().hex}/x.db")
    broken = ConsentLedger(broken_engine, POLICY, endpoint.check.ledger.graph)
    client = TestClient(consent_app(lambda: ConsentEndpoint(ConsentCheck(broken), count=None)))
    body = {"user_id": "u", "purposes": {"analytics": True}}
    reply = client.post("/consent", json=body)
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert "nothing was stored" in reply.json()["error"]
    assert client.get("/consent", params={"user_id": "u"}).status_code == 503
    assert endpoint.check.ledger.counts()["records"] == 0


def test_an_older_client_timestamp_is_stored_but_does_not_override(client, endpoint) -> None:
    client.post("/consent", json={"user_id": "u9", "purposes": {"personalization": False},
                                  "timestamp": "2026-12-05T10:00:00Z"})  # fmt: skip
    late = client.post("/consent", json={"user_id": "u9", "purposes": {"personalization": True},
                                         "timestamp": "2026-12-05T09:59:00Z"})  # fmt: skip
    assert late.status_code == 201
    state = late.json()["state"]
    assert len(state["history"]) == 2
    assert state["purposes"]["personalization"]["choice"] is False


def test_before_the_service_is_constructed_it_answers_503() -> None:
    client = TestClient(consent_app(lambda: None))
    assert client.get("/consent", params={"user_id": "u"}).status_code == 503
