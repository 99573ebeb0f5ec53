"""RabbitMQ specifics beyond the shared contract (issue #11): a publish that cannot be confirmed
fails within a bounded time, whether nothing listens or something listens and never answers; the
queues and the consumer are what the issue asks for, as RabbitMQ itself reports them."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
import uuid

import pytest

from features.broker.contract import BrokerUnavailableError, Message
from features.broker.rabbit import RabbitBroker
from models.errors import ConfigError
from tests.features.broker.conftest import RABBIT_URL, RABBITMQCTL, require_rabbitmq
from tests.features.broker.events import event_messages
from tests.features.broker.test_spool import closed_port


def test_a_publish_to_a_closed_port_fails_at_once_and_names_the_broker():
    port = closed_port()
    broker = RabbitBroker(f"amqp://guest:secret@127.0.0.1:{port}/", "q", connect_timeout=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}") as error:
            broker.publish([("a", b"{}")])
        assert time.monotonic() - started < 3.0
        assert "secret" not in str(error.value)
    finally:
        broker.close()


def test_a_publish_to_a_broker_that_never_answers_fails_within_the_bound():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (the kernel does), never speaks AMQP
    port = silent.getsockname()[1]
    broker = RabbitBroker(
        f"amqp://guest:guest@127.0.0.1:{port}/", "q", connect_timeout=1.0, publish_timeout=1.0
    )
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            broker.publish([("a", b"{}")])
        assert time.monotonic() - started < 4.0
    finally:
        broker.close()
        silent.close()


def test_a_batch_is_handed_over_when_deliveries_stop_not_after_the_whole_wait():
    """Issue #11 (event → visible): the consumer takes what arrived and goes, instead of waiting
    ``max_wait`` for a full batch; a backlog still fills whole batches."""
    inbox = queue.SimpleQueue()
    for n in range(3):
        inbox.put(n)
    started = time.monotonic()
    assert RabbitBroker._take(inbox, 500, max_wait=2.0) == [0, 1, 2]
    assert time.monotonic() - started < 0.5  # not the 2 s max_wait
    for n in range(5):
        inbox.put(n)
    assert RabbitBroker._take(inbox, 4, max_wait=2.0) == [0, 1, 2, 3]
    assert RabbitBroker._take(inbox, 500, max_wait=2.0) == [4]  # the one left over


@pytest.mark.parametrize("url", ["kafka://h:9092", "http://h/"])
def test_only_amqp_urls_are_taken(url):
    with pytest.raises(ConfigError, match="amqp"):
        RabbitBroker(url, "q")


def _rabbitmqctl(*args: str) -> list[list[str]]:
    result = subprocess.run(
        [RABBITMQCTL, "-q", "--no-table-headers", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines() if line.strip()]


def test_the_queues_are_durable_and_the_consumer_acks_manually_with_a_bounded_prefetch():
    """What RabbitMQ itself reports: a durable quorum queue, a durable dead-letter queue, and
    while consuming, manual acknowledgements with a prefetch of two batches."""
    require_rabbitmq()
    name = f"tailor.test.{uuid.uuid4().hex[:12]}"
    broker = RabbitBroker(RABBIT_URL, name)
    stop, inside = threading.Event(), threading.Event()

    def handler(batch: list[Message]) -> dict[str, str]:
        inside.set()
        stop.wait(30)  # hold the batch while RabbitMQ is asked
        return {}

    thread = threading.Thread(
        target=broker.consume, args=(handler,), kwargs={"stop": stop, "batch_size": 50}
    )
    try:
        broker.publish(event_messages(300))
        thread.start()
        assert inside.wait(20)
        queues = {row[0]: row[1:] for row in _rabbitmqctl("list_queues", "name", "type", "durable")}
        assert queues[name] == ["quorum", "true"]
        assert queues[f"{name}.dead"] == ["classic", "true"]
        listed = _rabbitmqctl("list_consumers", "queue_name", "ack_required", "prefetch_count")
        consumers = [row[1:] for row in listed if row[0] == name]
        assert consumers == [["true", "100"]]
    finally:
        stop.set()
        thread.join(timeout=30)
        broker.delete_queues()
        broker.close()
