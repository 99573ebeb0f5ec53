"""EASE and its transposed variant against the closed forms computed independently with numpy."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.ease import EASE, EASEConfig, UserEASE, UserEASEConfig
from models.interactions import Interactions


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 25)) < 0.25).astype(np.float32)
    users, items = np.nonzero(dense)
    frame = pd.DataFrame({"user_id": [f"u{u:02d}" for u in users], "item_id": items.astype(str)})
    return Interactions.from_frame(frame)


def _dense(interactions: Interactions) -> np.ndarray:
    return (interactions.matrix.toarray() > 0).astype(np.float64)


def _transposed_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck's closed form on ``X^T``: ``B = I - P / diag(P)``, ``P = (X X^T + l2 I)^-1``."""
    p = np.linalg.inv(x @ x.T + l2 * np.eye(len(x)))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.T @ x  # user u's scores: sum_v B[v, u] x_v


def test_ease_matches_the_closed_form(interactions: Interactions) -> None:
    x = _dense(interactions)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    model = EASE(EASEConfig(l2=5.0)).fit(interactions)
    scores = model.score(np.arange(interactions.n_users))
    np.testing.assert_allclose(scores, x @ b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("l2", [0.5, 5.0, 50.0])
def test_user_ease_matches_the_transposed_closed_form(interactions: Interactions, l2) -> None:
    model = UserEASE(UserEASEConfig(l2=l2)).fit(interactions)
    scores = model.score(np.arange(interactions.n_users))
    np.testing.assert_allclose(scores, _transposed_ease(_dense(interactions), l2), atol=2e-4)


def test_user_ease_scores_a_fresh_history_by_ridge_regression(interactions: Interactions) -> None:
    """A history scored for user 0 but differing from their row: exclude user 0, regress on the
    other users (the constrained ridge solution), here recomputed without user 0 at all."""
    x = _dense(interactions)
    fresh = np.zeros(x.shape[1])
    fresh[[1, 4, 7]] = 1.0
    model = UserEASE(UserEASEConfig(l2=2.0)).fit(interactions)
    got = model.score(0, user_items=sp.csr_matrix(fresh[None, :]))
    others = x[1:]
    weights = np.linalg.solve(others @ others.T + 2.0 * np.eye(len(others)), others @ fresh)
    np.testing.assert_allclose(got, others.T @ weights, atol=2e-4)


def test_user_ease_similar_items_follow_a_one_item_history(interactions: Interactions) -> None:
    x = _dense(interactions)
    model = UserEASE(UserEASEConfig(l2=2.0)).fit(interactions)
    items, scores = model.similar_items(3, k=5)
    one = np.zeros(x.shape[1])
    one[3] = 1.0
    expected = x.T @ np.linalg.solve(x @ x.T + 2.0 * np.eye(len(x)), x @ one)
    np.testing.assert_allclose(scores, expected[items], atol=2e-4)
    assert 3 not in items.tolist()


def test_user_ease_rejects_a_bad_l2() -> None:
    with pytest.raises(ValueError, match="l2 must be finite and > 0"):
        UserEASEConfig(l2=0.0)


@pytest.mark.parametrize("dropout", [0.25, 0.6])
def test_ease_dropout_matches_the_edlae_closed_form(interactions: Interactions, dropout) -> None:
    """Steck (2020), EDLAE with full emphasis: ``Lambda = l2 I + p / (1 - p) diagMat(diag(G))``."""
    x = _dense(interactions)
    gram = x.T @ x
    penalty = 5.0 * np.eye(x.shape[1]) + dropout / (1 - dropout) * np.diag(np.diag(gram))
    p = np.linalg.inv(gram + penalty)
    b = np.eye(x.shape[1]) - p / np.diag(p)
    model = EASE(EASEConfig(l2=5.0, dropout=dropout)).fit(interactions)
    scores = model.score(np.arange(interactions.n_users))
    np.testing.assert_allclose(scores, x @ b, rtol=1e-4, atol=1e-5)
    plain = EASE(EASEConfig(l2=5.0)).fit(interactions).score(np.arange(interactions.n_users))
    assert not np.allclose(scores, plain, atol=1e-3)  # the penalty changes the model


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_ease_rejects_a_dropout_outside_zero_to_one(dropout) -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        EASEConfig(dropout=dropout)


def test_user_ease_refuses_dropout() -> None:
    with pytest.raises(ValueError, match="dropout must be 0 for user_ease"):
        UserEASEConfig(dropout=0.5)
