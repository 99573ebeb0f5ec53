"""What the server brokers (:mod:`features.broker.rabbit`, :mod:`features.broker.kafka`) share:
the asyncio loop thread behind the sync contract, the headers a failed message carries, and the
two decisions of every consumed batch: which messages the handler gets, and what becomes of each
one afterwards (acknowledged, sent again with one more attempt, or dead-lettered with its reason).

The contract is synchronous (collectors, ``tailor consume``) while the clients (FastStream,
aio-pika, aiokafka) are asyncio: one event loop runs in a daemon thread per broker; sync methods
submit coroutines to it and wait with a bound (``run_coroutine_threadsafe``), so a broker can be
used from any thread, including BentoML's workers and the consumer's own thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from features.broker.contract import Broker, BrokerUnavailableError, Handler, Message
from models.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Raw = TypeVar("Raw")

#: Failed deliveries so far (set when a failed message is sent again, and on a dead letter).
ATTEMPTS_HEADER = "x-tailor-attempts"
#: The last failure's reason on a message sent again.
ERROR_HEADER = "x-tailor-error"
#: Why a dead letter is dead, and since when (ISO 8601, UTC).
REASON_HEADER = "x-tailor-reason"
DEAD_AT_HEADER = "x-tailor-dead-at"
#: Longest reason kept in a header.
MAX_REASON = 4000

#: ``(message_id, body, headers)``: what a server broker publishes.
Outgoing = tuple[str, bytes, dict[str, Any] | None]


def dead_queue_name(queue_name: str) -> str:
    """Where ``queue_name``'s dead letters go (a queue on RabbitMQ, a topic on Kafka)."""
    return f"{queue_name}.dead"


def text(value: Any) -> str:
    """A header or id as text (clients hand bytes or str)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class LoopThread:
    """An asyncio event loop running in a daemon thread; :meth:`run` waits for a coroutine."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    @staticmethod
    async def _cancel_tasks() -> None:
        """Cancel what the client left running (a reconnect attempt) and let it unwind."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=2.0) if tasks else None

    def close(self) -> None:
        try:
            self.run(self._cancel_tasks(), 5.0)
        except Exception:  # closing anyway
            logger.debug("cancelling the client's tasks", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5.0)
        if not self.thread.is_alive():
            self.loop.close()


class ServerBroker(Broker):
    """A broker whose asyncio client runs on a :class:`LoopThread`: :meth:`_call` runs a
    coroutine there within a bound, :meth:`close` disconnects and stops the loop."""

    #: the server's name in errors (``RabbitMQ``, ``Kafka``)
    server: str = "broker"

    def __init__(self, loop_name: str) -> None:
        self._loop = LoopThread(loop_name)
        self._closed = False

    def _where(self) -> str:
        """Where the broker is, for errors (never with a password)."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Release the client's connections (on the loop)."""

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, doing: str) -> T:
        """Run ``coro`` on the loop; any failure to reach the server is BrokerUnavailableError."""
        if self._closed:
            coro.close()
            raise BrokerUnavailableError(f"{self.server} broker at {self._where()} is closed")
        try:
            return self._loop.run(coro, timeout)
        except (ConfigError, BrokerUnavailableError):
            raise
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"{self.server} at {self._where()} did not answer within {timeout:g} s ({doing})"
            ) from exc
        except Exception as exc:
            raise BrokerUnavailableError(
                f"{self.server} at {self._where()} failed ({doing}): {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._loop.run(self._disconnect(), 10.0)
        except Exception:
            logger.debug("closing the %s connection", self.server, exc_info=True)
        self._closed = True
        self._loop.close()


def handle(handler: Handler, batch: list[Message], max_attempts: int) -> dict[str, str]:
    """Run ``handler`` on a delivered batch; ``{message_id: reason}`` of every failed message.

    A message already delivered more often than ``max_attempts`` (it killed or stalled its
    consumer each time) fails without another try; an exception from the handler fails every
    message it was given, with the exception as the reason."""
    failures = {
        message.message_id: f"delivered {message.attempts - 1} times without an acknowledgement"
        for message in batch
        if message.attempts > max_attempts
    }
    todo = [message for message in batch if message.message_id not in failures]
    if todo:
        try:
            failures |= handler(todo)
        except Exception as exc:  # the whole batch failed: each message says why
            reason = f"{type(exc).__name__}: {exc}"
            failures |= {message.message_id: reason for message in todo}
    return failures


@dataclass
class Settlement(Generic[Raw]):
    """What becomes of each delivery of a handled batch: ``done`` are finished, ``again`` go
    back to the queue with one more attempt, ``dead`` go to the dead letters; each of the last
    two pairs the delivery with the copy to publish (the copy is confirmed before the delivery is
    acknowledged: a crash in between leaves two copies, never none)."""

    done: list[Raw] = field(default_factory=list)
    again: list[tuple[Raw, Outgoing]] = field(default_factory=list)
    dead: list[tuple[Raw, Outgoing]] = field(default_factory=list)


def settlement(
    batch: list[tuple[Raw, Message]], failures: dict[str, str], max_attempts: int
) -> Settlement[Raw]:
    """Sort a handled batch by ``failures`` (see :class:`Settlement`)."""
    plan: Settlement[Raw] = Settlement()
    now = datetime.now(UTC).isoformat()
    for raw, message in batch:
        reason = failures.get(message.message_id)
        if reason is None:
            plan.done.append(raw)
        elif message.attempts >= max_attempts:
            headers = {
                REASON_HEADER: reason[:MAX_REASON],
                ATTEMPTS_HEADER: message.attempts,
                DEAD_AT_HEADER: now,
            }
            plan.dead.append((raw, (message.message_id, message.body, headers)))
        else:
            headers = {ATTEMPTS_HEADER: message.attempts, ERROR_HEADER: reason[:MAX_REASON]}
            plan.again.append((raw, (message.message_id, message.body, headers)))
    return plan


def dead_at(value: Any) -> datetime:
    """A dead letter's time from its header (the epoch when it has none)."""
    return datetime.fromisoformat(text(value)) if value else datetime.fromtimestamp(0, UTC)
