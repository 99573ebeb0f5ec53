"""The login example of issue #11 over a real ``bentoml serve``: three events as ``cookieZ``,
``POST /identify`` ``{cookieZ -> newuser77}``, one event as ``newuser77``; then ``/recommend``
for ``newuser77`` shows cookieZ's cart and categories, and ``tailor features build`` puts
cookieZ's events under ``newuser77``. A second visitor who never logs in is the control: the
same events without ``/identify`` leave the user with one event, no cart, no categories (what
the issue saw before the merge).

``/events`` may answer 202 and apply events later (a broker), so every check polls
``/recommend`` until the expected state shows up (at most :data:`WAIT_SECONDS`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from features import store
from tests.integration.test_serving_http import (  # noqa: F401  (served is a fixture)
    _categories,
    _consent,
    _event,
    _post,
    served,
)

pytestmark = pytest.mark.integration

WAIT_SECONDS = 10.0


def _state(answer: dict) -> dict:
    return json.loads(answer.get("features", {}).get("persona_state") or "{}")


def _poll(served, body: dict, done: Callable[[dict], bool]) -> dict:  # noqa: F811
    """``/recommend`` for ``body`` until ``done(answer)``; the last answer either way."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        answer = _post(served, "/recommend", body).json()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def _anonymous_visit(served, cookie: str, product: str) -> None:  # noqa: F811
    """Two views and an add-to-cart in electronics as an anonymous visitor, applied."""
    _consent(served, anonymous_id=cookie)  # the banner's choice, before any event (issue #12)
    events = [
        _event(cookie, "electronics", product, session_id=f"s-{cookie}"),
        _event(cookie, "electronics", product, session_id=f"s-{cookie}"),
        _event(cookie, "electronics", product, event_type="add_to_cart", quantity=1),
    ]
    assert _post(served, "/events", events).status_code in (200, 202)
    seen = _poll(served, {"anonymous_id": cookie}, lambda a: _state(a).get("carts") == 1)
    assert _state(seen).get("carts") == 1, seen


def _user_event(served, user: str, cookie: str) -> None:  # noqa: F811
    event = _event(cookie, "electronics", "", event_type="page_view", user_id=user)
    event = {k: v for k, v in event.items() if k not in ("product_id", "category", "price")}
    assert _post(served, "/events", [event]).status_code in (200, 202)


def test_a_login_brings_the_anonymous_history_to_the_user(served, trained_workspace):  # noqa: F811
    run = uuid.uuid4().hex[:8]
    cookie, user = f"cookieZ-{run}", f"newuser77-{run}"
    other_cookie, other_user = f"cookieY-{run}", f"newuser78-{run}"
    product = next(p for p, c in _categories(trained_workspace).items() if c == "electronics")
    _anonymous_visit(served, cookie, product)
    _anonymous_visit(served, other_cookie, product)

    started = time.monotonic()
    reply = _post(served, "/identify", {"anonymous_id": cookie, "user_id": user, "traits": {}})
    assert reply.status_code == 200, reply.text
    login = reply.json()
    assert login["canonical"] == user and login["merged"] == [f"anon:{cookie}"]
    assert login["aliases"] == [user, f"anon:{cookie}"] and login["kind"] == "link"
    assert "degraded" not in login and len(login["request_id"]) == 32

    # within one second of the login the user's features hold the anonymous history
    merged = _poll(served, {"user_id": user}, lambda a: _state(a).get("carts") == 1)
    assert time.monotonic() - started < 1.0, time.monotonic() - started
    assert _state(merged)["categories"] == {"electronics": 2}
    assert merged["features"]["last_category"] == "electronics"

    _user_event(served, user, cookie)
    _consent(served, user_id=other_user)
    _user_event(served, other_user, other_cookie)  # the control: no /identify

    after = _poll(served, {"user_id": user}, lambda a: _state(a).get("events") == 4)
    state = _state(after)
    assert (state["events"], state["carts"], state["views"]) == (4, 1, 2), state
    assert state["categories"] == {"electronics": 2}
    # the anonymous device now reads the same person
    device = _post(served, "/recommend", {"anonymous_id": cookie}).json()
    assert device["user_id"] == user and _state(device)["events"] == 4

    control = _poll(served, {"user_id": other_user}, lambda a: _state(a).get("events") == 1)
    control_state = _state(control)
    assert (control_state["events"], control_state.get("carts")) == (1, 0)
    assert control_state["categories"] == {}

    # the offline build (what training reads) keys cookieZ's events under the user too
    result = CliRunner().invoke(app, ["features", "build", "--home", str(served.ws.home)])
    assert result.exit_code == 0, result.output
    data = served.ws.feature_data_dir
    personas = pd.read_parquet(data / store.TABLES["user_personas"])
    last = personas[personas["user_id"] == user].iloc[-1]
    offline = json.loads(last["persona_state"])
    assert (offline["events"], offline["carts"], offline["views"]) == (4, 1, 2)
    assert f"anon:{cookie}" not in set(personas["user_id"])
    activity = pd.read_parquet(data / store.TABLES["user_activity"])
    assert (activity["user_id"] == user).sum() == 4
    assert (activity["user_id"] == f"anon:{other_cookie}").sum() == 3  # never logged in


def test_a_second_device_is_merged_into_the_same_person(served, trained_workspace):  # noqa: F811
    run = uuid.uuid4().hex[:8]
    laptop, phone, user = f"laptop-{run}", f"phone-{run}", f"two-devices-{run}"
    product = next(p for p, c in _categories(trained_workspace).items() if c == "electronics")
    _anonymous_visit(served, laptop, product)
    assert _post(served, "/identify", {"anonymous_id": laptop, "user_id": user}).status_code == 200
    _anonymous_visit(served, phone, product)
    second = _post(served, "/identify", {"anonymous_id": phone, "user_id": user}).json()
    assert second["merged"] == [f"anon:{phone}"]
    assert second["aliases"] == [user, f"anon:{laptop}", f"anon:{phone}"]
    merged = _poll(served, {"user_id": user}, lambda a: _state(a).get("carts") == 2)
    assert (_state(merged)["carts"], _state(merged)["views"]) == (2, 4)

    again = _post(served, "/identify", {"anonymous_id": phone, "user_id": user}).json()
    assert again["merged"] == [] and "merge_id" not in again  # idempotent


def test_bad_logins_are_4xx_naming_the_field_and_counted(served):  # noqa: F811
    run = uuid.uuid4().hex[:8]
    same = _post(served, "/identify", {"anonymous_id": f"x{run}", "user_id": f"x{run}"})
    assert same.status_code == 400 and same.json()["error"].startswith("user_id:"), same.text
    blank = _post(served, "/identify", {"anonymous_id": "", "user_id": "u"})
    assert blank.status_code == 400 and "anonymous_id" in blank.json()["error"]
    missing = _post(served, "/identify", {"user_id": "u"})
    assert missing.status_code == 400 and "anonymous_id" in missing.json()["error"]

    tablet = f"tablet-{run}"
    assert _post(served, "/identify", {"anonymous_id": tablet, "user_id": f"a{run}"}).is_success
    refused = _post(served, "/identify", {"anonymous_id": tablet, "user_id": f"b{run}"})
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("anonymous_id:")
    assert "TAILOR_ALLOW_USER_MERGE" in refused.json()["error"]

    metrics = httpx.get(f"{served.url}/metrics", headers=served.headers).text
    for outcome in ("rejected", "refused_user_merge", "linked"):
        found = re.search(rf'tailor_identify_total\{{outcome="{outcome}"\}} (\S+)', metrics)
        assert found is not None and float(found.group(1)) >= 1, outcome
