"""The service's online read, resolved once per store (used by :mod:`features.store`), the
batched online write of pushes (:func:`write_view`), and the one module that uses Feast's
private API.

Everything here past Feast's public surface (``FeatureStore._get_provider``, the provider's
``online_read`` / ``ingest_df`` / ``online_write_batch``, ``SqliteOnlineStore._get_db_path`` and
``_get_conn``, ``compute_table_id`` / ``_table_id`` / ``_quote_id`` and the SQLite table layout
and upsert, ``FeatureStore._fvs_for_push_source_or_raise``) is tested against
Feast :data:`FEAST_TESTED` only. At import the installed Feast is checked: another version turns
the fast path off (a warning says so) and :mod:`features.store` uses Feast's public
``get_online_features`` and ``push``, as it does when ``TAILOR_FAST_ONLINE_READ=0``
(:func:`fast_path_enabled`). The read timeout (``TAILOR_ONLINE_READ_TIMEOUT_MS``) bounds the fast
path only: Feast's own read of a locked SQLite store waits its busy timeout (5 s) before it
fails. These settings come from the :class:`~features.settings.Settings` the store was built
with (:func:`use_settings`, called by :func:`features.store.feature_store`), never from the
environment here.

Feast's ``get_online_features`` rebuilds the feature service, its views and their fields from
the registry proto on every call (with typeguard checks on each ``Field``) and runs on-demand
views through pandas and pyarrow: about 25 ms for one row on the embedded store. An
:class:`OnlineReader` resolves a service once and answers the same dict Feast gives:

* on the SQLite online store, every stored view of the service in one SQL query on the store's
  own tables (:class:`SqliteViews`), as ``SqliteOnlineStore.online_read`` reads them;
* on any other online store (Redis on the scale profile), each view with the store's own
  ``online_read``;
* on-demand views from a memo of their outputs by input (see :class:`OnlineReader`).

``tests/integration/test_online_read.py`` checks the answers equal Feast's on SQLite and Redis.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import feast
import pandas as pd
from feast import FeatureStore
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

from features.settings import DEFAULTS, Settings

logger = logging.getLogger(__name__)

#: The Feast release line whose private API this module was written and tested against.
FEAST_TESTED = "0.67"
#: Whether the installed Feast is that line (checked once, at import).
FEAST_SUPPORTED = feast.__version__.split(".")[:2] == FEAST_TESTED.split(".")
if not FEAST_SUPPORTED:
    logger.warning(
        "Feast %s is installed; the fast online read and push were tested on %s.x only, so "
        "Feast's public get_online_features and push are used instead",
        feast.__version__,
        FEAST_TESTED,
    )


class OnlineStoreUnavailable(RuntimeError):
    """The online store did not answer within the read timeout (locked, busy)."""


def fast_path_enabled(settings: Settings) -> bool:
    """Whether the fast read and push are used: the Feast version is the tested one and
    ``settings.fast_online_read`` (``TAILOR_FAST_ONLINE_READ``, default on)."""
    return FEAST_SUPPORTED and settings.fast_online_read


#: On-demand outputs memoised per reader before the memo starts over.
MEMO_LIMIT = 10_000
#: A reader is rebuilt after this many seconds, so registry changes made elsewhere show up.
READER_TTL_SECONDS = 60.0
#: Serialized entity keys and converted values kept per SQLite reader before starting over.
SQLITE_CACHE_LIMIT = 50_000


def _immutable(answer: dict) -> bool:
    return all(v is None or type(v) in _IMMUTABLE for v in answer.values())


class _Unsupported(ValueError):
    """A feature service this reader does not handle; Feast's own read answers it."""


class OnlineReader:
    """One feature service's online read, resolved once per store instead of once per call.

    Stored views are read from the online store (see the module docstring) and their values
    converted with Feast's own type map, so the answer is the dict Feast gives: entity key, then
    every feature of the service in Feast's order.

    On-demand views are pure functions of their declared inputs, and their inputs here take few
    values (a device and a stored main device), so their outputs are memoised by input: a miss
    asks Feast for the whole row (the reference answer) and remembers the outputs.
    """

    def __init__(self, store: FeatureStore, service: str, settings: Settings = DEFAULTS) -> None:
        from feast.on_demand_feature_view import OnDemandFeatureView

        # no reference to ``store`` itself: readers are cached in a WeakKeyDictionary keyed by it
        self.config = store.config
        self.service = service
        self.built = time.monotonic()
        self._provider = store._get_provider()  # public API has no online_read without it
        on_demand = {view.name for view in store.list_on_demand_feature_views()}
        # (view, join key, its value type, feature names, their value types)
        self.views: list[tuple[Any, str, Any, list[str], dict[str, Any]]] = []
        self.on_demand: list[tuple[OnDemandFeatureView, list[str], list[str]]] = []
        self.returned: list[str] = []  # feature names in Feast's order
        join_keys: set[str] = set()
        request_keys: set[str] = set()
        for projection in store.get_feature_service(service).feature_view_projections:
            if projection.name_alias or projection.join_key_map:
                raise _Unsupported(f"projection {projection.name} renames its view or keys")
            names = [field.name for field in projection.features]
            self.returned += names
            if projection.name in on_demand:
                view = store.get_on_demand_feature_view(projection.name)
                if view.write_to_online_store or view.aggregations:
                    raise _Unsupported(f"on-demand view {view.name} is stored or aggregated")
                inputs = [
                    field.name
                    for source in view.source_feature_view_projections.values()
                    for field in source.features
                ]
                request = [
                    field.name
                    for source in view.source_request_sources.values()
                    for field in source.schema
                ]
                request_keys.update(request)
                self.on_demand.append((view, inputs, request))
                continue
            view = store.get_feature_view(projection.name)
            keys = [column.name for column in view.entity_columns]
            if len(keys) != 1:
                raise _Unsupported(f"view {view.name} has join keys {keys}, not one")
            join_keys.update(keys)
            types = {field.name: field.dtype.to_value_type() for field in projection.features}
            key_type = view.entity_columns[0].dtype.to_value_type()
            self.views.append((view, keys[0], key_type, names, types))
        if len(join_keys) != 1:
            raise _Unsupported(f"service {service} has join keys {sorted(join_keys)}")
        available = set(self.returned)
        for view, inputs, _ in self.on_demand:
            if not set(inputs) <= available:
                raise _Unsupported(f"on-demand view {view.name} reads features not served")
        (self.join_key,) = join_keys
        self.row_keys = {self.join_key, *request_keys}
        self._memo: dict[tuple, dict[str, Any]] = {}
        self._sqlite = SqliteViews.for_views(self.config, self._provider, self.views, settings)

    def read(self, rows: list[dict]) -> list[dict] | None:
        """One dict per row, or None when Feast must answer (unexpected keys, memo miss)."""
        if not rows or any(row.keys() != self.row_keys for row in rows):
            return None
        out = self._sqlite.read(rows) if self._sqlite is not None else None
        if out is None:
            out = self._read_views(rows)
        for view, inputs, request in self.on_demand:
            for row, answer in zip(rows, out, strict=True):
                key = (view.name, *(answer[n] for n in inputs), *(row[n] for n in request))
                try:
                    outputs = self._memo.get(key)
                except TypeError:  # an unhashable input (a list feature): let Feast answer
                    return None
                if outputs is None:
                    return None
                answer.update(outputs)
        return out

    def _read_views(self, rows: list[dict]) -> list[dict]:
        """Each stored view with the online store's own ``online_read`` (any online store)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.type_map import python_values_to_proto_values

        out: list[dict] = [{self.join_key: row[self.join_key]} for row in rows]
        for view, key, key_type, names, types in self.views:
            values = python_values_to_proto_values([row[key] for row in rows], key_type)
            entity_keys = [EntityKeyProto(join_keys=[key], entity_values=[v]) for v in values]
            # a copy: the Redis store appends its timestamp key to the list it is given
            found = self._provider.online_read(self.config, view, entity_keys, list(names))
            for answer, (_, data) in zip(out, found, strict=True):
                data = data or {}
                for name in names:
                    answer[name] = _python(data.get(name), types[name])
        return out

    def remember(self, rows: list[dict], answers: list[dict]) -> None:
        """Memoise the on-demand outputs of Feast's answers to ``rows``."""
        if len(self._memo) > MEMO_LIMIT:
            self._memo.clear()
        for view, inputs, request in self.on_demand:
            names = [field.name for field in view.features]
            for row, answer in zip(rows, answers, strict=True):
                key = (view.name, *(answer.get(n) for n in inputs), *(row.get(n) for n in request))
                try:
                    self._memo[key] = {name: answer.get(name) for name in names}
                except TypeError:
                    continue


class SqliteViews:
    """Every stored view of a service for a few entities in one query on the SQLite online store.

    ``SqliteOnlineStore.online_read`` runs one query per view on one connection shared by all
    threads, and parses each row's ``event_ts`` through ``sqlite3``'s converters (the answer
    never uses it). This reads the same tables (``compute_table_id``), the same entity keys
    (``serialize_entity_key`` with the config's version) and the same ``value`` blobs, so the
    answer is Feast's: a view without a row for the entity gives None for each of its features,
    as does a feature the row lacks.

    ``timeout`` is the lock wait of one read in seconds; ``answer_limit`` the one-row answers kept
    per thread (``0``: none). Each thread has its own read-only connection (the service reads on the
    event loop while ``/events`` pushes in a worker thread). Outside a transaction every ``SELECT``
    sees the pushes committed before it, and never a push half written, which the shared connection
    can show. Entity keys and converted values are cached: a person's key is serialized once, and a
    feature takes few distinct values (the cache holds immutable values only). A one-row answer is
    kept until the store's data version changes (any commit by any connection, this process or
    another), so a person read again before anything was written costs a ``PRAGMA``, not the query
    (:class:`_ThreadRead`).
    """

    def __init__(
        self,
        path: str,
        key_version: int,
        tables: list[str],
        views: list,
        timeout: float = DEFAULTS.online_read_timeout_ms / 1e3,
        answer_limit: int = DEFAULTS.online_answers,
    ) -> None:
        self.uri = Path(path).absolute().as_uri() + "?mode=ro"
        self.key_version = key_version
        self.join_key = views[0][1]
        self.key_type = views[0][2]
        self.names = [name for view in views for name in view[3]]
        # (table index, feature name) -> value type, only for the features the service returns
        self.types = {(i, name): view[4][name] for i, view in enumerate(views) for name in view[3]}
        quoted = ['"' + table.replace('"', '""') + '"' for table in tables]
        self._select = [
            f"SELECT {i}, entity_key, feature_name, value FROM {table} WHERE entity_key IN "
            for i, table in enumerate(quoted)
        ]
        self._sql: dict[int, str] = {}  # rows per read -> query
        self._values: dict[tuple[int, str, bytes], Any] = {}  # (table, feature, blob) -> value
        self._local = threading.local()
        self.answer_limit = answer_limit
        self.timeout = timeout

    @classmethod
    def for_views(
        cls, config: Any, provider: Any, views: list, settings: Settings = DEFAULTS
    ) -> SqliteViews | None:
        """A reader when the online store is Feast's own SQLite store and the views share one
        join key of one type and no feature name; otherwise None (each view read by Feast).
        Its lock wait and kept answers are ``settings``' (``TAILOR_ONLINE_READ_TIMEOUT_MS``,
        ``TAILOR_ONLINE_ANSWERS``)."""
        from feast.infra.online_stores.helpers import compute_table_id
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        if not views or type(getattr(provider, "online_store", None)) is not SqliteOnlineStore:
            return None
        names = [name for view in views for name in view[3]]
        if len({(view[1], view[2]) for view in views}) != 1 or len(set(names)) != len(names):
            return None
        versioning = config.registry.enable_online_feature_view_versioning
        tables = [compute_table_id(config.project, view[0], versioning) for view in views]
        path = SqliteOnlineStore._get_db_path(config)
        return cls(
            path,
            config.entity_key_serialization_version,
            tables,
            views,
            timeout=settings.online_read_timeout_ms / 1e3,
            answer_limit=settings.online_answers,
        )

    def read(self, rows: list[dict]) -> list[dict] | None:
        """The stored features of ``rows``, or None when the query fails (no file or table yet):
        the views are then read by Feast, which answers or raises as it would.

        A lock held longer than the read timeout (a writer, ``BEGIN EXCLUSIVE`` elsewhere)
        raises :class:`OnlineStoreUnavailable` instead: Feast's own read would wait 5 s more on
        the same lock."""
        keys = [self._key(row[self.join_key]) for row in rows]
        try:
            local = self._thread()
            # any commit since the last read (a push from this process or another) changes the
            # data version: the remembered answers are dropped before this read
            ((version,),) = local.connection.execute("PRAGMA data_version").fetchall()
            if version != local.version:
                local.answers.clear()
                local.version = version
            if len(keys) == 1 and keys[0] in local.answers:
                answer = dict(local.answers[keys[0]])
                answer[self.join_key] = rows[0][self.join_key]
                return [answer]
            found = local.connection.execute(self._query(len(keys)), keys * len(self._select))
            found = found.fetchall()
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise OnlineStoreUnavailable(
                    f"online store locked for more than {self.timeout * 1e3:g} ms"
                ) from exc
            logger.debug("SQLite online read failed, reading through Feast: %s", exc)
            return None
        except sqlite3.Error as exc:
            logger.debug("SQLite online read failed, reading through Feast: %s", exc)
            return None
        empty = dict.fromkeys(self.names)
        out = [{self.join_key: row[self.join_key], **empty} for row in rows]
        answers = dict(zip(keys, out, strict=True))  # a key asked twice: one answer, copied
        values = self._values
        for table, entity_key, name, blob in found:
            value = values.get((table, name, blob), _MISSING)
            if value is _MISSING:
                value = self._convert(table, name, blob)
                if value is _MISSING:  # not a feature of this service
                    continue
            answers[entity_key][name] = value
        if len(answers) < len(out):
            out = [dict(answers[key]) for key in keys]
        elif self.answer_limit and len(keys) == 1 and _immutable(out[0]):
            if len(local.answers) >= self.answer_limit:
                local.answers.clear()
            local.answers[keys[0]] = dict(out[0])
        return out

    def _query(self, n_rows: int) -> str:
        sql = self._sql.get(n_rows)
        if sql is None:
            marks = "(" + ",".join("?" * n_rows) + ")"
            sql = self._sql[n_rows] = " UNION ALL ".join(s + marks for s in self._select)
        return sql

    def _convert(self, table: int, name: str, blob: bytes) -> Any:
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        value_type = self.types.get((table, name), _MISSING)
        if value_type is _MISSING:
            return _MISSING
        value = _python(ValueProto.FromString(blob), value_type)
        if value is None or isinstance(value, str | int | float | bytes):  # bool is an int
            if len(self._values) > SQLITE_CACHE_LIMIT:
                self._values.clear()
            self._values[(table, name, blob)] = value
        return value

    def _key(self, value: Any) -> bytes:
        return entity_key_bytes(self.join_key, self.key_type, value, self.key_version)

    def _thread(self) -> _ThreadRead:
        local = getattr(self._local, "read", None)
        if local is None:
            # check_same_thread (the default): this connection is only ever used by this thread
            connection = sqlite3.connect(self.uri, uri=True, timeout=self.timeout)
            local = self._local.read = _ThreadRead(connection)
        return local


#: Serialized entity keys, shared by the reads and the writes of every store in this process (a
#: consumer reads a person's persona and pushes it back: the key is serialized once).
_KEYS: dict[tuple, bytes] = {}


def entity_key_bytes(join_key: str, key_type: Any, value: Any, version: int) -> bytes:
    """Feast's ``serialize_entity_key`` of one single-key entity, cached for str and int values
    (1, 1.0 and True are one dict key, not one entity key, so no other type is cached)."""
    cacheable = type(value) is str or type(value) is int
    if cacheable:
        key = _KEYS.get((join_key, key_type, version, value))
        if key is not None:
            return key
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.type_map import python_values_to_proto_values

    (proto,) = python_values_to_proto_values([value], key_type)
    entity_key = EntityKeyProto(join_keys=[join_key], entity_values=[proto])
    key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
    if cacheable:
        if len(_KEYS) > SQLITE_CACHE_LIMIT:
            _KEYS.clear()
        _KEYS[(join_key, key_type, version, value)] = key
    return key


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class _ThreadRead:
    """One thread's read-only connection, and its one-row answers as of ``version`` (the
    connection's ``PRAGMA data_version``, which changes with every commit by another
    connection), so a person read again before anything was written is not read again."""

    __slots__ = ("answers", "connection", "version")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.version: int | None = None
        self.answers: dict[bytes, dict[str, Any]] = {}


_MISSING = object()
#: Values an answer may share with later reads (a list would be shared, so it is not cached).
_IMMUTABLE = frozenset({str, int, float, bool, bytes})

#: Value fields returned as they are (Feast's converter only special-cases them for UUID hints).
_PLAIN_FIELDS = frozenset(
    {"string_val", "int64_val", "int32_val", "double_val", "float_val", "bool_val"}
)


def _python(value: Any, value_type: Any) -> Any:
    """A ``ValueProto`` as Python, the same as Feast's ``feast_value_type_to_python_type``,
    with its common scalar cases answered directly (a tenth of its cost)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _PLAIN_FIELDS and value_type not in (ValueType.UUID, ValueType.TIME_UUID):
        return getattr(value, kind)
    return feast_value_type_to_python_type(value, value_type)


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PUSH_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SETTINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_settings(store: FeatureStore, settings: Settings) -> None:
    """Read and push through ``store`` with ``settings`` (the fast-path switch, the read timeout,
    the kept answers); its readers are rebuilt with them. A store never given settings uses the
    defaults. :func:`features.store.feature_store` calls this with the workspace's settings."""
    _SETTINGS[store] = settings
    forget_readers(store)


def store_settings(store: FeatureStore) -> Settings:
    """The settings ``store`` reads and pushes with (see :func:`use_settings`)."""
    return _SETTINGS.get(store, DEFAULTS)


def online_reader(store: FeatureStore, service: str) -> OnlineReader | None:
    """The store's cached reader for ``service``; None when only Feast's read can answer it
    (a service this reader does not handle, or the fast path off: see :func:`fast_path_enabled`).
    """
    readers = _READERS.setdefault(store, {})
    reader = readers.get(service, False)
    if reader is False or (reader and time.monotonic() - reader.built > READER_TTL_SECONDS):
        settings = store_settings(store)
        if not fast_path_enabled(settings):
            readers[service] = None
            return None
        try:
            reader = OnlineReader(store, service, settings)
        except _Unsupported as exc:
            logger.info("online reads of %s go through Feast: %s", service, exc)
            reader = None
        readers[service] = reader
    return reader


def push_views(store: FeatureStore, source: str) -> list:
    """The feature views fed by push source ``source``, resolved from the registry at most once
    per :data:`READER_TTL_SECONDS` (Feast's ``push`` lists and rebuilds every view and feature
    service per call: ~17 of its ~24 ms for one row)."""
    cached = _PUSH_VIEWS.setdefault(store, {}).get(source)
    if cached is None or time.monotonic() - cached[0] > READER_TTL_SECONDS:
        views = sorted(store._fvs_for_push_source_or_raise(source, True), key=lambda v: v.name)
        cached = _PUSH_VIEWS[store][source] = (time.monotonic(), views)
    return cached[1]


def push_online(store: FeatureStore, source: str, rows: pd.DataFrame) -> None:
    """Rows into the online store through push source ``source``.

    With the fast path each view fed by the source is written in one batch
    (:func:`write_view`), the views cached (see :func:`push_views`): the push views are plain
    feature views (nothing to transform on write) in no precomputed feature service. Without
    it, through Feast's public ``push``."""
    if rows.empty:
        return
    if not fast_path_enabled(store_settings(store)):
        from feast.data_source import PushMode

        store.push(source, rows, to=PushMode.ONLINE)
        return
    provider = store._get_provider()
    for view in push_views(store, source):
        write_view(store.config, provider, view, rows)


def write_view(config: Any, provider: Any, view: Any, rows: pd.DataFrame) -> None:
    """``rows`` into one feature view of the online store, as Feast's ``ingest_df`` leaves it.

    Only each entity's last row is written: a store writes the rows in order and keeps the
    last (SQLite), or keeps the newest and pushes come in time order (Redis), so the rows
    before it are overwritten anyway (a consumer batch holds a person's every event). Values
    and keys are converted as Feast converts them (``python_values_to_proto_values`` on each
    column, ``serialize_entity_key``), the keys through the cache the reads share. On Feast's
    SQLite store the rows go in with one ``executemany`` of Feast's own upsert in one
    transaction (Feast runs one statement per feature and row: a consumer batch of 500 people
    was ~20 % of its time); on any other store through the store's ``online_write_batch``.
    A view this does not handle (several join keys, a field mapping, vectors) goes through
    Feast's ``ingest_df``."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.type_map import python_values_to_proto_values

    keys = [column.name for column in view.entity_columns]
    source = view.batch_source
    online = config.online_store
    vectors = getattr(online, "vector_enabled", False) or getattr(
        online, "enable_openai_compatible_store", False
    )
    if len(keys) != 1 or source is None or source.field_mapping or vectors:
        provider.ingest_df(view, rows)
        return
    (join_key,) = keys
    key_type = view.entity_columns[0].dtype.to_value_type()
    frame = rows.drop_duplicates(join_key, keep="last")
    names = [field.name for field in view.features]
    missing = [c for c in (join_key, source.timestamp_field, *names) if c not in frame.columns]
    if missing:
        raise ValueError(f"push rows for view {view.name} lack the columns {missing}")
    import pyarrow as pa

    # Feast's own conversion: each column through arrow, then to protos
    table = pa.Table.from_pandas(frame[names], preserve_index=False).combine_chunks()
    values = {
        field.name: _protos(
            table.column(field.name).to_numpy(zero_copy_only=False), field.dtype.to_value_type()
        )
        for field in view.features
    }
    stamps = _naive_utc(frame[source.timestamp_field])
    created_column = source.created_timestamp_column
    created = _naive_utc(frame[created_column]) if created_column else [None] * len(frame)
    people = frame[join_key].tolist()
    if type(getattr(provider, "online_store", None)) is SqliteOnlineStore:
        _write_sqlite(
            config, provider.online_store, view, people, key_type, values, stamps, created
        )
        return
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto

    entity_values = python_values_to_proto_values(people, key_type)
    data = [
        (
            EntityKeyProto(join_keys=[join_key], entity_values=[value]),
            {name: values[name][i] for name in names},
            stamps[i],
            created[i],
        )
        for i, value in enumerate(entity_values)
    ]
    provider.online_write_batch(config, view, data, None)


def _protos(column: Any, value_type: Any) -> list:
    """Feast's ``python_values_to_proto_values`` of one column; a string column of str and None
    (most pushed features) built directly, as Feast builds it, at a third of its cost."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.type_map import python_values_to_proto_values

    values = column.tolist()
    if value_type == ValueType.STRING and all(v is None or type(v) is str for v in values):
        return [ValueProto() if v is None else ValueProto(string_val=v) for v in values]
    return python_values_to_proto_values(column, value_type)


def _naive_utc(column: pd.Series) -> list:
    """Naive UTC datetimes, as Feast's conversion gives them (``to_naive_utc``)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(column, utc=True)).tz_localize(None)
    return list(stamps.to_pydatetime())


def _write_sqlite(
    config: Any,
    online: Any,
    view: Any,
    people: list,
    key_type: Any,
    values: dict[str, list],
    stamps: list,
    created: list,
) -> None:
    """Feast's SQLite upsert (``SqliteOnlineStore.online_write_batch``: the same table, columns
    and values) for every feature of every row in one ``executemany``, one transaction, on the
    store's own connection."""
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    join_key = view.entity_columns[0].name
    version = config.entity_key_serialization_version
    entity_keys = [entity_key_bytes(join_key, key_type, person, version) for person in people]
    table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
    sql = (
        f"INSERT INTO {_quote_id(table)} "
        "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
    )
    rows = []
    for i, entity_key in enumerate(entity_keys):
        for name, column in values.items():
            value = column[i]
            text, _ = extract_text_and_num(value, False)
            rows.append((entity_key, name, value.SerializeToString(), text, stamps[i], created[i]))
    connection = online._get_conn(config)
    with connection:
        connection.executemany(sql, rows)


def forget_readers(store: FeatureStore) -> None:
    """Drop the store's readers and push views (after ``apply`` changed its declarations)."""
    _READERS.pop(store, None)
    _PUSH_VIEWS.pop(store, None)


def _entity_keys(join_key: str, values: list[str]) -> list:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(values, ValueType.STRING)
    return [EntityKeyProto(join_keys=[join_key], entity_values=[p]) for p in protos]


def erase_entities(store: FeatureStore, join_key: str, values: list[str]) -> int:
    """Delete every online row of these entities (string ``join_key`` values) from every view
    of the store keyed by ``join_key``; returns how many (view, entity) rows went.

    Feast has no per-entity delete, so this writes to the store's own layout (Feast
    :data:`FEAST_TESTED`): on SQLite a ``DELETE`` per view table (``compute_table_id``, keys as
    ``serialize_entity_key`` writes them); on Redis the entity's hash (``_redis_key``: every view
    of one entity shares it), counting its ``_ts:<view>`` fields first."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key, compute_table_id
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    if not values:
        return 0
    config = store.config
    online = store._get_provider().online_store
    version = config.entity_key_serialization_version
    keys = _entity_keys(join_key, values)
    views = [v for v in store.list_feature_views() if join_key in v.join_keys]
    if isinstance(online, SqliteOnlineStore):
        path = Path(SqliteOnlineStore._get_db_path(config))
        if not path.exists():
            return 0
        blobs = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
        versioning = config.registry.enable_online_feature_view_versioning
        marks = ",".join("?" * len(blobs))
        removed = 0
        with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as db, db:
            db.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            for view in views:
                table = compute_table_id(config.project, view, versioning)
                if table not in tables:
                    continue
                quoted = '"' + table.replace('"', '""') + '"'
                where = f"FROM {quoted} WHERE entity_key IN ({marks})"
                found = db.execute(f"SELECT COUNT(DISTINCT entity_key) {where}", blobs).fetchone()
                db.execute(f"DELETE {where}", blobs)
                removed += int(found[0])
        return removed
    if isinstance(online, RedisOnlineStore):
        client = online._get_client(config.online_store)
        redis_keys = [_redis_key(config.project, k, version) for k in keys]
        removed = 0
        for fields_of in (client.hkeys(k) for k in redis_keys):
            removed += sum(1 for f in fields_of if bytes(f).startswith(b"_ts:"))
        client.delete(*redis_keys)
        return removed
    raise NotImplementedError(
        f"erasing from the {type(online).__name__} online store is not supported; "
        "supported: SQLite, Redis"
    )
