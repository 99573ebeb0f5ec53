"""The embedded durable queue: a SQLite table in WAL mode inside the workspace, no server.

Same semantics as RabbitMQ's (see :mod:`features.broker.contract`): a publish returns after the
commit (``synchronous=FULL``: on disk), a consumer leases a batch for ``lease_seconds`` and
deletes it only after its handler returned, so a consumer killed mid-batch leaves the batch to be
delivered again when the lease runs out; failed messages come back after a short back-off and are
dead-lettered with the reason after ``max_attempts``. Several processes may publish and consume at
once (SQLite's write lock orders them; ``BEGIN IMMEDIATE`` makes each lease atomic).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from features.broker.contract import (
    MAX_ATTEMPTS,
    Broker,
    BrokerUnavailableError,
    DeadLetter,
    Handler,
    Message,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (visible_at, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
"""


def _backoff(attempts: int) -> float:
    """Seconds before a failed message is delivered again: 0.2 s, 0.4 s, ... at most 30 s."""
    return min(0.1 * 2**attempts, 30.0)


class EmbeddedBroker(Broker):
    """The queue in ``path`` (a SQLite file, created with its folder)."""

    kind = "embedded"

    def __init__(self, path: Path, *, lease_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self._local = threading.local()
        self._published = threading.Condition()  # wakes in-process consumers at once
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db().executescript(SCHEMA)

    # -- connections ----------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, traceback) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> EmbeddedBroker._Tx:
        return self._Tx(self._db())

    # -- the contract ---------------------------------------------------------------------
    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not messages:
            return
        try:
            with self._transaction() as db:
                db.executemany(
                    "INSERT INTO queue (message_id, body) VALUES (?, ?)",
                    [(message_id, bytes(body)) for message_id, body in messages],
                )
        except sqlite3.Error as exc:
            raise BrokerUnavailableError(
                f"the embedded queue {self.path} refused the publish: {exc}"
            ) from exc
        with self._published:
            self._published.notify_all()

    def _lease(self, limit: int) -> list[Message]:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT seq, message_id, body, attempts FROM queue WHERE visible_at <= ?"
                " ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            if rows:
                db.executemany(
                    "UPDATE queue SET attempts = attempts + 1, visible_at = ? WHERE seq = ?",
                    [(now + self.lease_seconds, row[0]) for row in rows],
                )
        return [
            Message(message_id=mid, body=bytes(body), attempts=attempts + 1, tag=seq)
            for seq, mid, body, attempts in rows
        ]

    def _settle(self, batch: list[Message], failures: dict[str, str], max_attempts: int) -> None:
        now = time.time()
        with self._transaction() as db:
            for message in batch:
                reason = failures.get(message.message_id)
                if reason is None:
                    db.execute("DELETE FROM queue WHERE seq = ?", (message.tag,))
                elif message.attempts >= max_attempts:
                    db.execute(
                        "INSERT INTO dead_letters (message_id, body, reason, attempts, dead_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (message.message_id, message.body, reason, message.attempts, now),
                    )
                    db.execute("DELETE FROM queue WHERE seq = ?", (message.tag,))
                else:
                    db.execute(
                        "UPDATE queue SET visible_at = ?, last_error = ? WHERE seq = ?",
                        (now + _backoff(message.attempts), reason, message.tag),
                    )

    def consume(
        self,
        handler: Handler,
        *,
        stop: threading.Event,
        batch_size: int = 500,
        max_wait_seconds: float = 0.2,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """See :meth:`Broker.consume`; a batch is what is waiting when the consumer looks (an
        in-process publish wakes it at once, another process's within ``max_wait_seconds``)."""
        while not stop.is_set():
            batch = self._lease(batch_size)
            if not batch:
                with self._published:
                    self._published.wait(max_wait_seconds)
                continue
            try:
                failures = handler(batch)
            except Exception as exc:  # the whole batch failed: each message says why
                reason = f"{type(exc).__name__}: {exc}"
                failures = {message.message_id: reason for message in batch}
            self._settle(batch, failures, max_attempts)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._db().execute(
            "SELECT message_id, body, reason, attempts, dead_at FROM dead_letters"
            " ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            DeadLetter(mid, bytes(body), reason, attempts, datetime.fromtimestamp(at, UTC))
            for mid, body, reason, attempts, at in rows
        ]

    def requeue_dead_letters(self) -> int:
        with self._transaction() as db:
            moved = db.execute(
                "INSERT INTO queue (message_id, body) SELECT message_id, body FROM dead_letters"
                " ORDER BY seq"
            ).rowcount
            db.execute("DELETE FROM dead_letters")
        with self._published:
            self._published.notify_all()
        return moved

    def depth(self) -> int:
        return self._db().execute("SELECT count(*) FROM queue").fetchone()[0]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
