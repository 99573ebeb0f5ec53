"""The Kafka broker (``TAILOR_BROKER_URL=kafka://host:9092[,host:9092]``) through aiokafka, the
client FastStream's Kafka support is built on, behind the sync :class:`Broker` contract.

What Kafka holds: the topic ``<queue>`` and its dead letters in the topic ``<queue>.dead``, both
created on first use when missing (one partition, replicated on up to 3 brokers; a site that wants
more partitions creates the topics beforehand and Tailor keeps them), and two consumer groups:
``tailor.<queue>`` (the consumers' committed offsets) and ``tailor.<queue>.dead`` (how far the dead
letters were requeued).

- **Publish**: an idempotent producer with ``acks=all``: :meth:`KafkaBroker.publish` returns only
  once every in-sync replica wrote every message of the batch (Kafka's confirm); the producer's
  retries cannot write a message twice. The message id is the record's key. Unreachable, refused
  or not confirmed within ``publish_timeout`` seconds:
  :class:`~features.broker.contract.BrokerUnavailableError` (wrap it in
  :class:`~features.broker.spool.SpooledBroker` to accept events anyway).
- **Consume**: a member of the consumer group with auto-commit off; each fetch is bounded by the
  batch size (``max_records``); the offsets are committed only after the handler returned, so a
  consumer killed mid-batch leaves the batch to the next member of the group (after the dead
  member's session timeout, 10 s), and the handler's idempotency by ``message_id`` makes the second
  delivery a no-op. A failed message is published again at the topic's end with its attempt count
  in the header ``x-tailor-attempts`` (and the reason in ``x-tailor-error``); after
  ``max_attempts`` it goes to ``<queue>.dead`` with the reason in ``x-tailor-reason`` instead. The
  copies are confirmed before the offsets are committed; if that fails, the consumer seeks back and
  the batch comes again. Kafka keeps no delivery count, so unlike RabbitMQ a message that kills its
  consumer every time is not dead-lettered by itself.
- **Reconnects**: aiokafka reconnects to the cluster on its own; a fetch or commit that fails
  meanwhile is retried (the batch comes again after a failed commit).
- **Dead letters**: :meth:`dead_letters` reads ``<queue>.dead`` from the dead group's committed
  offset without committing; :meth:`requeue_dead_letters` publishes them to ``<queue>`` with a
  fresh attempt count, then commits the dead group past them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

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

SCHEMES = ("kafka",)
DEFAULT_PORT = 9092
#: URL options (``kafka://host:9092?idempotence=false``) and what each accepts.
OPTIONS = {"idempotence": ("true", "false")}
#: Kafka's own limit on topic names.
MAX_TOPIC = 249


def parse_url(url: str) -> tuple[list[str], dict[str, str]]:
    """``kafka://h1:9092,h2:9092?idempotence=false`` → ``(["h1:9092", "h2:9092"], options)``;
    :class:`ConfigError` naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"Kafka URL scheme {parts.scheme!r}: allowed {', '.join(SCHEMES)}")
    servers = [host.strip() for host in parts.netloc.split(",") if host.strip()]
    if not servers:
        raise ConfigError(f"Kafka URL {url!r} names no broker: kafka://host:9092[,host:9092]")
    if "@" in parts.netloc:
        raise ConfigError("Kafka URL: credentials (SASL) are not supported; allowed: host:port")
    hosts = []
    for server in servers:
        host, _, port = server.rpartition(":") if ":" in server else (server, "", "")
        if port and not port.isdigit():
            raise ConfigError(f"Kafka URL: port {port!r} of {server!r} is not a number")
        hosts.append(f"{host}:{port or DEFAULT_PORT}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in options.items():
        if name not in OPTIONS or value.lower() not in OPTIONS[name]:
            allowed = "; ".join(f"{k}={'|'.join(v)}" for k, v in OPTIONS.items())
            raise ConfigError(f"Kafka URL option {name}={value!r}: allowed {allowed}")
    return hosts, {name: value.lower() for name, value in options.items()}


def _headers(headers: dict[str, Any] | None) -> list[tuple[str, bytes]]:
    return [(name, str(value).encode()) for name, value in (headers or {}).items()]


def _header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return text(value)
    return None


def _attempts(record: ConsumerRecord) -> int:
    """This delivery's attempt number: failures recorded on republish, plus this one."""
    return int(_header(record, ATTEMPTS_HEADER) or 0) + 1


def _offsets_after(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the last of ``records`` (what a commit stores)."""
    after: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        after[tp] = max(after.get(tp, 0), record.offset + 1)
    return after


class KafkaBroker(ServerBroker):
    """The topic ``topic`` on the Kafka cluster at ``url`` (``kafka://host:9092[,host:9092]``).

    Nothing is contacted at construction: the first call connects (within ``connect_timeout``)
    and creates both topics when missing; an unreachable cluster raises
    :class:`BrokerUnavailableError` then, and the next call tries again.
    """

    kind = "kafka"
    server = "Kafka"

    def __init__(
        self,
        url: str,
        topic: str = "tailor.events",
        *,
        publish_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 1.0,
        session_timeout: float = 10.0,
    ) -> None:
        self.servers, options = parse_url(url)
        if not topic or len(topic) > MAX_TOPIC - len(".dead"):
            raise ConfigError(f"topic name {topic!r}: 1 to {MAX_TOPIC - len('.dead')} characters")
        self.url = url
        self.topic = topic
        self.dead_topic = dead_queue_name(topic)
        self.group = f"tailor.{topic}"
        self.dead_group = f"tailor.{self.dead_topic}"
        #: off only for Kafka-compatible servers without idempotent producers (``InitProducerId``)
        self.idempotence = options.get("idempotence", "true") == "true"
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        self.session_timeout = session_timeout
        super().__init__(f"kafka-{topic}")
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._connect_lock: asyncio.Lock | None = None  # created on the loop

    # -- plumbing -------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{','.join(self.servers)} topic {self.topic}"

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.servers,
            "client_id": "tailor",
            "request_timeout_ms": int(1000 * max(self.publish_timeout, self.connect_timeout)),
            "retry_backoff_ms": 100,
            "connections_max_idle_ms": 540_000,
        }

    async def _ensure_topics(self, admin: AIOKafkaAdminClient) -> None:
        cluster = await admin.describe_cluster()
        replicas = max(1, min(3, len(cluster.get("brokers", []))))
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(n, 1, replicas) for n in (self.dead_topic, self.topic) if n not in existing
        ]
        if not wanted:
            return
        answer = await admin.create_topics(wanted)
        for name, code, *_ in answer.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"creating topic {name}")

    async def _connect(self) -> AIOKafkaProducer:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._producer is not None:
                return self._producer
            admin = AIOKafkaAdminClient(**self._client_options())
            producer = AIOKafkaProducer(
                **self._client_options(),
                acks="all",
                enable_idempotence=self.idempotence,
                linger_ms=2,
            )
            try:
                await asyncio.wait_for(admin.start(), self.connect_timeout)
                await asyncio.wait_for(self._ensure_topics(admin), self.connect_timeout)
                await asyncio.wait_for(producer.start(), self.connect_timeout)
            except BaseException:
                await asyncio.shield(self._stop_clients(admin, producer))
                raise
            self._admin, self._producer = admin, producer
            return producer

    @staticmethod
    async def _stop_clients(*clients: Any) -> None:
        for client in clients:
            try:
                await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
            except Exception:  # already broken: nothing left to release
                logger.debug("closing a Kafka client", exc_info=True)

    # -- publishing -----------------------------------------------------------------------
    async def _publish_all(self, topic: str, messages: Sequence[Outgoing]) -> None:
        producer = await self._connect()

        async def send_all() -> None:
            sent = [
                await producer.send(topic, body, key=mid.encode(), headers=_headers(headers))
                for mid, body, headers in messages
            ]
            await asyncio.gather(*sent)  # every record acknowledged by all in-sync replicas

        try:
            await asyncio.wait_for(send_all(), self._publish_bound(len(messages)))
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"Kafka at {self._where()} did not confirm {len(messages)} messages within "
                f"{self._publish_bound(len(messages)):g} s"
            ) from exc

    def _publish_bound(self, count: int) -> float:
        """Seconds a publish of ``count`` messages may take once connected."""
        return self.publish_timeout * (1 + count // 10_000)

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not messages:
            return
        items = [(message_id, bytes(body), None) for message_id, body in messages]
        self._call(
            self._publish_all(self.topic, items),
            self.connect_timeout * 3 + self._publish_bound(len(items)),
            "publish",
        )

    # -- consuming ------------------------------------------------------------------------
    async def _open_consumer(self, batch_size: int) -> AIOKafkaConsumer:
        await self._connect()
        consumer = AIOKafkaConsumer(
            self.topic,
            **self._client_options(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            session_timeout_ms=int(self.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(self.session_timeout * 1000 / 3)),
        )
        try:  # joining the group may wait for a rebalance: up to a session timeout
            await asyncio.wait_for(consumer.start(), self.connect_timeout + self.session_timeout)
        except BaseException:
            await asyncio.shield(self._stop_clients(consumer))
            raise
        return consumer

    @staticmethod
    async def _fetch(
        consumer: AIOKafkaConsumer, batch_size: int, max_wait: float
    ) -> list[ConsumerRecord]:
        fetched = await consumer.getmany(timeout_ms=int(max_wait * 1000), max_records=batch_size)
        return [record for records in fetched.values() for record in records]

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        batch: list[tuple[ConsumerRecord, Message]],
        failures: dict[str, str],
        max_attempts: int,
    ) -> None:
        plan = settlement(batch, failures, max_attempts)
        for moved, topic in ((plan.again, self.topic), (plan.dead, self.dead_topic)):
            if moved:  # confirmed before the commit: a crash in between gives two copies
                await self._publish_all(topic, [copy for _, copy in moved])
        await consumer.commit(_offsets_after([record for record, _ in batch]))

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord]) -> None:
        """Fetch ``records`` again (those of partitions this consumer still owns)."""
        owned = consumer.assignment()
        firsts: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            firsts[tp] = min(firsts.get(tp, record.offset), record.offset)
        for tp, offset in firsts.items():
            if tp in owned:
                consumer.seek(tp, offset)

    def consume(
        self,
        handler: Handler,
        *,
        stop: threading.Event,
        batch_size: int = 500,
        max_wait_seconds: float = 0.2,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """See :meth:`Broker.consume`. While Kafka is unreachable at start the consumer keeps
        trying (every ``reconnect_interval``) until ``stop`` is set."""
        consumer: AIOKafkaConsumer | None = None
        while consumer is None and not stop.is_set():
            try:
                consumer = self._call(
                    self._open_consumer(batch_size),
                    self.connect_timeout * 4 + self.session_timeout,
                    "start consuming",
                )
            except BrokerUnavailableError as exc:
                logger.warning("%s; trying again in %g s", exc, self.reconnect_interval)
                stop.wait(self.reconnect_interval)
        if consumer is None:
            return
        try:
            while not stop.is_set():
                try:
                    records = self._call(
                        self._fetch(consumer, batch_size, max_wait_seconds),
                        max_wait_seconds + self.publish_timeout,
                        "fetch",
                    )
                except BrokerUnavailableError as exc:
                    logger.warning("%s; trying again in %g s", exc, self.reconnect_interval)
                    stop.wait(self.reconnect_interval)
                    continue
                if not records:
                    continue
                batch = [
                    (
                        record,
                        Message(
                            message_id=text(record.key or b""),
                            body=record.value or b"",
                            attempts=_attempts(record),
                            tag=(record.partition, record.offset),
                        ),
                    )
                    for record in records
                ]
                failures = handle(handler, [message for _, message in batch], max_attempts)
                try:
                    self._call(
                        self._settle(consumer, batch, failures, max_attempts),
                        self.connect_timeout + self._publish_bound(len(batch)),
                        "commit",
                    )
                except BrokerUnavailableError as exc:  # delivered again; the handler is idempotent
                    logger.warning("%s; the batch will be delivered again", exc)
                    self._rewind(consumer, records)
        finally:
            try:  # leaves the group at once: its partitions go to the other members
                self._call(self._stop_clients(consumer), self.publish_timeout, "stop consuming")
            except BrokerUnavailableError:
                logger.debug("consumer already gone", exc_info=True)

    # -- dead letters and depth -----------------------------------------------------------
    async def _partitions(self, topic: str) -> list[TopicPartition]:
        await self._connect()
        assert self._admin is not None
        (described,) = await self._admin.describe_topics([topic])
        if described.get("error_code"):
            raise UnknownTopicOrPartitionError(f"topic {topic}")
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]

    async def _reader(self, topic: str, group: str) -> tuple[AIOKafkaConsumer, dict]:
        """A consumer of ``topic`` that joins no group but reads and commits ``group``'s offsets,
        positioned at them; and the end offset of each partition."""
        partitions = await self._partitions(topic)
        reader = AIOKafkaConsumer(
            **self._client_options(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await reader.start()
        try:
            reader.assign(partitions)
            ends = await reader.end_offsets(partitions)
            for tp in partitions:
                await reader.position(tp)  # the committed offset, else the beginning
        except BaseException:
            await asyncio.shield(self._stop_clients(reader))
            raise
        return reader, ends

    async def _read(self, topic: str, group: str, limit: int | None) -> list[ConsumerRecord]:
        """``group``'s unread records of ``topic`` up to the end of each partition (at most
        ``limit``), without committing."""
        reader, ends = await self._reader(topic, group)
        records: list[ConsumerRecord] = []
        try:
            while limit is None or len(records) < limit:
                left = [tp for tp, end in ends.items() if await reader.position(tp) < end]
                if not left:
                    break
                fetched = await reader.getmany(*left, timeout_ms=1000)
                for tp, got in fetched.items():
                    records += [r for r in got if r.offset < ends[tp]]
        finally:
            await self._stop_clients(reader)
        records.sort(key=lambda record: (record.timestamp, record.partition, record.offset))
        return records if limit is None else records[:limit]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        records = self._call(
            self._read(self.dead_topic, self.dead_group, limit),
            self.connect_timeout * 3 + self.publish_timeout,
            "read dead letters",
        )
        return [
            DeadLetter(
                message_id=text(record.key or b""),
                body=record.value or b"",
                reason=_header(record, REASON_HEADER) or "dead-lettered (no reason recorded)",
                attempts=int(_header(record, ATTEMPTS_HEADER) or 0),
                dead_at=dead_at(_header(record, DEAD_AT_HEADER)),
            )
            for record in records
        ]

    async def _requeue(self) -> int:
        reader, ends = await self._reader(self.dead_topic, self.dead_group)
        moved = 0
        try:
            while True:
                left = [tp for tp, end in ends.items() if await reader.position(tp) < end]
                if not left:
                    break
                fetched = await reader.getmany(*left, timeout_ms=1000, max_records=1000)
                records = [r for tp, got in fetched.items() for r in got if r.offset < ends[tp]]
                if not records:
                    continue
                await self._publish_all(
                    self.topic, [(text(r.key or b""), r.value or b"", None) for r in records]
                )
                # only after the copies in the main topic were confirmed
                await reader.commit(_offsets_after(records))
                moved += len(records)
        finally:
            await self._stop_clients(reader)
        return moved

    def requeue_dead_letters(self) -> int:
        depth = self._lag(self.dead_topic, self.dead_group)
        return self._call(
            self._requeue(),
            self.connect_timeout * 3 + self.publish_timeout + depth / 500,
            "requeue",
        )

    async def _count_lag(self, topic: str, group: str) -> int:
        reader, ends = await self._reader(topic, group)
        try:
            return sum([max(0, end - await reader.position(tp)) for tp, end in ends.items()])
        finally:
            await self._stop_clients(reader)

    def _lag(self, topic: str, group: str) -> int:
        return self._call(
            self._count_lag(topic, group), self.connect_timeout * 3 + 5, "read the depth"
        )

    def depth(self) -> int:
        """Messages in the topic past the consumer group's committed offsets (waiting, or
        delivered and not yet committed)."""
        return self._lag(self.topic, self.group)

    # -- lifecycle ------------------------------------------------------------------------
    async def _delete(self) -> None:
        await self._connect()
        assert self._admin is not None
        try:
            await self._admin.delete_topics([self.topic, self.dead_topic])
        except KafkaError:
            logger.debug("deleting topics", exc_info=True)

    def delete_queues(self) -> None:
        """Delete the topic and its dead letters with every message in them (tests, and taking
        a workspace's topic out of service); the groups' offsets expire with Kafka's retention."""
        self._call(self._delete(), self.connect_timeout * 3 + 10, "delete the topics")

    async def _disconnect(self) -> None:
        admin, producer, self._admin, self._producer = self._admin, self._producer, None, None
        await self._stop_clients(*(c for c in (producer, admin) if c is not None))
