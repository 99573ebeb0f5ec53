"""Real-time personas over HTTP (issue #6): a session POSTed to ``/events`` of a real
``bentoml serve`` shows up as the person's persona in the next ``/recommend``.

The service runs on its own copy of the trained test workspace (the ``served`` fixture of
``test_serving_http``).
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from tests.integration.test_serving_http import (  # noqa: F401  (served is a fixture)
    _categories,
    _consent,
    _event,
    _post,
    _until,
    served,
)

pytestmark = pytest.mark.integration


def test_a_session_of_events_sets_the_persona_seen_by_the_next_recommendation(
    served,  # noqa: F811
    trained_workspace,
):
    person = f"persona-{uuid.uuid4().hex[:8]}"
    _consent(served, user_id=person)  # person features need personalization (issue #12)
    product = next(p for p, c in _categories(trained_workspace).items() if c == "electronics")
    before = _post(served, "/recommend", {"user_id": person, "k": 3}).json()
    assert "persona" not in before
    assert "budget-minded-persona" not in before["rules_fired"]

    def event(session: str, **overrides) -> dict:
        return _event(person, "electronics", product, session_id=session, **overrides)

    # electronics cuts: budget <= 105.74, high-end > 305.24 (features/personas.yaml)
    first = [event("s1", user_id=person, price=499.0) for _ in range(4)]
    first += [event("s1", user_id=person, price=150.0)]
    first += [event("s1", user_id=person, price=49.0, event_type="add_to_cart", quantity=1)]
    response = _post(served, "/events", first)
    assert (response.status_code, response.json()["accepted"]) == (202, 6)

    def recommend() -> dict:
        return _post(served, "/recommend", {"user_id": person, "k": 3}).json()

    # the in-process consumer folds them within milliseconds; polled, at most 5 s
    assert _until(lambda: recommend().get("persona") is not None, 5)
    after = recommend()
    assert after["persona"] == "Luxury Browser, Budget Buyer"
    assert after["persona_score"] == 0.8  # min(4 of 5 views high-end, 1 of 1 add budget)
    assert "budget-minded-persona" in after["rules_fired"]
    assert after["variant"]["promo_strip"] == "deals"

    # two more mobile sessions, plus a repeat of the first batch's first event (a duplicate)
    second = [event(s, user_id=person, event_type="page_view") for s in ("s2", "s3")]
    response = _post(served, "/events", [*second, first[0]])
    assert (response.status_code, response.json()["accepted"]) == (202, 3)

    assert _until(lambda: recommend().get("persona", "").startswith("Mobile-First"), 5)
    again = recommend()
    assert again["persona"] == "Mobile-First + Luxury Browser, Budget Buyer"
    assert again["persona_score"] == 1.0  # 3 of 3 sessions on mobile
    state = json.loads(again["features"]["persona_state"])
    assert (state["events"], state["sessions"], state["mobile_sessions"]) == (8, 3, 3)

    # the two calls updated one person each
    metrics = httpx.get(f"{served.url}/metrics", headers=served.headers).text
    updated = re.search(r'tailor_persona_updates_total\{outcome="updated"\} (\S+)', metrics)
    assert updated is not None and float(updated.group(1)) >= 2
