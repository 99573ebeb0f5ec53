"""Who may call what (issue #13): the route rules, 401/403 decisions and rate limits, without a
service (the HTTP checks are tests/integration/test_security_http.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from features.security.api_keys import ApiKey
from serving.auth import (
    Access,
    RateLimits,
    decide,
    for_caller,
    route_shape,
    rule_for,
    visitor_owns,
)
from serving.schemas import RecommendResponse


def _key(role: str) -> ApiKey:
    return ApiKey("k1", role, role, datetime.now(UTC))


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("GET", "/healthz", Access.PUBLIC),
        ("GET", "/readyz", Access.PUBLIC),
        ("POST", "/collect", Access.PUBLIC),
        ("GET", "/collect.gif", Access.PUBLIC),
        ("OPTIONS", "/recommend", Access.PUBLIC),
        ("POST", "/recommend", Access.APP),
        ("POST", "/events", Access.COLLECTOR),
        ("GET", "/metrics", Access.ANY_KEY),
        ("POST", "/consent", Access.VISITOR),
        ("GET", "/consent", Access.ADMIN),
        ("DELETE", "/persons/u1", Access.ADMIN),  # a route without a rule is admin-only
        ("GET", "/recommend", Access.ADMIN),
    ],
)
def test_rules(method, path, access):
    assert rule_for(method, path) is access


def test_no_key_401_wrong_role_403_right_role_and_admin_pass():
    assert decide("POST", "/recommend", None, False).status == 401
    assert "not valid" in decide("POST", "/recommend", None, True).message
    refused = decide("POST", "/recommend", _key("collector"), True)
    assert refused.status == 403 and "needs app or admin" in refused.message
    assert decide("POST", "/recommend", _key("app"), True).status == 0
    assert decide("POST", "/recommend", _key("admin"), True).status == 0
    assert decide("GET", "/consent", _key("app"), True).status == 403
    assert decide("GET", "/metrics", _key("collector"), True).status == 0
    # a visitor's consent: passes here without a key (the cookie is checked next), never
    # with a key of another role
    assert decide("POST", "/consent", None, False).status == 0
    assert decide("POST", "/consent", _key("app"), True).status == 403


def test_refusals_never_name_the_person():
    for key in (None, _key("collector")):
        message = decide("POST", "/recommend", key, key is not None).message
        assert "u00784" not in message and "user" not in message


def test_visitor_may_only_name_their_own_cookie_id():
    assert visitor_owns(b'{"anonymous_id": "a1", "purposes": {}}', "a1")
    assert not visitor_owns(b'{"anonymous_id": "a2", "purposes": {}}', "a1")
    assert not visitor_owns(b'{"anonymous_id": "a1", "user_id": "u1"}', "a1")
    assert not visitor_owns(b"not json", "a1")
    assert visitor_owns(b'{"purposes": {}}', "a1")  # the consent page's form: the cookie's id
    assert not visitor_owns(b'{"user_id": null, "purposes": {}}', "a1")


def test_audited_actions_never_carry_the_id_in_a_path():
    assert route_shape("/persons/u00784") == "/persons/*"
    assert route_shape("/consent") == "/consent"


def test_rate_limits_answer_retry_after_per_key_and_per_address():
    limits = RateLimits("3/minute", "2/minute")
    assert [limits.key("k1") for _ in range(3)] == [None, None, None]
    wait = limits.key("k1")
    assert wait is not None and 1 <= wait <= 60
    assert limits.key("k2") is None  # each key its own window
    assert limits.address("10.0.0.1") is None and limits.address("10.0.0.1") is None
    assert limits.address("10.0.0.1") is not None
    off = RateLimits("0", "0")
    assert all(off.key("k") is None and off.address("a") is None for _ in range(100))


def test_features_only_in_the_debug_view():
    answer = RecommendResponse(
        user_id="u1",
        items=[],
        model="m@1",
        personalized=True,
        strategy="model",
        features={"persona_state": '{"events": 3}'},
        request_id="r",
    )
    assert for_caller(answer, debug=False).features == {}
    assert for_caller(answer, debug=True).features == {"persona_state": '{"events": 3}'}
