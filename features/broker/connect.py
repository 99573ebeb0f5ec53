"""Which broker a workspace uses: ``TAILOR_BROKER_URL``, else the embedded queue.

- unset: :class:`~features.broker.embedded.EmbeddedBroker` in ``<home>/queue/events.db``;
- ``amqp://`` or ``amqps://``: :class:`~features.broker.rabbit.RabbitBroker` on the queue
  ``TAILOR_BROKER_QUEUE``, behind a :class:`~features.broker.spool.SpooledBroker` in
  ``<home>/spool/`` of at most ``TAILOR_SPOOL_MAX_BYTES`` (events are accepted while RabbitMQ is
  unreachable and forwarded when it returns);
- ``kafka://host:9092[,host:9092]``: :class:`~features.broker.kafka.KafkaBroker` on the topic
  ``TAILOR_BROKER_QUEUE``, behind the same spool;
- anything else: :class:`~models.errors.ConfigError` naming the variable and the allowed schemes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from features.broker.contract import Broker
from features.broker.embedded import EmbeddedBroker
from features.broker.kafka import SCHEMES as KAFKA_SCHEMES
from features.broker.kafka import KafkaBroker
from features.broker.rabbit import SCHEMES as RABBIT_SCHEMES
from features.broker.rabbit import RabbitBroker
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


def server_broker(url: str, queue: str) -> RabbitBroker | KafkaBroker:
    """The server broker ``url`` names (RabbitMQ or Kafka) on the queue or topic ``queue``,
    without a spool; :class:`ConfigError` naming the variable and the allowed schemes."""
    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme in RABBIT_SCHEMES:
            return RabbitBroker(url, queue)
        if scheme in KAFKA_SCHEMES:
            return KafkaBroker(url, queue)
    except ConfigError as exc:
        raise ConfigError(f"{env_name('broker_url')}={redacted(url)!r}: {exc}") from None
    rabbit = ", ".join(f"{s}://" for s in RABBIT_SCHEMES)
    kafka = ", ".join(f"{s}://" for s in KAFKA_SCHEMES)
    raise ConfigError(
        f"{env_name('broker_url')}={redacted(url)!r}: scheme {scheme or '(none)'!r} is not "
        f"supported; allowed: {rabbit} (RabbitMQ), {kafka} (Kafka), or unset for the "
        "embedded queue"
    )


def open_broker(ws: Workspace) -> Broker:
    """The workspace's broker (see the module doc). With RabbitMQ or Kafka, the spool's
    forwarder is started, so what an earlier process spooled is sent as soon as the broker
    answers; close the broker to stop it."""
    url = ws.settings.broker_url
    if not url:
        return EmbeddedBroker(ws.queue_dir / "events.db")
    inner = server_broker(url, ws.settings.broker_queue)
    broker = SpooledBroker(inner, ws.spool_dir, ws.settings.spool_max_bytes)
    broker.start()
    return broker
