"""Interaction-matrix helpers for the neural models: positives, negatives, hold-out and NDCG.

They work on a users x items CSR matrix whose nonzero entries are interactions (explicit zeros
count as "not seen", as in `models.interactions`): `binarize`, `positive_pairs`, `NegativeSampler`
(uniform negatives outside each user's row, vectorized), `holdout_per_user` (a seeded validation
slice) and `ndcg_at_k` (the metric early stopping monitors).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models import ranking_metrics


def binarize(user_items: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """Canonical ``float32`` CSR copy ``(n_users, n_items)`` with every nonzero set to 1 and
    explicit zeros removed (indices sorted within each row)."""
    matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    matrix.eliminate_zeros()
    matrix.sum_duplicates()
    matrix.sort_indices()
    matrix.data[:] = 1.0
    return matrix


def positive_pairs(user_items: sp.spmatrix | sp.sparray) -> tuple[np.ndarray, np.ndarray]:
    """``(user_idx, item_idx)``, both ``int64`` ``(nnz,)``: every interaction, by user then item."""
    matrix = binarize(user_items)
    users = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return users, matrix.indices.astype(np.int64)


class NegativeSampler:
    """Uniform negatives: for a user, any item outside their row of ``user_items``, each equally
    likely; exact, without rejection loops.

    A draw ``r`` uniform in ``[0, n_free)`` is mapped to the ``r``-th unseen item of the row.
    With the row's sorted positives ``p_0 < p_1 < ...``, that item is ``r + #{j : p_j - j <= r}``;
    ``p_j - j`` never decreases within a row, so one ``searchsorted`` over all rows answers every
    draw at once.
    """

    def __init__(self, user_items: sp.spmatrix | sp.sparray) -> None:
        matrix = binarize(user_items)
        self.n_users, self.n_items = matrix.shape
        counts = np.diff(matrix.indptr).astype(np.int64)
        #: ``(n_users,)`` unseen items per user: how many negatives each user can get.
        self.n_free = self.n_items - counts
        self._indptr = matrix.indptr.astype(np.int64)
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        rank_in_row = np.arange(matrix.nnz, dtype=np.int64) - self._indptr[rows]
        # Globally sorted: rows ascend and p_j - j lies in [0, n_items - count] within a row.
        self._keys = rows * (self.n_items + 1) + (matrix.indices.astype(np.int64) - rank_in_row)

    def sample(self, user_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of ``user_idx`` ``(n,)``: ``int64`` item indices ``(n,)``.

        Raises ``ValueError`` for a user who has seen every item (no negatives exist).
        """
        users = np.asarray(user_idx, dtype=np.int64).ravel()
        if users.size == 0:
            return np.empty(0, dtype=np.int64)
        if users.min() < 0 or users.max() >= self.n_users:
            raise IndexError(f"user_idx must lie in [0, {self.n_users})")
        n_free = self.n_free[users]
        full = np.flatnonzero(n_free <= 0)
        if full.size:
            raise ValueError(
                f"user {int(users[full[0]])} has seen all {self.n_items} items: no negatives to "
                "sample (filter users with n_free > 0)"
            )
        draws = rng.integers(0, n_free)
        n_before = np.searchsorted(self._keys, users * (self.n_items + 1) + draws, side="right")
        return draws + (n_before - self._indptr[users])


def holdout_per_user(
    user_items: sp.spmatrix | sp.sparray, fraction: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split each user's interactions at random into ``(train, held_out)``, binary CSR matrices of
    the input's shape whose sum is the binarized input.

    A user with ``n`` interactions gets ``round(fraction * n)`` of them held out (halves round
    up), but always keeps at least one for training; users with fewer than two keep all.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    matrix = binarize(user_items)
    counts = np.diff(matrix.indptr).astype(np.int64)
    n_held = np.minimum(
        np.floor(fraction * counts + 0.5).astype(np.int64), np.maximum(counts - 1, 0)
    )
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), counts)
    order = np.lexsort((rng.random(matrix.nnz), rows))  # rows stay grouped, shuffled inside
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz, dtype=np.int64) - matrix.indptr[rows[order]]
    held = rank < n_held[rows]
    return _select(matrix, ~held), _select(matrix, held)


def _select(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The entries of canonical CSR ``matrix`` where ``keep`` ``(nnz,)`` holds, same shape."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=matrix.shape[0]))])
    return sp.csr_matrix(
        (matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape, dtype=np.float32
    )


def ndcg_at_k(scores: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int = 10) -> np.ndarray:
    """Binary-relevance NDCG@k per user ``(n,)`` from ``scores`` ``(n, n_items)`` and the
    relevant items ``(n, n_items)`` (nonzero = relevant); NaN for users without relevant items.

    Items to exclude (training history) must already score ``-inf``. Ties go to the lower item
    index. The lists are scored by `models.ranking_metrics.ndcg_at_k`, the one NDCG that
    training, benchmarks and tuning report too.
    """
    scores = np.asarray(scores)
    relevant = binarize(relevant)
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant has shape {relevant.shape}, scores {scores.shape}")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (n, k)
    return ranking_metrics.ndcg_at_k(top, relevant, k)
