"""The one broker contract between collection and processing (issue #11).

Collectors (``/events``, ``/collect``) :meth:`Broker.publish` validated events and answer only
after the broker confirmed them; consumers (``tailor consume``, the service's in-process consumer)
run :meth:`Broker.consume` with a handler that writes a batch and says which messages failed.
Delivery is at-least-once: a message is acknowledged only after the handler returned, so a
consumer killed mid-batch gets the batch again; handlers are idempotent by ``message_id`` (the
event id), so a redelivery changes nothing. A message that fails ``max_attempts`` times is a
poison message: it moves to the dead-letter store with the handler's reason, visible with
:meth:`Broker.dead_letters` and sent back with :meth:`Broker.requeue_dead_letters`.

Three implementations: :mod:`features.broker.embedded` (a SQLite WAL table in the workspace, no
server), :mod:`features.broker.rabbit` (RabbitMQ through FastStream) and
:mod:`features.broker.kafka` (Kafka through aiokafka); all run the same tests.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.errors import TailorError

#: Deliveries of one message before it is dead-lettered.
MAX_ATTEMPTS = 5


class BrokerUnavailableError(TailorError):
    """The broker did not confirm a publish (unreachable, refused, timed out)."""


@dataclass(frozen=True)
class Message:
    """One delivered message: its idempotency key, its body (JSON bytes) and how many times it
    has been delivered, this delivery included; ``tag`` is the implementation's handle."""

    message_id: str
    body: bytes
    attempts: int = 1
    tag: Any = None


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed every attempt, with the last failure's reason."""

    message_id: str
    body: bytes
    reason: str
    attempts: int
    dead_at: datetime


#: ``batch -> {message_id: reason}`` for the messages that failed; every other one is acked.
Handler = Callable[[list[Message]], dict[str, str]]


class Broker(ABC):
    """A durable queue of events with at-least-once delivery and a dead-letter store."""

    #: how the broker is named in logs, metrics and `tailor consume` (``embedded``, ``rabbitmq``,
    #: ``kafka``)
    kind: str = "broker"

    @abstractmethod
    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(message_id, body)`` pairs durably; returns only once the broker confirmed
        every one of them, else raises :class:`BrokerUnavailableError` (nothing confirmed may be
        assumed then: the caller keeps or spools them all)."""

    @abstractmethod
    def consume(
        self,
        handler: Handler,
        *,
        stop: threading.Event,
        batch_size: int = 500,
        max_wait_seconds: float = 0.2,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """Deliver batches of at most ``batch_size`` messages (waiting at most
        ``max_wait_seconds`` to fill one) to ``handler`` until ``stop`` is set; acknowledge each
        message only after the handler returned without naming it; a named message is delivered
        again later, or dead-lettered with its reason once it failed ``max_attempts`` times. An
        exception from the handler fails the whole batch with its text as the reason."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters first, at most ``limit``."""

    @abstractmethod
    def requeue_dead_letters(self) -> int:
        """Send every dead letter back to the queue with a fresh attempt count; the number sent."""

    @abstractmethod
    def depth(self) -> int:
        """Messages waiting or in flight (not yet acknowledged)."""

    def close(self) -> None:  # noqa: B027 - optional for implementations without connections
        """Release connections; the broker's data stays."""
