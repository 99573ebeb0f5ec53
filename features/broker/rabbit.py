"""The RabbitMQ broker (scale profile) through FastStream, behind the sync :class:`Broker` contract.

What RabbitMQ holds: a durable **quorum** queue ``<queue>`` (replicated, fsync'd before a confirm)
and its dead letters in the durable queue ``<queue>.dead`` (classic: see ``_queue``). The main
queue names the dead queue as its own dead-letter target (``x-dead-letter-strategy:
at-least-once``), so a message the broker itself would drop (RabbitMQ 4's default delivery limit,
a length limit a site adds by policy) lands there too, with RabbitMQ's reason (``x-death``).

- **Publish** (FastStream ``RabbitBroker.publish``) runs on a channel with publisher confirms and
  ``mandatory`` + ``on_return_raises``: :meth:`RabbitBroker.publish` returns only once RabbitMQ
  acknowledged every message of the batch (a message no queue took is an error, not a silent
  drop); the batch is sent pipelined (up to ``MAX_IN_FLIGHT`` unconfirmed at once). Unreachable,
  refused, returned or not confirmed within ``publish_timeout`` seconds:
  :class:`~features.broker.contract.BrokerUnavailableError` (wrap it in
  :class:`~features.broker.spool.SpooledBroker` to accept events anyway).
- **Consume**: manual acknowledgements sent only after the handler returned; prefetch
  ``2 × batch_size`` (one batch in the handler, the next one arriving). A failed message is
  published again at the queue's tail with its attempt count in the header ``x-tailor-attempts``
  (and the reason in ``x-tailor-error``), then acknowledged; after ``max_attempts`` it is published
  to ``<queue>.dead`` with the reason in ``x-tailor-reason`` instead. Deliveries the consumer never
  finished (connection dropped, process killed) come back from RabbitMQ with ``x-delivery-count``
  and count as attempts too, so a message that keeps killing its consumer ends in the dead letters
  ("delivered N times without an acknowledgement") instead of looping for ever.
- **Reconnects**: FastStream connects with aio-pika's robust connection, which reopens the
  connection, channels and consumers after RabbitMQ closed them (``reconnect_interval``). Messages
  delivered on the lost channel cannot be acknowledged any more (their acks fail and are dropped);
  RabbitMQ delivers them again, and the handler's idempotency by ``message_id`` makes that a no-op.

Why aio-pika in two places: FastStream's RabbitMQ subscriber hands one message at a time to a
handler and has no batch mode (its Kafka subscriber has ``batch=True``), while the contract hands
the handler a batch (the event log writes one Parquet part per append: per-message appends would
write 20,000 files for 20,000 events). So consumption uses the aio-pika queue object of the
connection FastStream opened (``await broker.connect()`` returns it) with its own prefetch-limited
channel; peeking at dead letters uses ``basic.get`` on it likewise. Everything else (connection,
declarations, publishing with confirms) is FastStream.

The sync contract runs on FastStream's asyncio through :class:`~features.broker.remote.LoopThread`;
the Kafka broker beside this one (:mod:`features.broker.kafka`) shares it and the settlement of
failed messages (:mod:`features.broker.remote`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from faststream.rabbit import RabbitBroker as FastStreamRabbitBroker
from faststream.rabbit import RabbitQueue
from faststream.rabbit.schemas import Channel, QueueType

from features.broker.contract import (
    MAX_ATTEMPTS,
    BrokerUnavailableError,
    DeadLetter,
    Handler,
    Message,
)
from features.broker.remote import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    REASON_HEADER,
    Outgoing,
    ServerBroker,
    dead_at,
    dead_queue_name,
    handle,
    settlement,
    text,
)
from models.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Unconfirmed publishes in flight at once (pipelined on one channel).
MAX_IN_FLIGHT = 2000
#: A consume batch is handed to the handler once no delivery came for this long (see _take).
LINGER_SECONDS = 0.005
#: RabbitMQ's count of earlier deliveries of this copy that were not acknowledged (quorum queues).
DELIVERY_COUNT_HEADER = "x-delivery-count"
SCHEMES = ("amqp", "amqps")


def _attempts(raw: AbstractIncomingMessage) -> int:
    """This delivery's attempt number: handler failures recorded on republish, plus deliveries
    RabbitMQ made of this copy that were never acknowledged, plus this one."""
    headers = raw.headers or {}
    failed = int(headers.get(ATTEMPTS_HEADER, 0) or 0)
    unfinished = int(headers.get(DELIVERY_COUNT_HEADER, 0) or 0)
    return failed + unfinished + 1


class RabbitBroker(ServerBroker):
    """The queue ``queue_name`` on the RabbitMQ at ``url`` (``amqp://user:pass@host:5672/vhost``).

    Nothing is contacted at construction: the first call connects (within ``connect_timeout``)
    and declares both queues; an unreachable broker raises :class:`BrokerUnavailableError` then,
    and the next call tries again.
    """

    kind = "rabbitmq"
    server = "RabbitMQ"

    def __init__(
        self,
        url: str,
        queue_name: str = "tailor.events",
        *,
        publish_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ConfigError(f"RabbitMQ URL scheme {scheme!r}: allowed {', '.join(SCHEMES)}")
        if not queue_name or len(queue_name.encode()) > 250:
            raise ConfigError(f"queue name {queue_name!r}: 1 to 250 bytes")
        self.url = url
        self.queue_name = queue_name
        self.dead_queue_name = dead_queue_name(queue_name)
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        super().__init__(f"rabbit-{queue_name}")
        self._broker: FastStreamRabbitBroker | None = None
        self._connection: AbstractRobustConnection | None = None
        self._connect_lock: asyncio.Lock | None = None  # created on the loop

    # -- plumbing -------------------------------------------------------------------------
    def _where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'} queue {self.queue_name}"

    def _queue(self, name: str) -> RabbitQueue:
        if name == self.dead_queue_name:
            # classic (durable, persistent messages): reading dead letters takes them with
            # basic.get and returns them, which a quorum queue counts as a failed delivery and,
            # under RabbitMQ 4's default delivery limit, would drop after 20 readings
            return RabbitQueue(name, queue_type=QueueType.CLASSIC, durable=True)
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_queue_name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        return RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True, arguments=arguments)

    async def _connect(self) -> AbstractRobustConnection:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._connection is not None:
                return self._connection
            broker = FastStreamRabbitBroker(
                self.url,
                default_channel=Channel(publisher_confirms=True, on_return_raises=True),
                reconnect_interval=self.reconnect_interval,
                timeout=self.connect_timeout,
                logger=logger,
                log_level=logging.DEBUG,
            )
            try:
                # aio-pika's own timeout (``timeout=`` above) ends its connecting task after a
                # failed first attempt; this bound only backs it up, so it is a little longer
                connection = await asyncio.wait_for(broker.connect(), self.connect_timeout + 1)
                # the dead queue first: the main queue names it as its dead-letter target
                await broker.declare_queue(self._queue(self.dead_queue_name))
                await broker.declare_queue(self._queue(self.queue_name))
            except BaseException:
                await asyncio.shield(self._stop(broker))
                raise
            self._broker, self._connection = broker, connection
            return connection

    @staticmethod
    async def _stop(broker: FastStreamRabbitBroker) -> None:
        try:
            await broker.stop()
        except Exception:  # already broken: nothing left to release
            logger.debug("closing a failed RabbitMQ connection", exc_info=True)

    # -- publishing -----------------------------------------------------------------------
    async def _publish_one(
        self, queue_name: str, message_id: str, body: bytes, headers: dict[str, Any] | None
    ) -> None:
        assert self._broker is not None
        confirm = await self._broker.publish(
            body,
            queue=queue_name,
            message_id=message_id,
            headers=headers,
            persist=True,
            mandatory=True,
            content_type="application/json",
        )
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise BrokerUnavailableError(f"RabbitMQ did not confirm {message_id!r}: {confirm!r}")

    async def _publish_all(self, queue_name: str, messages: Sequence[Outgoing]) -> None:
        await self._connect()
        for start in range(0, len(messages), MAX_IN_FLIGHT):
            chunk = messages[start : start + MAX_IN_FLIGHT]
            sends = (self._publish_one(queue_name, mid, body, h) for mid, body, h in chunk)
            try:
                await asyncio.wait_for(asyncio.gather(*sends), self.publish_timeout)
            except TimeoutError as exc:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {self._where()} did not confirm {len(chunk)} messages within "
                    f"{self.publish_timeout:g} s"
                ) from exc

    def _publish_bound(self, count: int) -> float:
        """Seconds a publish of ``count`` messages may take in all: connecting, then
        ``publish_timeout`` for each ``MAX_IN_FLIGHT`` of them."""
        return self.connect_timeout + self.publish_timeout * (1 + count // MAX_IN_FLIGHT)

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not messages:
            return
        items = [(message_id, bytes(body), None) for message_id, body in messages]
        self._call(
            self._publish_all(self.queue_name, items), self._publish_bound(len(items)), "publish"
        )

    # -- consuming ------------------------------------------------------------------------
    async def _open_consumer(
        self, inbox: queue.SimpleQueue[AbstractIncomingMessage], prefetch: int
    ) -> AbstractChannel:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        rabbit_queue = await channel.declare_queue(self.queue_name, passive=True)

        async def deliver(raw: AbstractIncomingMessage) -> None:
            inbox.put(raw)

        await rabbit_queue.consume(deliver, no_ack=False)
        return channel

    async def _close_channel(self, channel: AbstractChannel) -> None:
        if not channel.is_closed:
            await channel.close()  # RabbitMQ returns every unacknowledged delivery

    async def _settle(
        self,
        batch: list[tuple[AbstractIncomingMessage, Message]],
        failures: dict[str, str],
        max_attempts: int,
    ) -> None:
        raw_batch = [raw for raw, _ in batch]
        plan = settlement(batch, failures, max_attempts)
        done = plan.done
        # the copy is confirmed before the original is acknowledged: a crash in between
        # leaves two copies (one more delivery), never none
        kept = 0
        for moved, target in ((plan.again, self.queue_name), (plan.dead, self.dead_queue_name)):
            if not moved:
                continue
            originals = [raw for raw, _ in moved]
            copies = [copy for _, copy in moved]
            try:
                await self._publish_all(target, copies)
            except Exception:
                logger.warning(
                    "could not republish %d failed messages to %s; RabbitMQ will deliver them "
                    "again",
                    len(copies),
                    target,
                    exc_info=True,
                )
                kept += len(originals)
                continue
            done.extend(originals)
        if not kept:
            # Every delivery of the batch is settled: one ``multiple`` ack per channel (a frame
            # per batch, not per message). Delivery tags grow within a channel and start at 1 on
            # a reopened one, so a tag that does not grow marks the next channel's deliveries.
            # Everything before them on that channel was in this or an earlier, settled batch.
            lasts = [
                raw
                for raw, following in zip(raw_batch, [*raw_batch[1:], None], strict=True)
                if following is None or following.delivery_tag <= raw.delivery_tag
            ]
            await self._ack(lasts, multiple=True)
        else:  # some stay unacknowledged on purpose: one by one
            await self._ack(done, multiple=False)

    @staticmethod
    async def _ack(deliveries: list[AbstractIncomingMessage], *, multiple: bool) -> None:
        for raw in deliveries:
            try:
                await raw.ack(multiple=multiple)
            except Exception:  # the channel it came on is gone: RabbitMQ delivers it again
                logger.debug("ack of %s dropped (channel closed)", raw.message_id)

    @staticmethod
    def _take(
        inbox: queue.SimpleQueue[AbstractIncomingMessage], batch_size: int, max_wait: float
    ) -> list[AbstractIncomingMessage]:
        """Up to ``batch_size`` deliveries: waits ``max_wait`` for the first, then takes what
        keeps arriving, until nothing came for :data:`LINGER_SECONDS` or ``max_wait`` after the
        first. Under load the inbox holds a batch already (deliveries arrive while the handler
        works); when the queue is idle an event is handled after a few ms, not ``max_wait``
        (issue #11: event → visible in ``/recommend``)."""
        try:
            first = inbox.get(timeout=max_wait)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + max_wait
        while len(batch) < batch_size:
            try:
                batch.append(inbox.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(inbox.get(timeout=min(left, LINGER_SECONDS)))
            except queue.Empty:
                break
        return batch

    def consume(
        self,
        handler: Handler,
        *,
        stop: threading.Event,
        batch_size: int = 500,
        max_wait_seconds: float = 0.2,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """See :meth:`Broker.consume`. While RabbitMQ is unreachable at start the consumer keeps
        trying (every ``reconnect_interval``) until ``stop`` is set; once connected, aio-pika's
        robust connection restores it after a drop."""
        inbox: queue.SimpleQueue[AbstractIncomingMessage] = queue.SimpleQueue()
        channel: AbstractChannel | None = None
        while channel is None and not stop.is_set():
            try:
                channel = self._call(
                    self._open_consumer(inbox, 2 * batch_size),
                    self.connect_timeout + self.publish_timeout,
                    "start consuming",
                )
            except BrokerUnavailableError as exc:
                logger.warning("%s; trying again in %g s", exc, self.reconnect_interval)
                stop.wait(self.reconnect_interval)
        if channel is None:
            return
        try:
            while not stop.is_set():
                raw_batch = self._take(inbox, batch_size, max_wait_seconds)
                if not raw_batch:
                    continue
                batch = [
                    (
                        raw,
                        Message(
                            message_id=text(raw.message_id or ""),
                            body=raw.body,
                            attempts=_attempts(raw),
                            tag=raw.delivery_tag,
                        ),
                    )
                    for raw in raw_batch
                ]
                failures = handle(handler, [message for _, message in batch], max_attempts)
                try:
                    self._call(
                        self._settle(batch, failures, max_attempts),
                        self._publish_bound(len(batch)),
                        "acknowledge",
                    )
                except BrokerUnavailableError as exc:  # delivered again; the handler is idempotent
                    logger.warning("%s; the batch will be delivered again", exc)
        finally:
            try:
                self._call(self._close_channel(channel), self.publish_timeout, "stop consuming")
            except BrokerUnavailableError:
                logger.debug("consumer channel already gone", exc_info=True)

    # -- dead letters and depth -----------------------------------------------------------
    async def _peek_dead(self, limit: int) -> list[DeadLetter]:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=False)
        letters: list[DeadLetter] = []
        try:
            dead = await channel.declare_queue(self.dead_queue_name, passive=True)
            while len(letters) < limit:
                raw = await dead.get(no_ack=False, fail=False)
                if raw is None:
                    break
                headers = raw.headers or {}
                letters.append(
                    DeadLetter(
                        message_id=text(raw.message_id or ""),
                        body=raw.body,
                        reason=text(headers.get(REASON_HEADER, _broker_reason(headers))),
                        attempts=int(headers.get(ATTEMPTS_HEADER, 0) or 0),
                        dead_at=dead_at(headers.get(DEAD_AT_HEADER)),
                    )
                )
        finally:
            await channel.close()  # unacknowledged: every peeked letter stays in the queue
        return letters

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self._call(
            self._peek_dead(limit), self.connect_timeout + self.publish_timeout, "read dead letters"
        )

    async def _requeue(self) -> int:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=False)
        moved = 0
        try:
            dead = await channel.declare_queue(self.dead_queue_name, passive=True)
            while True:
                raw = await dead.get(no_ack=False, fail=False)
                if raw is None:
                    break
                await self._publish_all(self.queue_name, [(text(raw.message_id), raw.body, None)])
                await raw.ack()  # only after the copy in the main queue was confirmed
                moved += 1
        finally:
            await channel.close()
        return moved

    def requeue_dead_letters(self) -> int:
        depth = self._dead_depth()
        return self._call(
            self._requeue(), self.connect_timeout + self.publish_timeout + depth / 500, "requeue"
        )

    async def _message_count(self, name: str) -> int:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(name, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await channel.close()

    def depth(self) -> int:
        """Messages waiting in the queue (RabbitMQ's count of ready messages; deliveries not yet
        acknowledged by a consumer are not counted)."""
        return self._call(
            self._message_count(self.queue_name), self.connect_timeout + 5, "read the depth"
        )

    def _dead_depth(self) -> int:
        return self._call(
            self._message_count(self.dead_queue_name), self.connect_timeout + 5, "read the depth"
        )

    # -- lifecycle ------------------------------------------------------------------------
    async def _delete(self) -> None:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=False)
        try:
            for name in (self.queue_name, self.dead_queue_name):
                await channel.queue_delete(name)
        finally:
            await channel.close()

    def delete_queues(self) -> None:
        """Delete the queue and its dead letters with every message in them (tests, and taking
        a workspace's queue out of service)."""
        self._call(self._delete(), self.connect_timeout + 10, "delete the queues")

    async def _disconnect(self) -> None:
        broker, self._broker, self._connection = self._broker, None, None
        if broker is not None:
            await self._stop(broker)


def _broker_reason(headers: dict[str, Any]) -> str:
    """The reason RabbitMQ gave when it dead-lettered a message itself (``x-death``)."""
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths, list | tuple):
        first = deaths[0]
        return f"dead-lettered by RabbitMQ: {text(first.get('reason', 'unknown'))}"
    return "dead-lettered (no reason recorded)"
