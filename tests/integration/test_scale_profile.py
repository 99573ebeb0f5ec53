"""The scale profile against the real local services: Redis online store, Postgres registry."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from features import store
from features.settings import Settings
from features.workspace import Workspace
from tests.consent import grant
from tests.services import require_postgres, require_redis

pytestmark = [pytest.mark.integration, pytest.mark.scale]


@pytest.fixture()
def scale_ws(tmp_path):
    require_redis("needed by the scale profile")
    require_postgres("scale-profile registry")
    # A project of its own, so runs never see each other's registry rows or Redis keys.
    # The consent ledger in a SQLite file of its own: the Postgres test database is shared.
    settings = Settings(
        feast_project=f"tailor_test_{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'tailor.db'}",
    )
    ws = Workspace(home=tmp_path, profile="scale", settings=settings).ensure()
    grant(ws, "u1", "p1")  # person features are read only with consent (issue #12)
    yield ws
    fs = store.feature_store(ws)
    fs.teardown()


def test_apply_materialize_and_read_online_from_redis(scale_ws):
    from tests.integration.test_feast_store import T0, _tables

    store.write_tables(scale_ws, _tables())
    fs = store.apply(scale_ws)
    assert fs.config.online_store.type == "redis"
    assert {s.name for s in fs.list_feature_services()} == {
        "user_profile_v1",
        "item_profile_v1",
        "user_persona_v1",
    }
    store.materialize(
        scale_ws,
        (T0 - pd.Timedelta(days=1)).to_pydatetime(),
        (T0 + pd.Timedelta(days=11)).to_pydatetime(),
        store=fs,
    )
    row = store.online_features(fs, [{"user_id": "u1", "device_type": "mobile"}])[0]
    assert row["sessions_30d"] == 99
    assert row["last_category"] == "toys"
    # A fresh store object reads the registry back from Postgres.
    again = store.feature_store(scale_ws)
    assert "user_features" in {v.name for v in again.list_feature_views()}


def test_persona_state_round_trips_through_redis(scale_ws):
    """Issue #6: /events' persona push lands in Redis through the same adapter, and a late
    batch (events older than the stored state) still replaces it: Redis keeps the newest row."""
    from features.persona_rules import load_personas
    from features.personas import PersonaState, fold, persona_frame, state_row
    from tests.integration.test_feast_store import _tables

    store.write_tables(scale_ws, _tables())  # no persona table: apply starts it empty
    fs = store.apply(scale_ws)
    config = load_personas()
    now = pd.Timestamp.now(tz="UTC").floor("s")
    events = [
        {
            "event_id": f"e{n}",
            "event_type": "page_view",
            "timestamp": now - pd.Timedelta(minutes=10 - n),
            "session_id": f"s{n}",
            "device_type": "mobile" if n else "desktop",
        }
        for n in range(4)
    ]
    newer = fold(PersonaState(), events[1:], config)  # 3 sessions, all mobile
    store.push_personas(fs, persona_frame([state_row("p1", newer, config)]))
    row = store.online_features(fs, [{"user_id": "p1"}], store.PERSONA_SERVICE)[0]
    assert (row["persona"], row["persona_score"]) == ("Mobile-First", 1.0)
    assert PersonaState.from_json(row["persona_state"]) == newer

    late = fold(newer, events[:1], config)  # a desktop session from before: 3 of 4 mobile
    store.push_personas(fs, persona_frame([state_row("p1", late, config)]))
    profile = store.online_features(fs, [{"user_id": "p1", "device_type": "mobile"}])[0]
    assert (profile["persona"], profile["persona_score"]) == ("Mobile-First", 0.75)
    assert json.loads(profile["persona_state"])["sessions"] == 4
