"""One broker per test, for each implementation: the embedded queue, the real RabbitMQ and a real
Kafka (tests/kafka_server.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from features.broker.contract import Broker
from features.broker.embedded import EmbeddedBroker
from features.broker.kafka import KafkaBroker
from features.broker.rabbit import RabbitBroker
from features.settings import env_name
from tests.services import require_service

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBITMQCTL = "/usr/sbin/rabbitmqctl"


def require_rabbitmq() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672, "scale-profile broker")


@dataclass
class BrokerTarget:
    """How a test reaches one queue: ``make()`` opens another broker on it (another connection),
    ``env`` configures a ``tailor`` process for it, ``interrupt()`` takes the broker away from
    its clients for a moment (None where the test cannot: a Kafka cluster it did not start)."""

    kind: str
    home: Path
    make: Callable[[], Broker]
    env: dict[str, str]
    interrupt: Callable[[], None] | None
    opened: list[Broker] = field(default_factory=list)

    def open(self) -> Broker:
        broker = self.make()
        self.opened.append(broker)
        return broker


def _close_rabbit_connections() -> None:
    """Close every client connection from the server's side (as an operator or a failover
    would); the clients must reconnect on their own."""
    result = subprocess.run(
        [RABBITMQCTL, "close_all_connections", "test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _lock_sqlite(path: Path, seconds: float = 2.0) -> Callable[[], None]:
    def interrupt() -> None:
        """Hold the queue's database exclusively: every client waits, as on a dropped server."""
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            db.execute("COMMIT")
        finally:
            db.close()

    return interrupt


@pytest.fixture(params=["embedded", "rabbitmq", "kafka"])
def target(request, tmp_path) -> Iterator[BrokerTarget]:
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "kafka":
        cluster = request.getfixturevalue("kafka")
        topic = f"tailor.test.{uuid.uuid4().hex[:12]}"
        made = BrokerTarget(
            kind="kafka",
            home=home,
            make=lambda: KafkaBroker(cluster.url, topic),
            env={env_name("broker_url"): cluster.url, env_name("broker_queue"): topic},
            # the broker process stopped and started again on its data
            interrupt=cluster.local.restart if cluster.local else None,
        )
    elif request.param == "rabbitmq":
        require_rabbitmq()
        queue_name = f"tailor.test.{uuid.uuid4().hex[:12]}"
        made = BrokerTarget(
            kind="rabbitmq",
            home=home,
            make=lambda: RabbitBroker(RABBIT_URL, queue_name),
            env={env_name("broker_url"): RABBIT_URL, env_name("broker_queue"): queue_name},
            interrupt=_close_rabbit_connections,
        )
    else:
        path = home / "queue" / "events.db"  # where open_broker puts the workspace's queue
        made = BrokerTarget(
            kind="embedded",
            home=home,
            make=lambda: EmbeddedBroker(path, lease_seconds=3.0),
            env={},
            interrupt=_lock_sqlite(path),
        )
    yield made
    for broker in made.opened:
        broker.close()
    if made.kind in ("rabbitmq", "kafka"):
        cleaner = made.make()
        try:
            cleaner.delete_queues()
        finally:
            cleaner.close()
