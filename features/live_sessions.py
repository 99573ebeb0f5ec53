"""The live session store: what each visitor is doing right now (issue #11, "Sessions in real
time").

For every live session it keeps the last :data:`MAX_VIEWS` products viewed (most recent last, a
product viewed again moves to the end), the cart (product -> quantity, from ``add_to_cart``,
``remove_from_cart`` and ``purchase``), counters (``views``, ``carts``, ``searches``,
``purchases``) and the people (person keys, :mod:`features.identity.keys`) seen in it. A
session lives ``ttl`` seconds (default ``TAILOR_SESSION_TIMEOUT_MINUTES``) after its latest event;
an event already older than that never opens or extends one.

Two backends behind one interface, chosen by :meth:`SessionStore.for_workspace`:

* :class:`RedisSessionStore` on the scale profile (``TAILOR_REDIS``): one JSON value per session
  and one sorted set of session ids per person, both with ``EXPIRE``; each session is
  read-modified-written under ``WATCH`` so concurrent consumers never lose an update;
* :class:`SqlSessionStore` on the local profile: two tables in the workspace database
  (:mod:`features.database`, SQLAlchemy Core); expired rows are ignored on read and pruned by
  every update.

An update applies a whole events frame (a consumer batch) at once: every session it touches is
read, folded and written in one transaction (SQL) or one ``WATCH``/``MULTI`` round (Redis), not
one per session, which made the session store most of the consumer's time.

:meth:`SessionStore.update` is idempotent: each session keeps the ids of its last
:data:`MAX_SEEN_EVENTS` events, and an event seen before changes nothing (a broker's redelivery,
a replay). Every store can erase and export a person (STYLE, "People's data").
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pandas as pd

from features.identity.keys import person_keys
from features.workspace import Workspace

logger = logging.getLogger(__name__)

#: Products remembered per session (the most recent ones).
MAX_VIEWS = 20
#: Event ids remembered per session for idempotence; an event repeated after this many newer
#: events of the same session would count again (a broker redelivers within seconds).
MAX_SEEN_EVENTS = 500
COUNTERS = ("views", "carts", "searches", "purchases")
_COUNTED = {
    "product_view": "views",
    "add_to_cart": "carts",
    "search": "searches",
    "purchase": "purchases",
}
#: Redis keys start with this unless a store is given another prefix (tests use their own).
REDIS_PREFIX = "tailor:live:"
#: Session ids per ``IN (...)`` read of the SQL store (well under every database's bind limit).
READ_BATCH = 500
#: Tries of one SQL update transaction when a concurrent writer got in the way (PostgreSQL: the
#: same new session inserted by another consumer, or a deadlock).
SQL_ATTEMPTS = 5
#: ``WATCH`` rounds of a whole Redis batch before its sessions are applied one at a time (a
#: concurrent consumer keeps changing one of them).
REDIS_BATCH_ATTEMPTS = 3
#: ``found session or None -> the session to write, or None to leave it``.
Change = Callable[["LiveSession | None"], "LiveSession | None"]


@dataclass(frozen=True)
class LiveSession:
    """One live session. Times are epoch seconds; ``views`` most recent last."""

    session_id: str
    people: tuple[str, ...] = ()
    views: tuple[str, ...] = ()
    cart: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    started_at: float = 0.0
    last_event_at: float = 0.0
    expires_at: float = 0.0
    seen_events: tuple[str, ...] = ()

    def to_json(self) -> str:
        # built from the fields directly: dataclasses.asdict deep-copies every value
        return json.dumps(
            {name: getattr(self, name) for name in _SESSION_FIELDS}, separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LiveSession:
        raw = json.loads(text)
        for name in ("people", "views", "seen_events"):
            raw[name] = tuple(raw[name])
        return cls(**raw)

    def public(self) -> dict[str, Any]:
        """What an export shows, as JSON values: everything but the seen event ids."""
        out = json.loads(self.to_json())
        del out["seen_events"]
        return out


_SESSION_FIELDS = tuple(f.name for f in fields(LiveSession))


@dataclass(frozen=True)
class SessionEvent:
    """What a session keeps of one event; ``at`` in epoch seconds."""

    event_id: str
    event_type: str
    at: float
    person: str
    product_id: str | None
    quantity: int


def session_events(events: pd.DataFrame) -> dict[str, list[SessionEvent]]:
    """The events that carry a session id, per session, each session's sorted by time then
    event id (as the event log sorts them); the person is
    :func:`features.identity.keys.person_keys`'s."""
    frame = events[events["session_id"].notna() & (events["session_id"].astype(str) != "")]
    if frame.empty:
        return {}
    frame = frame.sort_values(["timestamp", "event_id"], kind="stable")
    n = len(frame)
    products = frame["product_id"] if "product_id" in frame else pd.Series([None] * n)
    quantities = frame["quantity"] if "quantity" in frame else pd.Series([None] * n)
    stamps = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    columns = zip(
        frame["session_id"].astype(str).tolist(),
        frame["event_id"].astype(str).tolist(),
        frame["event_type"].astype(str).tolist(),
        (stamps.astype("int64") / 1e9).tolist(),
        person_keys(frame).tolist(),
        products.astype(object).where(products.notna(), None).tolist(),
        quantities.astype(object).where(quantities.notna(), None).tolist(),
        strict=True,
    )
    out: dict[str, list[SessionEvent]] = {}
    for session_id, event_id, kind, at, person, product, quantity in columns:
        product = product if isinstance(product, str) and product else None
        quantity = int(quantity) if quantity is not None else 1
        out.setdefault(session_id, []).append(
            SessionEvent(event_id, kind, at, person, product, quantity)
        )
    return out


def fold(
    session: LiveSession | None,
    session_id: str,
    events: Iterable[SessionEvent],
    ttl: float,
    now: float,
) -> LiveSession | None:
    """``session`` with ``events`` (one session's, sorted by time: :func:`session_events`)
    applied; events already seen are skipped. None when nothing new was applied (so nothing to
    write). A session expires ``ttl`` seconds after its latest event (a clock running ahead
    counts as now)."""
    current = session or LiveSession(session_id)
    seen = set(current.seen_events)
    views, cart = list(current.views), dict(current.cart)
    counters = {**dict.fromkeys(COUNTERS, 0), **current.counters}
    people, new_ids = list(current.people), []
    started, last = current.started_at, current.last_event_at
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        new_ids.append(event.event_id)
        at = min(event.at, now)
        started = at if not started else min(started, at)
        last = max(last, at)
        if event.person not in people:
            people.append(event.person)
        kind, product, quantity = event.event_type, event.product_id, event.quantity
        if kind in _COUNTED:
            counters[_COUNTED[kind]] += 1
        if product is None:
            continue
        if kind == "product_view":
            if product in views:
                views.remove(product)
            views.append(product)
        elif kind == "add_to_cart":
            cart[product] = cart.get(product, 0) + quantity
        elif kind in ("remove_from_cart", "purchase") and product in cart:
            left = cart.pop(product) - quantity
            if left > 0 and kind == "remove_from_cart":
                cart[product] = left
    if not new_ids:
        return None
    return replace(
        current,
        people=tuple(people),
        views=tuple(views[-MAX_VIEWS:]),
        cart=cart,
        counters=counters,
        started_at=started,
        last_event_at=last,
        expires_at=last + ttl,
        seen_events=(*current.seen_events, *new_ids)[-MAX_SEEN_EVENTS:],
    )


class SessionStore(ABC):
    """Live sessions of one workspace; ``ttl`` in seconds, ``clock`` gives epoch seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.time) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be more than 0 seconds, got {ttl!r}")
        self.ttl = float(ttl)
        self.clock = clock

    @staticmethod
    def for_workspace(ws: Workspace) -> SessionStore:
        """Redis on the scale profile, the workspace database on the local one."""
        ttl = ws.settings.session_timeout_minutes * 60
        if ws.profile == "scale":
            return RedisSessionStore(ws.settings.redis, ttl)
        return SqlSessionStore(ws.database_url, ttl)

    def update(self, events: pd.DataFrame) -> int:
        """Apply an events frame (the event log's columns; ``event_id``, ``event_type``,
        ``timestamp``, ``session_id`` and ``user_id``/``anonymous_id`` at least). Returns how
        many sessions changed; events without a session id and events seen before change
        nothing. Every session of the frame is read, folded and written in one atomic step."""
        now = self.clock()
        changes: dict[str, Change] = {}
        for session_id, group in session_events(events).items():
            if group[-1].at + self.ttl <= now:
                continue  # the session ended long ago: not live, nothing to keep
            changes[session_id] = lambda found, g=group, s=session_id: fold(
                found, s, g, self.ttl, now
            )
        return self._apply_many(changes) if changes else 0

    def _live(self, session: LiveSession | None) -> LiveSession | None:
        return session if session is not None and session.expires_at > self.clock() else None

    @abstractmethod
    def _apply_many(self, changes: dict[str, Change]) -> int:
        """For every ``{session_id: change}``: read the session, apply ``change`` and write
        what it returns, all atomically; returns how many sessions were written."""

    @abstractmethod
    def get(self, session_id: str) -> LiveSession | None:
        """The live session ``session_id``; None when unknown or expired."""

    @abstractmethod
    def sessions_of(self, person: str) -> list[LiveSession]:
        """The person's live sessions, most recently active first."""

    def latest_for(self, person: str) -> LiveSession | None:
        """The person's most recently active live session, if any."""
        sessions = self.sessions_of(person)
        return sessions[0] if sessions else None

    def export(self, person: str) -> list[dict[str, Any]]:
        """Everything the store holds about ``person``: their live sessions as plain dicts."""
        return [session.public() for session in self.sessions_of(person)]

    @abstractmethod
    def erase(self, person: str) -> int:
        """Delete every session the person was seen in; returns how many."""


class SqlSessionStore(SessionStore):
    """Sessions in the workspace database: ``live_sessions`` (one JSON document per session) and
    ``live_session_people`` (person -> session, for :meth:`latest_for` and erasure)."""

    def __init__(self, url: str, ttl: float, clock: Callable[[], float] = time.time) -> None:
        import sqlalchemy as sa

        from features.database import engine

        super().__init__(ttl, clock)
        self._sa = sa
        self.engine = engine(url)
        meta = sa.MetaData()
        self.sessions = sa.Table(
            "live_sessions",
            meta,
            sa.Column("session_id", sa.String(256), primary_key=True),
            sa.Column("document", sa.Text, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False, index=True),
        )
        self.people = sa.Table(
            "live_session_people",
            meta,
            sa.Column("person", sa.String(300), primary_key=True),
            sa.Column("session_id", sa.String(256), primary_key=True),
            sa.Column("last_event_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False, index=True),
        )
        meta.create_all(self.engine)
        # built once: /recommend reads a session per request of a person the model has not seen
        now = sa.bindparam("now", type_=sa.Float)
        self._get = sa.select(self.sessions.c.document).where(
            self.sessions.c.session_id == sa.bindparam("session_id"),
            self.sessions.c.expires_at > now,
        )
        self._of_person = (
            sa.select(self.sessions.c.document)
            .join(self.people, self.people.c.session_id == self.sessions.c.session_id)
            .where(self.people.c.person == sa.bindparam("person"), self.sessions.c.expires_at > now)
            .order_by(self.people.c.last_event_at.desc(), self.sessions.c.session_id)
        )
        # the update's statements, built once too (their compilation is cached by identity)
        ids = sa.bindparam("ids", expanding=True)
        self._prune_sessions = sa.delete(self.sessions).where(self.sessions.c.expires_at <= now)
        self._prune_people = sa.delete(self.people).where(self.people.c.expires_at <= now)
        self._lock = (
            sa.select(self.sessions.c.session_id, self.sessions.c.document)
            .where(self.sessions.c.session_id.in_(ids))
            .order_by(self.sessions.c.session_id)
            .with_for_update()
        )
        self._rewrite = (
            sa.update(self.sessions)
            .where(self.sessions.c.session_id == sa.bindparam("id"))
            .values(
                document=sa.bindparam("new_document"), expires_at=sa.bindparam("new_expires_at")
            )
        )
        self._drop_people = sa.delete(self.people).where(self.people.c.session_id.in_(ids))

    def _apply_many(self, changes: dict[str, Change]) -> int:
        ids = sorted(changes)  # one lock order for every writer (PostgreSQL row locks)
        for attempt in range(SQL_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return self._apply_in(conn, ids, changes)
            except self._sa.exc.IntegrityError:  # another writer created a session first
                if attempt == SQL_ATTEMPTS - 1:
                    raise
            except self._sa.exc.OperationalError as exc:
                if attempt == SQL_ATTEMPTS - 1 or not _is_deadlock(exc):
                    raise
        return 0

    def _apply_in(self, conn, ids: list[str], changes: dict[str, Change]) -> int:
        now = self.clock()
        # a write first: SQLite takes its write lock here, before the read below
        conn.execute(self._prune_sessions, {"now": now})
        conn.execute(self._prune_people, {"now": now})
        found: dict[str, str] = {}
        for start in range(0, len(ids), READ_BATCH):
            rows = conn.execute(self._lock, {"ids": ids[start : start + READ_BATCH]})
            found.update({row.session_id: row.document for row in rows})
        inserts, updates, people = [], [], []
        for session_id in ids:
            document = found.get(session_id)
            before = LiveSession.from_json(document) if document is not None else None
            session = changes[session_id](self._live(before))
            if session is None:
                continue
            values = {"document": session.to_json(), "expires_at": session.expires_at}
            if document is None:
                inserts.append({"session_id": session_id, **values})
            else:
                updates.append({f"new_{k}": v for k, v in values.items()} | {"id": session_id})
            people.extend(
                {
                    "person": person,
                    "session_id": session_id,
                    "last_event_at": session.last_event_at,
                    "expires_at": session.expires_at,
                }
                for person in session.people
            )
        written = [row["session_id"] for row in inserts] + [row["id"] for row in updates]
        if not written:
            return 0
        if inserts:
            conn.execute(self.sessions.insert(), inserts)
        if updates:
            conn.execute(self._rewrite, updates)
        for start in range(0, len(written), READ_BATCH):
            conn.execute(self._drop_people, {"ids": written[start : start + READ_BATCH]})
        if people:
            conn.execute(self.people.insert(), people)
        return len(written)

    def get(self, session_id: str) -> LiveSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._get, {"session_id": session_id, "now": self.clock()}).first()
        return self._live(LiveSession.from_json(row[0])) if row else None

    def sessions_of(self, person: str) -> list[LiveSession]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._of_person, {"person": person, "now": self.clock()}).all()
        return [LiveSession.from_json(row[0]) for row in rows]

    def erase(self, person: str) -> int:
        sa = self._sa
        with self.engine.begin() as conn:
            ids = conn.execute(
                sa.select(self.people.c.session_id).where(self.people.c.person == person)
            ).scalars()
            ids = list(ids)
            if ids:
                conn.execute(sa.delete(self.people).where(self.people.c.session_id.in_(ids)))
                conn.execute(sa.delete(self.sessions).where(self.sessions.c.session_id.in_(ids)))
        return len(ids)


def _is_deadlock(exc: Exception) -> bool:
    """Whether a database error is PostgreSQL's deadlock (SQLSTATE 40P01): the transaction was
    rolled back and may simply run again."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "40P01"


def redis_client(address: str):
    """A client for a Feast-style Redis connection string: ``host:port[,db=N][,password=X]
    [,ssl=true]``."""
    import redis

    first, *options = [part.strip() for part in address.split(",") if part.strip()]
    host, _, port = first.rpartition(":")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    return redis.Redis(
        host=host or first,
        port=int(port) if host and port else 6379,
        db=int(settings.get("db", 0)),
        password=settings.get("password"),
        ssl=settings.get("ssl", "false").lower() == "true",
        socket_timeout=5,
    )


class RedisSessionStore(SessionStore):
    """Sessions in Redis: ``<prefix>s:<session_id>`` holds the JSON document,
    ``<prefix>p:<person>`` a sorted set of the person's session ids scored by their latest
    event; both expire with the session."""

    def __init__(
        self,
        address: str,
        ttl: float,
        clock: Callable[[], float] = time.time,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        super().__init__(ttl, clock)
        self.client = redis_client(address)
        self.prefix = prefix

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    def _person_key(self, person: str) -> str:
        return f"{self.prefix}p:{person}"

    def _apply_many(self, changes: dict[str, Change]) -> int:
        import redis

        ids = list(changes)
        keys = [self._session_key(session_id) for session_id in ids]
        with self.client.pipeline() as pipe:
            for _ in range(REDIS_BATCH_ATTEMPTS):
                try:
                    pipe.watch(*keys)
                    found = pipe.mget(keys)
                    updated = []
                    for session_id, raw in zip(ids, found, strict=True):
                        before = LiveSession.from_json(raw) if raw else None
                        session = changes[session_id](self._live(before))
                        if session is not None:
                            updated.append(session)
                    if not updated:
                        pipe.unwatch()
                        return 0
                    pipe.multi()
                    now = self.clock()
                    for session in updated:
                        self._queue_write(pipe, session, now)
                    pipe.execute()
                    return len(updated)
                except redis.WatchError:  # another writer changed one of them: read them again
                    continue
        # a concurrent writer keeps changing some session of the batch: one at a time
        return sum(self._apply(session_id, changes[session_id]) for session_id in ids)

    def _apply(self, session_id: str, change: Change) -> bool:
        import redis

        key = self._session_key(session_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    updated = change(self._live(LiveSession.from_json(raw)) if raw else None)
                    if updated is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    self._queue_write(pipe, updated, self.clock())
                    pipe.execute()
                    return True
                except redis.WatchError:  # another writer changed the session: read it again
                    continue

    def _queue_write(self, pipe, session: LiveSession, now: float) -> None:
        """Queue (inside MULTI) the writes of one session and its people's index entries."""
        ttl_ms = max(1, int((session.expires_at - now) * 1000))
        pipe.set(self._session_key(session.session_id), session.to_json(), px=ttl_ms)
        for person in session.people:
            people_key = self._person_key(person)
            pipe.zadd(people_key, {session.session_id: session.last_event_at})
            # the index lives as long as the person's longest-lived session
            pipe.pexpire(people_key, ttl_ms, gt=True)
            pipe.pexpire(people_key, ttl_ms, nx=True)

    def get(self, session_id: str) -> LiveSession | None:
        raw = self.client.get(self._session_key(session_id))
        return self._live(LiveSession.from_json(raw)) if raw else None

    def sessions_of(self, person: str) -> list[LiveSession]:
        ids = [i.decode() for i in self.client.zrevrange(self._person_key(person), 0, -1)]
        if not ids:
            return []
        found = self.client.mget([self._session_key(i) for i in ids])
        sessions = [self._live(LiveSession.from_json(raw)) for raw in found if raw]
        return [s for s in sessions if s is not None]

    def erase(self, person: str) -> int:
        people_key = self._person_key(person)
        ids = [i.decode() for i in self.client.zrange(people_key, 0, -1)]
        keys = [self._session_key(i) for i in ids]
        # the other people of those sessions lose the erased sessions from their index too
        others = set()
        for raw in self.client.mget(keys) if keys else []:
            if raw:
                others.update(LiveSession.from_json(raw).people)
        with self.client.pipeline() as pipe:
            for other in others - {person}:
                if ids:
                    pipe.zrem(self._person_key(other), *ids)
            if keys:
                pipe.delete(*keys)
            pipe.delete(people_key)
            pipe.execute()
        return len(ids)
