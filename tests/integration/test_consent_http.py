"""``/consent`` over a real ``bentoml serve`` (issue #12): a banner choice stored and answered,
a withdrawal seen on the very next GET, GPC and the country header, 400 naming the field, and
the choices counted in ``/metrics``."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.test_serving_http import _post, served  # noqa: F401  (served: a fixture)

pytestmark = pytest.mark.integration


def _get(served, **params) -> httpx.Response:  # noqa: F811
    headers = {**served.headers, **params.pop("headers", {})}
    return httpx.get(f"{served.url}/consent", params=params, headers=headers, timeout=30)


def test_consent_over_the_real_service(served) -> None:  # noqa: F811
    visitor = f"cookie-{uuid.uuid4().hex[:8]}"
    before = _get(served, anonymous_id=visitor, headers={"CF-IPCountry": "FR"})
    assert before.status_code == 200, before.text
    assert before.json()["needs_banner"] is True
    assert before.json()["purposes"]["personalization"]["reason"] == "personalization not given"

    everything = {"analytics": True, "personalization": True, "marketing": True}
    body = {"anonymous_id": visitor, "purposes": everything, "source": "banner"}
    stored = _post(served, "/consent", body, headers={"CF-IPCountry": "FR"})
    assert stored.status_code == 201, stored.text
    assert stored.json()["state"]["purposes"]["personalization"]["allowed"] is True

    withdrawn = _post(served, "/consent", {"anonymous_id": visitor,
                                           "purposes": {"personalization": False}})  # fmt: skip
    assert withdrawn.status_code == 201
    now = _get(served, anonymous_id=visitor, headers={"CF-IPCountry": "FR", "Sec-GPC": "1"})
    answer = now.json()
    assert answer["purposes"]["personalization"]["reason"] == "personalization refused"
    assert answer["purposes"]["marketing"]["allowed"] is True  # GPC only counts under opt-out
    assert len(answer["history"]) == 2

    us = _get(served, user_id="someone-in-ca", headers={"CF-IPCountry": "US", "Sec-GPC": "1"})
    assert us.json()["regime"] == "opt-out"
    assert us.json()["purposes"]["marketing"]["reason"] == "marketing refused by Sec-GPC"

    bad = _post(served, "/consent", {"anonymous_id": visitor, "purposes": {"ads": True}})
    assert bad.status_code == 400 and bad.json()["detail"] == {"field": "purposes.ads"}
    missing = _post(served, "/consent", {"purposes": {"analytics": True}})
    assert missing.status_code == 400 and "user_id" in missing.json()["error"]

    metrics = httpx.get(f"{served.url}/metrics", headers=served.headers, timeout=30).text
    assert 'tailor_consent_total{outcome="refused",purpose="personalization"}' in metrics
    assert 'tailor_consent_total{outcome="rejected",purpose=""}' in metrics
