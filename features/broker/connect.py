"""Which broker a workspace uses: ``TAILOR_BROKER_URL``, else the embedded queue.

- unset: :class:`~features.broker.embedded.EmbeddedBroker` in ``<home>/queue/events.db``;
- ``amqp://`` or ``amqps://``: :class:`~features.broker.rabbit.RabbitBroker` on the queue
  ``TAILOR_BROKER_QUEUE``, behind a :class:`~features.broker.spool.SpooledBroker` in
  ``<home>/spool/`` of at most ``TAILOR_SPOOL_MAX_BYTES`` (events are accepted while RabbitMQ is
  unreachable and forwarded when it returns);
- anything else: :class:`~models.errors.ConfigError` naming the variable and the allowed schemes.
  (A ``kafka://`` scheme is where a Kafka broker would plug in: see :mod:`features.broker.rabbit`.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from features.broker.contract import Broker
from features.broker.embedded import EmbeddedBroker
from features.broker.rabbit import SCHEMES, RabbitBroker
from features.broker.spool import SpooledBroker
from features.settings import env_name
from features.workspace import Workspace
from models.errors import ConfigError


def redacted(url: str) -> str:
    """``url`` without its password, for errors and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_broker(ws: Workspace) -> Broker:
    """The workspace's broker (see the module doc). With RabbitMQ, the spool's forwarder is
    started, so what an earlier process spooled is sent as soon as RabbitMQ answers; close the
    broker to stop it."""
    url = ws.settings.broker_url
    if not url:
        return EmbeddedBroker(ws.queue_dir / "events.db")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        allowed = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(
            f"{env_name('broker_url')}={redacted(url)!r}: scheme {scheme or '(none)'!r} is not "
            f"supported; allowed: {allowed} (RabbitMQ), or unset for the embedded queue"
        )
    broker = SpooledBroker(
        RabbitBroker(url, ws.settings.broker_queue), ws.spool_dir, ws.settings.spool_max_bytes
    )
    broker.start()
    return broker
