"""The batched online write (``features.online_read.write_view``, issue #11 consumer speed) leaves
the online store exactly as Feast's own ``ingest_df`` does: the same SQLite rows (keys, values,
text, timestamps) for activity and persona pushes, several rows per person included, and the
same answers on Redis."""

from __future__ import annotations

import shutil
import sqlite3
import uuid

import pandas as pd
import pytest

from features import online_read, store
from features.context import activity_rows
from features.personas import persona_frame
from features.settings import Settings
from features.workspace import Workspace
from tests.conftest import write_test_site_policy
from tests.integration.test_feast_store import _tables
from tests.services import require_postgres, require_redis

pytestmark = pytest.mark.integration


def _events(n: int = 30) -> pd.DataFrame:
    """n events of 7 people (several per person, out of time order), some without a product."""
    t0 = pd.Timestamp("2026-03-01 10:00:00.123456", tz="UTC")
    return pd.DataFrame(
        {
            "event_id": [f"e{i:03d}" for i in range(n)],
            "event_type": ["product_view" if i % 3 else "page_view" for i in range(n)],
            "timestamp": [t0 + pd.Timedelta(seconds=(i * 7919) % n) for i in range(n)],
            "user_id": [f"u{i % 7}" if i % 2 else None for i in range(n)],
            "anonymous_id": [f"a{i % 7}" for i in range(n)],
            "session_id": ["s"] * n,
            "device_type": ["mobile", "desktop", "tablet"] * (n // 3) + ["other"] * (n % 3),
            "product_id": [f"p{i}" if i % 3 else None for i in range(n)],
            "category": ["toys" if i % 3 else None for i in range(n)],
        }
    )


def _personas() -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    states = [
        {
            "user_id": f"u{i % 4}",
            "event_timestamp": now + pd.Timedelta(milliseconds=i),
            "created": now + pd.Timedelta(milliseconds=i),
            "persona": None if i == 8 else ("Deal Hunter" if i % 2 else ""),  # None: no value
            "persona_score": i / 10,
            "persona_state": f'{{"events": {i}}}',
        }
        for i in range(9)
    ]
    return persona_frame(states)


def _rows(fs, view: str) -> list[tuple]:
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    table = f"{fs.config.project}_{view}"
    with sqlite3.connect(SqliteOnlineStore._get_db_path(fs.config)) as connection:
        return connection.execute(
            "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            f'FROM "{table}"'
            " ORDER BY entity_key, feature_name"
        ).fetchall()


def test_the_batched_write_leaves_sqlite_as_feasts_ingest_does(trained_workspace, tmp_path):
    ours_dir, feasts_dir = tmp_path / "ours", tmp_path / "feasts"
    for target in (ours_dir, feasts_dir):
        shutil.copytree(trained_workspace.ws.feast_dir, target / "feast")
    ours_ws = Workspace(home=ours_dir).ensure()
    write_test_site_policy(ours_ws)  # u0..u6 are read without consent records (issue #12)
    ours = store.feature_store(ours_ws)
    feasts = store.feature_store(Workspace(home=feasts_dir).ensure())
    activity, personas = activity_rows(_events()), _personas()
    store.push_activity(ours, activity)
    store.push_personas(ours, personas)
    provider = feasts._get_provider()
    for source, rows in ((store.ACTIVITY_PUSH, activity), (store.PERSONA_PUSH, personas)):
        for view in online_read.push_views(feasts, source):
            provider.ingest_df(view, rows)
    for view in ("user_activity", "user_personas"):
        theirs = _rows(feasts, view)
        assert _rows(ours, view) == theirs and len(theirs) > 0
    people = [{"user_id": f"u{i}", "device_type": "mobile"} for i in range(7)]
    answers = store.online_features(ours, people, store.USER_SERVICE)
    assert answers == store._feast_online_features(feasts, people, store.USER_SERVICE)
    assert (
        answers[1]["last_device_type"]
        == activity[activity["user_id"] == "u1"].iloc[-1]["last_device_type"]
    )


@pytest.mark.scale
def test_the_batched_write_gives_feasts_answers_on_redis(tmp_path):
    require_redis("needed by the scale profile")
    require_postgres("scale-profile registry")
    answers = []
    for way in ("ours", "feasts"):
        settings = Settings(feast_project=f"tailor_test_{uuid.uuid4().hex[:8]}")
        ws = Workspace(home=tmp_path / way, profile="scale", settings=settings).ensure()
        store.write_tables(ws, _tables())
        fs = store.apply(ws)
        try:
            activity, personas = activity_rows(_events()), _personas()
            if way == "ours":
                store.push_activity(fs, activity)
                store.push_personas(fs, personas)
            else:
                provider = fs._get_provider()
                for source, rows in (
                    (store.ACTIVITY_PUSH, activity),
                    (store.PERSONA_PUSH, personas),
                ):
                    for view in online_read.push_views(fs, source):
                        provider.ingest_df(view, rows)
            people = [{"user_id": f"u{i}", "device_type": "mobile"} for i in range(7)]
            answers.append(store._feast_online_features(fs, people, store.USER_SERVICE))
        finally:
            fs.teardown()
    assert answers[0] == answers[1]
    assert answers[0][3]["persona_state"] == '{"events": 7}'  # u3's last of its two rows
