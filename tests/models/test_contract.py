"""The model contract, run on every entry of `models.registry.MODELS`.

A new model is covered as soon as it is registered. The planted pattern: group A (12 users)
consumes items 0-4 and group B (8 users) items 5-9; items 10 and 11 are never consumed. User a00
has items 0-3 but not 4, which every other group-A user has, so item 4 is a00's planted top-1.
Item 4 is also the most popular item a00 has not seen, so non-personalized baselines find it too.
A model that needs another pattern gets an entry in `PLANTED`.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.base import Recommender
from models.interactions import IdMap, Interactions
from models.registry import MODELS, build, load_model

N_ITEMS = 12
ALL_ITEMS = set(range(N_ITEMS))
NAMES = sorted(MODELS)
DEFAULT_PLANTED = ("a00", "i04")  # (user id, item id)
PLANTED: dict[str, tuple[str, str]] = {}


def _events() -> pd.DataFrame:
    rows = []
    for user in range(12):
        items = range(4) if user == 0 else range(5)
        rows += [(f"a{user:02d}", f"i{item:02d}") for item in items]
    for user in range(8):
        rows += [(f"b{user:02d}", f"i{item:02d}") for item in range(5, 10)]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    items = IdMap.from_ids(f"i{item:02d}" for item in range(N_ITEMS))
    return Interactions.from_frame(_events(), items=items)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request: pytest.FixtureRequest, interactions: Interactions) -> Recommender:
    return build(request.param).fit(interactions)


def _all_users(interactions: Interactions) -> np.ndarray:
    return np.arange(interactions.n_users)


def _history(interactions: Interactions, user: int) -> set[int]:
    return set(interactions.matrix[user].indices.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_consistent(name: str) -> None:
    config_class, model_class = MODELS[name]
    assert dataclasses.is_dataclass(config_class)
    assert config_class.__dataclass_params__.frozen
    assert model_class.name == name
    assert model_class.config_class is config_class
    assert build(name).config == config_class()


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_reports_through_callback(
    name: str, interactions: Interactions
) -> None:
    calls: list[tuple[int, dict[str, float]]] = []

    def stop_at_once(epoch: int, metrics: dict[str, float]) -> bool:
        calls.append((epoch, metrics))
        return False

    model = build(name)
    assert model.fit(interactions, callback=stop_at_once) is model
    assert calls and calls[0][0] == 0
    assert all(isinstance(value, float) for _, metrics in calls for value in metrics.values())
    assert len(calls) == 1  # returning False stops training after the first report


def test_planted_item_is_top1(fitted: Recommender, interactions: Interactions) -> None:
    user_id, item_id = PLANTED.get(fitted.name, DEFAULT_PLANTED)
    user = interactions.users.index(user_id)
    item_idx, scores = fitted.recommend(user, interactions.user_items(user), k=1)
    assert item_idx.tolist() == [interactions.items.index(item_id)]
    assert scores.shape == (1,)


def test_k_is_respected(fitted: Recommender, interactions: Interactions) -> None:
    users = _all_users(interactions)
    item_idx, scores = fitted.recommend(0, interactions.user_items(0), k=3)
    assert item_idx.shape == scores.shape == (3,)
    item_idx, scores = fitted.recommend(users, interactions.user_items(users), k=3)
    assert item_idx.shape == scores.shape == (len(users), 3)
    assert item_idx.dtype == np.int64 and scores.dtype == np.float32

    # More than the unseen items: one user gets fewer, a batch is padded with -1 / -inf.
    unseen = N_ITEMS - len(_history(interactions, 0))
    item_idx, _ = fitted.recommend(0, interactions.user_items(0), k=N_ITEMS + 5)
    assert item_idx.shape == (unseen,)
    item_idx, scores = fitted.recommend(users, interactions.user_items(users), k=N_ITEMS + 5)
    assert item_idx.shape == (len(users), N_ITEMS + 5)
    assert (item_idx[0, unseen:] == -1).all() and np.isneginf(scores[0, unseen:]).all()
    assert (item_idx[0, :unseen] >= 0).all() and np.isfinite(scores[0, :unseen]).all()


def test_results_are_sorted_by_score(fitted: Recommender, interactions: Interactions) -> None:
    users = _all_users(interactions)
    _, scores = fitted.recommend(users, interactions.user_items(users), k=N_ITEMS)
    for row in scores:
        assert (np.diff(row[np.isfinite(row)]) <= 0).all()


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_raises(fitted: Recommender, interactions: Interactions, k: int) -> None:
    with pytest.raises(ValueError, match="k must be a positive int"):
        fitted.recommend(0, interactions.user_items(0), k=k)
    with pytest.raises(ValueError, match="k must be a positive int"):
        fitted.similar_items(0, k=k)


def test_seen_items_excluded(fitted: Recommender, interactions: Interactions) -> None:
    users = _all_users(interactions)
    item_idx, _ = fitted.recommend(users, interactions.user_items(users), k=N_ITEMS)
    for user in users:
        returned = set(item_idx[user][item_idx[user] >= 0].tolist())
        assert returned == ALL_ITEMS - _history(interactions, user)

    item_idx, _ = fitted.recommend(
        users, interactions.user_items(users), k=N_ITEMS, exclude_seen=False
    )
    assert all(set(row.tolist()) == ALL_ITEMS for row in item_idx)


def test_passed_history_drives_exclusion(fitted: Recommender, interactions: Interactions) -> None:
    fresh = sp.csr_matrix(([1.0, 1.0], ([0, 0], [5, 6])), shape=(1, N_ITEMS), dtype=np.float32)
    item_idx, _ = fitted.recommend(0, fresh, k=N_ITEMS)
    assert set(item_idx.tolist()) == ALL_ITEMS - {5, 6}


def test_batch_equals_single(fitted: Recommender, interactions: Interactions) -> None:
    users = _all_users(interactions)
    batch_items, batch_scores = fitted.recommend(users, interactions.user_items(users), k=5)
    for user in users:
        item_idx, scores = fitted.recommend(int(user), interactions.user_items(user), k=5)
        np.testing.assert_array_equal(item_idx, batch_items[user, : len(item_idx)])
        np.testing.assert_array_equal(scores, batch_scores[user, : len(scores)])
        assert (batch_items[user, len(item_idx) :] == -1).all()


def test_candidates_respected(fitted: Recommender, interactions: Interactions) -> None:
    candidates = np.array([0, 4, 7, 9, 11])  # item 0 is in a00's history
    item_idx, _ = fitted.recommend(0, interactions.user_items(0), k=10, candidates=candidates)
    assert sorted(item_idx.tolist()) == [4, 7, 9, 11]
    users = _all_users(interactions)
    item_idx, _ = fitted.recommend(
        users, interactions.user_items(users), k=10, candidates=candidates
    )
    assert item_idx.shape == (len(users), 10)
    assert set(item_idx.ravel().tolist()) <= set(candidates.tolist()) | {-1}


def test_score_shapes_and_consistency(fitted: Recommender, interactions: Interactions) -> None:
    users = np.array([0, 3, 15])
    full = fitted.score(users)
    assert full.shape == (3, N_ITEMS) and full.dtype == np.float32
    assert fitted.score(3).shape == (N_ITEMS,)
    np.testing.assert_array_equal(fitted.score(3), full[1])
    subset = np.array([7, 1])
    np.testing.assert_array_equal(fitted.score(users, subset), full[:, subset])
    np.testing.assert_array_equal(fitted.score(users, None, interactions.user_items(users)), full)
    item_idx, scores = fitted.recommend(0, interactions.user_items(0), k=3)
    np.testing.assert_array_equal(scores, full[0, item_idx])


def test_similar_items(fitted: Recommender) -> None:
    item_idx, scores = fitted.similar_items(0, k=3)
    assert item_idx.shape == scores.shape == (3,)
    assert 0 not in item_idx.tolist()
    assert set(item_idx.tolist()) <= {1, 2, 3, 4}  # items consumed together with item 0
    assert (np.diff(scores) <= 0).all()


def test_save_load_gives_identical_scores(fitted: Recommender, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["model"] == fitted.name
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.config == fitted.config
    assert loaded.users == fitted.users and loaded.items == fitted.items
    users = np.arange(fitted.n_users)
    np.testing.assert_array_equal(loaded.score(users), fitted.score(users))
    for a, b in zip(
        loaded.recommend(users, None, k=4), fitted.recommend(users, None, k=4), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.similar_items(2, k=4), fitted.similar_items(2, k=4), strict=True):
        np.testing.assert_array_equal(a, b)
    assert type(fitted).load(tmp_path / "model").config == fitted.config


@pytest.mark.parametrize("name", NAMES)
def test_same_config_same_output(name: str, interactions: Interactions) -> None:
    first = build(name).fit(interactions)
    second = build(name).fit(interactions)
    users = _all_users(interactions)
    np.testing.assert_array_equal(first.score(users), second.score(users))
    for a, b in zip(
        first.recommend(users, None, k=5), second.recommend(users, None, k=5), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_unknown_model_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'; allowed models: .*ease"):
        build("nope")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_param_names_the_key(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown parameter 'no_such_param'; allowed parameters"):
        build(name, {"no_such_param": 1})


@pytest.mark.parametrize("name", NAMES)
def test_mistyped_param_names_the_key(name: str) -> None:
    key = dataclasses.fields(MODELS[name][0])[0].name
    with pytest.raises(ValueError, match=rf"parameter '{key}' must be"):
        build(name, {key: object()})
