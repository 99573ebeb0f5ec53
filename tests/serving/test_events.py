"""``/events`` split by the broker (issues #5, #10, #11): validate and publish, then the consumer
appends idempotently, pushes activity, counts and explains.

Both halves run for real: :func:`serving.publish.publish_events` on the embedded SQLite queue,
:class:`serving.consumer.EventConsumer` consuming it through :meth:`Broker.consume`. The online
store is a recording stand-in here (the real Feast store is in tests/integration).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pandas as pd
import pytest

from features.broker.contract import BrokerUnavailableError, Message
from features.broker.embedded import EmbeddedBroker
from features.eventlog import EventLog
from features.ingest import ingest_rows
from features.persona_rules import load_personas
from models.errors import ConfigError, TailorError
from serving.consumer import EventConsumer
from serving.publish import (
    RETRY_AFTER_SECONDS,
    BatchTooLargeError,
    as_batch,
    encode_event,
    publish_events,
    refused_retry_after,
)
from serving.schemas import MAX_EVENTS

CONFIG = load_personas()


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
    """The online store's three calls, recorded; ``fail`` makes every call raise."""

    def __init__(self, fail: bool = False) -> None:
        self.pushed: list[pd.DataFrame] = []
        self.personas: list[pd.DataFrame] = []
        self.states: dict[str, str] = {}
        self.fail = fail

    def push(self, activity: pd.DataFrame) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.pushed.append(activity)

    def read(self, people: list[str]) -> list[dict]:
        if self.fail:
            raise ConnectionError("store down")
        return [{"user_id": p, "persona_state": self.states.get(p)} for p in people]

    def push_personas(self, rows: pd.DataFrame) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.personas.append(rows)
        self.states.update(zip(rows["user_id"], rows["persona_state"], strict=True))


class _Setup:
    def __init__(self, tmp_path, store: _Store | None = None, **kwargs) -> None:
        self.broker = EmbeddedBroker(tmp_path / "queue" / "events.db")
        self.log = EventLog(tmp_path / "events")
        self.quarantine = tmp_path / "quarantine"
        self.store = store or _Store()
        self.consumer = EventConsumer(
            self.log,
            self.quarantine,
            self.store.push,
            self.store.read,
            self.store.push_personas,
            CONFIG,
            **kwargs,
        )

    def publish(self, payload):
        return publish_events(payload, self.broker, self.quarantine)

    def drain(self, **kwargs) -> None:
        drain(self.broker, self.consumer, **kwargs)


def drain(broker, consumer: EventConsumer, *, max_attempts: int = 5, timeout: float = 30) -> None:
    """Consume until the queue is empty (failed messages retried, then dead-lettered)."""
    stop = threading.Event()
    worker = threading.Thread(
        target=broker.consume,
        args=(consumer.handle,),
        kwargs={"stop": stop, "max_wait_seconds": 0.05, "max_attempts": max_attempts},
    )
    worker.start()
    deadline = time.monotonic() + timeout
    try:
        while broker.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join()
    assert broker.depth() == 0, "the queue did not drain"


def test_events_are_validated_queued_and_only_then_appended_and_pushed(tmp_path) -> None:
    run = _Setup(tmp_path)
    batch = [
        _event("e1"),
        _event("e2", anonymous_id="dev", user_id=None, product_id="p2", category="shoes"),
        _event("e3", price=None),
        _event("e1"),
        "not an event",
    ]
    answer = run.publish(batch)
    assert (answer.accepted, answer.rejected) == (3, 2)  # the repeat is queued too
    assert [(r.row, r.field) for r in answer.rejections] == [(3, "price"), (5, "<row>")]
    assert "price is required for product_view" in answer.rejections[0].reason
    assert len(list(run.quarantine.glob("*.jsonl"))) == 1  # rejected at once, with the reason
    assert (run.broker.depth(), len(run.log)) == (3, 0)  # queued, not yet in the log

    run.drain()
    counts = run.consumer.counts
    assert (counts.stored, counts.duplicate, counts.conflict, counts.poison) == (2, 1, 0, 0)
    assert len(run.log) == 2 and run.log.event_ids() == {"e1", "e2"}
    activity = run.store.pushed[0].set_index("user_id")
    assert activity.loc["u1", "last_category"] == "hats"
    assert activity.loc["anon:dev", "last_product_id"] == "p2"
    assert set(run.store.personas[0]["user_id"]) == {"u1", "anon:dev"}
    assert len(list(run.quarantine.glob("*.jsonl"))) == 1  # a duplicate is not quarantined


def test_the_message_is_the_validated_row(tmp_path) -> None:
    run = _Setup(tmp_path)
    run.publish([_event("e1", timestamp="2026-03-01T23:30:00-05:00", properties={"b": 1})])
    (message,) = run.broker._lease(10)
    body = json.loads(message.body)
    assert message.message_id == body["event_id"] == "e1"
    assert body["timestamp"] == "2026-03-02T04:30:00+00:00"  # UTC
    assert body["device_type"] == "other"  # the default filled in
    assert json.loads(body["properties"]) == {"b": 1}


def test_pushed_activity_equals_the_activity_of_the_appended_parts(tmp_path) -> None:
    """Issue #5: the push is built from the accepted rows in memory, not the parts read back;
    both must give the same rows (types included)."""
    from features.context import activity_rows
    from features.schema import EVENT_COLUMNS

    run = _Setup(tmp_path)
    batch = [
        _event("e1", timestamp="2026-03-01T23:30:00-05:00"),
        _event("e2", event_type="page_view", product_id=None, category=None, price=None),
        _event("e3", anonymous_id="dev", user_id=None, event_type="purchase", quantity=2),
        _event("e4", timestamp="2026-03-02T08:00:00.123456Z", device_type="mobile"),
    ]
    assert run.publish(batch).accepted == 4
    run.drain()
    parts = sorted(run.log.root.rglob("*.parquet"))
    assert len(parts) == 2  # two UTC days
    read_back = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    expected = activity_rows(read_back.loc[:, list(EVENT_COLUMNS)])
    pd.testing.assert_frame_equal(run.store.pushed[0], expected)


def test_a_repeated_or_redelivered_event_changes_nothing(tmp_path) -> None:
    run = _Setup(tmp_path)
    assert run.publish(_event("e1")).accepted == 1  # one event, not a list
    run.drain()
    parts = sorted(run.log.root.rglob("*.parquet"))
    assert run.publish(_event("e1")).accepted == 1
    run.drain()
    assert (run.consumer.counts.stored, run.consumer.counts.duplicate) == (1, 1)
    assert sorted(run.log.root.rglob("*.parquet")) == parts and len(run.log) == 1
    assert len(run.store.pushed) == 1 and len(run.store.personas) == 1


def test_a_redelivery_after_a_crash_rebuilds_what_the_crash_cut_short(tmp_path) -> None:
    """The consumer appended, then died before its push and acknowledgement: the message comes
    again (attempt 2), finds its event logged, and the person's online state is rebuilt from
    the log, from the empty state (the persona counts the event once)."""
    run = _Setup(tmp_path)
    event = _event("e1")
    ingest_rows(iter([event]), run.log, run.quarantine, "crashed consumer")
    body = encode_event(event | {"timestamp": datetime(2026, 3, 1, 12, tzinfo=UTC)})
    assert run.consumer.handle([Message("e1", body, attempts=2)]) == {}
    assert run.consumer.counts.duplicate == 1 and len(run.log) == 1
    (activity,) = run.store.pushed
    assert (activity["user_id"].tolist(), activity["last_product_id"].tolist()) == (["u1"], ["p1"])
    assert json.loads(run.store.states["u1"])["events"] == 1
    # a first delivery of a logged event (a client's repeat) needs no rebuild
    assert run.consumer.handle([Message("e1", body, attempts=1)]) == {}
    assert len(run.store.pushed) == 1


def test_a_failed_push_keeps_the_events_acks_them_and_rebuilds_later(tmp_path) -> None:
    """A store failure is no redelivery: the event is logged, the message acknowledged, the
    person pending; once the store answers, their state is rebuilt from the log."""
    store = _Store(fail=True)
    run = _Setup(tmp_path, store)
    run.publish([_event("e1")])
    run.drain()
    assert len(run.log) == 1 and run.broker.dead_letters() == []
    assert (run.consumer.counts.not_pushed, run.consumer.counts.stored) == (1, 1)
    assert len(run.consumer.pending) == 1 and store.pushed == []
    store.fail = False
    assert run.consumer.reapply_pending() == 1
    assert store.pushed[0]["last_product_id"].tolist() == ["p1"]
    assert json.loads(store.states["u1"])["events"] == 1 and len(run.consumer.pending) == 0


def test_a_failed_log_write_is_delivered_again(tmp_path) -> None:
    """Only the log's write fails a message: the log's folder is a file, so every append
    fails; the message stays queued and is appended once the folder can be written."""
    run = _Setup(tmp_path)
    run.log.root.parent.mkdir(parents=True, exist_ok=True)
    run.log.root.write_text("not a folder")
    run.publish([_event("e1")])
    batch = run.broker._lease(10)
    failures = run.consumer.handle(batch)
    assert failures == {"e1": "event log write failed: FileExistsError"}
    run.broker._settle(batch, failures, max_attempts=5)
    assert run.broker.depth() == 1 and run.consumer.counts.failed == 1
    run.log.root.unlink()
    run.drain()
    assert run.log.event_ids() == {"e1"} and run.broker.dead_letters() == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff not json", "poison: the message body is not JSON"),
        (b"[1, 2]", "poison: the message body is a JSON list, not an event object"),
        (json.dumps(_event("m1", price=-1)).encode(), "poison: invalid event: price"),
        (json.dumps(_event("other")).encode(), "poison: the body's event_id is not the message"),
    ],
    ids=["bytes", "list", "invalid", "other-id"],
)
def test_a_poison_message_is_dead_lettered_with_its_reason(tmp_path, body, reason) -> None:
    run = _Setup(tmp_path)
    run.broker.publish([("m1", body), ("e2", encode_event(_event("e2")))])
    run.drain(max_attempts=2)
    (letter,) = run.broker.dead_letters()
    assert letter.message_id == "m1" and letter.attempts == 2
    assert letter.reason.startswith(reason), letter.reason
    assert run.log.event_ids() == {"e2"}  # the good one in the same batch is stored
    assert run.consumer.counts.poison == 2  # one per delivery


def test_hooks_get_the_appended_events_and_a_failing_hook_fails_nothing(tmp_path) -> None:
    seen: list[list[str]] = []

    def broken(appended: pd.DataFrame) -> None:
        raise RuntimeError("session store down")

    run = _Setup(tmp_path, on_appended=[broken, lambda f: seen.append(list(f["event_id"]))])
    run.publish([_event("e1"), _event("e2"), _event("e1")])
    run.drain()
    assert seen == [["e1", "e2"]]  # the appended events only, once
    assert run.consumer.counts.hook_failures == 1 and run.broker.dead_letters() == []


def test_oversize_batch_names_the_limit() -> None:
    assert len(as_batch([{}] * MAX_EVENTS)) == MAX_EVENTS
    with pytest.raises(BatchTooLargeError, match=f"at most {MAX_EVENTS} events, got 1001"):
        as_batch([{}] * (MAX_EVENTS + 1))


class _Unreachable(EmbeddedBroker):
    """The embedded queue with its publishes refused (the fault injected)."""

    def publish(self, messages) -> None:
        raise BrokerUnavailableError("broker unreachable")


def test_a_refused_publish_accepts_and_quarantines_nothing(tmp_path) -> None:
    broker = _Unreachable(tmp_path / "queue.db")
    with pytest.raises(BrokerUnavailableError):
        publish_events([_event("e1"), _event("bad", price=None)], broker, tmp_path / "q")
    assert broker.depth() == 0 and not (tmp_path / "q").exists()  # the client sends it again


class SpoolFullError(TailorError):
    def __init__(self, retry_after: float) -> None:
        super().__init__("spool full")
        self.retry_after = retry_after


def test_which_errors_are_a_503_and_their_retry_after() -> None:
    assert refused_retry_after(BrokerUnavailableError("down")) == RETRY_AFTER_SECONDS
    assert refused_retry_after(SpoolFullError(12.2)) == 13
    assert refused_retry_after(SpoolFullError(float("inf"))) == RETRY_AFTER_SECONDS
    assert refused_retry_after(SpoolFullError(0)) == 1
    assert refused_retry_after(ConfigError("bad setting")) is None  # a bug, not a refusal
    assert refused_retry_after(ValueError("x")) is None


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
    run = _Setup(tmp_path)
    batch = [_event(f"e{n:04d}", user_id=f"u{n % 40}") for n in range(999)]
    batch.insert(10, _event("bad", **overrides))
    answer = run.publish(batch)
    assert (answer.accepted, answer.rejected) == (999, 1)
    assert [(r.row, r.field) for r in answer.rejections] == [(11, field)]
    run.drain()
    assert len(run.log) == 999 and "bad" not in run.log.event_ids()
    assert run.consumer.counts.pushed == sum(len(f) for f in run.store.pushed) == 999


def test_a_known_event_id_with_other_content_is_a_conflict_not_a_duplicate(tmp_path) -> None:
    """Issue #10 item 3: the consumer counts a conflict in ``conflict``, quarantines it with
    its reason and acknowledges it (never a redelivery, never stored)."""
    run = _Setup(tmp_path)
    run.publish([_event("e1"), _event("e2")])
    run.drain()
    run.publish([_event("e1"), _event("e2", price=4.0), _event("e3")])
    run.drain()
    counts = run.consumer.counts
    assert (counts.stored, counts.duplicate, counts.conflict) == (3, 1, 1)
    assert run.log.read().set_index("event_id").loc["e2", "price"] == 3.0  # the stored one stays
    (path,) = run.quarantine.glob("*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["raw"]["price"] == 4.0 and record["field"] == "event_id"
    assert record["reason"] == "event_id 'e2' already stored with different content"
    assert run.broker.dead_letters() == []


def test_replay_rebuilds_the_online_state_of_everyone_active_since_a_date(tmp_path) -> None:
    """``tailor consume --replay-from``: people with an event since the date get their latest
    activity and their persona folded from their whole history; the others are left alone."""
    run = _Setup(tmp_path)
    old = "2026-02-01T12:00:00+00:00"
    run.publish(
        [
            _event("e1", timestamp=old, user_id="u1", device_type="mobile", session_id="a"),
            _event("e2", user_id="u1", product_id="p9", device_type="mobile", session_id="b"),
            _event("e3", timestamp=old, user_id="u2"),
        ]
    )
    run.drain()
    run.store.pushed.clear()
    run.store.personas.clear()
    events, people = run.consumer.replay(datetime(2026, 2, 15, tzinfo=UTC))
    assert (events, people) == (1, 1)
    (activity,) = run.store.pushed
    assert activity[["user_id", "last_product_id"]].values.tolist() == [["u1", "p9"]]
    (personas,) = run.store.personas
    assert personas["user_id"].tolist() == ["u1"]
    state = json.loads(personas["persona_state"].iloc[0])
    assert (state["events"], state["sessions"]) == (2, 2)  # the whole history, once
    assert run.consumer.replay(datetime(2026, 4, 1, tzinfo=UTC)) == (0, 0)


def test_people_a_link_returns_are_rebuilt_from_their_whole_history(tmp_path) -> None:
    """The identity hook (issue #11's login): ``link`` sees the appended events before the push
    and fold, and the people it returns get their online state rebuilt from the log under the
    key ``resolve`` gives (here every key of the device ``dev`` belongs to ``u1``)."""

    def resolve(events: pd.DataFrame) -> pd.Series:
        keys = events["user_id"].where(events["user_id"].notna(), "u1")
        return keys.astype(str).rename("user_id")

    def read_events(people: list[str]) -> pd.DataFrame:
        every = run.log.read()
        return every[resolve(every).isin(people).to_numpy()]

    linked: list[list[str]] = []

    def link(appended: pd.DataFrame) -> list[str]:
        linked.append(sorted(appended["event_id"]))
        return ["u1"] if "login" in set(appended["event_id"]) else []

    run = _Setup(tmp_path, resolve=resolve, read_events=read_events, link=link)
    run.publish([_event("e1", user_id=None, anonymous_id="dev", session_id="a")])
    run.drain()
    assert linked == [["e1"]] and len(run.store.personas) == 1  # a fold only
    run.publish([_event("login", user_id="u1", anonymous_id="dev", session_id="b")])
    run.drain()
    assert linked == [["e1"], ["login"]]
    rebuilt = run.store.personas[-1]
    assert rebuilt["user_id"].tolist() == ["u1"]
    state = json.loads(rebuilt["persona_state"].iloc[0])
    assert (state["events"], state["sessions"]) == (2, 2)  # the device's history and the login


def test_the_consumer_validates_each_event_once(tmp_path, monkeypatch) -> None:
    """Issue #11: the consumer stores the rows it validated to match them to their messages
    (``ingest_validated``) instead of validating them a second time in ``ingest_rows``;
    conflicts are still quarantined with their row in the stored batch."""
    from features import ingest
    from features.schema import Event

    run = _Setup(tmp_path)
    run.publish([_event("e1"), _event("e2")])
    run.drain()
    calls = []
    real = Event.model_validate.__func__

    def counting(cls, *args, **kwargs):
        calls.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Event, "model_validate", classmethod(counting))
    monkeypatch.setattr(ingest, "ingest_rows", None)  # the consumer must not need it
    run.publish([_event("e1"), _event("e2", price=4.0), _event("e3")])
    published = len(calls)
    run.drain()
    assert len(calls) - published == 3  # once per event in the consumer, not twice
    counts = run.consumer.counts
    assert (counts.stored, counts.duplicate, counts.conflict) == (3, 1, 1)
    (path,) = run.quarantine.glob("*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["row"] == 2 and record["raw"]["price"] == 4.0


def test_the_consumer_is_not_idle_while_a_batch_is_in_hand(tmp_path) -> None:
    """Issue #11: ``tailor consume --drain`` stops after DRAIN_IDLE_SECONDS of idleness; a batch
    of 2,000 can take longer than that, so the time in the handler never counts as idle."""
    seen_inside: list[float] = []
    run = _Setup(tmp_path, on_appended=[lambda f: seen_inside.append(run.consumer.idle_seconds())])
    time.sleep(0.05)
    assert run.consumer.idle_seconds() >= 0.05  # nothing handled yet: idle since it was built
    run.publish([_event("e1"), _event("e2")])
    run.drain()
    assert seen_inside == [0.0]  # inside the handler (the hook runs in it): not idle
    assert 0 <= run.consumer.idle_seconds() < 5  # counted again from the batch's end
