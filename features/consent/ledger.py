"""The consent ledger: every choice a person makes, appended, never updated (issue #12).

One table in the workspace database (:mod:`features.database`: SQLite on the embedded default,
PostgreSQL on the scale profile), made with SQLAlchemy Core on first use. A record holds the id
as given (``user_id`` or ``anonymous_id``, stored as the person key: the user id, or
``anon:<anonymous_id>``), the purposes chosen (a JSON object of booleans; a purpose left out is
not chosen by that record), the ``policy_version`` the person saw, the ``source`` (``banner``,
``api`` or ``import``), the client's timestamp when given, the country of the request when known
and the server's ``recorded_at``.

Nothing is ever updated. Only :meth:`ConsentLedger.erase` deletes (the person's right to
erasure); :meth:`ConsentLedger.export` gives everything held about a person. Reads resolve the
person through the identity graph (:mod:`features.identity.graph`): the records of every key of
the person (their anonymous devices included) in one indexed query joining the graph's nodes.
The decision rules (skew, merges, regimes) live in :mod:`features.consent.check`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from features.consent.policy import NECESSARY, ConsentPolicy
from features.database import create_tables
from features.identity.graph import MAX_ID_LENGTH, IdentityError, IdentityGraph, check_id
from features.identity.keys import ANON_PREFIX
from models.errors import TailorError

logger = logging.getLogger(__name__)

#: Default prefix of the ledger's table name (tests use their own).
TABLE_PREFIX = "tailor_consent_"
#: Where a record came from.
SOURCES = ("banner", "api", "import")
#: People whose records are read per query.
LOOKUP_BATCH = 500
_KEY_LENGTH = MAX_ID_LENGTH + len(ANON_PREFIX)


class ConsentError(TailorError, ValueError):
    """A consent record or question that is not allowed: the field at fault and why (a 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LedgerUnavailable(TailorError):
    """The ledger could not be read or written (the service answers 503 and fails closed)."""


@dataclass(frozen=True)
class ConsentRecord:
    """One stored choice. ``key``: the person key as given (``anon:<id>`` for an anonymous
    id); ``purposes``: ``{purpose: bool}``; ``client_ts``: the client's clock, when sent."""

    id: int
    key: str
    purposes: dict[str, bool]
    policy_version: str
    source: str
    recorded_at: datetime
    client_ts: datetime | None = None
    country: str | None = None

    @property
    def id_kind(self) -> str:
        return "anonymous_id" if self.key.startswith(ANON_PREFIX) else "user_id"

    @property
    def given_id(self) -> str:
        """The id as the caller gave it (without the ``anon:`` prefix)."""
        return self.key[len(ANON_PREFIX) :] if self.key.startswith(ANON_PREFIX) else self.key

    @property
    def time(self) -> datetime:
        """The record's own time for the clock-skew rule: the client's, else the server's."""
        return self.client_ts or self.recorded_at

    def as_dict(self) -> dict:
        """JSON-ready (history answers, exports)."""
        return {
            "id": self.id,
            self.id_kind: self.given_id,
            "purposes": dict(self.purposes),
            "policy_version": self.policy_version,
            "source": self.source,
            "client_ts": self.client_ts.isoformat() if self.client_ts else None,
            "country": self.country,
            "recorded_at": self.recorded_at.isoformat(),
        }


def person_key_of(user_id: str | None, anonymous_id: str | None) -> str:
    """The person key of a request that names exactly one of ``user_id`` / ``anonymous_id``;
    :class:`ConsentError` naming the field otherwise."""
    if user_id is None and anonymous_id is None:
        raise ConsentError("user_id", "give user_id or anonymous_id")
    if user_id is not None and anonymous_id is not None:
        raise ConsentError("anonymous_id", "give user_id or anonymous_id, not both")
    try:
        if user_id is not None:
            user_id = check_id("user_id", user_id)
            if user_id.startswith(ANON_PREFIX):
                raise ConsentError("user_id", f"may not start with {ANON_PREFIX!r}")
            return user_id
        return ANON_PREFIX + check_id("anonymous_id", anonymous_id)
    except IdentityError as exc:
        raise ConsentError(exc.field, str(exc).split(": ", 1)[1]) from None


def check_purposes(policy: ConsentPolicy, purposes: object) -> dict[str, bool]:
    """``purposes`` as ``{purpose: bool}`` checked against ``policy``: known names, booleans,
    at least one, ``necessary`` (if given) true. Errors name ``purposes.<name>``."""
    if not isinstance(purposes, Mapping) or not purposes:
        raise ConsentError("purposes", "give an object of purpose: true|false, at least one")
    checked: dict[str, bool] = {}
    for name, value in purposes.items():
        if name not in policy.purposes:
            allowed = ", ".join(policy.purposes)
            raise ConsentError(f"purposes.{name}", f"unknown purpose; allowed: {allowed}")
        if not isinstance(value, bool):
            raise ConsentError(f"purposes.{name}", f"must be true or false, got {value!r}")
        if name == NECESSARY and not value:
            raise ConsentError(f"purposes.{name}", "is always on; it cannot be refused")
        checked[name] = value
    return checked


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ConsentLedger:
    """The append-only consent ledger of one workspace database (see the module docstring).

    Safe to share between threads; several processes may use one database at once. Every
    database failure surfaces as :class:`LedgerUnavailable`.
    """

    def __init__(
        self,
        engine: sa.Engine,
        policy: ConsentPolicy,
        graph: IdentityGraph,
        *,
        prefix: str = TABLE_PREFIX,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.graph = graph
        self.prefix = prefix
        self._meta = sa.MetaData()
        self.records = sa.Table(
            f"{prefix}records",
            self._meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("key", sa.String(_KEY_LENGTH), nullable=False),
            sa.Column("purposes", sa.Text, nullable=False),
            sa.Column("policy_version", sa.String(64), nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("client_ts", sa.DateTime(timezone=True), nullable=True),
            sa.Column("country", sa.String(2), nullable=True),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Index(f"{prefix}records_key", "key", "id"),
        )
        nodes, records = graph.nodes, self.records
        # two indexed look-ups joined by UNION ALL (an OR over an outer join scans on SQLite):
        # the records stored under the person keys themselves, and those of their aliases
        own = sa.select(records, records.c.key.label("person"))
        aliased = (
            sa.select(records, nodes.c.canonical.label("person"))
            .select_from(nodes.join(records, records.c.key == nodes.c.key))
            .where(nodes.c.key != nodes.c.canonical)
        )
        self._person_query = sa.union_all(
            own.where(records.c.key == sa.bindparam("person")),
            aliased.where(nodes.c.canonical == sa.bindparam("person")),
        )
        self._people_query = sa.union_all(
            own.where(records.c.key.in_(sa.bindparam("people", expanding=True))),
            aliased.where(nodes.c.canonical.in_(sa.bindparam("people", expanding=True))),
        )
        merges = graph.merges
        self._merge_query = sa.select(
            merges.c.merged_at, merges.c.anonymous_key, merges.c.user_id
        ).where(
            merges.c.anonymous_key.in_(sa.bindparam("keys", expanding=True))
            | merges.c.user_id.in_(sa.bindparam("keys", expanding=True))
        )
        self._created = False
        self._fast = _SqliteReader.for_query(engine, self._person_query)

    @classmethod
    def for_workspace(cls, ws, policy: ConsentPolicy | None = None) -> ConsentLedger:
        """The ledger of ``ws`` (its database, its identity graph, its policy)."""
        from features.consent.policy import workspace_policy
        from features.database import engine as database_engine

        graph = IdentityGraph.for_workspace(ws)
        return cls(database_engine(ws.database_url), policy or workspace_policy(ws), graph)

    # -- tables ---------------------------------------------------------------------------------
    def create(self) -> None:
        """Create the table (and the identity graph's) if missing."""
        if self._created:
            return
        self.graph.create()
        create_tables(self._meta, self.engine)
        self._created = True

    def drop(self) -> None:
        """Drop the table (tests)."""
        self._meta.drop_all(self.engine, checkfirst=True)
        self._created = False

    # -- writes ---------------------------------------------------------------------------------
    def append(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        purposes: Mapping[str, bool],
        policy_version: str | None = None,
        source: str = "api",
        client_ts: datetime | None = None,
        country: str | None = None,
        recorded_at: datetime | None = None,
    ) -> ConsentRecord:
        """Append one choice and return it. Exactly one of ``user_id`` / ``anonymous_id``;
        ``policy_version`` defaults to the current one; ``recorded_at`` (server time, default
        now) is given only by imports of past choices. Bad input raises
        :class:`ConsentError` naming the field; a database failure :class:`LedgerUnavailable`.
        """
        key = person_key_of(user_id, anonymous_id)
        return self.append_many(
            [self._row(key, purposes, policy_version, source, client_ts, country, recorded_at)]
        )[0]

    def _row(self, key, purposes, policy_version, source, client_ts, country, recorded_at):
        checked = check_purposes(self.policy, purposes)
        version = self.policy.policy_version if policy_version is None else policy_version
        if not isinstance(version, str) or not version.strip() or len(version) > 64:
            raise ConsentError("policy_version", "must be text of 1 to 64 characters")
        if source not in SOURCES:
            raise ConsentError("source", f"{source!r} is not allowed; allowed: {SOURCES}")
        if client_ts is not None:
            if not isinstance(client_ts, datetime):
                raise ConsentError("timestamp", "must be an ISO 8601 date and time")
            client_ts = _aware(client_ts)
        if country is not None:
            if not isinstance(country, str) or len(country.strip()) != 2:
                raise ConsentError("country", f"{country!r} is not an ISO 3166 alpha-2 code")
            country = country.strip().upper()
        return {
            "key": key,
            "purposes": json.dumps(checked, sort_keys=True),
            "policy_version": version,
            "source": source,
            "client_ts": client_ts,
            "country": country,
            "recorded_at": _aware(recorded_at) or datetime.now(UTC),
        }

    def append_many(self, rows: Sequence[dict]) -> list[ConsentRecord]:
        """Append rows made by :meth:`row` in one transaction (imports)."""
        try:
            self.create()
            made = []
            with self.engine.begin() as conn:
                for row in rows:
                    new_id = conn.execute(self.records.insert().values(**row)).inserted_primary_key
                    made.append(self._record({**row, "id": int(new_id[0])}))
            return made
        except sa.exc.SQLAlchemyError as exc:
            logger.error("consent ledger not writable: %s", type(exc).__name__)
            raise LedgerUnavailable("the consent ledger cannot be written") from exc

    def row(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        purposes: Mapping[str, bool],
        policy_version: str | None = None,
        source: str = "import",
        client_ts: datetime | None = None,
        country: str | None = None,
        recorded_at: datetime | None = None,
    ) -> dict:
        """A checked row for :meth:`append_many` (same checks and errors as :meth:`append`)."""
        key = person_key_of(user_id, anonymous_id)
        return self._row(key, purposes, policy_version, source, client_ts, country, recorded_at)

    # -- reads ----------------------------------------------------------------------------------
    def _record(self, row: Mapping) -> ConsentRecord:
        return ConsentRecord(
            id=int(row["id"]),
            key=row["key"],
            purposes=json.loads(row["purposes"]),
            policy_version=row["policy_version"],
            source=row["source"],
            recorded_at=_aware(row["recorded_at"]),
            client_ts=_aware(row["client_ts"]),
            country=row["country"],
        )

    def records_of(self, canonical_keys: Iterable[str]) -> dict[str, list[ConsentRecord]]:
        """``{canonical key: its person's records, oldest first}`` for canonical keys (every
        alias's records included), one indexed query per :data:`LOOKUP_BATCH` people. A person
        with no record maps to ``[]``."""
        roots = list(dict.fromkeys(canonical_keys))
        found: dict[str, dict[int, ConsentRecord]] = {root: {} for root in roots}
        try:
            self.create()
            if len(roots) == 1 and self._fast is not None:  # every request on SQLite
                rows = self._fast.rows(roots[0])
            else:
                rows = self._query(roots)
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
            logger.error("consent ledger not readable: %s", type(exc).__name__)
            raise LedgerUnavailable("the consent ledger cannot be read") from exc
        for row in rows:
            person = row["person"] if row["person"] in found else row["key"]
            if person in found:
                found[person][row["id"]] = self._record(row)
        return {root: [kept[i] for i in sorted(kept)] for root, kept in found.items()}

    def _query(self, roots: list[str]) -> list[Mapping]:
        with self.engine.connect() as conn:
            if len(roots) == 1:  # a statement without expanding lists
                return [r._mapping for r in conn.execute(self._person_query, {"person": roots[0]})]
            rows: list[Mapping] = []
            for start in range(0, len(roots), LOOKUP_BATCH):
                batch = roots[start : start + LOOKUP_BATCH]
                rows += [r._mapping for r in conn.execute(self._people_query, {"people": batch})]
            return rows

    def merge_times(self, keys: Sequence[str]) -> list[datetime]:
        """When the person keys ``keys`` were linked (their merge log rows), oldest first."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(self._merge_query, {"keys": list(keys)}).all()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerUnavailable("the identity merge log cannot be read") from exc
        return sorted(_aware(row.merged_at) for row in rows)

    def all_records(self) -> list[ConsentRecord]:
        """Every record, oldest first (exports and bulk checks)."""
        self.create()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.records).order_by(self.records.c.id))
            return [self._record(row._mapping) for row in rows]

    def counts(self) -> dict[str, int]:
        """``{"records": n, "people": distinct keys}``."""
        self.create()
        query = sa.select(sa.func.count(), sa.func.count(sa.distinct(self.records.c.key)))
        with self.engine.connect() as conn:
            records, people = conn.execute(query).one()
        return {"records": int(records), "people": int(people)}

    # -- a person's data: export and erasure ----------------------------------------------------
    def export(self, key: str) -> list[dict]:
        """Every record of the person of ``key`` (any of their keys), oldest first, JSON-ready."""
        root = self.graph.canonical(key)
        return [record.as_dict() for record in self.records_of([root])[root]]

    def erase(self, key: str) -> int:
        """Delete every record of the person of ``key`` (all their aliases); returns how many.
        Call it before :meth:`IdentityGraph.erase`, which forgets the aliases."""
        return self.erase_keys(self.graph.aliases(key))

    def erase_keys(self, keys: Sequence[str]) -> int:
        """Delete the records stored under exactly these person keys; returns how many."""
        self.create()
        with self.engine.begin() as conn:
            deleted = conn.execute(self.records.delete().where(self.records.c.key.in_(list(keys))))
        return int(deleted.rowcount or 0)


class _SqliteReader:
    """The one-person read (every request) on a SQLite ledger: one raw ``sqlite3`` connection
    per thread, the statement compiled once. SQLAlchemy's pool check-out, compile-cache look-up
    and result set cost ~0.5 ms a read; this, ~0.05 ms. Autocommit: each read sees every
    choice committed before it (by any process), so nothing is stale."""

    def __init__(self, path: str, sql: str, names: list[str], processors: dict) -> None:
        self.path, self.sql, self.names, self.processors = path, sql, names, processors
        self._local = threading.local()

    @classmethod
    def for_query(cls, engine: sa.Engine, query) -> _SqliteReader | None:
        """A reader of ``query`` (one ``person`` parameter) when ``engine`` is a SQLite file."""
        if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
            return None
        compiled = query.compile(dialect=engine.dialect)
        names = list(compiled.positiontup or [])
        processors = {}
        for column in query.selected_columns:
            processor = column.type.dialect_impl(engine.dialect).result_processor(
                engine.dialect, None
            )
            if processor is not None:
                processors[column.name] = processor
        return cls(str(engine.url.database), compiled.string, names, processors)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
        return connection

    def rows(self, person: str) -> list[dict]:
        cursor = self._connection().execute(self.sql, [person for _ in self.names])
        columns = [d[0] for d in cursor.description]
        out = []
        for values in cursor.fetchall():
            row = dict(zip(columns, values, strict=True))
            for name, processor in self.processors.items():
                row[name] = processor(row[name])
            out.append(row)
        return out
