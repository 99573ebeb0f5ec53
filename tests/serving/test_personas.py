"""Real-time personas in serving (issue #6): the consumer's fold-and-push step, the ``persona``
rule condition and the persona in ``/recommend``'s answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from features.broker.embedded import EmbeddedBroker
from features.eventlog import EventLog
from features.persona_rules import load_personas
from features.personas import PersonaState
from serving.consumer import EventConsumer
from serving.logic import recommend
from serving.persona_updates import update_personas
from serving.publish import publish_events
from serving.rules import Facts, RulesError, load_rules, parse_rules
from serving.schemas import PERSONAS_NOT_UPDATED, RecommendRequest
from tests.serving.test_logic import _scorer

CONFIG = load_personas()


def _event(event_id: str, minute: int, **overrides) -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "timestamp": datetime(2026, 3, 1, 12, minute, tzinfo=UTC).isoformat(),
        "user_id": "u1",
        "session_id": f"s{minute}",
        "device_type": "mobile",
        **overrides,
    }


class _Store:
    """Stored persona states by person; pushes replace them (like the online store)."""

    def __init__(self, states: dict[str, PersonaState] | None = None, fail: bool = False):
        self.states = {p: s.to_json() for p, s in (states or {}).items()}
        self.reads: list[list[str]] = []
        self.pushed: list[pd.DataFrame] = []
        self.fail = fail

    def read(self, people: list[str]) -> list[dict]:
        self.reads.append(people)
        return [{"user_id": p, "persona_state": self.states.get(p)} for p in people]

    def push(self, rows: pd.DataFrame) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.pushed.append(rows)
        self.states.update(zip(rows["user_id"], rows["persona_state"], strict=True))


def _ingest(batch: list[dict], log: EventLog, tmp_path, store: _Store):
    """Publish ``batch``, consume it (issue #11); the consumer and the people it updated."""
    from tests.serving.test_events import drain

    consumer = EventConsumer(
        log, tmp_path / "q", lambda activity: None, store.read, store.push, CONFIG
    )
    broker = EmbeddedBroker(tmp_path / "queue.db")
    publish_events(batch, broker, tmp_path / "q")
    drain(broker, consumer)
    return consumer, consumer.counts.personas


def test_appended_events_are_folded_onto_the_stored_state_once(tmp_path):
    log = EventLog(tmp_path / "events")
    store = _Store({"u1": PersonaState(sessions=2, mobile_sessions=2, recent_sessions=("a", "b"))})
    batch = [_event("e1", 1), _event("e2", 2, anonymous_id="dev", user_id=None)]
    consumer, updated = _ingest(batch, log, tmp_path, store)
    assert (consumer.counts.stored, updated, len(consumer.pending)) == (2, 2, 0)
    assert store.reads == [["anon:dev", "u1"]]  # one read for the whole batch
    pushed = store.pushed[0].set_index("user_id")
    assert pushed.loc["u1", "persona"] == "Mobile-First"  # 3 mobile sessions of 3
    assert pushed.loc["u1", "persona_score"] == 1.0
    assert pushed.loc["anon:dev", "persona"] == ""  # one session: not enough evidence
    assert pd.Timestamp(pushed.loc["u1", "event_timestamp"]) == pd.Timestamp(batch[0]["timestamp"])

    # the same events again are duplicates: nothing appended, nothing folded, nothing pushed
    consumer, updated = _ingest(batch, log, tmp_path, store)
    assert (consumer.counts.duplicate, updated, len(store.pushed)) == (2, 0, 1)
    assert json.loads(store.states["u1"])["events"] == 1


def test_a_failed_push_keeps_the_events_and_says_so(tmp_path):
    """issue #10 item 7: the reason is a fixed text, never the store's error; the consumer
    keeps the person pending (rebuilt from the log later), the event stays logged."""
    log = EventLog(tmp_path / "events")
    consumer, updated = _ingest([_event("e1", 1)], log, tmp_path, _Store(fail=True))
    assert consumer.counts.stored == 1 and len(log) == 1
    assert updated == 0 and len(consumer.pending) == 1
    updated, degraded = update_personas(log.read(), _Store().read, _Store(fail=True).push, CONFIG)
    assert (updated, degraded) == (0, PERSONAS_NOT_UPDATED)
    assert "store down" not in degraded and "ConnectionError" not in degraded


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("personas", "holds"),
    [
        (("Mobile-First", "Deal Hunter"), True),  # any listed persona is enough
        (("Luxury Browser, Budget Buyer",), True),
        (("Mobile-First",), False),
        ((), False),
    ],
)
def test_persona_condition(personas, holds):
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "deals",
                    "when": {"persona": ["Luxury Browser, Budget Buyer", "Deal Hunter"]},
                    "then": {"variant": {"promo_strip": "deals"}},
                }
            ]
        }
    )
    assert (rules.decide(Facts(maturity="new", personas=personas)).fired == ["deals"]) is holds


def test_persona_condition_takes_one_name_per_entry():
    with pytest.raises(
        RulesError, match=r"rule 'x', key 'when.persona\[0\]', value 'A \+ B': one persona name"
    ):
        parse_rules(
            {"rules": [{"name": "x", "when": {"persona": "A + B"}, "then": {"source": "model"}}]}
        )
    with pytest.raises(
        RulesError, match=r"key 'when.persona', value \[\]: expected a non-empty list"
    ):
        parse_rules(
            {"rules": [{"name": "x", "when": {"persona": []}, "then": {"source": "model"}}]}
        )


def test_default_rules_give_budget_personas_the_deals_strip():
    rules = load_rules(None)
    facts = Facts(maturity="returning", personas=("Mobile-First", "Deal Hunter"))
    decision = rules.decide(facts)
    assert "budget-minded-persona" in decision.fired
    assert decision.variant == {"hero_banner": "default", "promo_strip": "deals"}


# ----------------------------------------------------------------------------- /recommend


def test_recommend_answers_with_the_persona_and_its_rule():
    scorer = _scorer("ease")
    features = {
        "persona": "Deal Hunter + Mobile-First",
        "persona_score": 0.75,
        "last_category": "hats",
    }
    answer = recommend(scorer, RecommendRequest(anonymous_id="v1", k=2), features)
    assert (answer.persona, answer.persona_score) == ("Deal Hunter + Mobile-First", 0.75)
    assert "budget-minded-persona" in answer.rules_fired
    assert answer.variant["promo_strip"] == "deals"
    plain = recommend(scorer, RecommendRequest(anonymous_id="v1", k=2), {"persona": ""})
    assert (plain.persona, plain.persona_score) == (None, None)
    assert "promo_strip" not in plain.variant
    assert "persona" not in plain.model_dump()


def test_a_rule_testing_a_persona_the_persona_file_lacks_is_named() -> None:
    from serving.persona_updates import unknown_rule_personas

    personas = load_personas()
    assert unknown_rule_personas(load_rules(None), personas) == []  # the packaged files agree
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "typo",
                    "when": {"persona": ["Deal Hunter", "Deal Hunters"]},
                    "then": {"variant": {"promo_strip": "deals"}},
                }
            ]
        },
        "my-rules.yaml",
    )
    (problem,) = unknown_rule_personas(rules, personas)
    for fragment in ("my-rules.yaml", "'typo'", "'Deal Hunters'", "Mobile-First"):
        assert fragment in problem
