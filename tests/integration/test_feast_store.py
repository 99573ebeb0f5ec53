"""The real Feast store in a temp folder: apply, point-in-time joins, materialize, online, push."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import store
from features.context import ACTIVITY_FEATURES
from features.feature_specs import ITEM_FEATURES, USER_FEATURES
from features.workspace import Workspace
from tests.consent import grant

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("2026-03-01", tz="UTC")
DEFAULTS = {"int64": 0, "float64": 0.0, "string": ""}


def _table(key: str, spec: dict, rows: list[dict]) -> pd.DataFrame:
    records = []
    for row in rows:
        record = {key: row[key], "event_timestamp": row["at"], "created": row["at"]}
        for name, (dtype, _) in spec.items():
            record[name] = row.get(name, DEFAULTS[dtype])
        records.append(record)
    frame = pd.DataFrame(records)
    for name, (dtype, _) in spec.items():
        frame[name] = frame[name].astype("object" if dtype == "string" else dtype)
    return frame


def _tables() -> dict[str, pd.DataFrame]:
    """u1 has features written at T0 (sessions 1) and T0+10d (sessions 99)."""
    users = _table(
        "user_id",
        USER_FEATURES,
        [
            {"user_id": "u1", "at": T0, "sessions_30d": 1, "main_device": "mobile"},
            {"user_id": "u1", "at": T0 + pd.Timedelta(days=10), "sessions_30d": 99},
            {"user_id": "u2", "at": T0, "sessions_30d": 5, "top_category": "books"},
        ],
    )
    items = _table("item_id", ITEM_FEATURES, [{"item_id": "p1", "at": T0, "views_30d": 7}])
    activity = _table(
        "user_id", ACTIVITY_FEATURES, [{"user_id": "u1", "at": T0, "last_category": "toys"}]
    )
    return {"user_features": users, "item_features": items, "user_activity": activity}


@pytest.fixture()
def feast_ws(tmp_path) -> Workspace:
    ws = Workspace(home=tmp_path).ensure()
    store.write_tables(ws, _tables())
    store.apply(ws)
    # person features are read only with personalization consent (issue #12)
    grant(ws, "u1", "u2", "u3", "nobody", at=(T0 - pd.Timedelta(days=30)).to_pydatetime())
    return ws


def test_point_in_time_join_never_sees_a_later_feature_value(feast_ws):
    labels = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1"],
            "event_timestamp": [
                T0 - pd.Timedelta(hours=1),  # before any feature row
                T0 + pd.Timedelta(days=9, hours=23),  # just before the update
                T0 + pd.Timedelta(days=10),  # exactly at the update
                T0 + pd.Timedelta(days=12),
            ],
            "device_type": ["mobile"] * 4,
        }
    )
    joined = store.historical_features(feast_ws, labels)
    seen = dict(zip(joined["event_timestamp"], joined["sessions_30d"], strict=True))
    # Feast's file store drops label rows that have no eligible feature row; either way no
    # value may leak backwards in time.
    before = seen.get(labels["event_timestamp"][0], np.nan)
    assert np.isnan(before)
    assert seen[labels["event_timestamp"][1]] == 1  # the T0+10d value is invisible 1 h earlier
    assert seen[labels["event_timestamp"][2]] == 99
    assert seen[labels["event_timestamp"][3]] == 99


def test_ttl_expires_old_values(feast_ws):
    labels = pd.DataFrame(
        {"user_id": ["u2"], "event_timestamp": [T0 + pd.Timedelta(days=40)], "device_type": ["x"]}
    )
    joined = store.historical_features(feast_ws, labels)
    # 40 days > the view's 35-day TTL: the row is dropped or carries no value
    assert joined.empty or np.isnan(joined["sessions_30d"].iloc[0])


def test_materialize_then_online_read_gives_latest_values_and_request_context(feast_ws):
    fs = store.materialize(
        feast_ws,
        (T0 - pd.Timedelta(days=1)).to_pydatetime(),
        (T0 + pd.Timedelta(days=11)).to_pydatetime(),
    )
    rows = store.online_features(
        fs,
        [
            {"user_id": "u1", "device_type": "mobile"},
            {"user_id": "nobody", "device_type": "desktop"},
        ],
    )
    assert rows[0]["sessions_30d"] == 99
    assert rows[0]["last_category"] == "toys"
    assert rows[0]["request_is_mobile"] == 1
    assert rows[1]["sessions_30d"] is None
    assert rows[1]["request_is_mobile"] == 0


def test_push_updates_the_online_store_immediately(feast_ws):
    fs = store.feature_store(feast_ws)
    pushed = pd.DataFrame(
        {
            "user_id": ["u3"],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")],
            "created": [pd.Timestamp.now(tz="UTC")],
            "last_event_type": ["add_to_cart"],
            "last_product_id": ["p9"],
            "last_category": ["garden"],
            "last_device_type": ["tablet"],
        }
    )
    store.push_activity(fs, pushed)
    row = store.online_features(fs, [{"user_id": "u3", "device_type": "tablet"}])[0]
    assert row["last_category"] == "garden"
    assert row["last_product_id"] == "p9"


def test_apply_is_idempotent_and_registers_the_contract(feast_ws):
    fs = store.apply(feast_ws)
    assert {s.name for s in fs.list_feature_services()} == {
        "user_profile_v1",
        "item_profile_v1",
        "user_persona_v1",
    }
    assert {v.name for v in fs.list_feature_views()} >= {
        "user_features",
        "item_features",
        "user_activity",
    }


def test_apply_without_tables_says_what_to_run(tmp_path):
    ws = Workspace(home=tmp_path).ensure()
    with pytest.raises(FileNotFoundError, match="tailor features build"):
        store.apply(ws)
