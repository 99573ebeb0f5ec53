"""Everything that keys people takes a resolver (issue #11): with the identity graph's canonical
keys, a login's anonymous history is the user's in the event log read, the activity rows, the
persona table and the user feature snapshots; without one, today's person keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from features import database
from features.context import activity_rows
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.ingest import ingest_rows
from features.persona_rules import load_personas
from features.personas import PersonaState, persona_table
from features.transforms import user_features


def _event(n: int, **fields) -> dict:
    return {
        "event_id": f"e{n}",
        "event_type": "product_view",
        "timestamp": datetime(2026, 3, 1, 12, n, tzinfo=UTC).isoformat(),
        "session_id": "s1",
        "product_id": "p1",
        "category": "electronics",
        "price": 10.0,
        **fields,
    }


@pytest.fixture
def logged(tmp_path) -> tuple[EventLog, IdentityGraph, pd.DataFrame]:
    """cookieZ views twice and carts once, then logs in as newuser77 and views a book; cookieY
    (someone else) views once."""
    log = EventLog(tmp_path / "events")
    rows = [
        _event(1, anonymous_id="cookieZ"),
        _event(2, anonymous_id="cookieZ"),
        _event(3, anonymous_id="cookieZ", event_type="add_to_cart", quantity=1),
        _event(4, anonymous_id="cookieY"),
        _event(5, user_id="newuser77", category="books", anonymous_id="cookieZ"),
        _event(6, user_id="newuser77", event_type="page_view", product_id=None, category=None),
    ]
    report = ingest_rows(iter(rows), log, tmp_path / "q", "test")
    assert report.rejected == 0
    graph = IdentityGraph(database.engine(f"sqlite:///{tmp_path / 'tailor.db'}"))
    graph.link("cookieZ", "newuser77", source="test")
    return log, graph, log.read()


def test_read_people_reads_every_alias(logged) -> None:
    log, graph, _ = logged
    assert log.read_people(["newuser77"])["event_id"].tolist() == ["e5", "e6"]
    merged = log.read_people(["newuser77"], graph.aliases)
    assert merged["event_id"].tolist() == ["e1", "e2", "e3", "e5", "e6"]


def test_activity_rows_carry_the_anonymous_category_into_the_user(logged) -> None:
    _, graph, events = logged
    rows = activity_rows(events, graph.canonical_keys)
    mine = rows[rows["user_id"] == "newuser77"]
    assert len(mine) == 5 and mine["last_category"].tolist()[-1] == "books"
    assert set(rows["user_id"]) == {"newuser77", "anon:cookieY"}
    assert (activity_rows(events)["user_id"] == "anon:cookieZ").sum() == 3  # default: as today


def test_the_persona_table_folds_the_merged_history(logged) -> None:
    _, graph, events = logged
    table = persona_table(events, load_personas(), graph.canonical_keys)
    last = table[table["user_id"] == "newuser77"].iloc[-1]
    state = PersonaState.from_json(last["persona_state"])
    assert (state.events, state.views, state.carts) == (5, 3, 1)
    assert state.categories == {"electronics": 2, "books": 1}
    assert "anon:cookieZ" not in set(table["user_id"])
    plain = persona_table(events, load_personas())
    assert "anon:cookieZ" in set(plain["user_id"])


def test_user_feature_snapshots_key_the_merged_history(logged) -> None:
    _, graph, events = logged
    as_of = [pd.Timestamp("2026-03-02", tz="UTC")]
    merged = user_features(events, as_of, graph.canonical_keys).set_index("user_id")
    plain = user_features(events, as_of).set_index("user_id")
    assert set(merged.index) == {"newuser77", "anon:cookieY"}
    assert set(plain.index) == {"newuser77", "anon:cookieZ", "anon:cookieY"}
    numeric = [c for c in merged.columns if pd.api.types.is_numeric_dtype(merged[c])]
    assert (merged.loc["newuser77", numeric] != plain.loc["newuser77", numeric]).any()
