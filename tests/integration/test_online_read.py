"""The service's online read (``features.store.online_features``, issue #5 performance) gives
exactly Feast's ``get_online_features`` answer, on SQLite and on Redis, before and after a push,
for known, unknown and several rows; memo misses and unexpected rows are answered by Feast."""

from __future__ import annotations

import shutil
import socket
import uuid

import pandas as pd
import pytest

from features import store
from features.context import activity_rows
from features.workspace import Workspace
from tests.integration.test_feast_store import T0, _tables

pytestmark = pytest.mark.integration

DEVICES = ("mobile", "desktop", "tablet", "other")


def _same_as_feast(fs, rows: list[dict]) -> list[dict]:
    ours = store.online_features(fs, rows, store.USER_SERVICE)
    assert ours == store._feast_online_features(fs, rows, store.USER_SERVICE)
    return ours


@pytest.fixture()
def local_store(trained_workspace, tmp_path):
    """A copy of the trained workspace's Feast folder (this module pushes to it)."""
    shutil.copytree(trained_workspace.ws.feast_dir, tmp_path / "feast")
    return store.feature_store(Workspace(home=tmp_path).ensure())


def test_answers_equal_feasts_for_known_unknown_and_many_rows(local_store, trained_workspace):
    events = trained_workspace.generated.events
    users = events["user_id"].dropna().drop_duplicates().head(40).tolist()
    people = [*users, "never-seen", "anon:nobody"]
    for round_ in range(2):  # the first round fills the on-demand memo, the second reads it
        for i, person in enumerate(people):
            device = DEVICES[(i + round_) % 4]
            (row,) = _same_as_feast(local_store, [{"user_id": person, "device_type": device}])
            assert row["user_id"] == person
    rows = [{"user_id": person, "device_type": "mobile"} for person in people[:5]]
    assert len(_same_as_feast(local_store, rows)) == 5
    reader = store.online_reader(local_store, store.USER_SERVICE)
    assert reader is not None and reader.read(rows) is not None  # answered without Feast


def test_a_push_is_seen_by_the_next_read(local_store, trained_workspace):
    person = trained_workspace.generated.events["user_id"].dropna().iloc[0]
    row = {"user_id": person, "device_type": "mobile"}
    _same_as_feast(local_store, [row])
    event = pd.DataFrame(
        {
            "event_id": ["e-push"],
            "event_type": ["product_view"],
            "timestamp": [pd.Timestamp.now(tz="UTC")],
            "user_id": [person],
            "anonymous_id": [None],
            "session_id": ["s"],
            "device_type": ["tablet"],
            "product_id": ["p-pushed"],
            "category": ["pushed-category"],
        }
    )
    store.push_activity(local_store, activity_rows(event))
    (after,) = _same_as_feast(local_store, [row])
    assert after["last_product_id"] == "p-pushed"
    assert after["last_device_type"] == "tablet"


def test_unexpected_rows_and_memo_misses_go_through_feast(local_store, monkeypatch):
    reader = store.online_reader(local_store, store.USER_SERVICE)
    assert reader is not None
    assert reader.read([{"user_id": "u"}]) is None  # no device_type: Feast decides (it raises)
    assert reader.read([{"user_id": "u", "device_type": "fridge"}]) is None  # memo miss
    calls = []
    feast_read = store._feast_online_features
    monkeypatch.setattr(
        store,
        "_feast_online_features",
        lambda *args: calls.append(args[1]) or feast_read(*args),
    )
    store.online_features(local_store, [{"user_id": "u", "device_type": "fridge"}])
    store.online_features(local_store, [{"user_id": "u", "device_type": "fridge"}])
    assert len(calls) == 1  # the second read used the memo Feast's answer filled


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.scale
def test_redis_answers_equal_feasts(tmp_path, monkeypatch):
    if not (_reachable("127.0.0.1", 6379) and _reachable("127.0.0.1", 5432)):
        pytest.skip("Redis (6379) and PostgreSQL (5432) are needed by the scale profile")
    monkeypatch.setenv("TAILOR_FEAST_PROJECT", f"tailor_test_{uuid.uuid4().hex[:8]}")
    ws = Workspace(home=tmp_path, profile="scale").ensure()
    store.write_tables(ws, _tables())
    fs = store.apply(ws)
    try:
        store.materialize(
            ws,
            (T0 - pd.Timedelta(days=1)).to_pydatetime(),
            (T0 + pd.Timedelta(days=11)).to_pydatetime(),
            store=fs,
        )
        for _ in range(2):
            for person in ("u1", "u2", "nobody"):
                for device in DEVICES:
                    _same_as_feast(fs, [{"user_id": person, "device_type": device}])
        (row,) = _same_as_feast(fs, [{"user_id": "u1", "device_type": "mobile"}])
        assert row["sessions_30d"] == 99 and row["last_category"] == "toys"
    finally:
        fs.teardown()
