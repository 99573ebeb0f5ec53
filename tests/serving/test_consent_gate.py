"""Consent enforced at collection, serving and persona folds (issue #12): the plain logic of
:mod:`serving.consent_gate`, ``publish_events`` with a gate, ``logic.recommend`` without
personalization and ``update_personas`` with an ``allowed`` filter, on a real SQLite ledger,
a real embedded broker and event log, and a tiny real model."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from features import database
from features.broker.embedded import EmbeddedBroker
from features.consent.check import ConsentCheck
from features.consent.ledger import ConsentLedger
from features.consent.policy import load_policy
from features.identity.graph import IdentityGraph
from features.persona_rules import load_personas
from features.personas import PersonaState
from serving.consent_gate import (
    NOT_PERSONALIZED,
    ConsentGate,
    ConsentUnavailable,
    header_country,
)
from serving.persona_updates import update_personas
from serving.publish import publish_events, refused_retry_after

EVERYTHING = {"analytics": True, "personalization": True, "marketing": True}


@pytest.fixture(scope="module")
def tiny_scorer():
    from tests.serving.test_logic import _scorer

    return _scorer("ease"), "a2"


@pytest.fixture
def check(tmp_path) -> ConsentCheck:
    engine = database.engine(f"sqlite:///{tmp_path / 'tailor.db'}")
    graph = IdentityGraph(engine, prefix="g_")
    return ConsentCheck(ConsentLedger(engine, load_policy(), graph, prefix="c_"))


def _event(**overrides) -> dict:
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "event_type": "product_view",
        "timestamp": datetime.now(UTC).isoformat(),
        "session_id": "s1",
        "product_id": "p1",
        "category": "hats",
        "price": 3.0,
        **overrides,
    }


def test_header_country_takes_two_letters_only() -> None:
    assert header_country({"cf-ipcountry": " fr "}, "CF-IPCountry") == "FR"
    assert header_country({"cf-ipcountry": "XX1"}, "CF-IPCountry") is None
    assert header_country({}, "CF-IPCountry") is None


def test_events_follow_the_regime_and_the_persons_choice(check) -> None:
    gate = ConsentGate(check)
    check.ledger.append(anonymous_id="given", purposes=EVERYTHING)
    check.ledger.append(anonymous_id="refused", purposes={"analytics": False}, country="US")
    events = [
        _event(anonymous_id="given", country="FR"),  # chose yes: collected
        _event(anonymous_id="nobody", country="FR"),  # opt-in, no choice: suppressed
        _event(anonymous_id="nobody-us", country="US"),  # opt-out, no choice: collected
        _event(anonymous_id="refused", country="US"),  # opt-out, refused: suppressed
        _event(anonymous_id="no-country"),  # the header's regime (FR): suppressed
        _event(anonymous_id="no-country-us"),
        "not an event",
    ]
    events[5]["country"] = "US"
    assert gate.refused_events(events, country="FR") == [
        False, True, False, True, True, False, False,
    ]  # fmt: skip
    assert ConsentGate(None).refused_events(events) == [False] * 7


def test_an_event_with_both_ids_counts_the_device_choice_unless_the_user_refused(check) -> None:
    gate = ConsentGate(check)
    check.ledger.append(anonymous_id="device", purposes=EVERYTHING)
    check.ledger.append(user_id="refuser", purposes={"analytics": False})
    logged_in = _event(user_id="newcomer", anonymous_id="device", country="FR")
    refusing = _event(user_id="refuser", anonymous_id="device", country="FR")
    assert gate.refused_events([logged_in, refusing]) == [False, True]


def test_publish_suppresses_events_without_analytics_and_counts_each_event_once(
    check, tmp_path
) -> None:
    broker = EmbeddedBroker(tmp_path / "queue.db")
    quarantine = tmp_path / "quarantine"
    check.ledger.append(anonymous_id="yes", purposes=EVERYTHING)
    check.ledger.append(anonymous_id="withdrawn", purposes=EVERYTHING)
    check.ledger.append(anonymous_id="withdrawn", purposes={"analytics": False})
    bad = _event(anonymous_id="withdrawn", country="FR")
    del bad["session_id"]
    batch = [
        _event(anonymous_id="yes", country="FR"),
        _event(anonymous_id="withdrawn", country="FR"),
        _event(anonymous_id="withdrawn"),
        bad,
        _event(anonymous_id="yes", event_type="nope"),
    ]
    answer = publish_events(batch, broker, quarantine, gate=ConsentGate(check), country="DE")
    assert (answer.accepted, answer.rejected, answer.suppressed) == (1, 2, 2)
    assert answer.accepted + answer.rejected + answer.suppressed == len(batch)
    assert [r.row for r in answer.rejections] == [4, 5]  # both answered
    assert broker.depth() == 1
    stored = " ".join(p.read_text() for p in quarantine.rglob("*") if p.is_file())
    assert "withdrawn" not in stored  # a refusing person's rejected event is not kept
    assert "nope" in stored  # the consenting person's is, as before
    broker.close()


def test_publish_fails_closed_when_the_ledger_cannot_be_read(check, tmp_path) -> None:
    broker = EmbeddedBroker(tmp_path / "queue.db")
    check.ledger.create()
    with check.ledger.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE c_records"))
    with pytest.raises(ConsentUnavailable) as caught:
        publish_events(_event(anonymous_id="a"), broker, tmp_path / "q", gate=ConsentGate(check))
    assert refused_retry_after(caught.value) == 1  # /events answers 503 with Retry-After: 1
    assert broker.depth() == 0
    assert ConsentGate(check).personalization("a", "US") == NOT_PERSONALIZED  # closed
    assert ConsentGate(check).personalized(["a"], {}) == set()
    broker.close()


def test_personalization_withdrawal_counts_on_the_next_check(check) -> None:
    gate = ConsentGate(check)
    assert gate.personalization("u1", "FR") == NOT_PERSONALIZED
    assert gate.personalization("u1", "US") is None  # opt-out, no choice
    check.ledger.append(user_id="u1", purposes=EVERYTHING)
    assert gate.personalization("u1", "FR") is None
    check.ledger.append(user_id="u1", purposes={"personalization": False})
    assert gate.personalization("u1", "FR") == NOT_PERSONALIZED  # no cache in between
    assert gate.personalization("u1", "US", gpc=True) == NOT_PERSONALIZED
    assert ConsentGate(None).personalization("u1", "FR") is None


def test_recommend_without_personalization_reads_nothing_of_the_person(tiny_scorer) -> None:
    from serving.logic import recommend
    from serving.schemas import RecommendRequest

    scorer, known = tiny_scorer
    request = RecommendRequest(user_id=known, k=3, context={"country": "US"})
    features = {"last_category": "hats", "persona": "Luxury Browser", "segment": "Big spenders"}
    features["persona_score"] = 0.9
    personal = recommend(scorer, request, features)
    assert personal.personalized is True and personal.consent is None
    assert personal.strategy.startswith("model:")

    answer = recommend(scorer, request, features, consent=NOT_PERSONALIZED)
    assert answer.personalized is False
    assert answer.consent == "personalization not given"
    assert answer.features == {} and answer.segment is None and answer.persona is None
    assert not answer.strategy.startswith("model:")
    assert answer.rules_fired[0] == "first-time-visitor"
    assert all(not item.strategy.startswith(("model:", "session:")) for item in answer.items)
    assert json.loads(answer.model_dump_json())["consent"] == NOT_PERSONALIZED


def test_persona_folds_only_for_people_with_personalization(check) -> None:
    config = load_personas()
    check.ledger.append(user_id="yes", purposes=EVERYTHING)
    check.ledger.append(user_id="no", purposes={"personalization": False, "analytics": True})
    stored = {"no": PersonaState(events=9, as_of="2026-01-01T00:00:00+00:00").to_json()}
    pushed: list[pd.DataFrame] = []
    events = pd.DataFrame(
        [
            _event(user_id=person, anonymous_id=None, country="FR")
            | {"timestamp": pd.Timestamp("2026-03-01T12:00:00Z")}
            for person in ("yes", "no", "no")
        ]
    )
    updated, degraded = update_personas(
        events,
        lambda people: [{"persona_state": stored.get(p)} for p in people],
        pushed.append,
        config,
        allowed=ConsentGate(check).personalized,
    )
    assert (updated, degraded) == (1, None)
    rows = pushed[0].set_index("user_id")
    assert PersonaState.from_json(rows.loc["yes", "persona_state"]).events == 1
    cleared = PersonaState.from_json(rows.loc["no", "persona_state"])
    assert cleared.events == 0 and rows.loc["no", "persona"] in (None, "")  # emptied
    assert cleared.as_of.startswith("2026-03-01")  # newer than the stored one


def test_consent_bench_report_judges_the_checks_on_run_against_the_baseline(tmp_path) -> None:
    from serving import wrk
    from serving.bench_consent import (
        OFF,
        ON,
        ConsentBenchReport,
        ConsentBenchSettings,
        target_lines,
        write_report,
    )

    def run(rps: float) -> wrk.WrkResult:
        return wrk.WrkResult(
            requests=int(rps * 10), seconds=10.0, p50_ms=5, p95_ms=9, p99_ms=15, max_ms=40,
            errors=0,
        )  # fmt: skip

    report = ConsentBenchReport(ConsentBenchSettings(rounds=2), command="tailor bench consent")
    report.runs = {"round 1: baseline": run(1000), f"round 1: {OFF}": run(950)}
    report.runs |= {f"round 1: {ON}": run(790), "round 2: baseline": run(500)}
    report.runs |= {f"round 2: {OFF}": run(475), f"round 2: {ON}": run(395)}
    report.withdrawal_seconds = [0.002] * 98 + [0.050] * 2
    lines = target_lines(report)
    assert lines[0].startswith(
        "known-user RPS with consent checks on ≥ 0.8× baseline: 0.79× — missed"
    )
    assert "(checks off: 0.95×; on / off: 0.83; medians of 2 rounds)" in lines[0]
    assert "p99 50.0 ms over 100 withdrawals" in lines[1]
    out = write_report(report, tmp_path / "consent.md")
    text = out.read_text()
    assert text.splitlines()[0] == (
        f"<!-- generated by: tailor bench consent --out {out.resolve()} -->"
    )
    assert "| 100 | 2.0 | 50.0 | 50.0 | 0 |" in text
    assert f"| round 2: {ON} | 395 | 5.00 | 9.00 | 15.00 | 0 | 0.79× |" in text
