"""The collector's cookies (issue #11): signed ids, renewal, session rotation, forged and
malformed values ignored and reissued, the generated signing key."""

from __future__ import annotations

import base64
import itertools
import json
import os
import stat
import threading

import pytest

from models.errors import ConfigError
from serving.cookies import (
    AID_COOKIE,
    FORGED,
    MALFORMED,
    SECRET_FILE,
    SID_COOKIE,
    VisitorCookies,
    cookie_key,
)

KEY = "k" * 40


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _jar(clock: Clock, key: str = KEY, **kwargs) -> VisitorCookies:
    counter = itertools.count(1)
    return VisitorCookies(key, clock=clock, new_id=lambda: f"id-{next(counter)}", **kwargs)


def _values(jar: VisitorCookies, visitor, secure: bool = False) -> dict[str, str]:
    return {c.name: c.value for c in jar.set_cookies(visitor, secure=secure)}


def test_a_first_visit_issues_both_ids_and_a_return_keeps_them() -> None:
    clock = Clock()
    jar = _jar(clock)
    first = jar.visitor({})
    assert (first.anonymous_id, first.session_id) == ("id-1", "id-2")
    assert first.new_visitor and first.new_session and first.problems == ()
    clock.now += 60
    again = jar.visitor(_values(jar, first))
    assert (again.anonymous_id, again.session_id) == ("id-1", "id-2")
    assert not again.new_visitor and not again.new_session and again.problems == ()


def test_session_rotates_after_the_timeout_without_events_but_not_while_active() -> None:
    clock = Clock()
    jar = _jar(clock, session_timeout_minutes=30)
    visitor = jar.visitor({})
    cookies = _values(jar, visitor)
    for _ in range(5):  # an event every 20 minutes: 100 minutes, one session
        clock.now += 20 * 60
        visitor = jar.visitor(cookies)
        assert visitor.session_id == "id-2" and not visitor.new_session
        cookies = _values(jar, visitor)  # last-seen moves with each answer
    clock.now += 30 * 60 + 1
    idle = jar.visitor(cookies)
    assert idle.anonymous_id == "id-1"  # the same visitor
    assert idle.session_id == "id-3" and idle.new_session and idle.problems == ()


def test_the_timeout_is_configurable() -> None:
    clock = Clock()
    jar = _jar(clock, session_timeout_minutes=5)
    cookies = _values(jar, jar.visitor({}))
    clock.now += 5 * 60 + 1
    assert jar.visitor(cookies).new_session


def test_cookies_carry_the_flags_and_lifetimes() -> None:
    jar = _jar(Clock(), cookie_days=395, session_timeout_minutes=30)
    visitor = jar.visitor({})
    aid, sid = jar.set_cookies(visitor, secure=True)
    assert aid.header().startswith(f"{AID_COOKIE}=")
    assert aid.header().endswith("; Max-Age=34128000; Path=/; HttpOnly; SameSite=Lax; Secure")
    assert sid.header().endswith("; Max-Age=1800; Path=/; HttpOnly; SameSite=Lax; Secure")
    plain, _ = jar.set_cookies(visitor, secure=False)
    assert "Secure" not in plain.header() and "HttpOnly" in plain.header()


def test_lifetime_over_13_months_is_refused() -> None:
    with pytest.raises(ConfigError, match="395"):
        VisitorCookies(KEY, cookie_days=396)


def test_an_anonymous_id_is_renewed_on_use_and_expires_only_unused() -> None:
    clock = Clock()
    jar = _jar(clock, cookie_days=10)
    cookies = _values(jar, jar.visitor({}))
    for _ in range(3):  # used every 9 days: kept for 27 days, renewed each time
        clock.now += 9 * 86400
        visitor = jar.visitor(cookies)
        assert visitor.anonymous_id == "id-1"
        cookies = _values(jar, visitor)
    clock.now += 10 * 86400 + 1  # kept by the client past its lifetime
    assert jar.visitor(cookies).new_visitor


def _tamper(value: str) -> str:
    """Change the payload's anonymous id, keeping the old signature."""
    payload, _, signature = value.rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["a"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{forged}.{signature}"


@pytest.mark.parametrize(
    "aid",
    [
        "not-signed-at-all",
        "",
        "a.b.c.d",
        "\x00\xff" * 10,
        "x" * 5000,
        "eyJhIjoiZXZpbCIsInQiOjF9.c2lnbmF0dXJl",  # {"a":"evil","t":1} with a made-up signature
    ],
)
def test_a_forged_or_garbage_anonymous_id_is_ignored_and_a_new_one_issued(aid: str) -> None:
    jar = _jar(Clock())
    visitor = jar.visitor({AID_COOKIE: aid})
    assert visitor.anonymous_id == "id-1" and visitor.new_visitor
    assert visitor.problems == ((FORGED,) if aid else ())


def test_a_tampered_value_or_another_keys_value_fails_its_signature() -> None:
    clock = Clock()
    jar = _jar(clock)
    good = _values(jar, jar.visitor({}))
    tampered = jar.visitor({AID_COOKIE: _tamper(good[AID_COOKIE])})
    assert tampered.anonymous_id != "someone-else" and tampered.problems == (FORGED,)

    other = _jar(clock, key="o" * 40)
    foreign = _values(other, other.visitor({}))
    visitor = jar.visitor(foreign)
    assert visitor.new_visitor and visitor.new_session
    assert visitor.problems == (FORGED, FORGED)


def test_one_cookies_value_is_no_good_as_the_other() -> None:
    jar = _jar(Clock())
    good = _values(jar, jar.visitor({}))
    swapped = jar.visitor({AID_COOKIE: good[SID_COOKIE], SID_COOKIE: good[AID_COOKIE]})
    assert swapped.new_visitor and swapped.new_session
    assert swapped.problems == (FORGED, FORGED)


def test_a_signed_value_of_the_wrong_shape_is_malformed_not_trusted() -> None:
    from itsdangerous import URLSafeSerializer

    signer = URLSafeSerializer(KEY, salt="tailor.collector.aid")
    jar = _jar(Clock())
    for payload in (["a list"], {"a": 7, "t": 1}, {"a": "x" * 500, "t": 1}, {"a": "ok"}):
        visitor = jar.visitor({AID_COOKIE: signer.dumps(payload)})
        assert visitor.new_visitor and visitor.problems == (MALFORMED,), payload


def test_a_session_of_another_visitor_is_not_taken_over() -> None:
    clock = Clock()
    jar = _jar(clock)
    alice = jar.visitor({})
    bob = jar.visitor({})
    mixed = {AID_COOKIE: _values(jar, bob)[AID_COOKIE], SID_COOKIE: _values(jar, alice)[SID_COOKIE]}
    visitor = jar.visitor(mixed)
    assert visitor.anonymous_id == bob.anonymous_id
    assert visitor.session_id not in (alice.session_id, bob.session_id) and visitor.new_session


def test_generated_key_is_private_stable_and_shared(tmp_path) -> None:
    secrets_dir = tmp_path / "secrets"
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(cookie_key(None, secrets_dir)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 64  # one key won; every caller reads it
    path = secrets_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert sorted(os.listdir(secrets_dir)) == [SECRET_FILE]  # no temporary files left
    assert cookie_key(None, secrets_dir) == keys[0]
    assert cookie_key("configured" * 4, secrets_dir) == "configured" * 4


def test_a_key_file_readable_by_others_is_made_private(tmp_path) -> None:
    key = cookie_key(None, tmp_path)
    path = tmp_path / SECRET_FILE
    path.chmod(0o644)
    assert cookie_key(None, tmp_path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_short_key_file_is_a_config_error_naming_the_file(tmp_path) -> None:
    (tmp_path / SECRET_FILE).write_text("short")
    (tmp_path / SECRET_FILE).chmod(0o600)
    with pytest.raises(ConfigError, match=SECRET_FILE):
        cookie_key(None, tmp_path)


def _key_in_process(secrets_dir: str) -> str:
    from pathlib import Path

    return cookie_key(None, Path(secrets_dir))


def test_worker_processes_starting_at_once_share_one_key(tmp_path) -> None:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_key_in_process, [str(tmp_path / "secrets")] * 8)
    assert len(set(keys)) == 1
    assert sorted(os.listdir(tmp_path / "secrets")) == [SECRET_FILE]
