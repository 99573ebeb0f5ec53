"""UserKNN and ItemKNN: similarities against hand-computed values, neighbour truncation, rating
prediction with its fallbacks, the planted pattern, fresh histories and config errors."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.interactions import IdMap, Interactions
from models.knn import ItemKNN, UserKNN
from models.knn_similarity import SIMILARITIES, ItemKNNConfig, KNNConfig, UserKNNConfig

# Three users rate four items (0 = not rated). User means: u0 3, u1 2.5, u2 3.
RATINGS = np.array(
    [
        [5.0, 3.0, 0.0, 1.0],
        [4.0, 0.0, 0.0, 1.0],
        [4.0, 0.0, 2.0, 3.0],
    ]
)
# Cosine between the rating rows, norms over whole rows (|u0|^2 = 35, |u1|^2 = 17, |u2|^2 = 29).
COS_01 = (5 * 4 + 1 * 1) / math.sqrt(35 * 17)
COS_02 = (5 * 4 + 1 * 3) / math.sqrt(35 * 29)
COS_12 = (4 * 4 + 1 * 3) / math.sqrt(17 * 29)
# Every pair of users co-rates exactly items 0 and 3.
N_COMMON = 2


def _interactions(ratings: np.ndarray) -> Interactions:
    n_users, n_items = ratings.shape
    return Interactions(
        sp.csr_matrix(ratings),
        IdMap([f"u{u}" for u in range(n_users)]),
        IdMap([f"i{i}" for i in range(n_items)]),
    )


def _user_knn(**params) -> UserKNN:
    return UserKNN(UserKNNConfig(**params)).fit(_interactions(RATINGS))


def test_user_cosine_matches_hand_computation() -> None:
    model = _user_knn(similarity="cosine", shrinkage=0.0, implicit=False)
    expected = np.array([[0, COS_01, COS_02], [COS_01, 0, COS_12], [COS_02, COS_12, 0]])
    np.testing.assert_allclose(model.neighbours.toarray(), expected, rtol=1e-12)


def test_user_cosine_with_shrinkage() -> None:
    model = _user_knn(similarity="cosine", shrinkage=10.0, implicit=False)
    factor = N_COMMON / (N_COMMON + 10.0)  # 2 / 12
    assert model.neighbours[0, 1] == pytest.approx(COS_01 * factor, rel=1e-12)
    assert model.neighbours[1, 2] == pytest.approx(COS_12 * factor, rel=1e-12)


def test_user_pearson_matches_hand_computation() -> None:
    # Centered by user means: u0 [2, 0, -, -2], u1 [1.5, -, -, -1.5], u2 [1, -, -1, 0].
    # pearson(u0, u1) = (3 + 3) / (sqrt(8) sqrt(4.5)) = 1; (u0, u2) = 2 / (sqrt(8) sqrt(2)) = 0.5;
    # (u1, u2) = 1.5 / (sqrt(4.5) sqrt(2)) = 0.5.
    model = _user_knn(similarity="pearson", shrinkage=0.0, implicit=False)
    expected = np.array([[0, 1.0, 0.5], [1.0, 0, 0.5], [0.5, 0.5, 0]])
    np.testing.assert_allclose(model.neighbours.toarray(), expected, rtol=1e-12)
    shrunk = _user_knn(similarity="pearson", shrinkage=2.0, implicit=False)
    np.testing.assert_allclose(shrunk.neighbours.toarray(), expected * 2 / (2 + 2), rtol=1e-12)


def test_implicit_cosine_uses_the_binarized_matrix() -> None:
    # Histories {0, 1, 3}, {0, 3}, {0, 2, 3}: cos = |a & b| / sqrt(|a| |b|).
    model = _user_knn(similarity="cosine", shrinkage=0.0, implicit=True)
    r6 = 2 / math.sqrt(6)  # |{0, 3}| / sqrt(3 * 2)
    expected = np.array([[0, r6, 2 / 3], [r6, 0, r6], [2 / 3, r6, 0]])
    np.testing.assert_allclose(model.neighbours.toarray(), expected, rtol=1e-12)


def test_item_cosine_matches_hand_computation() -> None:
    # Item columns: i0 [5, 4, 4], i1 [3, 0, 0], i2 [0, 0, 2], i3 [1, 1, 3].
    model = ItemKNN(ItemKNNConfig(shrinkage=0.0, implicit=False)).fit(_interactions(RATINGS))
    assert model.neighbours[0, 3] == pytest.approx(21 / math.sqrt(57 * 11), rel=1e-12)
    assert model.neighbours[1, 0] == pytest.approx(15 / (3 * math.sqrt(57)), rel=1e-12)
    assert model.neighbours[1, 2] == 0.0  # never rated together
    assert model.neighbours.diagonal().tolist() == [0.0] * 4


def _dense_reference(vectors: np.ndarray, centering: str, implicit: bool) -> np.ndarray:
    """Similarities between the rows of ``vectors`` ``(m, d)`` the slow way: center a dense copy
    (over every entry when implicit, over rated entries otherwise), then cosine."""
    rated = np.ones_like(vectors, dtype=bool) if implicit else vectors != 0
    counts = {"own": rated.sum(axis=1, keepdims=True), "other": rated.sum(axis=0, keepdims=True)}
    axis = {"own": 1, "other": 0}
    centered = vectors.copy()
    if centering != "none":
        means = vectors.sum(axis=axis[centering], keepdims=True) / np.maximum(counts[centering], 1)
        centered = np.where(rated, vectors - means, 0.0)
    norms = np.linalg.norm(centered, axis=1)
    sim = centered @ centered.T / np.maximum(np.outer(norms, norms), 1e-300)
    np.fill_diagonal(sim, 0.0)
    return np.where(sim > 0, sim, 0.0)


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize(
    ("similarity", "centering"),
    [("cosine", "none"), ("pearson", "own"), ("adjusted_cosine", "other")],
)
@pytest.mark.parametrize("model_class", [UserKNN, ItemKNN])
def test_similarities_match_a_dense_reference(
    model_class: type, similarity: str, centering: str, implicit: bool
) -> None:
    # Pearson centers each compared vector by its own mean, adjusted cosine by the other side's.
    rng = np.random.default_rng(7)
    ratings = rng.integers(1, 6, size=(7, 6)) * (rng.random((7, 6)) < 0.6)
    ratings[0, 0] = 0  # keep every row and column nonempty but not full
    ratings[:, 1] = np.maximum(ratings[:, 1], 1)
    config = model_class.config_class(
        similarity=similarity, k_neighbours=100, shrinkage=0.0, min_support=0, implicit=implicit
    )
    model = model_class(config).fit(_interactions(ratings.astype(float)))
    values = (ratings != 0).astype(float) if implicit else ratings.astype(float)
    vectors = values if model_class is UserKNN else values.T
    expected = _dense_reference(vectors, centering, implicit)
    np.testing.assert_allclose(model.neighbours.toarray(), expected, rtol=1e-9, atol=1e-12)


def test_min_support_zeroes_pairs_with_too_few_common_ratings() -> None:
    model = _user_knn(shrinkage=0.0, implicit=False, min_support=N_COMMON + 1)
    assert model.neighbours.nnz == 0


def test_neighbours_are_truncated_to_the_top_k() -> None:
    model = _user_knn(similarity="cosine", shrinkage=0.0, implicit=False, k_neighbours=1)
    # COS_01 > COS_12 > COS_02, so u0 -> u1, u1 -> u0, u2 -> u1.
    assert model.neighbours.getnnz(axis=1).tolist() == [1, 1, 1]
    assert model.neighbours.toarray().argmax(axis=1).tolist() == [1, 0, 1]
    # Implicit: u1 ties between u0 and u2 (2 / sqrt(6)); the lower index wins.
    tied = _user_knn(similarity="cosine", shrinkage=0.0, implicit=True, k_neighbours=1)
    assert tied.neighbours.toarray().argmax(axis=1).tolist() == [1, 0, 1]


def test_predict_ratings_weighted_mean_and_fallbacks() -> None:
    ratings = np.vstack([RATINGS, np.zeros(4)])  # u3 has no ratings
    data = _interactions(ratings)
    config = UserKNNConfig(shrinkage=0.0, implicit=False)
    model = UserKNN(config).fit(data)
    users, items = np.array([1, 1, 0, 3]), np.array([3, 1, 2, 0])
    estimates = model.predict_ratings(users, items)
    assert estimates.shape == (4,) and estimates.dtype == np.float64
    # u1's neighbours u0 (COS_01) and u2 (COS_12) rated i3 with 1 and 3.
    assert estimates[0] == pytest.approx((COS_01 * 1 + COS_12 * 3) / (COS_01 + COS_12))
    assert estimates[1] == pytest.approx(3.0)  # only u0 rated i1
    assert estimates[2] == pytest.approx(2.0)  # only u2 rated i2
    assert estimates[3] == pytest.approx(23 / 8)  # u3: no neighbours, no mean -> global mean

    # With one neighbour (u0), nobody u1 trusts rated i2: u1's own mean, 2.5.
    top1 = UserKNN(UserKNNConfig(shrinkage=0.0, implicit=False, k_neighbours=1)).fit(data)
    assert top1.predict_ratings(np.array([1]), np.array([2])).tolist() == [2.5]


def test_item_predict_ratings_uses_the_items_neighbours() -> None:
    model = ItemKNN(ItemKNNConfig(shrinkage=0.0, implicit=False)).fit(_interactions(RATINGS))
    sim = model.neighbours.toarray()
    # u1 rated i0 (4) and i3 (1); both are neighbours of i1.
    expected = (sim[1, 0] * 4 + sim[1, 3] * 1) / (sim[1, 0] + sim[1, 3])
    assert model.predict_ratings(np.array([1]), np.array([1]))[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="same length"):
        model.predict_ratings(np.array([0, 1]), np.array([0]))


# The contract suite's pattern: group A consumes items 0-4, group B items 5-9; a00 lacks item 4.
def _planted(rated: bool = False) -> Interactions:
    """With ``rated``, ratings 1-5 that vary by user and item, so centering leaves something."""
    rows = [("a00", f"i{item:02d}") for item in range(4)]
    rows += [(f"a{user:02d}", f"i{item:02d}") for user in range(1, 12) for item in range(5)]
    rows += [(f"b{user:02d}", f"i{item:02d}") for user in range(8) for item in range(5, 10)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    codes = frame["user_id"].str[1:].astype(int) * 3 + frame["item_id"].str[1:].astype(int)
    frame["rating"] = 1.0 + codes % 5 if rated else 1.0
    items = IdMap.from_ids(f"i{item:02d}" for item in range(12))
    return Interactions.from_frame(frame, weight_col="rating", items=items)


@pytest.mark.parametrize("model_class", [UserKNN, ItemKNN])
def test_planted_item_is_recommended(model_class: type) -> None:
    data = _planted()
    model = model_class().fit(data)
    user = data.users.index("a00")
    item_idx, scores = model.recommend(user, data.user_items(user), k=1)
    assert item_idx.tolist() == [data.items.index("i04")]
    assert scores[0] > 0


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("model_class", [UserKNN, ItemKNN])
def test_every_similarity_fits_and_scores(
    model_class: type, similarity: str, implicit: bool
) -> None:
    data = _planted(rated=True)
    config = model_class.config_class(similarity=similarity, implicit=implicit)
    model = model_class(config).fit(data)
    users = np.arange(data.n_users)
    scores = model.score(users)
    assert scores.shape == (data.n_users, data.n_items) and np.isfinite(scores).all()
    assert np.isfinite(model.predict_ratings(users, np.zeros_like(users))).all()
    assert model.neighbours.nnz > 0 and (model.neighbours.data > 0).all()


def test_user_knn_scores_a_fresh_history() -> None:
    data = _planted()
    model = UserKNN().fit(data)
    fresh = sp.csr_matrix(([1.0, 1.0], ([0, 0], [5, 6])), shape=(1, 12))  # a new B-like user
    scores = model.score(0, user_items=fresh)  # a00's index, but a history unlike a00's
    # Each of the 8 B users: cosine 2 / (sqrt(2) sqrt(5)), 2 co-consumed items, shrinkage 10.
    sim = 2 / math.sqrt(2 * 5) * 2 / (2 + 10)
    np.testing.assert_allclose(scores[7:10], 8 * sim, rtol=1e-6)
    assert (scores[:5] == 0).all() and (scores[10:] == 0).all()
    item_idx, _ = model.recommend(0, fresh, k=3)
    assert sorted(item_idx.tolist()) == [7, 8, 9]


def test_user_knn_on_the_fly_scores_match_the_training_graph() -> None:
    data = _interactions(RATINGS)
    model = UserKNN(UserKNNConfig(similarity="pearson", implicit=False)).fit(data)
    users = np.arange(data.n_users)
    expected = model.neighbours @ sp.csr_matrix(RATINGS)
    np.testing.assert_allclose(model.score(users), expected.toarray(), rtol=1e-6)


def test_save_load_keeps_rating_predictions(tmp_path) -> None:
    model = _user_knn(similarity="pearson", implicit=False)
    model.save(tmp_path / "model")
    loaded = UserKNN.load(tmp_path / "model")
    users, items = np.array([0, 1, 2, 1]), np.array([2, 1, 1, 3])
    np.testing.assert_array_equal(
        loaded.predict_ratings(users, items), model.predict_ratings(users, items)
    )
    np.testing.assert_array_equal(loaded.neighbours.toarray(), model.neighbours.toarray())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k_neighbours": 0}, "k_neighbours"),
        ({"k_neighbours": 2.5}, "k_neighbours"),
        ({"shrinkage": -1.0}, "shrinkage"),
        ({"min_support": -1}, "min_support"),
        ({"similarity": "jaccard"}, "similarity"),
        ({"implicit": 1}, "implicit"),
    ],
)
def test_config_errors_name_the_field(params: dict, field: str) -> None:
    for config_class in (KNNConfig, UserKNNConfig, ItemKNNConfig):
        with pytest.raises(ValueError, match=field):
            config_class(**params)


def test_configs_are_not_interchangeable() -> None:
    with pytest.raises(TypeError, match="UserKNNConfig"):
        UserKNN(ItemKNNConfig())
