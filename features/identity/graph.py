"""The identity graph: which person keys are one person (issue #11, identity stitching).

Nodes are person keys (:mod:`features.identity.keys`): a user id, or ``anon:<anonymous_id>``.
:meth:`IdentityGraph.link` joins an anonymous id to a user id (a login, ``POST /identify``, an
``identify`` event); the graph is a union-find over those keys, kept flat (every node stores its
root, the canonical key) because merges are rare and reads are on every request: a read is one
indexed look-up, a merge relabels the smaller cluster. Cycles cannot arise; linking a pair that is
already one person changes nothing and logs nothing.

The **canonical key** of a person is their user id when the cluster has one (the user seen first
when configuration allowed two users to be merged), else the anonymous key itself (an anonymous
key is only ever joined to a cluster that holds a user).

**Fingerprint hints** (:meth:`IdentityGraph.add_hint`) are stored apart, as weak evidence with a
confidence: they are never followed by :meth:`canonical` or :meth:`link`, so a shared device
fingerprint alone never merges two people (it may only be shown as a candidate).

Every merge is appended to a **merge log** table (what was merged into what, when, from which
source): the record an erasure or an audit needs. Nothing in it is ever updated; only
:meth:`IdentityGraph.erase` deletes a person's rows (leaving an ``erasure`` row with no ids).
:meth:`IdentityGraph.export` gives everything the graph holds about a person.

The tables live in the workspace database (:mod:`features.database`: SQLite ``<home>/tailor.db``
locally, PostgreSQL on the scale profile), made with SQLAlchemy Core on first use. Writes are
serialised across threads and processes by the database (``BEGIN IMMEDIATE`` on SQLite, a
transaction-scoped advisory lock on PostgreSQL). Reads are cached per process; the cache is
dropped when the merge log grows (checked at most every :data:`VERSION_CHECK_SECONDS`), so a
merge made by another process is seen within that time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from features.database import create_tables
from features.database import engine as database_engine
from features.identity.keys import ANON_PREFIX, person_keys
from models.errors import TailorError

logger = logging.getLogger(__name__)

#: Default prefix of the graph's table names (tests use their own, so runs never collide).
TABLE_PREFIX = "tailor_identity_"
#: Longest id accepted (as for the ids of events and requests).
MAX_ID_LENGTH = 256
#: Seconds between checks whether another process merged someone (the cache is then dropped).
VERSION_CHECK_SECONDS = 0.2
#: Cached canonical keys per process at most (past it the cache starts again).
MAX_CACHED = 200_000
#: Keys looked up per query.
LOOKUP_BATCH = 500
#: Above this many distinct people, :meth:`IdentityGraph.canonical_keys` reads every alias once.
BULK_READ_PEOPLE = 5_000
#: One table creation at a time in this process (other processes: the retries in ``create``).
#: The merge log's ``kind`` values (an erasure leaves a row without ids, so caches notice).
LINK, USER_MERGE, ERASURE = "link", "user_merge", "erasure"

#: ``events -> the person key of each row`` (a Series aligned with ``events``): how functions
#: without a workspace learn who each event belongs to. Default :func:`person_keys` (no graph).
Resolver = Callable[[pd.DataFrame], pd.Series]
#: ``person key -> every person key of that person`` (the canonical one first).
Aliases = Callable[[str], list[str]]


class IdentityError(TailorError, ValueError):
    """An identity request that is not allowed: the field at fault, the value and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UserMergeRefused(IdentityError):
    """The anonymous id already belongs to another known user, and user merges are off."""


@dataclass(frozen=True)
class Merge:
    """What one :meth:`IdentityGraph.link` did.

    ``canonical``: the person's canonical key afterwards; ``merged``: the keys that joined that
    person in this call (empty when the pair was one person already: ``recorded`` is False and
    nothing was logged); ``previous``: the canonical keys those keys had before; ``aliases``:
    every key of the person now; ``merge_id``: the merge log's row (None when nothing merged).
    """

    canonical: str
    anonymous_key: str
    user_id: str
    source: str
    at: datetime
    merged: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    kind: str = LINK
    merge_id: int | None = None

    @property
    def recorded(self) -> bool:
        return self.merge_id is not None


@dataclass(frozen=True)
class Hint:
    """A weak identity hint: ``anonymous_id`` was seen with ``fingerprint`` at ``confidence``."""

    anonymous_id: str
    fingerprint: str
    confidence: float
    seen: datetime


def _tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    meta = sa.MetaData()
    nodes = sa.Table(
        f"{prefix}nodes",
        meta,
        sa.Column("key", sa.String(MAX_ID_LENGTH + len(ANON_PREFIX)), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),  # "user" or "anon"
        sa.Column("canonical", sa.String(MAX_ID_LENGTH + len(ANON_PREFIX)), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"{prefix}nodes_canonical", "canonical"),
    )
    merges = sa.Table(
        f"{prefix}merges",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("anonymous_key", sa.String(MAX_ID_LENGTH + len(ANON_PREFIX)), nullable=False),
        sa.Column("user_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("canonical", sa.String(MAX_ID_LENGTH + len(ANON_PREFIX)), nullable=False),
        sa.Column("merged", sa.Text, nullable=False),  # JSON list of the keys that moved
        sa.Column("previous", sa.Text, nullable=False),  # JSON list of their former canonicals
    )
    hints = sa.Table(
        f"{prefix}hints",
        meta,
        sa.Column("anonymous_id", sa.String(MAX_ID_LENGTH), primary_key=True),
        sa.Column("fingerprint", sa.String(128), primary_key=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("seen", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"{prefix}hints_fingerprint", "fingerprint"),
    )
    return meta, nodes, merges, hints


def check_id(field: str, value: object) -> str:
    """``value`` as an id, or an :class:`IdentityError` naming ``field``: text of 1 to
    :data:`MAX_ID_LENGTH` characters, no control characters, no space at either end."""
    if value is None:
        raise IdentityError(field, "is required")
    if not isinstance(value, str):
        raise IdentityError(field, f"must be text, got {type(value).__name__}")
    if not value.strip():
        raise IdentityError(field, "is blank; give the id")
    if len(value) > MAX_ID_LENGTH:
        raise IdentityError(field, f"has {len(value)} characters; at most {MAX_ID_LENGTH}")
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise IdentityError(field, f"{value[:40]!r} has spaces at an end or control characters")
    return value


def _check_key(key: object) -> str:
    text = check_id("key", key)
    if text.startswith(ANON_PREFIX):
        check_id("key", text[len(ANON_PREFIX) :])
    return text


class IdentityGraph:
    """The identity graph of one workspace database (see the module docstring).

    Safe to share between threads; several processes may use the same database at once.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        allow_user_merge: bool = False,
        prefix: str = TABLE_PREFIX,
    ) -> None:
        self.engine = engine
        self.allow_user_merge = allow_user_merge
        self.prefix = prefix
        self._meta, self.nodes, self.merges, self.hints = _tables(prefix)
        # built once: SQLAlchemy then reuses the compiled statement (a read is ~0.1 ms, not ~1)
        self._lookup = sa.select(self.nodes.c.key, self.nodes.c.canonical).where(
            self.nodes.c.key.in_(sa.bindparam("keys", expanding=True))
        )
        self._version_query = sa.select(sa.func.max(self.merges.c.id))
        self._created = False
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._version: int | None = None
        self._checked = -float("inf")

    @classmethod
    def for_workspace(cls, ws) -> IdentityGraph:
        """The graph of ``ws`` (a :class:`features.workspace.Workspace`): its database and its
        ``allow_user_merge`` setting."""
        return cls(database_engine(ws.database_url), allow_user_merge=ws.settings.allow_user_merge)

    # -- tables ---------------------------------------------------------------------------------
    def create(self) -> None:
        """Create the tables if missing (first use does it; two processes may race: fine)."""
        if self._created:
            return
        create_tables(self._meta, self.engine)
        self._created = True

    def drop(self) -> None:
        """Drop the tables (tests, and erasing a whole workspace)."""
        self._meta.drop_all(self.engine, checkfirst=True)
        self._created = False
        self.invalidate()

    def invalidate(self) -> None:
        """Forget every cached read."""
        with self._lock:
            self._cache.clear()
            self._version = None
            self._checked = -float("inf")

    # -- writes ---------------------------------------------------------------------------------
    def _write(self) -> sa.Connection:
        """A connection inside a write transaction that holds the graph's write lock."""
        self.create()
        conn = self.engine.connect()
        try:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                key = zlib.crc32(self.prefix.encode())
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        except BaseException:
            conn.close()
            raise
        return conn

    def link(self, anonymous_id: str, user_id: str, *, source: str) -> Merge:
        """Make ``anon:<anonymous_id>`` and ``user_id`` one person and log the merge.

        Idempotent: a pair already one person gives a :class:`Merge` with nothing merged and
        nothing logged. An anonymous id already linked to *another* user would merge two known
        users: refused (:class:`UserMergeRefused`) unless ``allow_user_merge``; then the two
        people become one under the user seen first. Bad ids raise :class:`IdentityError`
        naming the field.
        """
        anonymous_id = check_id("anonymous_id", anonymous_id)
        user_id = check_id("user_id", user_id)
        source = check_id("source", source)[:64]
        if anonymous_id == user_id:
            raise IdentityError(
                "user_id", "is the same as anonymous_id; link a device id to a different user id"
            )
        if user_id.startswith(ANON_PREFIX):
            raise IdentityError("user_id", f"may not start with {ANON_PREFIX!r} (anonymous keys)")
        anon_key = ANON_PREFIX + anonymous_id
        now = datetime.now(UTC)
        with self._write() as conn:
            found = self._rows(conn, [anon_key, user_id])
            anon_root = found.get(anon_key, {}).get("canonical", anon_key)
            user_root = found.get(user_id, {}).get("canonical", user_id)
            if anon_root == user_root:
                conn.rollback()
                return Merge(
                    canonical=user_root,
                    anonymous_key=anon_key,
                    user_id=user_id,
                    source=source,
                    at=now,
                    aliases=tuple(self._members(conn, user_root)),
                )
            anon_cluster = self._cluster(conn, anon_root, anon_key, "anon", now)
            user_cluster = self._cluster(conn, user_root, user_id, "user", now)
            anon_users = [row for row in anon_cluster if row["kind"] == "user"]
            kind = LINK
            if anon_users:
                if not self.allow_user_merge:
                    conn.rollback()
                    raise UserMergeRefused(
                        "anonymous_id",
                        f"{anonymous_id!r} already belongs to another user; merging two known "
                        "users is refused (set TAILOR_ALLOW_USER_MERGE=1 to allow it)",
                    )
                kind = USER_MERGE
            # the canonical key: the first user seen among both clusters
            users = sorted(
                [row for row in anon_cluster + user_cluster if row["kind"] == "user"],
                key=lambda row: (_aware(row["first_seen"]), row["key"]),
            )
            canonical = users[0]["key"]
            moving = [row for row in anon_cluster + user_cluster if row["canonical"] != canonical]
            merged = tuple(row["key"] for row in moving)
            previous = tuple(dict.fromkeys(row["canonical"] for row in moving))
            for row in anon_cluster + user_cluster:
                if row.get("new"):
                    conn.execute(
                        self.nodes.insert().values(
                            key=row["key"],
                            kind=row["kind"],
                            canonical=canonical,
                            first_seen=row["first_seen"],
                        )
                    )
            old_roots = [root for root in previous if root in {anon_root, user_root}]
            if old_roots:
                conn.execute(
                    self.nodes.update()
                    .where(self.nodes.c.canonical.in_(old_roots))
                    .values(canonical=canonical)
                )
            merge_id = conn.execute(
                self.merges.insert().values(
                    merged_at=now,
                    kind=kind,
                    source=source,
                    anonymous_key=anon_key,
                    user_id=user_id,
                    canonical=canonical,
                    merged=json.dumps(list(merged)),
                    previous=json.dumps(list(previous)),
                )
            ).inserted_primary_key[0]
            aliases = tuple(self._members(conn, canonical))
            conn.commit()
        with self._lock:  # this process sees its own merge at once
            for key in aliases:
                self._cache[key] = canonical
        logger.info("identity merge %s (%s): %d keys joined a person", merge_id, kind, len(merged))
        return Merge(
            canonical=canonical,
            anonymous_key=anon_key,
            user_id=user_id,
            source=source,
            at=now,
            merged=merged,
            previous=previous,
            aliases=aliases,
            kind=kind,
            merge_id=int(merge_id),
        )

    def _rows(self, conn: sa.Connection, keys: Sequence[str]) -> dict[str, dict]:
        query = sa.select(self.nodes).where(self.nodes.c.key.in_(list(keys)))
        return {row.key: dict(row._mapping) for row in conn.execute(query)}

    def _cluster(
        self, conn: sa.Connection, root: str, key: str, kind: str, now: datetime
    ) -> list[dict]:
        """Every node of the cluster rooted at ``root``; a key not stored yet is a new node."""
        query = sa.select(self.nodes).where(self.nodes.c.canonical == root)
        rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            rows = [{"key": key, "kind": kind, "canonical": key, "first_seen": now, "new": True}]
        return rows

    def _members(self, conn: sa.Connection, canonical: str) -> list[str]:
        query = (
            sa.select(self.nodes.c.key, self.nodes.c.first_seen)
            .where(self.nodes.c.canonical == canonical)
            .order_by(self.nodes.c.first_seen, self.nodes.c.key)
        )
        keys = [row.key for row in conn.execute(query)]
        return [canonical, *(k for k in keys if k != canonical)] if keys else [canonical]

    def add_hint(self, anonymous_id: str, fingerprint: str, confidence: float) -> Hint:
        """Store a weak hint that ``anonymous_id`` was seen with ``fingerprint`` (a device
        fingerprint's hash) at ``confidence`` in (0, 1]. Hints never merge people."""
        anonymous_id = check_id("anonymous_id", anonymous_id)
        fingerprint = check_id("fingerprint", fingerprint)
        if len(fingerprint) > 128:
            raise IdentityError("fingerprint", f"has {len(fingerprint)} characters; at most 128")
        if not isinstance(confidence, int | float) or not 0 < float(confidence) <= 1:
            raise IdentityError("confidence", f"{confidence!r} is not a number in (0, 1]")
        hint = Hint(anonymous_id, fingerprint, float(confidence), datetime.now(UTC))
        self.create()
        with self.engine.begin() as conn:
            key = {"anonymous_id": anonymous_id, "fingerprint": fingerprint}
            updated = conn.execute(
                self.hints.update()
                .where(self.hints.c.anonymous_id == anonymous_id)
                .where(self.hints.c.fingerprint == fingerprint)
                .values(confidence=hint.confidence, seen=hint.seen)
            ).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            self.hints.insert().values(
                                **key, confidence=hint.confidence, seen=hint.seen
                            )
                        )
                except sa.exc.IntegrityError:  # another writer stored it a moment ago
                    pass
        return hint

    def hints_for(self, fingerprint: str) -> list[Hint]:
        """Every hint with ``fingerprint``, strongest first: candidates, never merges."""
        self.create()
        query = (
            sa.select(self.hints)
            .where(self.hints.c.fingerprint == fingerprint)
            .order_by(self.hints.c.confidence.desc(), self.hints.c.anonymous_id)
        )
        with self.engine.connect() as conn:
            return [
                Hint(r.anonymous_id, r.fingerprint, r.confidence, _aware(r.seen))
                for r in conn.execute(query)
            ]

    # -- reads ----------------------------------------------------------------------------------
    def _fresh(self) -> None:
        """Drop the cache when the merge log grew since the last check (another process)."""
        now = time.monotonic()
        if now - self._checked < VERSION_CHECK_SECONDS:
            return
        self.create()
        with self.engine.connect() as conn:
            version = conn.execute(self._version_query).scalar() or 0
        with self._lock:
            if version != self._version:
                self._cache.clear()
                self._version = version
            self._checked = now

    def canonical(self, key: str) -> str:
        """The canonical key of the person key ``key`` (``anon:<id>`` or a user id); a key never
        linked is its own canonical key."""
        return self.canonical_many([_check_key(key)])[key]

    def canonical_many(self, keys: Iterable[str]) -> dict[str, str]:
        """``{key: canonical key}`` for person keys (cached; misses looked up in batches)."""
        self._fresh()
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            found = {key: self._cache[key] for key in wanted if key in self._cache}
        missing = [key for key in wanted if key not in found]
        if missing:
            looked: dict[str, str] = {}
            with self.engine.connect() as conn:
                for start in range(0, len(missing), LOOKUP_BATCH):
                    batch = missing[start : start + LOOKUP_BATCH]
                    rows = conn.execute(self._lookup, {"keys": batch})
                    looked.update({row.key: row.canonical for row in rows})
            looked = {key: looked.get(key, key) for key in missing}
            with self._lock:
                if len(self._cache) + len(looked) > MAX_CACHED:
                    self._cache.clear()
                self._cache.update(looked)
            found.update(looked)
        return found

    def aliases(self, canonical: str) -> list[str]:
        """Every person key of the person whose key is ``canonical`` (any of their keys is
        accepted), the canonical key first, then in the order they were first seen."""
        root = self.canonical(canonical)
        with self.engine.connect() as conn:
            return self._members(conn, root)

    def aliased(self) -> dict[str, str]:
        """``{key: canonical key}`` of every key that is not its own canonical key."""
        self.create()
        query = sa.select(self.nodes.c.key, self.nodes.c.canonical).where(
            self.nodes.c.key != self.nodes.c.canonical
        )
        with self.engine.connect() as conn:
            return {row.key: row.canonical for row in conn.execute(query)}

    def canonical_keys(self, events: pd.DataFrame) -> pd.Series:
        """The canonical person key of each event (a :data:`Resolver`): an event with user id U
        is U's person; an anonymous event whose anonymous id is linked to U is U's person.

        Returns an object Series of str aligned with ``events`` (name ``user_id``), like
        :func:`~features.identity.keys.person_keys`, which it raises like."""
        keys = person_keys(events)
        if keys.empty:
            return keys
        people = pd.unique(keys.to_numpy())
        if len(people) > BULK_READ_PEOPLE:  # a feature build: read every alias once
            mapping = self.aliased()
        else:
            mapping = {k: v for k, v in self.canonical_many(people.tolist()).items() if k != v}
        if not mapping:
            return keys
        canonical = keys.map(mapping)  # NaN where the key is its own canonical key
        return keys.where(canonical.isna(), canonical).astype(object).rename("user_id")

    def merge_log(self) -> list[dict]:
        """Every merge, oldest first (``merged`` and ``previous`` as lists): the audit trail."""
        self.create()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.merges).order_by(self.merges.c.id))
            out = []
            for row in rows:
                item = dict(row._mapping)
                item["merged_at"] = _aware(item["merged_at"])
                item["merged"] = json.loads(item["merged"])
                item["previous"] = json.loads(item["previous"])
                out.append(item)
            return out

    # -- a person's data: export and erasure ----------------------------------------------------
    def _person_rows(self, conn: sa.Connection, aliases: list[str]) -> tuple[list, list]:
        anonymous = [a[len(ANON_PREFIX) :] for a in aliases if a.startswith(ANON_PREFIX)]
        hints = conn.execute(
            sa.select(self.hints).where(self.hints.c.anonymous_id.in_(anonymous))
        ).all()
        merges = conn.execute(
            sa.select(self.merges)
            .where(
                self.merges.c.anonymous_key.in_(aliases)
                | self.merges.c.user_id.in_(aliases)
                | self.merges.c.canonical.in_(aliases)
            )
            .order_by(self.merges.c.id)
        ).all()
        return hints, merges

    def export(self, key: str) -> dict:
        """Everything the graph holds about the person of ``key``: canonical key, aliases,
        fingerprint hints of their devices and their merge log rows (JSON-ready)."""
        root = self.canonical(key)
        with self.engine.connect() as conn:
            aliases = self._members(conn, root)
            hints, merges = self._person_rows(conn, aliases)
        return {
            "canonical": root,
            "aliases": aliases,
            "hints": [
                {
                    "anonymous_id": h.anonymous_id,
                    "fingerprint": h.fingerprint,
                    "confidence": h.confidence,
                    "seen": _aware(h.seen).isoformat(),
                }
                for h in hints
            ],
            "merges": [
                {
                    "id": m.id,
                    "merged_at": _aware(m.merged_at).isoformat(),
                    "kind": m.kind,
                    "source": m.source,
                    "anonymous_key": m.anonymous_key,
                    "user_id": m.user_id,
                    "canonical": m.canonical,
                    "merged": json.loads(m.merged),
                    "previous": json.loads(m.previous),
                }
                for m in merges
            ],
        }

    def erase(self, key: str) -> list[str]:
        """Delete the person of ``key`` from the graph: their nodes, their devices' hints and
        their merge log rows; an ``erasure`` row without ids marks it (other processes' caches
        then drop what they knew). Returns the person keys erased, for the other stores."""
        root = self.canonical(key)
        with self._write() as conn:
            aliases = self._members(conn, root)
            hints, merges = self._person_rows(conn, aliases)
            conn.execute(self.nodes.delete().where(self.nodes.c.canonical == root))
            anonymous = {h.anonymous_id for h in hints}
            if anonymous:
                conn.execute(self.hints.delete().where(self.hints.c.anonymous_id.in_(anonymous)))
            if merges:
                ids = [m.id for m in merges]
                conn.execute(self.merges.delete().where(self.merges.c.id.in_(ids)))
            conn.execute(
                self.merges.insert().values(
                    merged_at=datetime.now(UTC),
                    kind=ERASURE,
                    source="erase",
                    anonymous_key="",
                    user_id="",
                    canonical="",
                    merged="[]",
                    previous="[]",
                )
            )
            conn.commit()
        self.invalidate()
        return aliases

    def link_events(self, events: pd.DataFrame, *, source: str = "event:identify") -> list[Merge]:
        """Link the pair of every ``identify`` event in ``events`` (user id and anonymous id);
        an identify event the graph refuses is logged (no ids) and skipped, never raised: the
        event is stored, the merge waits for an operator."""
        if events.empty or "event_type" not in events:
            return []
        identify = events[events["event_type"] == "identify"]
        merges = []
        for user_id, anonymous_id in zip(
            identify["user_id"], identify["anonymous_id"], strict=True
        ):
            try:
                merges.append(self.link(anonymous_id, user_id, source=source))
            except IdentityError as exc:
                logger.warning("identify event not linked: field %s refused", exc.field)
        return merges


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
