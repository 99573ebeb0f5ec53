"""RabbitMQ specifics beyond the shared contract (issue #11): a publish that cannot be confirmed
fails within a bounded time, whether nothing listens or something listens and never answers."""

from __future__ import annotations

import socket
import time

import pytest

from features.broker.base import BrokerUnavailableError
from features.broker.rabbit import RabbitBroker
from models.errors import ConfigError
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


@pytest.mark.parametrize("url", ["kafka://h:9092", "http://h/"])
def test_only_amqp_urls_are_taken(url):
    with pytest.raises(ConfigError, match="amqp"):
        RabbitBroker(url, "q")
