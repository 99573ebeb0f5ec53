"""Which broker a workspace gets from TAILOR_BROKER_URL (issue #11)."""

from __future__ import annotations

import pytest

from features.broker.connect import open_broker, redacted
from features.broker.embedded import EmbeddedBroker
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


@pytest.mark.parametrize(
    "url", ["kafka://broker:9092", "redis://localhost:6379/0", "127.0.0.1:5672", "http://x"]
)
def test_an_unknown_scheme_is_a_config_error_naming_the_variable_and_the_allowed(tmp_path, url):
    with pytest.raises(ConfigError) as error:
        open_broker(workspace(tmp_path, broker_url=url))
    message = str(error.value)
    assert "TAILOR_BROKER_URL" in message
    assert "amqp://" in message and "amqps://" in message
    assert "embedded" in message


def test_the_password_never_appears_in_the_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        open_broker(workspace(tmp_path, broker_url="kafka://admin:s3cret@broker:9092"))
    assert "s3cret" not in str(error.value)
    assert redacted("amqp://u:p@h:1/v") == "amqp://u:***@h:1/v"
    assert redacted("amqp://h:1/") == "amqp://h:1/"
