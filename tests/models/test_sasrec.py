"""SASRec (`models.sasrec`): ordered histories, a planted sequential pattern, determinism, I/O.

The planted pattern: 8 items in a cycle 0 -> 1 -> ... -> 7 -> 0. Each of 40 users consumes 5
consecutive items of the cycle starting at ``user % 8``, so after a history ending in item ``j``
the next item is always ``j + 1 (mod 8)``. Histories are ordered through `sequence_matrix`.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.interactions import IdMap, Interactions
from models.sasrec import SASRec, SASRecConfig
from models.sasrec_net import SCORE_CHUNK
from models.sequences import ordered_histories, sequence_matrix

N_ITEMS = 8
ITEMS = IdMap([f"i{item}" for item in range(N_ITEMS)])
SMALL = {
    "hidden": 32,
    "blocks": 1,
    "max_len": 8,
    "epochs": 30,
    "batch_size": 8,
    "learning_rate": 5e-3,
    "validation_fraction": 0.0,
}


def _cycle_events() -> pd.DataFrame:
    rows = []
    for user in range(40):
        for step in range(5):
            rows.append((f"u{user:02d}", f"i{(user + step) % N_ITEMS}", 100 * user + step))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "time"])


def _interactions() -> Interactions:
    events = _cycle_events()
    users = IdMap.from_ids(events["user_id"])
    matrix = sequence_matrix(events, "user_id", "item_id", "time", users, ITEMS)
    return Interactions(matrix, users, ITEMS)


def _history(*items: int) -> sp.csr_matrix:
    """One fresh ordered history: ``items`` oldest first (data = positions 1..n)."""
    positions = np.arange(1, len(items) + 1, dtype=np.float32)
    return sp.csr_matrix(
        (positions, ([0] * len(items), list(items))), shape=(1, N_ITEMS), dtype=np.float32
    )


def _fit(**params: object) -> SASRec:
    return SASRec(SASRecConfig(**{**SMALL, **params})).fit(_interactions())


@pytest.fixture(scope="module")
def model() -> SASRec:
    return _fit()


def test_sequence_matrix_positions_with_duplicates() -> None:
    events = pd.DataFrame(
        {
            "user": ["a", "a", "a", "a", "b", "b"],
            "item": ["x", "y", "x", "z", "z", "y"],
            "time": [1, 2, 3, 3, 5, 4],
        }
    )
    users, items = IdMap(["a", "b", "c"]), IdMap(["x", "y", "z"])
    matrix = sequence_matrix(events, "user", "item", "time", users, items)
    # a: x@1, y@2, x@3 (x keeps its latest event), z@3 (equal time: frame order) -> y 1, x 2, z 3.
    # b: y@4, z@5 -> y 1, z 2. c has no events.
    expected = np.array([[2, 1, 3], [0, 1, 2], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(matrix.toarray(), expected)
    assert matrix.dtype == np.float32


def test_sequence_matrix_rejects_unknown_ids() -> None:
    events = pd.DataFrame({"user": ["a"], "item": ["nope"], "time": [1]})
    with pytest.raises(ValueError, match="1 rows have a 'user' or 'item' not in the given maps"):
        sequence_matrix(events, "user", "item", "time", IdMap(["a"]), IdMap(["x"]))


def test_ordered_histories_sort_by_value_then_index() -> None:
    matrix = sp.csr_matrix(np.array([[3.0, 1.0, 0.0, 2.0], [1.0, 0.0, 1.0, 1.0]]))
    rows = ordered_histories(matrix)
    assert [row.tolist() for row in rows] == [[1, 3, 0], [0, 2, 3]]


def test_learns_the_planted_cycle(model: SASRec) -> None:
    for last in range(N_ITEMS):
        history = _history((last - 2) % N_ITEMS, (last - 1) % N_ITEMS, last)
        item_idx, _ = model.recommend(0, history, k=1)
        assert item_idx.tolist() == [(last + 1) % N_ITEMS], f"after ...{last}"
    # Training histories too: user u's last item is (u + 4) % 8.
    users = np.arange(model.n_users)
    item_idx, _ = model.recommend(users, None, k=1)
    np.testing.assert_array_equal(item_idx[:, 0], (users + 5) % N_ITEMS)


def test_order_matters(model: SASRec) -> None:
    # The same item sets in opposite orders give different top-1 items.
    in_order, _ = model.recommend(0, _history(0, 1, 2, 3, 4), k=1)
    reversed_order, _ = model.recommend(0, _history(4, 3, 2, 1, 0), k=1)
    assert in_order.tolist() == [5] and reversed_order.tolist() != [5]


def test_equal_weights_fall_back_to_item_index(model: SASRec) -> None:
    # Plain weights (all 1): the order is by item index, so 3 is the latest item.
    plain = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [1, 2, 3])), shape=(1, N_ITEMS))
    item_idx, _ = model.recommend(0, plain, k=1)
    assert item_idx.tolist() == [4]


def test_batch_equals_single_for_fresh_histories(model: SASRec) -> None:
    histories = sp.vstack([_history(0, 1), _history(6, 7, 0), _history(3)]).tocsr()
    batch = model.score(np.array([0, 1, 2]), None, histories)
    for row in range(3):
        np.testing.assert_array_equal(model.score(row, None, histories[row]), batch[row])


def test_batch_across_several_score_chunks_equals_single(model: SASRec) -> None:
    """More users than one scoring chunk holds: every user's row equals scoring them alone,
    wherever the chunk boundaries fall, up to float rounding: the shapes are fixed, but a BLAS
    kernel may treat the last rows of a block apart (on an AVX-512 EPYC row 63 differs from row
    0 in the 7th digit), so bit-identity holds on some CPUs only. The ranking is the same."""
    n = 2 * SCORE_CHUNK + 7
    rng = np.random.default_rng(5)
    rows = [
        _history(*rng.choice(N_ITEMS, size=rng.integers(1, 6), replace=False)) for _ in range(n)
    ]
    histories = sp.vstack(rows).tocsr()
    users = np.arange(n) % 40
    batch = model.score(users, None, histories)
    for row in (0, SCORE_CHUNK - 1, SCORE_CHUNK, n - 1):
        alone = np.ravel(model.score(users[row], None, histories[row]))
        np.testing.assert_allclose(alone, batch[row], rtol=1e-5, atol=1e-5)
        assert (
            np.argsort(-alone, kind="stable").tolist()
            == np.argsort(-batch[row], kind="stable").tolist()
        )


def test_same_seed_same_scores(model: SASRec) -> None:
    again = _fit()
    users = np.arange(model.n_users)
    np.testing.assert_array_equal(again.score(users), model.score(users))


def test_save_load_gives_identical_scores(model: SASRec, tmp_path: Path) -> None:
    model.save(tmp_path / "sasrec")
    loaded = SASRec.load(tmp_path / "sasrec")
    assert loaded.config == model.config
    users = np.arange(model.n_users)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    fresh = _history(2, 3)
    np.testing.assert_array_equal(loaded.score(0, None, fresh), model.score(0, None, fresh))
    for a, b in zip(loaded.similar_items(2, k=3), model.similar_items(2, k=3), strict=True):
        np.testing.assert_array_equal(a, b)


def test_callback_reports_validation_and_can_stop() -> None:
    calls: list[dict[str, float]] = []
    model = SASRec(SASRecConfig(**{**SMALL, "validation_fraction": 0.2}))
    model.fit(_interactions(), callback=lambda epoch, metrics: calls.append(metrics) or epoch < 1)
    assert len(calls) == 2 and model.history.stop_reason == "callback"
    assert {"loss", "val_ndcg_at_10", "epoch_seconds"} <= set(calls[0])


def test_softmax_loss_learns_the_cycle_too() -> None:
    model = _fit(loss="softmax", epochs=20)
    item_idx, _ = model.recommend(0, _history(4, 5), k=1)
    assert item_idx.tolist() == [6]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hidden": 0}, "hidden"),
        ({"hidden": 30, "heads": 4}, "hidden must be a multiple of heads"),
        ({"blocks": 1.5}, "blocks"),
        ({"max_len": 0}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"loss": "hinge"}, "loss"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"patience": 0}, "patience"),
    ],
)
def test_config_errors_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SASRecConfig(**params)
