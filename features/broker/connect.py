"""Which broker a workspace uses: ``TAILOR_BROKER_URL``, else the embedded queue."""

from __future__ import annotations

from features.broker.base import Broker
from features.broker.embedded import EmbeddedBroker
from features.workspace import Workspace
from models.errors import ConfigError


def open_broker(ws: Workspace) -> Broker:
    """The workspace's broker: the embedded queue in ``<home>/queue/`` when no URL is set."""
    url = ws.settings.broker_url
    if not url:
        return EmbeddedBroker(ws.queue_dir / "events.db")
    raise ConfigError(f"TAILOR_BROKER_URL={url!r}: RabbitMQ is not wired yet")
