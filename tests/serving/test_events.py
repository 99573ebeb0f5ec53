"""``/events`` logic (issue #5): validate, append idempotently, push activity, count and explain."""

import json
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


def test_pushed_activity_equals_the_activity_of_the_appended_parts(tmp_path) -> None:
    """Issue #5: the push is built from the accepted rows in memory, not the parts read back;
    both must give the same rows (types included)."""
    from features.context import activity_rows
    from features.schema import EVENT_COLUMNS

    log, store = EventLog(tmp_path / "events"), _Store()
    batch = [
        _event("e1", timestamp="2026-03-01T23:30:00-05:00"),
        _event("e2", event_type="page_view", product_id=None, category=None, price=None),
        _event("e3", anonymous_id="dev", user_id=None, event_type="purchase", quantity=2),
        _event("e4", timestamp="2026-03-02T08:00:00.123456Z", device_type="mobile"),
    ]
    answer = ingest_events(batch, log, tmp_path / "quarantine", store.push)
    assert answer.accepted == 4
    parts = sorted(log.root.rglob("*.parquet"))
    assert len(parts) == 2  # two UTC days
    read_back = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    expected = activity_rows(read_back.loc[:, list(EVENT_COLUMNS)])
    pd.testing.assert_frame_equal(store.pushed[0], expected)


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
    assert answer.degraded == "online store not updated"  # issue #10 item 8: no exception text
    assert len(log) == 1


def test_oversize_batch_names_the_limit() -> None:
    assert len(as_batch([{}] * MAX_EVENTS)) == MAX_EVENTS
    with pytest.raises(BatchTooLargeError, match=f"at most {MAX_EVENTS} events, got 1001"):
        as_batch([{}] * (MAX_EVENTS + 1))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timestamp": "2300-01-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": 253402300799000}, "timestamp"),
        ({"event_type": "purchase", "quantity": 2**63}, "quantity"),
        ({"price": float("inf")}, "price"),
        ({"user_id": "u" * 257}, "user_id"),
        ({"product_id": "p\x00"}, "product_id"),
        ({"country": "ÄÖ"}, "country"),
    ],
    ids=["2300", "0001", "epoch-9999", "quantity-2^63", "price-inf", "long-id", "nul", "country"],
)
def test_one_bad_event_never_fails_the_batch(tmp_path, overrides: dict, field: str) -> None:
    """Issue #10 item 1: 999 good events + 1 bad → 999 stored and pushed, 1 rejected with its
    field (before: an exception, so a 500 and 0 stored on every retry)."""
    log, store = EventLog(tmp_path / "events"), _Store()
    batch = [_event(f"e{n:04d}", user_id=f"u{n % 40}") for n in range(999)]
    batch.insert(10, _event("bad", **overrides))
    answer = ingest_events(batch, log, tmp_path / "quarantine", store.push)
    assert (answer.accepted, answer.duplicate, answer.rejected) == (999, 0, 1)
    assert [(r.row, r.field) for r in answer.rejections] == [(11, field)]
    assert len(log) == 999 and "bad" not in log.event_ids()
    assert answer.pushed == len(store.pushed[0]) > 0 and answer.degraded is None


def test_a_known_event_id_with_other_content_is_a_conflict_not_a_duplicate(tmp_path) -> None:
    """Issue #10 item 3: /events counts a conflict in ``conflict`` with its reason in
    ``rejections`` (never in ``duplicate`` or ``rejected``) and quarantines it."""
    log, store = EventLog(tmp_path / "events"), _Store()
    ingest_events([_event("e1"), _event("e2")], log, tmp_path / "q", store.push)
    again = ingest_events(
        [_event("e1"), _event("e2", price=4.0), _event("e3")], log, tmp_path / "q", store.push
    )
    assert (again.accepted, again.duplicate, again.rejected, again.conflict) == (1, 1, 0, 1)
    assert [(r.row, r.field, r.reason) for r in again.rejections] == [
        (2, "event_id", "event_id 'e2' already stored with different content")
    ]
    assert log.read().set_index("event_id").loc["e2", "price"] == 3.0  # the stored one stays
    (path,) = (tmp_path / "q").glob("*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["raw"]["price"] == 4.0 and record["field"] == "event_id"
