"""The broker contract (features/broker/contract.py), one suite run on the embedded queue, the
real RabbitMQ and a real Kafka (issue #11): round trip, acknowledgement after the handler, dead
letters with their reason, requeue, and the bars of the issue: duplicate delivery of 1,000
messages changes nothing, a connection dropped (Kafka: the broker process restarted) or a consumer
killed with SIGKILL in the middle of 20,000 events leaves exactly 20,000 distinct events in the
log and no duplicate row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from features.broker.contract import Broker, Handler, Message
from features.broker.logsink import log_writer
from features.eventlog import EventLog
from features.ingest import IngestReport
from tests.features.broker.conftest import BrokerTarget
from tests.features.broker.events import event_messages, log_ids

ROOT = Path(__file__).resolve().parents[3]
BIG = 20_000
#: Seconds the crash test's consumers wait before and after each write (a slow disk), so that a
#: SIGKILL lands where the test aims it.
KILL_DELAY = 0.3


def run_consumer(
    broker: Broker,
    handler: Handler,
    until: Callable[[], bool],
    *,
    timeout: float = 40.0,
    **options,
) -> None:
    """Consume in this thread until ``until()`` holds after a batch (then that batch is
    settled and the consumer returns); fails after ``timeout`` seconds."""
    stop = threading.Event()

    def handle(batch: list[Message]) -> dict[str, str]:
        failures = handler(batch)
        if until():
            stop.set()
        return failures

    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        broker.consume(handle, stop=stop, **{"max_wait_seconds": 0.05, **options})
    finally:
        timer.cancel()
    assert until(), f"not done within {timeout} s"


def test_published_messages_are_delivered_with_their_ids_and_bodies(target: BrokerTarget):
    broker = target.open()
    messages = [("a", b'{"n": 1}'), ("b", b'{"n": 2}'), ("c", b"\x00\xffnot json")]
    broker.publish(messages)
    assert broker.depth() == 3
    got: list[Message] = []
    run_consumer(broker, lambda batch: got.extend(batch) or {}, lambda: len(got) >= 3)
    assert sorted((m.message_id, m.body) for m in got) == sorted(messages)
    assert [m.attempts for m in got] == [1, 1, 1]
    assert broker.depth() == 0
    assert broker.dead_letters() == []


def test_a_message_is_acknowledged_only_after_its_handler_returned(target: BrokerTarget):
    broker = target.open()
    broker.publish([("x", b"1"), ("y", b"2")])
    calls: list[list[tuple[str, int]]] = []

    def handler(batch: list[Message]) -> dict[str, str]:
        calls.append(sorted((m.message_id, m.attempts) for m in batch))
        if len(calls) == 1:
            raise OSError("disk full")  # the write failed: nothing may be acknowledged
        return {"y": "not yet"} if len(calls) == 2 else {}

    delivered = lambda: sorted(pair for batch in calls for pair in batch)  # noqa: E731
    run_consumer(broker, handler, lambda: ("y", 3) in delivered())
    # both back after the exception; only the named one back after the failure report
    assert delivered() == [("x", 1), ("x", 2), ("y", 1), ("y", 2), ("y", 3)]
    assert broker.depth() == 0
    assert broker.dead_letters() == []


def test_a_poison_message_is_dead_lettered_with_its_reason_and_can_be_requeued(
    target: BrokerTarget,
):
    broker = target.open()
    broker.publish([("good", b'{"ok": true}'), ("poison", b'{"price": "x"}')])
    seen: list[tuple[str, int]] = []

    def handler(batch: list[Message]) -> dict[str, str]:
        seen.extend((m.message_id, m.attempts) for m in batch)
        return {m.message_id: "price: not a number" for m in batch if m.message_id == "poison"}

    run_consumer(broker, handler, lambda: ("poison", 3) in seen, max_attempts=3)
    assert sorted(seen) == [("good", 1), ("poison", 1), ("poison", 2), ("poison", 3)]
    letters = broker.dead_letters()
    assert [(d.message_id, d.body, d.reason, d.attempts) for d in letters] == [
        ("poison", b'{"price": "x"}', "price: not a number", 3)
    ]
    assert broker.dead_letters() == letters  # reading them does not take them away
    assert broker.depth() == 0

    assert broker.requeue_dead_letters() == 1
    assert broker.dead_letters() == []
    again: list[tuple[str, int]] = []
    run_consumer(
        broker, lambda b: again.extend((m.message_id, m.attempts) for m in b) or {}, lambda: again
    )
    assert again == [("poison", 1)]  # a fresh attempt count
    assert broker.depth() == 0


def _log_handler(home: Path) -> tuple[EventLog, list[IngestReport], Handler]:
    log = EventLog(home / "events")
    reports: list[IngestReport] = []
    return log, reports, log_writer(log, home / "quarantine", reports=reports)


def test_duplicate_delivery_of_1000_messages_changes_nothing(target: BrokerTarget):
    broker = target.open()
    messages = event_messages(1000)
    broker.publish(messages)
    broker.publish(messages)  # every event delivered twice
    log, reports, handler = _log_handler(target.home)
    total = lambda: sum(r.total for r in reports)  # noqa: E731
    run_consumer(broker, handler, lambda: total() >= 2000)
    ids = log_ids(log)
    assert len(ids) == 1000
    assert set(ids) == {event_id for event_id, _ in messages}
    assert sum(r.accepted for r in reports) == 1000
    assert sum(r.duplicate for r in reports) == 1000
    assert not any(r.rejections for r in reports)
    parts = sorted(log.root.rglob("*.parquet"))

    broker.publish(messages)  # the same 1,000 once more, later
    run_consumer(broker, handler, lambda: total() >= 3000)
    assert sorted(log.root.rglob("*.parquet")) == parts  # not one file written
    assert sorted(log_ids(log)) == sorted(ids)
    assert broker.depth() == 0


def test_a_connection_dropped_mid_stream_loses_and_doubles_nothing(target: BrokerTarget):
    if target.interrupt is None:
        pytest.skip(
            f"cannot take this {target.kind} broker away (a cluster the test did not start)"
        )
    messages = event_messages(BIG)
    target.open().publish(messages)
    consumer = target.open()  # its own connection
    log, reports, handler = _log_handler(target.home)
    accepted = lambda: sum(r.accepted for r in reports)  # noqa: E731
    stop = threading.Event()
    thread = threading.Thread(
        target=consumer.consume, args=(handler,), kwargs={"stop": stop}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 45
        while accepted() < BIG // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        at_drop = accepted()
        assert 0 < at_drop < BIG, f"{at_drop} of {BIG} appended when the connection dropped"
        target.interrupt()
        probe = target.open()
        # every event stored, then the redeliveries the drop caused consumed as well
        while (accepted() < BIG or probe.depth() > 0) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    ids = log_ids(log)
    assert len(ids) == BIG, f"{len(ids)} rows for {BIG} events"
    assert len(set(ids)) == BIG
    assert probe.depth() == 0


def consumer_command(target: BrokerTarget, *, delay: float = 0.0) -> list[str]:
    """The consumer process (``tailor consume --home H`` once that exists); ``delay`` seconds
    before and after each write."""
    return [
        sys.executable,
        "-m",
        "tests.features.broker.consumer_process",
        "--home",
        str(target.home),
        "--lease-seconds",
        "3",
        "--delay-before-write",
        str(delay),
        "--delay-after-write",
        str(delay),
    ]


def _consumer_env(target: BrokerTarget) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_BROKER")}
    return {**env, **target.env, "PYTHONPATH": str(ROOT)}


def _start(target: BrokerTarget, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        consumer_command(target, delay=delay),
        env=_consumer_env(target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_events(log: EventLog, count: int, proc: subprocess.Popen, timeout: float) -> int:
    """Events in the log once it holds ``count`` (returns right after the part that made it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = len(log.event_ids())
        if stored >= count:
            return stored
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    return len(log.event_ids())


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_consumer_killed_mid_stream_loses_and_doubles_nothing(target: BrokerTarget):
    """SIGKILL twice in the middle of 20,000 events, at the two moments that matter: right after
    a batch was written (not yet acknowledged: it comes again and must not be written twice),
    and while a batch waits to be written (acknowledged too early, it would be lost)."""
    target.open().publish(event_messages(BIG))
    log = EventLog(target.home / "events")  # where the workspace keeps its log

    first = _start(target, delay=KILL_DELAY)
    try:
        after_write = _wait_for_events(log, BIG // 4, first, timeout=40)
    finally:
        _kill(first)  # a batch was just written: its handler is in the delay after the write
    assert BIG // 4 <= after_write < BIG, f"{after_write} of {BIG} stored at the first kill"

    second = _start(target, delay=KILL_DELAY)
    try:
        _wait_for_events(log, BIG // 2, second, timeout=40)
        time.sleep(KILL_DELAY * 1.5)  # past the delay after that write, into the next one's
    finally:
        _kill(second)  # a batch received, not yet written
    before_write = len(log.event_ids())
    assert before_write < BIG, f"{before_write} of {BIG} stored at the second kill"

    third = _start(target)
    try:
        stored = _wait_for_events(log, BIG, third, timeout=40)
    finally:
        third.terminate()
        _, err = third.communicate(timeout=30)
    assert stored == BIG, err[-3000:]
    ids = log_ids(log)
    assert len(ids) == BIG, f"{len(ids)} rows for {BIG} events"
    assert len(set(ids)) == BIG
    assert target.open().depth() == 0
