"""Live sessions over HTTP (issue #11, "Sessions in real time"): an anonymous visitor the model
has never seen views products through ``/events`` of a real ``bentoml serve``, and the next
``/recommend`` answers item-to-item from those views (``session:<model>``), not popularity.

The service runs on its own copy of the trained test workspace (the ``served`` fixture of
``test_serving_http``). ``/events`` may become asynchronous (a broker between collection and
processing), so the session strategy is polled for, up to :data:`VISIBLE_WITHIN` seconds.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integration.test_serving_http import (  # noqa: F401  (served is a fixture)
    _categories,
    _event,
    _known_user,
    _post,
    served,
)

pytestmark = pytest.mark.integration

VISIBLE_WITHIN = 10.0
SESSION = "session:ease"


def _until_session(served, body: dict) -> dict:  # noqa: F811
    """Ask /recommend until its answer comes from the session (or the time is up)."""
    deadline = time.monotonic() + VISIBLE_WITHIN
    while True:
        answer = _post(served, "/recommend", body)
        assert answer.status_code == 200, answer.text
        if answer.json()["strategy"] == SESSION or time.monotonic() > deadline:
            return answer.json()
        time.sleep(0.2)


def _views(person: str, session_id: str, products: list[tuple[str, str]]) -> list[dict]:
    return [_event(person, c, p, session_id=session_id) for p, c in products]


def test_an_anonymous_visitor_gets_recommendations_from_the_session_views(
    served,  # noqa: F811
    trained_workspace,
):
    person = f"visitor-{uuid.uuid4().hex[:8]}"
    products = [(p, c) for p, c in _categories(trained_workspace).items() if c == "electronics"]
    viewed = products[:3]
    before = _post(served, "/recommend", {"anonymous_id": person, "k": 5}).json()
    assert before["strategy"] == "popular"  # nothing known yet: no history, no session

    answer = _post(served, "/events", _views(person, f"s-{person}", viewed))
    assert answer.status_code in (200, 202), answer.text

    after = _until_session(served, {"anonymous_id": person, "k": 5})
    assert after["strategy"] == SESSION, after
    assert after["user_id"] == f"anon:{person}"
    assert after["personalized"] is True
    items = [item["item_id"] for item in after["items"]]
    assert len(items) == 5
    # the product viewed last (on screen) never comes back; earlier views may, as "recently
    # viewed" (serving.logic.SESSION_BLEND, chosen in experiments/results/session_strategy.md)
    assert viewed[-1][0] not in items
    assert after["items"][0]["strategy"] == SESSION


def test_a_request_can_name_its_session(served, trained_workspace):  # noqa: F811
    person = f"visitor-{uuid.uuid4().hex[:8]}"
    product = next(iter(_categories(trained_workspace)))
    session_id = f"named-{person}"
    _post(served, "/events", _views(person, session_id, [(product, "any")]))
    # another device of nobody known, naming the session: answered from it
    named = _until_session(served, {"anonymous_id": f"other-{person}", "session_id": session_id})
    assert named["strategy"] == SESSION
    unknown = _post(
        served, "/recommend", {"anonymous_id": person, "session_id": f"none-{uuid.uuid4().hex}"}
    ).json()
    assert unknown["strategy"] != SESSION  # a session that does not exist: no session answer
    null = _post(served, "/recommend", {"anonymous_id": person, "session_id": None})
    assert null.status_code == 400 and "session_id" in null.text


def test_a_known_user_keeps_the_model_with_a_live_session(served, trained_workspace):  # noqa: F811
    user_id, _ = _known_user(trained_workspace)
    product = next(iter(_categories(trained_workspace)))
    view = _event(user_id, "any", product, user_id=user_id, session_id=f"s-{uuid.uuid4().hex}")
    assert _post(served, "/events", [view]).status_code in (200, 202)
    time.sleep(1.0)  # time for an asynchronous /events to apply it
    answer = _post(served, "/recommend", {"user_id": user_id, "k": 3}).json()
    assert answer["strategy"] == "model:ease"
