"""``DELETE /persons/{id}`` over a real ``bentoml serve`` (issue #13): a visitor's consent
erased through the mounted route, the receipt verified with the workspace's key."""

from __future__ import annotations

import uuid

import httpx
import pytest

from features.privacy.receipts import verify_receipt
from tests.integration.test_serving_http import _post, served  # noqa: F401  (served: a fixture)

pytestmark = pytest.mark.integration


def test_delete_person_over_the_real_service(served) -> None:  # noqa: F811
    visitor = f"cookie-{uuid.uuid4().hex[:8]}"
    body = {"anonymous_id": visitor, "purposes": {"analytics": True}, "source": "banner"}
    assert _post(served, "/consent", body).status_code == 201

    erased = httpx.delete(
        f"{served.url}/persons/{visitor}", params={"id_kind": "anonymous"}, timeout=60
    )

    assert erased.status_code == 200, erased.text
    receipt = erased.json()
    assert receipt["receipt"]["stores"]["consent_ledger"] == 1
    assert visitor not in erased.text
    assert verify_receipt(receipt, served.ws)["person"].startswith("p1_")
    after = httpx.get(f"{served.url}/consent", params={"anonymous_id": visitor}, timeout=30)
    assert after.status_code == 200 and after.json()["history"] == []
    again = httpx.delete(f"{served.url}/persons/{visitor}?id_kind=anonymous", timeout=60)
    assert again.json()["receipt"]["nothing_held"] is True
