"""``/identify``'s logic (issue #11): a login links the ids and the anonymous history is folded
into the user's persona and activity at once; identify events link too; /recommend reads under
the canonical key. A real identity graph (SQLite) and a real event log; the online store is
:class:`tests.serving.test_personas._Store`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features import database
from features.broker.embedded import EmbeddedBroker
from features.eventlog import EventLog
from features.identity.graph import IdentityError, IdentityGraph, UserMergeRefused
from features.personas import PersonaState
from serving.consumer import EventConsumer
from serving.identify import (
    identify,
    link_identify_events,
    record_fingerprint_hints,
    refresh_person,
    resolve_person,
)
from serving.publish import publish_events
from serving.schemas import STORE_NOT_UPDATED, IdentifyRequest
from tests.serving.test_events import drain
from tests.serving.test_personas import CONFIG, _event, _Store


@pytest.fixture
def graph(tmp_path) -> IdentityGraph:
    return IdentityGraph(database.engine(f"sqlite:///{tmp_path / 'tailor.db'}"))


def _anonymous_history(log: EventLog, tmp_path, store: _Store, graph: IdentityGraph) -> None:
    """cookieZ views two electronics items and adds one to the cart, not logged in."""
    anon = {"user_id": None, "anonymous_id": "cookieZ"}
    product = {"product_id": "p1", "category": "electronics", "price": 499.0}
    batch = [
        _event("a1", 1, event_type="product_view", **anon, **product),
        _event("a2", 2, event_type="product_view", **anon, **product),
        _event("a3", 3, event_type="add_to_cart", quantity=1, **anon, **product),
    ]
    ingest(batch, log, tmp_path, store, graph)


def ingest(batch, log, tmp_path, store: _Store, graph: IdentityGraph, activity=None):
    """``batch`` through the real path: published to an embedded queue, then consumed by the
    event consumer keyed through ``graph`` (as the service wires it); the publish answer."""
    pushed = activity if activity is not None else []
    consumer = EventConsumer(
        log,
        tmp_path / "q",
        pushed.append,
        store.read,
        store.push,
        CONFIG,
        resolve=graph.canonical_keys,
        read_events=lambda people: log.read_people(people, graph.aliases),
        link=lambda appended: link_identify_events(graph, appended),
    )
    broker = EmbeddedBroker(tmp_path / "queue" / "events.db")
    answer = publish_events(batch, broker, tmp_path / "q")
    drain(broker, consumer)
    return answer


def _refresher(log: EventLog, store: _Store, graph: IdentityGraph, activity: list):
    def refresh(canonical: str):
        return refresh_person(
            canonical,
            lambda people: log.read_people(people, graph.aliases),
            store.read,
            store.push,
            activity.append,
            CONFIG,
            graph.canonical_keys,
        )

    return refresh


def test_a_login_folds_the_anonymous_history_into_the_user(tmp_path, graph):
    log, store, activity = EventLog(tmp_path / "events"), _Store(), []
    _anonymous_history(log, tmp_path, store, graph)
    assert json.loads(store.states["anon:cookieZ"])["carts"] == 1
    request = IdentifyRequest(anonymous_id="cookieZ", user_id="newuser77", traits={"plan": "x"})
    answer = identify(request, graph, _refresher(log, store, graph, activity))
    assert answer.canonical == "newuser77" and answer.kind == "link"
    assert answer.merged == ["anon:cookieZ"] and answer.aliases == ["newuser77", "anon:cookieZ"]
    assert answer.merge_id == 1 and answer.degraded is None and len(answer.request_id) == 32
    state = PersonaState.from_json(store.states["newuser77"])
    assert (state.views, state.carts, state.categories) == (2, 1, {"electronics": 2})
    [latest] = [row for frame in activity for row in frame.to_dict("records")]
    assert latest["user_id"] == "newuser77" and latest["last_category"] == "electronics"

    # the next event as the user folds onto the merged state
    ingest([_event("u1", 9, user_id="newuser77")], log, tmp_path, store, graph)
    state = PersonaState.from_json(store.states["newuser77"])
    assert (state.events, state.carts) == (4, 1)

    # the same login again changes nothing, logs nothing and refolds nothing
    pushes = len(store.pushed)
    again = identify(request, graph, _refresher(log, store, graph, activity))
    assert again.merged == [] and again.merge_id is None and again.kind is None
    assert len(store.pushed) == pushes and len(graph.merge_log()) == 1


def test_without_the_merge_the_user_sees_none_of_the_anonymous_history(tmp_path, graph):
    """The issue's failure, kept as the control of the test above: no link, no history."""
    log, store = EventLog(tmp_path / "events"), _Store()
    _anonymous_history(log, tmp_path, store, graph)
    ingest([_event("u1", 9, user_id="newuser77")], log, tmp_path, store, graph)
    state = PersonaState.from_json(store.states["newuser77"])
    assert (state.events, state.carts, state.categories) == (1, 0, {})


def test_a_second_device_is_merged_too(tmp_path, graph):
    log, store, activity = EventLog(tmp_path / "events"), _Store(), []
    _anonymous_history(log, tmp_path, store, graph)
    refresh = _refresher(log, store, graph, activity)
    identify(IdentifyRequest(anonymous_id="cookieZ", user_id="newuser77"), graph, refresh)
    phone = {"user_id": None, "anonymous_id": "phone9", "product_id": "p7"}
    phone |= {"event_type": "product_view", "category": "beauty", "price": 20.0}
    ingest([_event("b1", 20, **phone)], log, tmp_path, store, graph)
    answer = identify(IdentifyRequest(anonymous_id="phone9", user_id="newuser77"), graph, refresh)
    assert answer.merged == ["anon:phone9"]
    state = PersonaState.from_json(store.states["newuser77"])
    assert state.categories == {"electronics": 2, "beauty": 1} and state.carts == 1


def test_an_identify_event_links_like_a_login(tmp_path, graph):
    log, store, activity = EventLog(tmp_path / "events"), _Store(), []
    _anonymous_history(log, tmp_path, store, graph)
    login = _event("i1", 10, event_type="identify", user_id="newuser77", anonymous_id="cookieZ")
    answer = ingest([login], log, tmp_path, store, graph, activity)
    assert answer.accepted == 1
    assert graph.canonical("anon:cookieZ") == "newuser77"
    assert graph.merge_log()[0]["source"] == "event:identify"
    assert activity[-1]["user_id"].tolist() == ["newuser77"]
    assert link_identify_events(graph, pd.DataFrame([login])) == []  # linked already
    _refresher(log, store, graph, activity)("newuser77")  # what the service does after a link
    state = PersonaState.from_json(store.states["newuser77"])
    assert (state.events, state.carts) == (4, 1)  # the identify event counted once


def test_refused_and_bad_logins_name_the_field(tmp_path, graph):
    refresh = _refresher(EventLog(tmp_path / "events"), _Store(), graph, [])
    identify(IdentifyRequest(anonymous_id="tablet", user_id="alice"), graph, refresh)
    with pytest.raises(UserMergeRefused, match="anonymous_id: 'tablet' already belongs"):
        identify(IdentifyRequest(anonymous_id="tablet", user_id="bob"), graph, refresh)
    with pytest.raises(IdentityError, match="user_id: is the same as anonymous_id"):
        identify(IdentifyRequest(anonymous_id="same", user_id="same"), graph, refresh)
    with pytest.raises(ValueError, match="user_id"):
        IdentifyRequest(anonymous_id="dev", user_id="")
    with pytest.raises(ValueError, match="unknown_field"):
        IdentifyRequest(anonymous_id="dev", user_id="u", unknown_field=1)


def test_a_store_failure_never_fails_the_login(tmp_path, graph):
    log, activity = EventLog(tmp_path / "events"), []
    _anonymous_history(log, tmp_path, _Store(), graph)
    refresh = _refresher(log, _Store(fail=True), graph, activity)
    answer = identify(IdentifyRequest(anonymous_id="cookieZ", user_id="u5"), graph, refresh)
    assert answer.degraded == STORE_NOT_UPDATED and answer.canonical == "u5"
    assert graph.canonical("anon:cookieZ") == "u5"  # the merge itself stands


def test_reads_resolve_an_anonymous_device_to_its_user(graph):
    graph.link("cookieZ", "newuser77", source="test")
    assert resolve_person(graph, "anon:cookieZ") == "newuser77"
    assert resolve_person(graph, "newuser77") == "newuser77"
    assert resolve_person(graph, "anon:never-seen") == "anon:never-seen"


def test_fingerprint_hints_are_stored_per_device_and_never_merge(graph):
    """issue #11: the collector's weak fingerprint (TAILOR_FINGERPRINT=1) reaches the identity
    graph as a hint with its confidence; two devices sharing it stay two people."""
    hint = {"hash": "fp1:abc123", "confidence": 0.9, "hints": {"ua": "Chrome"}}
    events = pd.DataFrame(
        {
            "anonymous_id": ["dev1", "dev1", "dev2", "dev3", None],
            "properties": [
                json.dumps({"fingerprint": hint}),
                json.dumps({"fingerprint": hint}),  # the same device again: one hint
                json.dumps({"fingerprint": hint}),
                json.dumps({"browser": "Firefox"}),  # no fingerprint
                json.dumps({"fingerprint": hint}),  # no anonymous id
            ],
        }
    )
    assert record_fingerprint_hints(graph, events) == 2
    stored = graph.hints_for("fp1:abc123")
    assert sorted(h.anonymous_id for h in stored) == ["dev1", "dev2"]
    assert {h.confidence for h in stored} == {0.3}  # capped: a fingerprint is a weak hint
    assert graph.canonical("anon:dev1") == "anon:dev1" != graph.canonical("anon:dev2")
