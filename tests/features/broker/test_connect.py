"""Which broker a workspace gets from TAILOR_BROKER_URL (issue #11)."""

from __future__ import annotations

import pytest

from features.broker.connect import open_broker, redacted
from features.broker.embedded import EmbeddedBroker
from features.broker.kafka import KafkaBroker
from features.broker.rabbit import RabbitBroker
from features.broker.spool import SpooledBroker
from features.settings import Settings
from features.workspace import Workspace
from models.errors import ConfigError


def workspace(tmp_path, **settings) -> Workspace:
    return Workspace.from_env(home=tmp_path, settings=Settings(**settings))


def test_no_url_gives_the_embedded_queue_in_the_workspace(tmp_path):
    broker = open_broker(workspace(tmp_path))
    try:
        assert isinstance(broker, EmbeddedBroker)
        assert broker.path == tmp_path / "queue" / "events.db"
    finally:
        broker.close()


def test_an_amqp_url_gives_rabbitmq_behind_the_spool_without_connecting(tmp_path):
    # nothing listens on port 1: opening must not need the broker (the spool takes over)
    ws = workspace(
        tmp_path,
        broker_url="amqp://guest:guest@127.0.0.1:1/",
        broker_queue="shop.events",
        spool_max_bytes=12345,
    )
    broker = open_broker(ws)
    try:
        assert isinstance(broker, SpooledBroker)
        assert isinstance(broker.inner, RabbitBroker)
        assert broker.kind == "rabbitmq"
        assert broker.inner.queue_name == "shop.events"
        assert broker.inner.dead_queue_name == "shop.events.dead"
        assert broker.spool_dir == tmp_path / "spool"
        assert broker.max_bytes == 12345
    finally:
        broker.close()


def test_a_kafka_url_gives_kafka_behind_the_spool_without_connecting(tmp_path):
    ws = workspace(tmp_path, broker_url="kafka://127.0.0.1:1,127.0.0.2", broker_queue="shop.events")
    broker = open_broker(ws)
    try:
        assert isinstance(broker, SpooledBroker)
        assert isinstance(broker.inner, KafkaBroker)
        assert broker.kind == "kafka"
        assert broker.inner.servers == ["127.0.0.1:1", "127.0.0.2:9092"]
        assert (broker.inner.topic, broker.inner.dead_topic) == ("shop.events", "shop.events.dead")
        assert broker.inner.group == "tailor.shop.events"
        assert broker.inner.idempotence is True
        assert broker.spool_dir == tmp_path / "spool"
    finally:
        broker.close()


@pytest.mark.parametrize(
    "url", ["nats://broker:4222", "redis://localhost:6379/0", "127.0.0.1:5672", "http://x"]
)
def test_an_unknown_scheme_is_a_config_error_naming_the_variable_and_the_allowed(tmp_path, url):
    with pytest.raises(ConfigError) as error:
        open_broker(workspace(tmp_path, broker_url=url))
    message = str(error.value)
    assert "TAILOR_BROKER_URL" in message
    assert "amqp://" in message and "amqps://" in message and "kafka://" in message
    assert "embedded" in message


@pytest.mark.parametrize(
    "url", ["nats://admin:s3cret@broker:4222", "kafka://admin:s3cret@broker:9092"]
)
def test_the_password_never_appears_in_the_error(tmp_path, url):
    with pytest.raises(ConfigError) as error:
        open_broker(workspace(tmp_path, broker_url=url))
    assert "s3cret" not in str(error.value)
    assert "TAILOR_BROKER_URL" in str(error.value)
    assert redacted("amqp://u:p@h:1/v") == "amqp://u:***@h:1/v"
    assert redacted("amqp://h:1/") == "amqp://h:1/"
