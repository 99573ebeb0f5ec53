"""Serving decisions with a tiny real model: known user, cold user by category, popular fallback."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models.bundle import ModelBundle, popularity_order
from models.interactions import Interactions
from models.registry import build
from models.scoring import Scorer
from serving.logic import cold_start_category, recommend
from serving.schemas import MAX_K, RecommendRequest

# Shoes s0-s4 and hats h0-h4. Distinct users per item: s0 5, h0 4, s1 4, h1 3, s2 3, h2 2, s3 2,
# h3 1, h4 1, s4 1; with ties broken by the lower dense index (h* sort before s*) the global
# popular order is s0 h0 s1 h1 s2 h2 s3 h3 h4 s4.
HISTORIES = {
    "a0": ["s0", "s1", "s2", "s3"],
    "a1": ["s0", "s1", "s2", "s3", "s4"],
    "a2": ["s0", "s1", "s2"],
    "a3": ["s0", "s1"],
    "a4": ["s0"],
    "b0": ["h0", "h1", "h2", "h3"],
    "b1": ["h0", "h1", "h2"],
    "b2": ["h0", "h1"],
    "b3": ["h0", "h4"],
}
CATEGORY = {f"s{i}": "shoes" for i in range(5)} | {f"h{i}": "hats" for i in range(5)}
N_ITEMS = len(CATEGORY)
N_USERS = len(HISTORIES)
GLOBAL_POPULAR = ["s0", "h0", "s1", "h1", "s2", "h2", "s3", "h3", "h4", "s4"]


def _scorer(model_name: str) -> Scorer:
    rows = [(user, item) for user, items in HISTORIES.items() for item in items]
    interactions = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    params = {"l2": 1.0} if model_name == "ease" else {}
    model = build(model_name, params).fit(interactions)
    bundle = ModelBundle(
        model_name=model_name,
        model=model,
        users=interactions.users,
        items=interactions.items,
        history=interactions.matrix,
        popular=popularity_order(interactions.matrix),
        item_categories=np.array([CATEGORY[i] for i in interactions.items.ids], dtype=object),
    )
    return Scorer.from_bundle(bundle, label=f"tailor-{model_name}@3")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return _scorer("ease")


def _ids(response) -> list[str]:
    return [item.item_id for item in response.items]


def _strategies(response) -> list[str]:
    return [item.strategy for item in response.items]


# ----------------------------------------------------------------------------- known users


@pytest.mark.parametrize("user_id", sorted(HISTORIES))
def test_known_user_gets_model_items_outside_their_history(scorer: Scorer, user_id: str) -> None:
    response = recommend(scorer, RecommendRequest(user_id=user_id, k=5))
    assert response.personalized is True
    assert response.strategy == "model:ease"
    assert response.user_id == user_id
    assert response.model == "tailor-ease@3"
    assert len(response.items) == 5
    assert set(_strategies(response)) == {"model:ease"}
    assert not set(_ids(response)) & set(HISTORIES[user_id])
    assert len(set(_ids(response))) == 5
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)


def test_known_user_top_item_is_the_planted_one(scorer: Scorer) -> None:
    # Every other user with s0 and s1 also has s2.
    assert _ids(recommend(scorer, RecommendRequest(user_id="a3", k=1))) == ["s2"]


def test_known_user_gets_every_unseen_item_when_k_exceeds_the_catalogue(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="a3", k=MAX_K))
    assert len(response.items) == N_ITEMS - len(HISTORIES["a3"])
    assert set(_ids(response)) == set(CATEGORY) - set(HISTORIES["a3"])


def test_known_user_with_popularity_model_says_which_model() -> None:
    response = recommend(_scorer("popularity"), RecommendRequest(user_id="a3", k=3))
    assert response.strategy == "model:popularity"
    assert _strategies(response) == ["model:popularity"] * 3
    assert _ids(response) == ["h0", "h1", "s2"]  # global order without s0, s1


# ----------------------------------------------------------------------------- cold users


def test_unknown_user_with_last_category_gets_that_category_first(scorer: Scorer) -> None:
    request = RecommendRequest(user_id="new-user", k=7)
    response = recommend(scorer, request, {"last_category": "hats"})
    assert response.personalized is True
    assert response.strategy == "popular_in_category:hats"
    assert _ids(response) == ["h0", "h1", "h2", "h3", "h4", "s0", "s1"]
    assert _strategies(response) == ["popular_in_category:hats"] * 5 + ["popular"] * 2
    assert all(CATEGORY[i] == "hats" for i in _ids(response)[:5])


def test_unknown_user_category_items_carry_global_popularity_scores(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="x", k=2), {"last_category": "hats"})
    assert [item.score for item in response.items] == pytest.approx([4 / N_USERS, 3 / N_USERS])


def test_unknown_user_without_features_gets_global_popular(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="new-user", k=4))
    assert response.personalized is False
    assert response.strategy == "popular"
    assert _ids(response) == GLOBAL_POPULAR[:4]
    assert _strategies(response) == ["popular"] * 4
    assert response.items[0].score == pytest.approx(5 / N_USERS)


def test_popular_scores_never_rise_down_the_list(scorer: Scorer) -> None:
    """Regression: order and score once came from different popularity measures (#2)."""
    response = recommend(scorer, RecommendRequest(user_id="new-user", k=MAX_K))
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_the_whole_catalogue_at_most(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="new-user", k=MAX_K))
    assert _ids(response) == GLOBAL_POPULAR


def test_top_category_is_used_when_last_category_is_empty(scorer: Scorer) -> None:
    for last in ("", None):
        features = {"last_category": last, "top_category": "shoes"}
        response = recommend(scorer, RecommendRequest(user_id="new-user", k=3), features)
        assert response.strategy == "popular_in_category:shoes"
        assert response.personalized is True
        assert _ids(response) == ["s0", "s1", "s2"]


def test_last_category_wins_over_top_category(scorer: Scorer) -> None:
    features = {"last_category": "hats", "top_category": "shoes"}
    response = recommend(scorer, RecommendRequest(user_id="new-user", k=2), features)
    assert response.strategy == "popular_in_category:hats"
    assert _ids(response) == ["h0", "h1"]


def test_unknown_category_falls_back_to_global_popular_items(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="x", k=3), {"last_category": "socks"})
    assert _ids(response) == GLOBAL_POPULAR[:3]
    assert _strategies(response) == ["popular"] * 3


def test_known_user_ignores_category_features(scorer: Scorer) -> None:
    response = recommend(scorer, RecommendRequest(user_id="a3", k=3), {"last_category": "hats"})
    assert response.strategy == "model:ease"


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({}, ""),
        ({"last_category": "hats"}, "hats"),
        ({"last_category": "", "top_category": "shoes"}, "shoes"),
        ({"last_category": None, "top_category": "shoes"}, "shoes"),
        ({"last_category": float("nan"), "top_category": "shoes"}, "shoes"),
        ({"top_category": ""}, ""),
    ],
)
def test_cold_start_category(features: dict, expected: str) -> None:
    assert cold_start_category(features) == expected


def test_response_features_drop_missing_values_and_the_user_id(scorer: Scorer) -> None:
    features = {"user_id": "new-user", "last_category": "hats", "sessions_30d": None, "n": 3}
    response = recommend(scorer, RecommendRequest(user_id="new-user", k=1), features)
    assert response.features == {"last_category": "hats", "n": 3}


def test_each_response_has_its_own_request_id(scorer: Scorer) -> None:
    request = RecommendRequest(user_id="new-user", k=1)
    first, second = recommend(scorer, request), recommend(scorer, request)
    assert len(first.request_id) == 32
    assert first.request_id != second.request_id


# ----------------------------------------------------------------------------- request validation


def test_request_defaults() -> None:
    request = RecommendRequest(user_id="u1")
    assert request.k == 10
    assert request.device == "other"  # the flat and nested device_type are both unset
    assert request.person == "u1"


@pytest.mark.parametrize("k", [1, MAX_K])
def test_request_accepts_k_at_the_bounds(k: int) -> None:
    assert RecommendRequest(user_id="u1", k=k).k == k


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1])
def test_request_rejects_k_out_of_range(k: int) -> None:
    with pytest.raises(ValidationError, match="k"):
        RecommendRequest(user_id="u1", k=k)


def test_max_k_is_200() -> None:
    assert MAX_K == 200


@pytest.mark.parametrize("user_id", ["", "x" * 257])
def test_request_rejects_empty_or_overlong_user_id(user_id: str) -> None:
    with pytest.raises(ValidationError, match="user_id"):
        RecommendRequest(user_id=user_id)
