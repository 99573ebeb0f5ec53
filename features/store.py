"""The one adapter to Feast: the only module that builds a ``FeatureStore``.

The declarations live in ``feature_repo/``; this module renders the profile's
``feature_store.yaml`` into the workspace's Feast folder, applies the declarations, writes the
offline tables, materializes, and reads historical (point-in-time) and online features.
"""

from __future__ import annotations

import logging
import os
import string
import time
import weakref
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

from features.workspace import Workspace

logger = logging.getLogger(__name__)

#: Offline tables, relative to ``Workspace.feature_data_dir``; names match feature_repo sources.
TABLES = {
    "user_features": "user_features.parquet",
    "item_features": "item_features.parquet",
    "user_activity": "user_activity.parquet",
    "user_personas": "user_personas.parquet",
}
USER_SERVICE = "user_profile_v1"
ITEM_SERVICE = "item_profile_v1"
ACTIVITY_PUSH = "user_activity_push"
PERSONA_PUSH = "user_persona_push"
PERSONA_SERVICE = "user_persona_v1"

DEFAULT_REDIS = "127.0.0.1:6379"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _template(profile: str) -> str:
    name = "feature_store.yaml" if profile == "local" else f"feature_store.{profile}.yaml"
    return resources.files("feature_repo").joinpath(name).read_text(encoding="utf-8")


def render_config(ws: Workspace) -> Path:
    """Write the profile's ``feature_store.yaml`` with this workspace's paths and services."""
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "TAILOR_FEAST_DIR": str(ws.feast_dir),
        "TAILOR_FEAST_PROJECT": os.environ.get("TAILOR_FEAST_PROJECT", "tailor"),
        "TAILOR_REDIS": os.environ.get("TAILOR_REDIS", DEFAULT_REDIS),
        "TAILOR_POSTGRES_URL": os.environ.get("TAILOR_POSTGRES_URL", DEFAULT_POSTGRES),
    }
    text = string.Template(_template(ws.profile)).substitute(values)
    target = ws.feast_dir / "feature_store.yaml"
    target.write_text(text, encoding="utf-8")
    return target


def feature_store(ws: Workspace) -> FeatureStore:
    """A ``FeatureStore`` for the workspace; relative source paths resolve in its Feast folder."""
    config = render_config(ws)
    return FeatureStore(repo_path=str(ws.feast_dir), fs_yaml_file=config)


def declarations() -> list:
    """Every Feast object declared in ``feature_repo/definitions.py``."""
    from feature_repo import definitions

    return list(definitions.OBJECTS)


def apply(ws: Workspace, store: FeatureStore | None = None) -> FeatureStore:
    """Register the declarations (idempotent, like ``feast apply``)."""
    store = store or feature_store(ws)
    for name in TABLES:
        if name != "user_personas" and not (ws.feature_data_dir / TABLES[name]).exists():
            raise FileNotFoundError(
                f"offline table {name!r} is missing at {ws.feature_data_dir / TABLES[name]}; "
                "run `tailor features build` first"
            )
    if not (ws.feature_data_dir / TABLES["user_personas"]).exists():
        # tables built before personas existed: the view starts empty and /events fills it
        from features.personas import persona_frame

        write_tables(ws, {"user_personas": persona_frame([])})
    store.apply(declarations())
    forget_readers(store)
    return store


def write_tables(ws: Workspace, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write offline feature tables (full rewrite of each derived table)."""
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; allowed: {sorted(TABLES)}")
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in tables.items():
        path = ws.feature_data_dir / TABLES[name]
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.rename(path)
        written[name] = path
    return written


def materialize(
    ws: Workspace, start: datetime, end: datetime, store: FeatureStore | None = None
) -> FeatureStore:
    """Load the offline rows with ``start <= event_timestamp <= end`` into the online store."""
    store = store or feature_store(ws)
    store.materialize(start_date=start, end_date=end)
    return store


def historical_features(
    ws: Workspace,
    entity_df: pd.DataFrame,
    service: str = USER_SERVICE,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time join: each entity row sees only feature rows at or before its timestamp."""
    store = store or feature_store(ws)
    return store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(service)
    ).to_df()


def online_features(
    store: FeatureStore, rows: list[dict], service: str = USER_SERVICE
) -> list[dict]:
    """Online read for a few entity rows; returns one dict per row.

    The same answer as Feast's ``get_online_features(...).to_dict()`` (entity keys, then every
    feature of the service; request data dropped), read through :class:`OnlineReader`, which
    resolves the service once instead of on every call (see its docstring for the numbers).
    """
    reader = online_reader(store, service)
    answer = reader.read(rows) if reader is not None else None
    if answer is not None:
        return answer
    answer = _feast_online_features(store, rows, service)
    if reader is not None:
        reader.remember(rows, answer)
    return answer


def has_feature_service(store: FeatureStore, service: str) -> bool:
    """Whether the registry holds ``service`` now (read past the registry cache)."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        store.get_feature_service(service, allow_cache=False)
    except FeatureServiceNotFoundException:
        return False
    return True


def _feast_online_features(store: FeatureStore, rows: list[dict], service: str) -> list[dict]:
    """Feast's own online read: the reference answer and the fallback."""
    response = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=rows
    ).to_dict()
    return [{key: values[i] for key, values in response.items()} for i in range(len(rows))]


class OnlineReader:
    """One feature service's online read, resolved once per store instead of once per call.

    Feast's ``get_online_features`` rebuilds the feature service, its views and their fields
    from the registry proto on every call (with typeguard checks on each ``Field``) and runs
    on-demand views through pandas and pyarrow: about 25 ms for one row on the embedded store,
    against ~0.2 ms for the online store's own ``online_read``. This reader keeps the resolved
    views, reads each one with ``OnlineStore.online_read`` (SQLite, Redis, any store) and
    converts values with Feast's own type map, so the answer is the same dict Feast gives.

    On-demand views are pure functions of their declared inputs, and their inputs here take few
    values (a device and a stored main device), so their outputs are memoised by input: a miss
    asks Feast for the whole row (the reference answer) and remembers the outputs.
    """

    def __init__(self, store: FeatureStore, service: str) -> None:
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

    def read(self, rows: list[dict]) -> list[dict] | None:
        """One dict per row, or None when Feast must answer (unexpected keys, memo miss)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.type_map import python_values_to_proto_values

        if not rows or any(row.keys() != self.row_keys for row in rows):
            return None
        out: list[dict] = [{self.join_key: row[self.join_key]} for row in rows]
        config = self.config
        for view, key, key_type, names, types in self.views:
            values = python_values_to_proto_values([row[key] for row in rows], key_type)
            entity_keys = [EntityKeyProto(join_keys=[key], entity_values=[v]) for v in values]
            # a copy: the Redis store appends its timestamp key to the list it is given
            found = self._provider.online_read(config, view, entity_keys, list(names))
            for answer, (_, data) in zip(out, found, strict=True):
                data = data or {}
                for name in names:
                    answer[name] = _python(data.get(name), types[name])
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


class _Unsupported(ValueError):
    """A feature service this reader does not handle; Feast's own read answers it."""


#: On-demand outputs memoised per reader before the memo starts over.
MEMO_LIMIT = 10_000
#: A reader is rebuilt after this many seconds, so registry changes made elsewhere show up.
READER_TTL_SECONDS = 60.0
_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def online_reader(store: FeatureStore, service: str) -> OnlineReader | None:
    """The store's cached reader for ``service``; None when only Feast's read can answer it."""
    readers = _READERS.setdefault(store, {})
    reader = readers.get(service, False)
    if reader is False or (reader and time.monotonic() - reader.built > READER_TTL_SECONDS):
        try:
            reader = OnlineReader(store, service)
        except _Unsupported as exc:
            logger.info("online reads of %s go through Feast: %s", service, exc)
            reader = None
        readers[service] = reader
    return reader


def forget_readers(store: FeatureStore) -> None:
    """Drop the store's readers and push views (after ``apply`` changed its declarations)."""
    _READERS.pop(store, None)
    _PUSH_VIEWS.pop(store, None)


_PUSH_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _push_views(store: FeatureStore, source: str) -> list:
    """The feature views fed by push source ``source``, resolved from the registry at most once
    per :data:`READER_TTL_SECONDS` (Feast's ``push`` lists and rebuilds every view and feature
    service per call: ~17 of its ~24 ms for one row)."""
    cached = _PUSH_VIEWS.setdefault(store, {}).get(source)
    if cached is None or time.monotonic() - cached[0] > READER_TTL_SECONDS:
        views = sorted(store._fvs_for_push_source_or_raise(source, True), key=lambda v: v.name)
        cached = _PUSH_VIEWS[store][source] = (time.monotonic(), views)
    return cached[1]


def push_activity(store: FeatureStore, activity: pd.DataFrame, offline: bool = False) -> None:
    """Push real-time activity rows (see ``features.context.activity_rows``).

    Online only, the rows go to the views of :data:`ACTIVITY_PUSH` as Feast's ``push`` would
    write them (``provider.ingest_df``), with the views cached (see :func:`_push_views`); the
    push views are plain feature views (nothing to transform on write) in no precomputed
    feature service."""
    if offline:
        store.push(ACTIVITY_PUSH, activity, to=PushMode.ONLINE_AND_OFFLINE)
        return
    if activity.empty:
        return
    provider = store._get_provider()
    for view in _push_views(store, ACTIVITY_PUSH):
        provider.ingest_df(view, activity)


def push_personas(store: FeatureStore, rows: pd.DataFrame, offline: bool = False) -> None:
    """Push persona states (rows of ``features.personas.PERSONA_COLUMNS``)."""
    mode = PushMode.ONLINE_AND_OFFLINE if offline else PushMode.ONLINE
    store.push(PERSONA_PUSH, rows, to=mode)


# -- micro-segments (`tailor micro-segments`): their own table, view and service --------------
#: Offline table of the ``user_micro_segments`` view, relative to ``Workspace.feature_data_dir``.
MICRO_SEGMENT_TABLE = "user_micro_segments.parquet"
MICRO_SEGMENT_VIEW = "user_micro_segments"
MICRO_SEGMENT_SERVICE = "user_micro_segments_v1"
MICRO_SEGMENT_COLUMNS = (
    "user_id",
    "event_timestamp",
    "created",
    "micro_segments",
    "n_micro_segments",
)


def write_micro_segments(ws: Workspace, snapshot: pd.DataFrame) -> Path:
    """Add one as-of snapshot to the micro-segment table and return its path.

    ``snapshot`` has :data:`MICRO_SEGMENT_COLUMNS` (``micro_segments`` a list of names per
    user). Rows of earlier as-of times are kept, so point-in-time joins see past memberships;
    rows with an ``event_timestamp`` already in the table are replaced (a re-run of the same
    as-of wins).
    """
    missing = [c for c in MICRO_SEGMENT_COLUMNS if c not in snapshot.columns]
    if missing:
        raise ValueError(f"micro-segment snapshot lacks {missing}; needs {MICRO_SEGMENT_COLUMNS}")
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    path = ws.feature_data_dir / MICRO_SEGMENT_TABLE
    frame = snapshot.loc[:, list(MICRO_SEGMENT_COLUMNS)]
    if path.exists():
        old = pd.read_parquet(path)
        old = old[~old["event_timestamp"].isin(set(frame["event_timestamp"]))]
        frame = pd.concat([old, frame], ignore_index=True)
    frame = frame.sort_values(["event_timestamp", "user_id"], kind="stable", ignore_index=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.rename(path)
    return path


def apply_micro_segments(ws: Workspace, store: FeatureStore | None = None) -> FeatureStore:
    """Register the ``user_micro_segments`` view and service (idempotent; needs the table)."""
    from feature_repo import definitions

    path = ws.feature_data_dir / MICRO_SEGMENT_TABLE
    if not path.exists():
        raise FileNotFoundError(
            f"micro-segment table is missing at {path}; run `tailor micro-segments RULES` first"
        )
    store = store or feature_store(ws)
    store.apply([definitions.user, *definitions.MICRO_SEGMENT_OBJECTS])
    return store


def materialize_micro_segments(
    ws: Workspace, start: datetime, end: datetime, store: FeatureStore | None = None
) -> FeatureStore:
    """Load micro-segment rows with ``start <= event_timestamp <= end`` into the online store
    (this view only, so views whose tables are not built yet are left alone)."""
    store = store or feature_store(ws)
    store.materialize(start_date=start, end_date=end, feature_views=[MICRO_SEGMENT_VIEW])
    return store


# -- segment assignments (written by `tailor segment`) ------------------------------------------
SEGMENT_TABLE = "user_segments.parquet"
SEGMENT_VIEW = "user_segments"
SEGMENT_SERVICE = "user_segment_v1"
SEGMENT_COLUMNS = ("user_id", "event_timestamp", "created", "segment_id", "segment_label")


def segment_declarations() -> list:
    """The segment source, view and service (plus the user entity they need)."""
    from feature_repo import definitions

    return [definitions.user, *definitions.SEGMENT_OBJECTS]


def write_segments(ws: Workspace, assignments: pd.DataFrame) -> Path:
    """Add one run's assignments to the offline segment table, keeping earlier as-of times.

    ``assignments`` has :data:`SEGMENT_COLUMNS`; rows already stored for the same
    ``event_timestamp`` are replaced, so running a segmentation again is idempotent.
    """
    missing = [c for c in SEGMENT_COLUMNS if c not in assignments.columns]
    if missing:
        raise ValueError(f"segment assignments lack {missing}; need {list(SEGMENT_COLUMNS)}")
    frame = assignments[list(SEGMENT_COLUMNS)].astype(
        {"segment_id": "int64", "segment_label": object, "user_id": object}
    )
    path = ws.feature_data_dir / SEGMENT_TABLE
    if path.exists():
        old = pd.read_parquet(path)
        old = old[~old["event_timestamp"].isin(frame["event_timestamp"].unique())]
        frame = pd.concat([old, frame], ignore_index=True)
    frame = frame.sort_values(["event_timestamp", "user_id"], ignore_index=True)
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.rename(path)
    return path


def apply_segments(ws: Workspace, store: FeatureStore | None = None) -> FeatureStore:
    """Register the segment view and service; their table must exist (see ``write_segments``)."""
    store = store or feature_store(ws)
    path = ws.feature_data_dir / SEGMENT_TABLE
    if not path.exists():
        raise FileNotFoundError(f"segment table missing at {path}; run `tailor segment` first")
    store.apply(segment_declarations())
    return store


def materialize_segments(ws: Workspace, store: FeatureStore | None = None) -> FeatureStore:
    """Load every stored assignment into the online store (each user's latest one wins)."""
    store = store or feature_store(ws)
    stamps = pd.read_parquet(ws.feature_data_dir / SEGMENT_TABLE, columns=["event_timestamp"])
    start, end = stamps["event_timestamp"].min(), stamps["event_timestamp"].max()
    store.materialize(start.to_pydatetime(), end.to_pydatetime(), feature_views=[SEGMENT_VIEW])
    return store
