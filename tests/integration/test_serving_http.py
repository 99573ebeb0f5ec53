"""A real ``bentoml serve`` process over HTTP, on the trained test workspace."""

from __future__ import annotations

import httpx
import pytest

from features.workspace import Workspace
from serving.loader import ServingStartupError
from serving.process import running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base_url(trained_workspace):
    with running_service(trained_workspace.ws) as url:
        yield url


def _known_user(trained_workspace) -> tuple[str, set[str]]:
    events = trained_workspace.generated.events
    busiest = events[events["user_id"].notna()]["user_id"].value_counts().index[0]
    mine = events[
        (events["user_id"] == busiest)
        & events["event_type"].isin(["product_view", "add_to_cart", "purchase"])
    ]
    return str(busiest), set(mine["product_id"].astype(str))


def test_healthz_and_readyz(base_url):
    assert httpx.get(f"{base_url}/healthz").status_code == 200
    assert httpx.get(f"{base_url}/readyz").status_code == 200


def test_known_user_gets_k_unseen_model_items_with_online_features(base_url, trained_workspace):
    user_id, history = _known_user(trained_workspace)
    response = httpx.post(f"{base_url}/recommend", json={"user_id": user_id, "k": 7}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user_id
    assert body["personalized"] is True
    assert body["model"] == f"tailor-recommender@{trained_workspace.result.registered_version}"
    assert len(body["items"]) == 7
    assert {item["strategy"] for item in body["items"]} == {"model:ease"}
    assert not {item["item_id"] for item in body["items"]} & history
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["features"]["sessions_30d"] >= 1  # read from the Feast online store
    assert body["features"]["main_device"] in {"desktop", "mobile", "tablet", "other"}


def test_unknown_user_gets_popular_items(base_url):
    response = httpx.post(f"{base_url}/recommend", json={"user_id": "never-seen", "k": 3})
    body = response.json()
    assert response.status_code == 200
    assert body["personalized"] is False
    assert [item["strategy"] for item in body["items"]] == ["popular"] * 3
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"user_id": "u1", "k": 0}, "k"), ({"user_id": "u1", "k": 201}, "k"), ({"k": 3}, "user_id")],
)
def test_bad_input_is_a_4xx_naming_the_field(base_url, payload, field):
    response = httpx.post(f"{base_url}/recommend", json=payload)
    assert 400 <= response.status_code < 500
    assert field in response.text


def test_service_without_a_champion_refuses_to_start_with_a_clear_message(tmp_path):
    ws = Workspace(home=tmp_path).ensure()
    with pytest.raises(ServingStartupError, match="run `tailor train` first"):
        with running_service(ws, timeout=120):
            pass
