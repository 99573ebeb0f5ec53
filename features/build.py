"""Event log → offline feature tables for Feast (user, item, real-time activity and personas)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features import store
from features.context import activity_rows
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.persona_rules import load_personas
from features.personas import PersonaConfig, persona_table
from features.transforms import item_features, snapshot_times, user_features
from features.workspace import Workspace


@dataclass(frozen=True)
class FeatureBuild:
    snapshots: list[pd.Timestamp]
    rows: dict[str, int]
    paths: dict[str, Path]

    @property
    def start(self) -> pd.Timestamp:
        return self.snapshots[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.snapshots[-1]


def build_feature_tables(
    ws: Workspace, freq: str = "7D", personas: PersonaConfig | None = None
) -> FeatureBuild:
    """Compute weekly snapshots (``freq``) of user and item features plus activity rows, and
    the persona table: the same fold ``/events`` runs, over the whole log (``personas``: the
    persona rules, default the file of ``ws.settings.personas`` or the packaged one).

    People are keyed by the identity graph's canonical key (issue #11): the anonymous history of
    someone who later logged in is theirs, under their user id, in every table."""
    events = EventLog(ws.event_log_dir).read()
    if events.empty:
        raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
    as_of = snapshot_times(events, freq)
    resolve = IdentityGraph.for_workspace(ws).canonical_keys
    rules = personas or load_personas(ws.settings.personas)
    tables = {
        "user_features": user_features(events, as_of, resolve),
        "item_features": item_features(events, as_of),
        "user_activity": activity_rows(events, resolve),
        "user_personas": persona_table(events, rules, resolve),
    }
    paths = store.write_tables(ws, tables)
    return FeatureBuild(
        snapshots=as_of, rows={name: len(frame) for name, frame in tables.items()}, paths=paths
    )


def feature_time_range(ws: Workspace) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The earliest and latest ``event_timestamp`` across the offline tables (to materialize)."""
    lows, highs = [], []
    for name in store.TABLES:
        path = ws.feature_data_dir / store.TABLES[name]
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `tailor features build` first")
        stamps = pd.read_parquet(path, columns=["event_timestamp"])["event_timestamp"]
        if len(stamps):
            lows.append(stamps.min())
            highs.append(stamps.max())
    if not lows:
        raise ValueError("the offline feature tables are empty")
    return min(lows), max(highs)
