"""``/events`` logic (issue #5): validate, append idempotently, push activity, count and explain."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from features.eventlog import EventLog
from serving.events import BatchTooLargeError, as_batch, ingest_events
from serving.schemas import MAX_EVENTS


def _event(event_id: str, **overrides) -> dict:
    return {
        "event_id": event_id,
        "event_type": "product_view",
        "timestamp": datetime(2026, 3, 1, 12, tzinfo=UTC).isoformat(),
        "user_id": "u1",
        "session_id": "s1",
        "product_id": "p1",
        "category": "hats",
        "price": 3.0,
        **overrides,
    }


class _Store:
    def __init__(self, fail: bool = False) -> None:
        self.pushed: list[pd.DataFrame] = []
        self.fail = fail

    def push(self, activity: pd.DataFrame) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.pushed.append(activity)


def test_batch_is_validated_appended_and_pushed(tmp_path) -> None:
    log, store = EventLog(tmp_path / "events"), _Store()
    batch = [
        _event("e1"),
        _event("e2", anonymous_id="dev", user_id=None, product_id="p2", category="shoes"),
        _event("e3", price=None),
        _event("e1"),
        "not an event",
    ]
    answer = ingest_events(batch, log, tmp_path / "quarantine", store.push)
    assert (answer.accepted, answer.duplicate, answer.rejected, answer.pushed) == (2, 1, 2, 2)
    assert [(r.row, r.field) for r in answer.rejections] == [(3, "price"), (5, "<row>")]
    assert "price is required for product_view" in answer.rejections[0].reason
    assert answer.degraded is None
    assert len(log) == 2
    activity = store.pushed[0].set_index("user_id")
    assert activity.loc["u1", "last_category"] == "hats"
    assert activity.loc["anon:dev", "last_product_id"] == "p2"
    assert len(list((tmp_path / "quarantine").glob("*.jsonl"))) == 1


def test_one_event_and_a_repeat_are_idempotent(tmp_path) -> None:
    log, store = EventLog(tmp_path / "events"), _Store()
    first = ingest_events(_event("e1"), log, tmp_path / "q", store.push)
    again = ingest_events(_event("e1"), log, tmp_path / "q", store.push)
    assert (first.accepted, again.accepted, again.duplicate, again.pushed) == (1, 0, 1, 0)
    assert len(store.pushed) == 1 and len(log) == 1


def test_failed_push_keeps_the_events_and_says_so(tmp_path) -> None:
    log = EventLog(tmp_path / "events")
    answer = ingest_events([_event("e1")], log, tmp_path / "q", _Store(fail=True).push)
    assert answer.accepted == 1 and answer.pushed == 0
    assert answer.degraded == "online store not updated: ConnectionError: store down"
    assert len(log) == 1


def test_oversize_batch_names_the_limit() -> None:
    assert len(as_batch([{}] * MAX_EVENTS)) == MAX_EVENTS
    with pytest.raises(BatchTooLargeError, match=f"at most {MAX_EVENTS} events, got 1001"):
        as_batch([{}] * (MAX_EVENTS + 1))
