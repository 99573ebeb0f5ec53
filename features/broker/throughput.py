"""The broker half of ``tailor bench realtime`` (issue #11): raw publish rate of the client library
against end-to-end publish → broker → consumer → event-log append, in the same run.

Both phases publish the same number of distinct events in batches of ``batch_size`` from one
thread, each batch confirmed before the next (what one collector worker does):

1. **raw**: publish only, to a fresh queue (RabbitMQ: FastStream ``publish`` with publisher
   confirms; embedded: the SQLite commit); time until the last batch is confirmed;
2. **end to end**: a consumer runs meanwhile (its own connection, :func:`log_writer` into a fresh
   event log, acknowledgement after the write); time from the first publish until the log holds
   every event.

``ratio = end_to_end_rate / raw_rate`` (goal of the issue: at least 0.5). Everything is written to
scratch queues and a scratch folder under ``<home>/bench/``, deleted afterwards: the workspace's
own queue and log are never touched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from features.broker.connect import server_broker
from features.broker.contract import Broker
from features.broker.embedded import EmbeddedBroker
from features.broker.logsink import log_writer
from features.eventlog import EventLog
from features.ingest import IngestReport
from features.workspace import Workspace
from models.errors import TailorError


@dataclass(frozen=True)
class ThroughputResult:
    """Events per second of the two phases (see the module doc)."""

    broker: str
    events: int
    batch_size: int
    raw_seconds: float
    raw_rate: float
    end_to_end_seconds: float
    end_to_end_rate: float
    ratio: float

    def as_dict(self) -> dict:
        return asdict(self)


def bench_events(count: int, run: str) -> list[tuple[str, bytes]]:
    """``count`` distinct valid events (product views with a price) as ``(event_id, body)``."""
    start = datetime.now(UTC) - timedelta(hours=1)
    messages = []
    for i in range(count):
        event_id = f"bench-{run}-{i:07d}"
        event = {
            "event_id": event_id,
            "event_type": "product_view",
            "timestamp": (start + timedelta(milliseconds=i)).isoformat(),
            "user_id": f"bench-u{i % 997}",
            "session_id": f"bench-s{i % 2003}",
            "product_id": f"bench-p{i % 499}",
            "category": f"bench-c{i % 13}",
            "price": float(1 + i % 90),
        }
        messages.append((event_id, json.dumps(event).encode()))
    return messages


def _publish_all(broker: Broker, messages: list[tuple[str, bytes]], batch_size: int) -> None:
    for start in range(0, len(messages), batch_size):
        broker.publish(messages[start : start + batch_size])


def measure_throughput(
    new_queue: Callable[[], Callable[[], Broker]],
    scratch: Path,
    *,
    events: int = 20_000,
    batch_size: int = 500,
    timeout: float = 600.0,
) -> ThroughputResult:
    """Run both phases; ``new_queue()`` makes a fresh, empty queue (the caller deletes it
    afterwards) and returns a function that opens a broker on it (each call: another
    connection). The log and quarantine go under ``scratch``."""
    run = uuid.uuid4().hex[:8]
    publisher = new_queue()()
    kind = publisher.kind
    try:
        messages = bench_events(events, f"{run}-raw")
        started = time.perf_counter()
        _publish_all(publisher, messages, batch_size)
        raw_seconds = time.perf_counter() - started
    finally:
        publisher.close()

    messages = bench_events(events, f"{run}-e2e")
    open_broker = new_queue()
    publisher, consumer = open_broker(), open_broker()
    reports: list[IngestReport] = []
    failed: list[BaseException] = []
    stop = threading.Event()
    handler = log_writer(EventLog(scratch / "events"), scratch / "quarantine", reports=reports)

    def consume() -> None:
        try:
            consumer.consume(handler, stop=stop, batch_size=batch_size)
        except BaseException as exc:  # raised in the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=consume, name="bench-consumer", daemon=True)
    try:
        started = time.perf_counter()
        thread.start()
        _publish_all(publisher, messages, batch_size)
        deadline = started + timeout
        while sum(r.accepted for r in reports) < events and not failed:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.005)
        end_to_end_seconds = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(timeout=60)
        consumer.close()
        publisher.close()
    if failed:
        raise TailorError(f"the benchmark consumer failed: {failed[0]}") from failed[0]
    stored = sum(r.accepted for r in reports)
    if stored < events:
        raise TailorError(f"only {stored} of {events} events reached the log within {timeout} s")
    raw_rate = events / raw_seconds
    end_to_end_rate = events / end_to_end_seconds
    return ThroughputResult(
        broker=kind,
        events=events,
        batch_size=batch_size,
        raw_seconds=raw_seconds,
        raw_rate=raw_rate,
        end_to_end_seconds=end_to_end_seconds,
        end_to_end_rate=end_to_end_rate,
        ratio=end_to_end_rate / raw_rate,
    )


def measure_realtime_throughput(
    ws: Workspace, *, events: int = 20_000, batch_size: int = 500
) -> ThroughputResult:
    """The workspace's broker kind (``TAILOR_BROKER_URL``: RabbitMQ or Kafka, else the embedded
    queue)
    measured on scratch queues and a scratch log under ``<home>/bench/``."""
    base = ws.home / "bench"
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="broker-", dir=base))
    url = ws.settings.broker_url
    queues: list[str] = []

    def new_queue() -> Callable[[], Broker]:
        name = f"{ws.settings.broker_queue}.bench.{uuid.uuid4().hex[:8]}"
        queues.append(name)
        if url:
            return lambda: server_broker(url, name)
        return lambda: EmbeddedBroker(scratch / f"{name}.db")

    try:
        return measure_throughput(new_queue, scratch, events=events, batch_size=batch_size)
    finally:
        if url:
            for name in queues:
                cleaner = server_broker(url, name)
                try:
                    cleaner.delete_queues()
                finally:
                    cleaner.close()
        shutil.rmtree(scratch, ignore_errors=True)
