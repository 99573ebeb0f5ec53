"""A disk spool in front of a broker: events are accepted while the broker is unreachable.

:class:`SpooledBroker` wraps any :class:`~features.broker.contract.Broker`. A publish goes to
the inner broker; when that raises :class:`~features.broker.contract.BrokerUnavailableError` the
batch is written to the spool folder instead and the publish returns: the events are accepted
because they are safe on disk (written to a temporary file, ``fsync``'d, renamed into place, the
folder ``fsync``'d). While the spool holds anything, new batches go to the spool too, behind the
older ones, so a collector does not wait on a dead broker's timeout for every request and the
spool drains in the order it was filled. When the spool would grow past ``max_bytes``, the publish
raises :class:`SpoolFullError` and nothing of that batch is kept (the service answers 503 with
``Retry-After``).

A forwarder thread (:meth:`SpooledBroker.start`, also started by the first spooled batch; stopped
by :meth:`SpooledBroker.close`) sends the spool files to the inner broker oldest first and deletes
each file only after the inner broker confirmed all of its messages. A crash between the confirm
and the delete sends that file again on the next start: at least once, never lost; consumers are
idempotent by message id.

Several processes may share one spool folder (BentoML workers): each file is one batch, named
``<time_ns>-<pid>-<counter>-<messages>.spool``; a forwarder holds an exclusive ``flock`` on a file
while it forwards it, so two forwarders never send the same file at once.

File format: ``TSPOOL1\\n``, then per message ``>II`` (id length, body length), the id (UTF-8) and
the body, then a CRC-32 of everything before it (``>I``). A file that fails its check (the disk
lied) is renamed ``*.corrupt`` and logged, never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from features.broker.contract import (
    MAX_ATTEMPTS,
    Broker,
    BrokerUnavailableError,
    DeadLetter,
    Handler,
)
from models.errors import TailorError

logger = logging.getLogger(__name__)

MAGIC = b"TSPOOL1\n"
SUFFIX = ".spool"
_LENGTHS = struct.Struct(">II")
_CRC = struct.Struct(">I")


class SpoolFullError(TailorError):
    """The broker is unreachable and the spool has no room for this batch: answer 503 with
    ``Retry-After: retry_after`` (seconds)."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpoolCorruptError(TailorError):
    """A spool file does not read back as it was written."""


def encode_batch(messages: Sequence[tuple[str, bytes]]) -> bytes:
    """One spool file's bytes for ``(message_id, body)`` pairs."""
    parts = [MAGIC]
    for message_id, body in messages:
        key = message_id.encode("utf-8")
        parts += [_LENGTHS.pack(len(key), len(body)), key, bytes(body)]
    data = b"".join(parts)
    return data + _CRC.pack(zlib.crc32(data))


def decode_batch(data: bytes, name: str = "<spool file>") -> list[tuple[str, bytes]]:
    """The ``(message_id, body)`` pairs of a spool file; :class:`SpoolCorruptError` if it fails
    its checksum or its structure."""
    if len(data) < len(MAGIC) + _CRC.size or not data.startswith(MAGIC):
        raise SpoolCorruptError(f"{name}: not a spool file ({len(data)} bytes)")
    payload, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(payload) != crc:
        raise SpoolCorruptError(f"{name}: checksum mismatch")
    messages: list[tuple[str, bytes]] = []
    at = len(MAGIC)
    while at < len(payload):
        key_len, body_len = _LENGTHS.unpack_from(payload, at)
        at += _LENGTHS.size
        end = at + key_len + body_len
        if end > len(payload):
            raise SpoolCorruptError(f"{name}: truncated message at byte {at}")
        messages.append((payload[at : at + key_len].decode("utf-8"), payload[at + key_len : end]))
        at = end
    return messages


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpooledBroker(Broker):
    """``inner`` with a spool in ``spool_dir`` of at most ``max_bytes`` (see the module doc)."""

    def __init__(
        self,
        inner: Broker,
        spool_dir: Path,
        max_bytes: int,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes}: must be positive")
        self.inner = inner
        self.kind = inner.kind
        self.spool_dir = Path(spool_dir)
        self.max_bytes = max_bytes
        self.retry_seconds = retry_seconds
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._counter = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forwarder: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._clean_temporaries()

    # -- the spool on disk ----------------------------------------------------------------
    def _files(self) -> list[Path]:
        with os.scandir(self.spool_dir) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(SUFFIX))
        return [self.spool_dir / name for name in names]

    def _clean_temporaries(self) -> None:
        """Half-written files of a process that died before its publish returned (never
        accepted, so never promised): removed once they are a minute old."""
        cutoff = time.time() - 60
        for path in self.spool_dir.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def spooled(self) -> tuple[int, int]:
        """``(messages, bytes)`` waiting in the spool (every process's files)."""
        messages = size = 0
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                size += path.stat().st_size
                messages += int(path.stem.rsplit("-", 1)[1])
        return messages, size

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """This process's threads and every other process writing to the same spool."""
        with self._write_lock:
            fd = os.open(self.spool_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _spool(self, messages: Sequence[tuple[str, bytes]]) -> Path:
        data = encode_batch(messages)
        with self._folder_lock():
            _, used = self.spooled()
            if used + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"the broker is unreachable and the spool {self.spool_dir} holds {used} "
                    f"bytes: {len(data)} more would pass TAILOR_SPOOL_MAX_BYTES={self.max_bytes}",
                    retry_after=max(1, round(self.retry_seconds * 30)),
                )
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):09d}-{len(messages)}"
            target = self.spool_dir / f"{name}{SUFFIX}"
            tmp = self.spool_dir / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, target)
            _fsync_dir(self.spool_dir)
        return target

    # -- the contract ---------------------------------------------------------------------
    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Confirmed by the inner broker, or safe in the spool; :class:`SpoolFullError` when
        neither."""
        if not messages:
            return
        if not self._files():
            try:
                self.inner.publish(messages)
                return
            except BrokerUnavailableError as exc:
                logger.warning("broker unavailable, spooling %d messages: %s", len(messages), exc)
        self._spool(messages)
        self.start()
        self._wake.set()

    def consume(
        self,
        handler: Handler,
        *,
        stop: threading.Event,
        batch_size: int = 500,
        max_wait_seconds: float = 0.2,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.inner.consume(
            handler,
            stop=stop,
            batch_size=batch_size,
            max_wait_seconds=max_wait_seconds,
            max_attempts=max_attempts,
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(limit)

    def requeue_dead_letters(self) -> int:
        return self.inner.requeue_dead_letters()

    def depth(self) -> int:
        """The inner broker's depth plus the messages still in the spool."""
        return self.inner.depth() + self.spooled()[0]

    # -- forwarding -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the forwarder thread (idempotent)."""
        with self._start_lock:
            if self._forwarder is not None and self._forwarder.is_alive():
                return
            self._stop.clear()
            self._forwarder = threading.Thread(
                target=self._forward_loop, name="spool-forwarder", daemon=True
            )
            self._forwarder.start()

    def forward(self) -> int:
        """Send every spool file to the inner broker, oldest first, once; the number of messages
        sent. Stops at the first BrokerUnavailableError (raised) with the rest still spooled."""
        sent = 0
        for path in self._files():
            if self._stop.is_set():
                break
            sent += self._forward_file(path)
        return sent

    def _forward_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # another forwarder sent it
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another forwarder is sending it
                return 0
            if os.fstat(fd).st_nlink == 0:  # sent and deleted while we waited
                return 0
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
            try:
                messages = decode_batch(data, path.name)
            except SpoolCorruptError:
                logger.error("spool file %s is corrupt; kept as .corrupt", path, exc_info=True)
                path.rename(path.with_suffix(".corrupt"))
                return 0
            self.inner.publish(messages)  # BrokerUnavailableError: the file stays
            path.unlink()
            _fsync_dir(self.spool_dir)
            logger.info("forwarded %d spooled messages from %s", len(messages), path.name)
            return len(messages)
        finally:
            os.close(fd)

    def _forward_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.forward()
            except BrokerUnavailableError as exc:
                logger.info("spool forwarder: broker still unavailable (%s)", exc)
                self._stop.wait(self.retry_seconds)
                continue
            except Exception:  # keep forwarding; the files stay on disk
                logger.exception("spool forwarder failed; retrying")
                self._stop.wait(self.retry_seconds)
                continue
            self._wake.wait(self.retry_seconds)  # new files, or another process's

    def close(self) -> None:
        """Stop the forwarder (what is spooled stays on disk for the next start) and close the
        inner broker."""
        self._stop.set()
        self._wake.set()
        if self._forwarder is not None:
            self._forwarder.join(timeout=60.0)
            self._forwarder = None
        self.inner.close()
