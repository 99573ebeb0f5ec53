"""The live session store (issue #11, "Sessions in real time") on both backends: the workspace
database (SQLite, and PostgreSQL as on the scale profile, in a schema of its own per test) and the
real Redis on this machine (skipped locally when a server is absent)."""

from __future__ import annotations

import time
import uuid

import pandas as pd
import pytest

from features.live_sessions import (
    MAX_VIEWS,
    RedisSessionStore,
    SessionStore,
    SqlSessionStore,
    redis_client,
)
from features.settings import Settings
from features.workspace import Workspace
from tests.services import require_postgres, require_redis

REDIS = "127.0.0.1:6379"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Clock:
    """A clock the test moves (the SQLite backend's expiry follows it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _postgres_schema() -> str:
    """A fresh schema in the test database; the store's URL puts it first on the search path."""
    import sqlalchemy as sa

    schema = f"live_{uuid.uuid4().hex[:12]}"
    with sa.create_engine(POSTGRES).begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    return schema


def make_store(backend: str, tmp_path, ttl: float, clock=time.time) -> SessionStore:
    if backend == "sqlite":
        return SqlSessionStore(f"sqlite:///{tmp_path / 'tailor.db'}", ttl, clock)
    if backend == "postgres":
        require_postgres("workspace database on the scale profile")
        schema = _postgres_schema()
        return SqlSessionStore(f"{POSTGRES}?options=-csearch_path%3D{schema}", ttl, clock)
    require_redis("live session store")
    return RedisSessionStore(REDIS, ttl, clock, prefix=f"test:{uuid.uuid4().hex}:")


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def cleanup():
    stores: list[SessionStore] = []
    yield stores.append
    for store in stores:
        if isinstance(store, RedisSessionStore):
            keys = list(store.client.scan_iter(match=f"{store.prefix}*"))
            if keys:
                store.client.delete(*keys)
        elif store.engine.dialect.name == "postgresql":
            import sqlalchemy as sa

            store.engine.dispose()
            schema = store.engine.url.query["options"].removeprefix("-csearch_path=")
            with sa.create_engine(POSTGRES).begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def events(*rows: tuple, start: float | None = None) -> pd.DataFrame:
    """``(event_id, event_type, product_id, session_id, person[, quantity])`` rows, one second
    apart from ``start`` (default now; a time ahead of the store's clock counts as its now)."""
    start = time.time() if start is None else start
    out = []
    for n, row in enumerate(rows):
        event_id, kind, product, session, person, *quantity = row
        anonymous = person.removeprefix("anon:") if person.startswith("anon:") else None
        out.append(
            {
                "event_id": event_id,
                "event_type": kind,
                "timestamp": pd.Timestamp(start + n, unit="s", tz="UTC"),
                "user_id": None if anonymous else person,
                "anonymous_id": anonymous,
                "session_id": session,
                "product_id": product,
                "category": "c" if product else None,
                "quantity": quantity[0] if quantity else (1 if kind != "product_view" else None),
            }
        )
    return pd.DataFrame(out)


def test_views_cart_and_counters(backend, tmp_path, cleanup):
    store = make_store(backend, tmp_path, ttl=600)
    cleanup(store)
    batch = events(
        ("e1", "product_view", "p1", "s1", "anon:a1"),
        ("e2", "product_view", "p2", "s1", "anon:a1"),
        ("e3", "product_view", "p1", "s1", "anon:a1"),
        ("e4", "search", None, "s1", "anon:a1"),
        ("e5", "add_to_cart", "p1", "s1", "anon:a1", 3),
        ("e6", "add_to_cart", "p2", "s1", "anon:a1"),
        ("e7", "remove_from_cart", "p1", "s1", "anon:a1", 1),
        ("e8", "remove_from_cart", "p2", "s1", "anon:a1"),
        ("e9", "product_view", "p9", "s2", "u7"),
    )
    assert store.update(batch) == 2
    session = store.get("s1")
    assert session.views == ("p2", "p1")  # p1 viewed again: most recent last
    assert session.cart == {"p1": 2}  # 3 added, 1 removed; p2 added then removed
    assert session.counters == {"views": 3, "carts": 2, "searches": 1, "purchases": 0}
    assert session.people == ("anon:a1",)
    assert store.get("s2").views == ("p9",)
    assert store.get("nope") is None
    store.update(events(("e10", "purchase", "p1", "s1", "anon:a1", 2)))
    bought = store.get("s1")
    assert bought.cart == {} and bought.counters["purchases"] == 1


def test_views_are_bounded(backend, tmp_path, cleanup):
    store = make_store(backend, tmp_path, ttl=600)
    cleanup(store)
    n = MAX_VIEWS + 5
    store.update(events(*[(f"e{i}", "product_view", f"p{i}", "s1", "u1") for i in range(n)]))
    session = store.get("s1")
    assert session.views == tuple(f"p{i}" for i in range(5, n))
    assert session.counters["views"] == n


def test_the_same_events_twice_change_nothing(backend, tmp_path, cleanup):
    store = make_store(backend, tmp_path, ttl=600)
    cleanup(store)
    batch = events(
        ("e1", "product_view", "p1", "s1", "u1"),
        ("e2", "add_to_cart", "p1", "s1", "u1", 2),
    )
    assert store.update(batch) == 1
    assert store.update(batch) == 0  # a redelivery
    assert store.update(batch.iloc[::-1]) == 0  # in another order
    session = store.get("s1")
    assert session.cart == {"p1": 2}
    assert session.counters == {"views": 1, "carts": 1, "searches": 0, "purchases": 0}
    # a batch with one old and one new event applies the new one only
    more = pd.concat([batch.iloc[:1], events(("e3", "product_view", "p3", "s1", "u1"))])
    assert store.update(more) == 1
    assert store.get("s1").counters["views"] == 2


def test_latest_for_a_person(backend, tmp_path, cleanup):
    store = make_store(backend, tmp_path, ttl=600)
    cleanup(store)
    now = time.time()
    store.update(events(("e1", "product_view", "p1", "old", "anon:a1"), start=now - 100))
    store.update(events(("e2", "product_view", "p2", "new", "anon:a1"), start=now - 10))
    store.update(events(("e3", "product_view", "p3", "other", "anon:b2"), start=now))
    assert store.latest_for("anon:a1").session_id == "new"
    assert store.latest_for("anon:b2").session_id == "other"
    assert store.latest_for("anon:zz") is None
    # a login mid-session: the session belongs to both keys
    store.update(events(("e4", "product_view", "p4", "other", "u9"), start=now + 1))
    assert store.latest_for("u9").views == ("p3", "p4")
    assert store.latest_for("u9").people == ("anon:b2", "u9")


def test_expired_sessions_are_gone(backend, tmp_path, cleanup):
    """The TTL: a session is gone ``ttl`` seconds after its latest event (Redis expires the
    keys itself; SQLite ignores the rows on read and prunes them on the next update)."""
    ttl = 1.0
    store = make_store(backend, tmp_path, ttl=ttl)
    cleanup(store)
    store.update(events(("e1", "product_view", "p1", "s1", "u1")))
    assert store.get("s1") is not None and store.latest_for("u1") is not None
    time.sleep(ttl + 0.3)
    assert store.get("s1") is None
    assert store.latest_for("u1") is None
    # an event older than the TTL opens no session
    old = events(("e2", "product_view", "p2", "s2", "u2"), start=time.time() - 5)
    assert store.update(old) == 0
    assert store.get("s2") is None
    # after expiry the same session id starts afresh
    store.update(events(("e3", "product_view", "p3", "s1", "u1")))
    assert store.get("s1").views == ("p3",)
    if backend != "redis":  # the expired row was pruned by that update
        import sqlalchemy as sa

        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(store.sessions)).scalar()
        assert rows == 1
    else:
        assert 0 < store.client.pttl(store._session_key("s1")) <= ttl * 1000


def test_sqlite_expiry_follows_the_clock(tmp_path):
    clock = Clock()
    store = make_store("sqlite", tmp_path, ttl=60, clock=clock)
    store.update(events(("e1", "product_view", "p1", "s1", "u1"), start=clock.now))
    clock.now += 59
    assert store.get("s1") is not None
    clock.now += 2
    assert store.get("s1") is None and store.latest_for("u1") is None


def test_erase_and_export(backend, tmp_path, cleanup):
    store = make_store(backend, tmp_path, ttl=600)
    cleanup(store)
    store.update(
        events(
            ("e1", "product_view", "p1", "s1", "anon:a1"),
            ("e2", "add_to_cart", "p1", "s1", "anon:a1"),
            ("e3", "product_view", "p2", "s2", "anon:a1"),
            ("e4", "product_view", "p3", "s3", "u5"),
            start=time.time() - 10,
        )
    )
    exported = store.export("anon:a1")
    assert [s["session_id"] for s in exported] == ["s2", "s1"]
    assert exported[1]["cart"] == {"p1": 1} and exported[1]["views"] == ["p1"]
    assert "seen_events" not in exported[0]
    assert store.erase("anon:a1") == 2
    assert store.export("anon:a1") == []
    assert store.get("s1") is None and store.get("s2") is None
    assert store.get("s3").views == ("p3",)  # another person's session stays
    assert store.erase("anon:a1") == 0


def test_for_workspace_picks_the_profile_backend(tmp_path):
    local = Workspace(home=tmp_path, settings=Settings(session_timeout_minutes=5))
    store = SessionStore.for_workspace(local)
    assert isinstance(store, SqlSessionStore) and store.ttl == 300
    assert (tmp_path / "tailor.db").exists()
    scale = Workspace(home=tmp_path, profile="scale", settings=Settings(redis="h1:6390,db=2"))
    remote = SessionStore.for_workspace(scale)
    assert isinstance(remote, RedisSessionStore) and remote.ttl == 1800
    kwargs = remote.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h1", 6390, 2)


def test_redis_client_reads_feast_connection_strings():
    kwargs = redis_client("10.0.0.1:7000,password=pw").connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("10.0.0.1", 7000, "pw")


def test_a_bad_ttl_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ttl must be more than 0"):
        SqlSessionStore(f"sqlite:///{tmp_path / 'x.db'}", 0)


def test_a_batch_of_many_sessions_is_what_each_session_alone_gives(backend, tmp_path, cleanup):
    """An update folds every session of a batch in one step (issue #11 benchmark: one
    transaction or one WATCH round per batch): the same sessions as one update per session."""
    clock = Clock()
    batched = make_store(backend, tmp_path, 600, clock)
    cleanup(batched)
    kinds = ["product_view", "add_to_cart", "search", "purchase"]
    rows = [
        (
            f"e{i}",
            kinds[i // 40 % 4],
            f"p{i % 7}",
            f"s{i % 40}",
            f"u{i % 40}" if i % 3 else "anon:a",
        )
        for i in range(240)
    ]
    frame = events(*rows, start=clock.now)
    assert batched.update(frame.iloc[:100]) == 40
    assert batched.update(frame) == 40  # 100 events seen before, the rest new
    alone = make_store(backend, tmp_path / "alone", 600, clock)
    cleanup(alone)
    for session_id, group in frame.groupby("session_id"):
        assert alone.update(group) == 1, session_id
    for n in range(40):
        mine, reference = batched.get(f"s{n}"), alone.get(f"s{n}")
        assert mine == reference, n
        assert mine.counters == {"views": 2, "carts": 2, "searches": 1, "purchases": 1}, n
    assert [s.session_id for s in batched.sessions_of("u1")] == ["s1"]
    assert len(batched.sessions_of("anon:a")) == 40
    assert batched.update(frame) == 0  # all of it again: nothing changes


def test_concurrent_batches_on_the_same_sessions_lose_nothing(backend, tmp_path, cleanup):
    """The service's consumer and ``tailor consume`` may update the same sessions at once: every
    event of both is counted once (SQLite's write lock, PostgreSQL's row locks and insert race,
    Redis's WATCH on the batch's keys)."""
    import threading

    first = make_store(backend, tmp_path, 600)
    cleanup(first)
    if isinstance(first, RedisSessionStore):  # another client on the same keys
        second = RedisSessionStore(REDIS, 600, prefix=first.prefix)
    else:  # another engine on the same database (as another process has)
        second = SqlSessionStore(first.engine.url.render_as_string(hide_password=False), 600)
    stores = [first, second]
    sessions, rounds, start = 30, 8, time.time()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for r in range(rounds):
                rows = [
                    (f"w{worker}-r{r}-s{n}", "product_view", f"p{r}", f"s{n}", f"u{n}")
                    for n in range(sessions)
                ]
                stores[worker].update(events(*rows, start=start + r))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for n in range(sessions):
        session = stores[0].get(f"s{n}")
        assert session.counters["views"] == 2 * rounds, n
        assert len(session.seen_events) == 2 * rounds
        assert session.people == (f"u{n}",)


def test_session_json_is_the_dataclass_json():
    """``LiveSession.to_json`` builds its JSON from the fields (not ``dataclasses.asdict``, too
    slow for a consumer batch): the same text as before."""
    import dataclasses
    import json

    from features.live_sessions import LiveSession

    session = LiveSession(
        "s1",
        people=("anon:a", "u1"),
        views=("p1", "p2"),
        cart={"p1": 2},
        counters={"views": 2, "carts": 1, "searches": 0, "purchases": 0},
        started_at=1.5,
        last_event_at=2.25,
        expires_at=602.25,
        seen_events=("e1", "e2", "e3"),
    )
    expected = json.dumps(dataclasses.asdict(session), separators=(",", ":"))
    assert session.to_json() == expected
    assert LiveSession.from_json(session.to_json()) == session
