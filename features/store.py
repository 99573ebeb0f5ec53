"""The one adapter to Feast: the only module that builds a ``FeatureStore``.

The declarations live in ``feature_repo/``; this module renders the profile's
``feature_store.yaml`` into the workspace's Feast folder, applies the declarations, writes the
offline tables, materializes, and reads historical (point-in-time) and online features. The
online read machinery (readers resolved once per store, the SQLite fast path) and every use of
Feast's private API live in :mod:`features.online_read`; callers use :func:`online_features`
here.

**Consent (issue #12).** Every feature service carries a ``purpose`` tag (``personalization``
for person features, ``necessary`` for item features); a service without one cannot be read
(:class:`~features.consent.feature_reads.ServiceWithoutPurpose`). Every online read of a
person service asks the one consent check (:mod:`features.consent.check`, one batched call
per read) and answers the rows of people without the purpose as missing, without reading their
features. Historical retrieval joins the
``user_consent`` view (the ledger exported as decisions in time, :func:`export_consent`) point
in time, and drops the rows of people without the purpose as of each row's timestamp.
"""

from __future__ import annotations

import logging
import os
import string
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from features.consent.check import ConsentCheck, ConsentDecision
from features.consent.feature_reads import (
    CONSENT_KEY,
    ConsentDrops,
    allowed_after_join,
    allowed_keys,
    consent_field,
    consent_table,
)
from features.consent.feature_reads import service_purpose as check_purpose_tag
from features.consent.policy import NECESSARY
from features.library_output import library_output
from features.online_read import (
    READER_TTL_SECONDS,
    forget_readers,
    online_reader,
    push_online,
    use_settings,
)
from features.workspace import Workspace
from models.errors import ConfigError

logger = logging.getLogger(__name__)

#: Offline tables, relative to ``Workspace.feature_data_dir``; names match feature_repo sources.
TABLES = {
    "user_features": "user_features.parquet",
    "item_features": "item_features.parquet",
    "user_activity": "user_activity.parquet",
    "user_personas": "user_personas.parquet",
}
#: The consent view's table (``feature_repo``'s ``consent_ledger_source``), rewritten from the
#: ledger before every historical retrieval of a person service.
CONSENT_TABLE = "consent_ledger.parquet"
CONSENT_VIEW = "user_consent"
#: The join key of person entities: the column whose person's consent a row needs.
PERSON_KEY = "user_id"
USER_SERVICE = "user_profile_v1"
ACTIVITY_PUSH = "user_activity_push"
PERSONA_PUSH = "user_persona_push"
PERSONA_SERVICE = "user_persona_v1"


def _template(profile: str) -> str:
    name = "feature_store.yaml" if profile == "local" else f"feature_store.{profile}.yaml"
    return resources.files("feature_repo").joinpath(name).read_text(encoding="utf-8")


def render_config(ws: Workspace) -> Path:
    """Write the profile's ``feature_store.yaml`` with this workspace's paths and services (the
    project, Redis and PostgreSQL of ``ws.settings``)."""
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "TAILOR_FEAST_DIR": str(ws.feast_dir),
        "TAILOR_FEAST_PROJECT": ws.settings.feast_project,
        "TAILOR_REDIS": ws.settings.redis,
        "TAILOR_POSTGRES_URL": ws.settings.postgres_url,
    }
    text = string.Template(_template(ws.profile)).substitute(values)
    target = ws.feast_dir / "feature_store.yaml"
    target.write_text(text, encoding="utf-8")
    return target


def feature_store(ws: Workspace) -> FeatureStore:
    """A ``FeatureStore`` for the workspace; relative source paths resolve in its Feast folder.
    Its online reads and pushes follow ``ws.settings``
    (:func:`features.online_read.use_settings`)."""
    config = render_config(ws)
    store = FeatureStore(repo_path=str(ws.feast_dir), fs_yaml_file=config)
    use_settings(store, ws.settings)
    use_consent(store, lambda: ConsentCheck.for_workspace(ws))
    return store


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
    if not (ws.feature_data_dir / CONSENT_TABLE).exists():
        export_consent(ws)
    if not (ws.feature_data_dir / TABLES["user_personas"]).exists():
        # tables built before personas existed: the view starts empty and /events fills it
        from features.personas import persona_frame

        write_tables(ws, {"user_personas": persona_frame([])})
    store.apply(declarations())
    forget_readers(store)
    _SERVICES.pop(store, None)
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
    with library_output(logger, "feast materialize"):
        store.materialize(start_date=start, end_date=end)
    return store


def historical_features(
    ws: Workspace,
    entity_df: pd.DataFrame,
    service: str = USER_SERVICE,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time join: each entity row sees only feature rows at or before its timestamp;
    rows of people without the service's purpose as of their timestamp are left out
    (:func:`consented_historical_features`, which also says how many)."""
    return consented_historical_features(ws, entity_df, service, store)[0]


def consented_historical_features(
    ws: Workspace,
    entity_df: pd.DataFrame,
    service: str = USER_SERVICE,
    store: FeatureStore | None = None,
) -> tuple[pd.DataFrame, ConsentDrops]:
    """Point-in-time features of ``service`` for ``entity_df`` (``user_id``,
    ``event_timestamp``, request columns), in the order of ``entity_df``, without the rows of
    people who had not given the service's purpose as of the row's timestamp.

    Consent is itself a feature view: the ledger is exported (:func:`export_consent`) and the
    ``user_consent`` view is joined in the same point-in-time join as the service's features,
    keyed by the person's canonical key, so a person's labels before a withdrawal stay and those
    after it go. A ``necessary`` service (item features) is joined without it."""
    store = store or feature_store(ws)
    purpose = service_purpose(store, service)
    feature_service = get_feature_service(store, service)
    if purpose == NECESSARY:
        frame = store.get_historical_features(entity_df=entity_df, features=feature_service)
        frame = frame.to_df()
        return frame, ConsentDrops(purpose, len(frame), 0, 0, 0)
    refs = [
        f"{projection.name_to_use()}:{field.name}"
        for projection in feature_service.feature_view_projections
        for field in projection.features
    ]
    joined, allowed = _join_consent(ws, store, entity_df, purpose, refs)
    kept = joined[allowed.to_numpy()].drop(columns=[_ROW, CONSENT_KEY, consent_field(purpose)])
    drops = ConsentDrops.of(purpose, joined[PERSON_KEY], allowed)
    return kept.reset_index(drop=True), drops


def consented_as_of(
    ws: Workspace,
    entity_df: pd.DataFrame,
    purpose: str,
    store: FeatureStore | None = None,
) -> tuple[pd.Series, ConsentDrops]:
    """Whether ``purpose`` was allowed for each row's person (``user_id``) at the row's
    ``event_timestamp``: a boolean Series aligned with ``entity_df``, answered by the
    point-in-time join of the ``user_consent`` view (training labels, each at its own time)."""
    store = store or feature_store(ws)
    asked = entity_df[[PERSON_KEY, "event_timestamp"]].reset_index(drop=True)
    unique = asked.drop_duplicates(ignore_index=True)
    joined, allowed = _join_consent(ws, store, unique, purpose, [])
    answers = joined.loc[allowed.to_numpy(), [PERSON_KEY, "event_timestamp"]]
    merged = asked.merge(answers.assign(_allowed=True), on=list(asked.columns), how="left")
    out = pd.Series(merged["_allowed"].eq(True).to_numpy(), index=entity_df.index)
    return out, ConsentDrops.of(purpose, asked[PERSON_KEY], out)


_ROW = "tailor_row"


def _join_consent(
    ws: Workspace, store: FeatureStore, entity_df: pd.DataFrame, purpose: str, refs: list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """``entity_df`` joined point in time with ``refs`` and the consent view's ``purpose``
    field, in ``entity_df``'s order, and whether each row's person had the purpose then."""
    check = consent_check(store)
    field = consent_field(purpose)
    export_consent(ws, check)
    _register_consent_view(store)
    keys = entity_df[PERSON_KEY].astype(str)
    canonical = check.ledger.graph.canonical_many(pd.unique(keys.to_numpy()).tolist())
    entities = entity_df.assign(
        **{_ROW: range(len(entity_df)), CONSENT_KEY: keys.map(canonical).to_numpy()}
    )
    job = store.get_historical_features(
        entity_df=entities, features=[*refs, f"{CONSENT_VIEW}:{field}"]
    )
    joined = job.to_df().sort_values(_ROW, ignore_index=True)
    return joined, allowed_after_join(check, joined, purpose)


def export_consent(ws: Workspace, check: ConsentCheck | None = None) -> Path:
    """Write the consent ledger as decisions in time to the consent view's table
    (:func:`features.consent.feature_reads.consent_table`); returns its path. The whole ledger
    every time, so processes retrieving at once write the same table."""
    frame = consent_table(check or ConsentCheck.for_workspace(ws))
    ws.feature_data_dir.mkdir(parents=True, exist_ok=True)
    path = ws.feature_data_dir / CONSENT_TABLE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _register_consent_view(store: FeatureStore) -> None:
    """Register the consent view when the registry predates it (applied before issue #12)."""
    from feast.errors import FeatureViewNotFoundException

    from feature_repo import definitions

    try:
        store.get_feature_view(CONSENT_VIEW)
    except FeatureViewNotFoundException:
        views = [definitions.consent_ledger_source, definitions.user_consent]
        store.apply([definitions.consent_person, *views])


def get_feature_service(store: FeatureStore, service: str):
    """The registered ``FeatureService`` named ``service``; an unknown name is a `ConfigError`
    listing the known ones (none known: the registry was never applied)."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(service)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        if not known:
            raise ConfigError(
                f"feature_service={service!r}: the Feast registry has no feature services; "
                "run `tailor features apply` first"
            ) from None
        raise ConfigError(
            f"feature_service={service!r}: unknown feature service; the known ones are "
            f"{', '.join(known)}"
        ) from None


def online_features(
    store: FeatureStore,
    rows: list[dict],
    service: str = USER_SERVICE,
    *,
    country: str | None = None,
    decisions: Mapping[str, ConsentDecision] | None = None,
) -> list[dict]:
    """Online read for a few entity rows; returns one dict per row.

    The same answer as Feast's ``get_online_features(...).to_dict()`` (entity keys, then every
    feature of the service; request data dropped), read through
    :class:`features.online_read.OnlineReader`, which resolves the service once instead of on
    every call (see that module for the numbers).

    Consent: the service's ``purpose`` tag is checked for every row's person (``user_id``) in
    one batched call of the consent check (``country`` picks the regime; None: each person's
    recorded country). Rows of people without it are not read and answer as missing (every
    feature None). ``decisions``: ``{user_id: decision}`` the caller already made for these
    people in this request (the service's one check), used instead of asking again when they
    are for the service's purpose. A service without a purpose tag raises
    :class:`~features.consent.feature_reads.ServiceWithoutPurpose`.
    """
    purpose, names = _resolve(store, service)
    if purpose == NECESSARY:
        return _read(store, rows, service)
    try:
        keys = [str(row[PERSON_KEY]) for row in rows]
    except KeyError:
        raise ConfigError(
            f"feature_service={service!r}: its purpose is {purpose!r}, so every row needs the "
            f"person's {PERSON_KEY!r}"
        ) from None
    check = consent_check(store)
    allowed = allowed_keys(check, keys, purpose, country=country, decisions=decisions)
    if all(allowed):
        return _read(store, rows, service)
    read = iter(_read(store, [row for row, ok in zip(rows, allowed, strict=True) if ok], service))
    missing = dict.fromkeys(names)
    return [
        next(read) if ok else {PERSON_KEY: row[PERSON_KEY], **missing}
        for row, ok in zip(rows, allowed, strict=True)
    ]


def held_online(store: FeatureStore, rows: list[dict], service: str) -> list[dict]:
    """What the online store holds for ``rows``, without the consent check: only for a person's
    own export (the right of access covers what is held, whatever their consent). Every other
    read goes through :func:`online_features`."""
    return _read(store, rows, service)


def _read(store: FeatureStore, rows: list[dict], service: str) -> list[dict]:
    if not rows:
        return []
    reader = online_reader(store, service)
    answer = reader.read(rows) if reader is not None else None
    if answer is not None:
        return answer
    answer = _feast_online_features(store, rows, service)
    if reader is not None:
        reader.remember(rows, answer)
    return answer


_CONSENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: store -> {service: (resolved at, purpose, feature names)}
_SERVICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_consent(store: FeatureStore, check: ConsentCheck | Callable[[], ConsentCheck]) -> None:
    """Check consent for reads through ``store`` with ``check`` (or the check a factory makes on
    the first read that needs one). :func:`feature_store` gives every store its workspace's."""
    _CONSENT[store] = check


def consent_check(store: FeatureStore) -> ConsentCheck:
    """The consent check of ``store``; a store without one cannot read person features."""
    check = _CONSENT.get(store)
    if check is None:
        raise ConfigError(
            "this feature store has no consent check; build it with features.store.feature_store"
        )
    if not isinstance(check, ConsentCheck):
        check = _CONSENT[store] = check()
    return check


def service_purpose(store: FeatureStore, service: str) -> str:
    """The consent purpose ``service``'s reads need (its ``purpose`` tag), resolved from the
    registry at most once per :data:`READER_TTL_SECONDS`. No tag, or a purpose the policy does
    not know: :class:`~features.consent.feature_reads.ServiceWithoutPurpose` naming it."""
    return _resolve(store, service)[0]


def _resolve(store: FeatureStore, service: str) -> tuple[str, list[str]]:
    """``(purpose, feature names)`` of ``service`` (see :func:`service_purpose`)."""
    cached = _SERVICES.setdefault(store, {}).get(service)
    if cached is not None and time.monotonic() - cached[0] < READER_TTL_SECONDS:
        return cached[1], cached[2]
    found = get_feature_service(store, service)
    purpose = check_purpose_tag(service, found.tags, consent_check(store).policy)
    names = [f.name for projection in found.feature_view_projections for f in projection.features]
    _SERVICES[store][service] = (time.monotonic(), purpose, names)
    return purpose, names


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


def push_activity(store: FeatureStore, activity: pd.DataFrame, offline: bool = False) -> None:
    """Push real-time activity rows (see ``features.context.activity_rows``)."""
    _push(store, ACTIVITY_PUSH, activity, offline)


def push_personas(store: FeatureStore, rows: pd.DataFrame, offline: bool = False) -> None:
    """Push persona states (rows of ``features.personas.PERSONA_COLUMNS``)."""
    _push(store, PERSONA_PUSH, rows, offline)


def _push(store: FeatureStore, source: str, rows: pd.DataFrame, offline: bool) -> None:
    """Rows into the views of push source ``source``: online only through
    :func:`features.online_read.push_online` (Feast's ``push`` rebuilds every view and service
    per call); with ``offline`` also to the offline store, through Feast's ``push``."""
    if offline:
        store.push(source, rows, to=PushMode.ONLINE_AND_OFFLINE)
        return
    push_online(store, source, rows)


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
    with library_output(logger, "feast materialize"):
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


# -- a person's data (erasure, issue #13) -------------------------------------------------------
def erase_online(ws: Workspace, person_keys: list[str], store: FeatureStore | None = None) -> int:
    """Delete these person keys' rows from every ``user_id`` view of the online store (SQLite or
    Redis); returns how many (view, person key) rows went. A store never applied holds none."""
    from features.online_read import erase_entities

    if not (ws.feast_dir / "feature_store.yaml").exists():
        return 0
    store = store or feature_store(ws)
    removed = erase_entities(store, "user_id", list(person_keys))
    forget_readers(store)
    return removed


def export_online(ws: Workspace, person_keys: list[str]) -> list[dict]:
    """The person's persona state as the online store holds it, one dict per person key (keys
    without a row left out). Empty when the store or the persona service is not there."""
    if not (ws.feast_dir / "feature_store.yaml").exists():
        return []
    store = feature_store(ws)
    if not person_keys or not has_feature_service(store, PERSONA_SERVICE):
        return []
    # what the store holds, consent or not: the person's own export (right of access)
    rows = held_online(store, [{"user_id": k} for k in person_keys], PERSONA_SERVICE)
    return [row for row in rows if any(v is not None for n, v in row.items() if n != "user_id")]
