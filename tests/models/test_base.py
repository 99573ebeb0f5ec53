"""IdMap, Interactions and the shared top-k logic of the model contract."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.base import NotFittedError, Recommender
from models.interactions import IdMap, Interactions
from models.popularity import Popularity
from models.ranking import top_k


def test_id_map_round_trip() -> None:
    ids = IdMap.from_ids(["b", "a", "c", "a", 7])
    assert ids.to_list() == ["7", "a", "b", "c"]  # sorted unique, as str
    assert len(ids) == 4
    assert "a" in ids and 7 in ids and "z" not in ids
    dense = ids.index(["c", "a", "7"])
    assert dense.tolist() == [3, 1, 0]
    assert ids.ids[dense].tolist() == ["c", "a", "7"]
    assert ids.index("b") == 2


def test_id_map_unknown_id_names_the_first_one() -> None:
    ids = IdMap.from_ids(["a", "b"])
    with pytest.raises(KeyError, match="'zz'.*2 of 3 ids unknown"):
        ids.index(["a", "zz", "yy"])
    with pytest.raises(KeyError, match="'q'"):
        ids.index("q")
    assert ids.index_or(["a", "zz", "b"]).tolist() == [0, -1, 1]
    assert ids.index_or(["zz"], missing=99).tolist() == [99]


def test_id_map_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="'a' appears more than once"):
        IdMap(np.array(["a", "b", "a"]))


def test_id_maps_compare_by_ids() -> None:
    assert IdMap.from_ids(["a", "b"]) == IdMap(np.array(["a", "b"]))
    assert IdMap.from_ids(["a", "b"]) != IdMap(np.array(["b", "a"]))


EVENTS = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u1", "u3"],
        "item_id": ["i1", "i2", "i1", "i1", "i3"],
        "weight": [1.0, 2.0, 0.5, 3.0, 1.0],
    }
)


def test_from_frame_sums_duplicates() -> None:
    data = Interactions.from_frame(EVENTS, weight_col="weight")
    assert (data.n_users, data.n_items) == (3, 3)
    assert data.matrix.dtype == np.float32
    u1, i1 = data.users.index("u1"), data.items.index("i1")
    assert data.matrix[u1, i1] == pytest.approx(4.0)  # 1.0 + 3.0
    assert data.matrix.nnz == 4
    counts = Interactions.from_frame(EVENTS)
    assert counts.matrix[u1, i1] == 2.0  # no weight column: each row weighs 1
    assert counts.user_items(u1).shape == (1, 3)
    assert counts.user_items(np.array([0, 2])).shape == (2, 3)


def test_from_frame_with_maps_errors_on_unknown_ids() -> None:
    users = IdMap.from_ids(["u1", "u2"])
    items = IdMap.from_ids(["i1", "i2", "i3", "i4"])
    with pytest.raises(ValueError, match=r"1 rows have a 'user_id' not in .*'u3'.*drop_unknown"):
        Interactions.from_frame(EVENTS, users=users, items=items)
    data = Interactions.from_frame(EVENTS, users=users, items=items, drop_unknown=True)
    assert (data.n_users, data.n_items) == (2, 4)  # the given maps are kept as they are
    assert data.matrix.sum() == pytest.approx(4.0)  # four events of u1/u2 remain


def test_from_frame_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="'rating'"):
        Interactions.from_frame(EVENTS, weight_col="rating")


def test_interactions_shape_must_match_maps() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Interactions(sp.csr_matrix((2, 2)), IdMap.from_ids(["a"]), IdMap.from_ids(["x", "y"]))


def test_top_k_breaks_ties_by_lower_index_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    valid = np.array([[True] * 5, [False, True, False, False, False]])
    item_idx, top_scores = top_k(scores, valid, 3)
    assert item_idx.tolist() == [[1, 2, 4], [1, -1, -1]]
    assert top_scores[0].tolist() == [3.0, 3.0, 3.0]
    assert top_scores[1, 0] == 2.0 and np.isneginf(top_scores[1, 1:]).all()


def test_top_k_ranks_nan_and_negative_infinity_last_but_keeps_them() -> None:
    scores = np.array([[np.nan, -np.inf, -1.0, -0.0, 0.0]], dtype=np.float32)
    item_idx, _ = top_k(scores, None, 5)
    assert item_idx.tolist() == [[3, 4, 2, 0, 1]]


class _Fixed(Popularity):
    """A model with hand-set scores to test the base recommend path."""

    name = "fixed"

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        return np.tile(np.array([5.0, 1.0, 5.0, 3.0], dtype=np.float32), (len(user_idx), 1))


def _fixed_model() -> Recommender:
    frame = pd.DataFrame({"user_id": ["u0", "u1"], "item_id": ["a", "d"]})
    items = IdMap(np.array(["a", "b", "c", "d"]))
    return _Fixed().fit(Interactions.from_frame(frame, items=items))


def test_recommend_uses_passed_user_items_for_exclusion() -> None:
    model = _fixed_model()
    history = sp.csr_matrix(np.array([[0, 0, 1, 0]], dtype=np.float32))
    item_idx, scores = model.recommend(0, history, k=4)
    assert item_idx.tolist() == [0, 3, 1]  # item 2 seen in the passed history, not item 0
    assert scores.tolist() == [5.0, 3.0, 1.0]
    item_idx, _ = model.recommend(np.array([0, 1]), None, k=4)  # None: training history
    assert item_idx.tolist() == [[2, 3, 1, -1], [0, 2, 1, -1]]


def test_recommend_rejects_mismatched_user_items() -> None:
    model = _fixed_model()
    with pytest.raises(ValueError, match="one row per requested user"):
        model.recommend(np.array([0, 1]), model.train_user_items[:1])


def test_unfitted_model_raises() -> None:
    with pytest.raises(NotFittedError):
        Popularity().recommend(0, None)
