"""The identity graph (issue #11): links, canonical keys, aliases, the merge log, hints, errors.

Every test runs on SQLite (the embedded default) and on PostgreSQL (the scale profile; skipped
locally without a server, failed in CI), each with its own table prefix.
"""

from __future__ import annotations

import json
import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from features import database
from features.identity.graph import IdentityError, IdentityGraph, UserMergeRefused
from features.settings import DEFAULTS
from tests.services import require_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tailor.db'}"
    require_postgres("identity graph on the scale profile")
    return DEFAULTS.postgres_url


@pytest.fixture
def make_graph(url):
    """``make_graph(allow_user_merge=False)``: a graph with this test's own tables."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    made: list[IdentityGraph] = []

    def make(allow_user_merge: bool = False) -> IdentityGraph:
        graph = IdentityGraph(
            database.engine(url), allow_user_merge=allow_user_merge, prefix=prefix
        )
        made.append(graph)
        return graph

    yield make
    if made:
        made[0].drop()


@pytest.fixture
def graph(make_graph) -> IdentityGraph:
    return make_graph()


def test_unknown_keys_are_their_own_canonical_key(graph: IdentityGraph) -> None:
    assert graph.canonical("u1") == "u1"
    assert graph.canonical("anon:dev1") == "anon:dev1"
    assert graph.aliases("anon:dev1") == ["anon:dev1"]


def test_link_makes_the_user_id_canonical_and_logs_the_merge(graph: IdentityGraph) -> None:
    merge = graph.link("cookieZ", "newuser77", source="test")
    assert merge.canonical == "newuser77"
    assert merge.recorded and merge.kind == "link"
    assert set(merge.merged) == {"anon:cookieZ"}
    assert merge.previous == ("anon:cookieZ",)
    assert graph.canonical("anon:cookieZ") == "newuser77"
    assert graph.canonical("newuser77") == "newuser77"
    assert graph.aliases("newuser77") == ["newuser77", "anon:cookieZ"]
    assert graph.aliases("anon:cookieZ") == ["newuser77", "anon:cookieZ"]
    [logged] = graph.merge_log()
    assert logged["anonymous_key"] == "anon:cookieZ" and logged["user_id"] == "newuser77"
    assert logged["canonical"] == "newuser77" and logged["merged"] == ["anon:cookieZ"]
    assert logged["source"] == "test" and logged["merged_at"].tzinfo is not None


def test_relinking_the_same_pair_is_idempotent(graph: IdentityGraph) -> None:
    first = graph.link("cookieZ", "newuser77", source="test")
    again = graph.link("cookieZ", "newuser77", source="test")
    assert first.recorded and not again.recorded
    assert again.merged == () and again.canonical == "newuser77"
    assert len(graph.merge_log()) == 1


def test_a_second_device_joins_the_same_person(graph: IdentityGraph) -> None:
    graph.link("phone", "u1", source="test")
    merge = graph.link("laptop", "u1", source="test")
    assert merge.merged == ("anon:laptop",)
    assert graph.aliases("u1") == ["u1", "anon:phone", "anon:laptop"]
    assert graph.canonical("anon:laptop") == graph.canonical("anon:phone") == "u1"


def test_a_device_of_another_user_is_refused_unless_user_merges_are_allowed(make_graph) -> None:
    graph = make_graph()
    graph.link("shared-tablet", "alice", source="test")
    graph.link("laptop", "bob", source="test")
    with pytest.raises(UserMergeRefused, match=r"anonymous_id: 'shared-tablet' already belongs"):
        graph.link("shared-tablet", "bob", source="test")
    assert graph.canonical("bob") == "bob"
    assert graph.canonical("anon:shared-tablet") == "alice"
    assert len(graph.merge_log()) == 2  # the refusal logged nothing

    allowing = make_graph(allow_user_merge=True)
    merge = allowing.link("shared-tablet", "bob", source="test")
    assert merge.kind == "user_merge" and merge.canonical == "alice"  # alice was seen first
    assert set(merge.merged) == {"bob", "anon:laptop"}
    assert set(allowing.aliases("bob")) == {"alice", "bob", "anon:shared-tablet", "anon:laptop"}
    assert allowing.canonical("anon:laptop") == "alice"


@pytest.mark.parametrize(
    ("anonymous_id", "user_id", "field", "message"),
    [
        (None, "u1", "anonymous_id", "is required"),
        ("", "u1", "anonymous_id", "is blank"),
        ("   ", "u1", "anonymous_id", "is blank"),
        ("dev", None, "user_id", "is required"),
        ("dev", "", "user_id", "is blank"),
        ("dev", 7, "user_id", "must be text"),
        ("dev", "x" * 257, "user_id", "at most 256"),
        ("dev", "u\x001", "user_id", "control characters"),
        ("same", "same", "user_id", "is the same as anonymous_id"),
        ("dev", "anon:dev2", "user_id", "may not start with 'anon:'"),
    ],
)
def test_bad_ids_are_refused_naming_the_field(graph, anonymous_id, user_id, field, message):
    with pytest.raises(IdentityError, match=message) as caught:
        graph.link(anonymous_id, user_id, source="test")
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert graph.merge_log() == []


def test_fingerprint_hints_never_merge_people(graph: IdentityGraph) -> None:
    graph.add_hint("dev1", "fp-abc", 0.9)
    graph.add_hint("dev2", "fp-abc", 0.95)
    graph.link("dev1", "u1", source="test")
    assert graph.canonical("anon:dev2") == "anon:dev2"  # the shared fingerprint pulled nothing
    assert graph.aliases("u1") == ["u1", "anon:dev1"]
    hints = graph.hints_for("fp-abc")
    assert [(h.anonymous_id, h.confidence) for h in hints] == [("dev2", 0.95), ("dev1", 0.9)]
    graph.add_hint("dev1", "fp-abc", 0.99)  # seen again: updated, not doubled
    assert [h.anonymous_id for h in graph.hints_for("fp-abc")] == ["dev1", "dev2"]
    with pytest.raises(IdentityError, match="confidence"):
        graph.add_hint("dev3", "fp-abc", 1.5)


def test_canonical_keys_over_an_events_frame(graph: IdentityGraph) -> None:
    graph.link("cookieZ", "newuser77", source="test")
    events = pd.DataFrame(
        {
            "user_id": [None, None, "newuser77", "other", None],
            "anonymous_id": ["cookieZ", "cookieY", "cookieZ", "cookieZ", "dev"],
        },
        index=[5, 6, 7, 8, 9],
    )
    keys = graph.canonical_keys(events)
    assert keys.tolist() == ["newuser77", "anon:cookieY", "newuser77", "other", "anon:dev"]
    assert keys.index.tolist() == [5, 6, 7, 8, 9] and keys.name == "user_id"


def test_canonical_keys_in_bulk_reads_every_alias(graph, monkeypatch) -> None:
    from features.identity import graph as graph_module

    graph.link("cookieZ", "newuser77", source="test")
    monkeypatch.setattr(graph_module, "BULK_READ_PEOPLE", 1)
    events = pd.DataFrame({"user_id": [None, "a"], "anonymous_id": ["cookieZ", None]})
    assert graph.canonical_keys(events).tolist() == ["newuser77", "a"]


def test_another_graph_object_sees_a_merge_after_its_cache_check(make_graph, monkeypatch) -> None:
    from features.identity import graph as graph_module

    reader, writer = make_graph(), make_graph()
    assert reader.canonical("anon:cookieZ") == "anon:cookieZ"  # cached now
    writer.link("cookieZ", "newuser77", source="test")
    monkeypatch.setattr(graph_module, "VERSION_CHECK_SECONDS", 0.0)
    assert reader.canonical("anon:cookieZ") == "newuser77"


def test_concurrent_links_of_one_pair_log_one_merge(make_graph) -> None:
    graphs = [make_graph() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        merges = list(pool.map(lambda g: g.link("cookieZ", "u9", source="test"), graphs))
    assert sum(m.recorded for m in merges) == 1
    assert len(graphs[0].merge_log()) == 1
    assert graphs[0].aliases("u9") == ["u9", "anon:cookieZ"]


def _link_in_process(url: str, prefix: str, n: int) -> None:
    graph = IdentityGraph(database.engine(url), prefix=prefix)
    for i in range(10):
        graph.link(f"dev{n}-{i}", "shared-user", source="test")
        graph.link(f"dev{(n + 1) % 4}-{i}", "shared-user", source="test")


def test_processes_linking_at_once_keep_one_consistent_person(url, make_graph) -> None:
    graph = make_graph()
    graph.create()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_link_in_process, args=(url, graph.prefix, n)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    aliases = graph.aliases("shared-user")
    assert len(aliases) == 1 + 40 and len(set(aliases)) == 41
    assert len(graph.merge_log()) == 40  # each device merged once, the repeats logged nothing


def test_export_and_erase_cover_everything_the_graph_holds(make_graph) -> None:
    graph, other = make_graph(), make_graph()
    graph.link("cookieZ", "newuser77", source="test")
    graph.link("phone", "newuser77", source="test")
    graph.link("elsewhere", "someone-else", source="test")
    graph.add_hint("phone", "fp-1", 0.5)
    assert other.canonical("anon:phone") == "newuser77"  # cached in another object

    exported = graph.export("anon:phone")
    assert exported["canonical"] == "newuser77"
    assert exported["aliases"] == ["newuser77", "anon:cookieZ", "anon:phone"]
    assert [h["anonymous_id"] for h in exported["hints"]] == ["phone"]
    assert [m["anonymous_key"] for m in exported["merges"]] == ["anon:cookieZ", "anon:phone"]
    json.dumps(exported)  # JSON-ready

    assert graph.erase("newuser77") == ["newuser77", "anon:cookieZ", "anon:phone"]
    assert graph.canonical("anon:phone") == "anon:phone"
    assert graph.export("newuser77") == {
        "canonical": "newuser77",
        "aliases": ["newuser77"],
        "hints": [],
        "merges": [],
    }
    log = graph.merge_log()
    assert [row["kind"] for row in log] == ["link", "erasure"]
    assert log[-1]["anonymous_key"] == log[-1]["user_id"] == ""  # no ids left
    assert graph.canonical("anon:elsewhere") == "someone-else"  # others untouched
    other._checked = -float("inf")  # its next read checks the log (as after 0.2 s)
    assert other.canonical("anon:phone") == "anon:phone"
