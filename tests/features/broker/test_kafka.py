"""Kafka specifics beyond the shared contract (issue #11): the URL form, a publish that cannot be
confirmed fails within a bounded time (nothing listens, or something listens and never answers),
and what Kafka itself reports about the topics and the consumer group's committed offsets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from features.broker.contract import BrokerUnavailableError, Message
from features.broker.kafka import KafkaBroker, parse_url
from models.errors import ConfigError
from tests.features.broker.events import event_messages
from tests.features.broker.test_spool import closed_port


def test_the_url_names_one_or_more_brokers_with_9092_by_default():
    assert parse_url("kafka://k1:9093,k2") == (["k1:9093", "k2:9092"], {})
    assert parse_url("kafka://k1:9092/?idempotence=false") == (
        ["k1:9092"],
        {"idempotence": "false"},
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp://h:5672/", "allowed kafka"),
        ("kafka://", "names no broker"),
        ("kafka://user:pw@k1:9092", "credentials"),
        ("kafka://k1:port", "not a number"),
        ("kafka://k1:9092?acks=1", "allowed idempotence=true|false"),
        ("kafka://k1:9092?idempotence=maybe", "allowed idempotence=true|false"),
    ],
)
def test_a_bad_url_is_a_config_error_saying_what_is_allowed(url, says):
    with pytest.raises(ConfigError, match=says) as error:
        KafkaBroker(url, "t")
    assert "pw" not in str(error.value)


def test_a_publish_to_a_closed_port_fails_at_once_and_names_the_broker():
    port = closed_port()
    broker = KafkaBroker(f"kafka://127.0.0.1:{port}", "t", connect_timeout=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
            broker.publish([("a", b"{}")])
        assert time.monotonic() - started < 8.0
    finally:
        broker.close()


def test_a_publish_to_a_broker_that_never_answers_fails_within_the_bound():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (the kernel does), never speaks Kafka
    port = silent.getsockname()[1]
    broker = KafkaBroker(f"kafka://127.0.0.1:{port}", "t", connect_timeout=1.0, publish_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            broker.publish([("a", b"{}")])
        assert time.monotonic() - started < 6.0
    finally:
        broker.close()
        silent.close()


async def _kafka_view(broker: KafkaBroker) -> tuple[dict, dict]:
    """What Kafka reports: each topic's partition count, and the group's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.servers)
    await admin.start()
    try:
        described = await admin.describe_topics([broker.topic, broker.dead_topic])
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        committed = await admin.list_consumer_group_offsets(broker.group)
        return partitions, {tp: meta.offset for tp, meta in committed.items()}
    finally:
        await admin.close()


def test_the_topics_exist_and_the_group_commits_only_what_the_handler_finished(kafka):
    """Kafka's own view: both topics created, and while the handler holds the second batch the
    group's committed offset is the end of the first batch, not further."""
    topic = f"tailor.test.{uuid.uuid4().hex[:12]}"
    broker = KafkaBroker(kafka.url, topic)
    stop, holding = threading.Event(), threading.Event()
    batches: list[int] = []

    def handler(batch: list[Message]) -> dict[str, str]:
        batches.append(len(batch))
        if len(batches) == 2:
            holding.set()
            stop.wait(30)  # hold the second batch while Kafka is asked
        return {}

    thread = threading.Thread(
        target=broker.consume, args=(handler,), kwargs={"stop": stop, "batch_size": 50}
    )
    try:
        broker.publish(event_messages(300))
        thread.start()
        assert holding.wait(40)
        partitions, committed = asyncio.run(_kafka_view(broker))
        assert partitions == {topic: 1, f"{topic}.dead": 1}
        assert batches[0] == 50
        assert committed == {TopicPartition(topic, 0): 50}
        assert broker.depth() == 250  # the held batch is not committed: still counted
    finally:
        stop.set()
        thread.join(timeout=30)
        broker.delete_queues()
        broker.close()
