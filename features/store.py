"""The one adapter to Feast: the only module that builds a ``FeatureStore``.

The declarations live in ``feature_repo/``; this module renders the profile's
``feature_store.yaml`` into the workspace's Feast folder, applies the declarations, writes the
offline tables, materializes, and reads historical (point-in-time) and online features.
"""

from __future__ import annotations

import logging
import os
import string
from datetime import datetime
from importlib import resources
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from features.workspace import Workspace

logger = logging.getLogger(__name__)

#: Offline tables, relative to ``Workspace.feature_data_dir``; names match feature_repo sources.
TABLES = {
    "user_features": "user_features.parquet",
    "item_features": "item_features.parquet",
    "user_activity": "user_activity.parquet",
}
USER_SERVICE = "user_profile_v1"
ITEM_SERVICE = "item_profile_v1"
ACTIVITY_PUSH = "user_activity_push"

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
        if not (ws.feature_data_dir / TABLES[name]).exists():
            raise FileNotFoundError(
                f"offline table {name!r} is missing at {ws.feature_data_dir / TABLES[name]}; "
                "run `tailor features build` first"
            )
    store.apply(declarations())
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
    """Online read for a few entity rows; returns one dict per row."""
    response = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=rows
    ).to_dict()
    return [{key: values[i] for key, values in response.items()} for i in range(len(rows))]


def push_activity(store: FeatureStore, activity: pd.DataFrame, offline: bool = False) -> None:
    """Push real-time activity rows (see ``features.context.activity_rows``)."""
    mode = PushMode.ONLINE_AND_OFFLINE if offline else PushMode.ONLINE
    store.push(ACTIVITY_PUSH, activity, to=mode)
