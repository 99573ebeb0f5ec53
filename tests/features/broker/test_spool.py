"""The disk spool (issue #11): events accepted while RabbitMQ is unreachable are kept on disk and
forwarded when it returns; nothing accepted is lost; a full spool refuses with a clear error."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from features.broker.contract import Message
from features.broker.rabbit import RabbitBroker
from features.broker.spool import (
    SpoolCorruptError,
    SpooledBroker,
    SpoolFullError,
    decode_batch,
    encode_batch,
)
from tests.features.broker.conftest import RABBIT_URL, require_rabbitmq
from tests.features.broker.events import event_messages
from tests.features.broker.proxy import Proxy


def closed_port() -> int:
    """A local port nothing listens on."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def unreachable(queue_name: str) -> RabbitBroker:
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    return RabbitBroker(url, queue_name, connect_timeout=2.0, publish_timeout=2.0)


def drain(broker: RabbitBroker, count: int, timeout: float = 30.0) -> list[str]:
    """Consume until ``count`` messages arrived (then a short while longer, so that an extra
    copy would show); their ids in delivery order."""
    ids: list[str] = []
    stop = threading.Event()
    finished: list[float] = []

    def handle(batch: list[Message]) -> dict[str, str]:
        ids.extend(m.message_id for m in batch)
        if len(ids) >= count and not finished:
            finished.append(time.monotonic())
            threading.Timer(0.5, stop.set).start()
        return {}

    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        broker.consume(handle, stop=stop, max_wait_seconds=0.05)
    finally:
        timer.cancel()
    return ids


def wait_until_empty(spooled: SpooledBroker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while spooled.spooled()[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spooled.spooled() == (0, 0), f"still spooled after {timeout} s: {spooled.spooled()}"


@pytest.fixture
def queue_name():
    """A fresh queue on the real RabbitMQ, deleted after the test."""
    require_rabbitmq()
    name = f"tailor.test.{uuid.uuid4().hex[:12]}"
    yield name
    cleaner = RabbitBroker(RABBIT_URL, name)
    try:
        cleaner.delete_queues()
    finally:
        cleaner.close()


def test_a_spool_file_reads_back_as_written_and_damage_is_detected():
    messages = [("a", b'{"x": 1}'), ("é-2", b""), ("c", bytes(range(256)))]
    data = encode_batch(messages)
    assert decode_batch(data) == messages
    damaged = bytearray(data)
    damaged[12] ^= 0x01
    with pytest.raises(SpoolCorruptError, match="checksum"):
        decode_batch(bytes(damaged))
    with pytest.raises(SpoolCorruptError, match="not a spool file"):
        decode_batch(data[:5])


def test_events_accepted_while_rabbitmq_is_unreachable_arrive_once_when_it_is_back(
    tmp_path: Path, queue_name: str
):
    spool_dir = tmp_path / "spool"
    messages = event_messages(2000)
    offline = SpooledBroker(unreachable(queue_name), spool_dir, max_bytes=10 << 20)
    started = time.monotonic()
    for start in range(0, len(messages), 100):
        offline.publish(messages[start : start + 100])  # returns: safe on disk
    assert time.monotonic() - started < 10  # the first failure is bounded; the rest go to disk
    assert offline.spooled()[0] == 2000
    time.sleep(1.5)  # the forwarder tried and failed: the files must still be there
    assert offline.spooled()[0] == 2000
    offline.close()

    online = SpooledBroker(RabbitBroker(RABBIT_URL, queue_name), spool_dir, max_bytes=10 << 20)
    try:
        online.start()
        wait_until_empty(online)
        ids = drain(online.inner, 2000)
    finally:
        online.close()
    assert Counter(ids) == Counter(event_id for event_id, _ in messages)  # each exactly once
    assert ids == [event_id for event_id, _ in messages]  # in the order they were accepted


def test_the_spool_fills_up_with_a_clear_error_and_keeps_what_it_accepted(
    tmp_path: Path, queue_name: str
):
    spool_dir = tmp_path / "spool"
    batches = [event_messages(50, prefix=f"b{n}-") for n in range(40)]
    one_batch = len(encode_batch(batches[0]))
    offline = SpooledBroker(unreachable(queue_name), spool_dir, max_bytes=int(one_batch * 5.5))
    accepted: list[str] = []
    with pytest.raises(SpoolFullError, match="TAILOR_SPOOL_MAX_BYTES") as refused:
        for batch in batches:
            offline.publish(batch)
            accepted.extend(event_id for event_id, _ in batch)
    assert len(accepted) == 5 * 50
    assert str(spool_dir) in str(refused.value)
    assert refused.value.retry_after > 0  # the service's Retry-After
    offline.close()

    online = SpooledBroker(RabbitBroker(RABBIT_URL, queue_name), spool_dir, max_bytes=1 << 20)
    try:
        online.start()
        wait_until_empty(online)
        ids = drain(online.inner, len(accepted))
    finally:
        online.close()
    assert sorted(ids) == sorted(accepted)


def test_rabbitmq_going_away_and_coming_back_loses_nothing(tmp_path: Path, queue_name: str):
    """One spooled broker through a proxy that cuts every connection, then comes back."""
    proxy = Proxy(("127.0.0.1", 5672))
    proxy.up()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    inner = RabbitBroker(url, queue_name, connect_timeout=2.0, publish_timeout=2.0)
    broker = SpooledBroker(inner, tmp_path / "spool", max_bytes=10 << 20, retry_seconds=0.2)
    before, during, after = (event_messages(300, prefix=p) for p in ("a", "b", "c"))
    try:
        broker.publish(before)  # straight to RabbitMQ
        assert broker.spooled() == (0, 0)
        proxy.down()
        for start in range(0, 300, 30):
            broker.publish(during[start : start + 30])  # spooled
        assert broker.spooled()[0] == 300
        proxy.up()
        wait_until_empty(broker)
        broker.publish(after)
        consumer = RabbitBroker(RABBIT_URL, queue_name)
        try:
            ids = drain(consumer, 900)
        finally:
            consumer.close()
    finally:
        broker.close()
        proxy.down()
    expected = [event_id for event_id, _ in before + during + after]
    assert sorted(ids) == sorted(expected)  # every one, none twice
    spooled_order = [i for i in ids if i.startswith("b")]
    assert spooled_order == [event_id for event_id, _ in during]
