"""The neighbourhood models' similarity machinery: their configs, the vectors compared (item
columns or user rows, centred as the similarity asks), the sparse similarity products in dense
blocks of at most ``BLOCK_CELLS`` cells, shrinkage and support, and the kept top-k neighbour
graph. :mod:`models.knn` holds the models that use it (see its docstring for the formulas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from models.checks import check_int as _check_int

SIMILARITIES = ("cosine", "pearson", "adjusted_cosine")
BLOCK_CELLS = 1 << 24  # dense similarities per block: 16M float64 = 128 MiB


@dataclass(frozen=True)
class KNNConfig:
    """Shared k-NN settings.

    ``similarity``: one of `SIMILARITIES`; ``k_neighbours``: neighbours kept per vector (>= 1);
    ``shrinkage``: >= 0, see the module docstring; ``min_support``: least co-rated entries for a
    nonzero similarity (>= 0); ``implicit``: binarize for similarities and top-k scores (any
    nonzero -> 1); False uses the stored values as ratings. `KNNModel.predict_ratings` always
    averages the stored values.
    """

    similarity: Literal["cosine", "pearson", "adjusted_cosine"] = "cosine"
    k_neighbours: int = 50
    shrinkage: float = 10.0
    min_support: int = 1
    implicit: bool = True

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        _check_int("k_neighbours", self.k_neighbours, 1)
        _check_int("min_support", self.min_support, 0)
        shrinkage = self.shrinkage
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, int | float):
            raise ValueError(f"shrinkage must be a float >= 0, got {shrinkage!r}")
        if not (math.isfinite(shrinkage) and shrinkage >= 0):
            raise ValueError(f"shrinkage must be finite and >= 0, got {shrinkage!r}")
        if not isinstance(self.implicit, bool):
            raise ValueError(f"implicit must be a bool, got {self.implicit!r}")


@dataclass(frozen=True)
class UserKNNConfig(KNNConfig):
    """`UserKNN` settings (see `KNNConfig`)."""


@dataclass(frozen=True)
class ItemKNNConfig(KNNConfig):
    """`ItemKNN` settings (see `KNNConfig`)."""


# ----------------------------------------------------------------------------- similarities


@dataclass(frozen=True)
class Vectors:
    """Rows to compare: row ``r`` stands for ``values[r] - row_shift[r] - col_shift`` (length d).

    ``values`` ``(m, d)`` CSR ``float64`` keeps the sparsity pattern of the input (centering over
    rated entries is already applied to its data); the shifts apply to every entry, stored or
    not (implicit centering). ``sq_norms`` ``(m,)`` are the squared norms of the centered rows.
    """

    values: sp.csr_matrix
    row_shift: np.ndarray
    col_shift: np.ndarray
    sq_norms: np.ndarray


def binarized(matrix: sp.csr_matrix) -> sp.csr_matrix:
    pattern = matrix.copy()
    pattern.data = np.ones_like(pattern.data)
    return pattern


def row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel()


def column_means(values: sp.csr_matrix, implicit: bool) -> np.ndarray:
    """``(d,)`` column means: over all rows (implicit) or over stored entries (0 when none)."""
    sums = np.asarray(values.sum(axis=0)).ravel()
    counts = np.full(values.shape[1], values.shape[0]) if implicit else values.getnnz(axis=0)
    return np.divide(sums, counts, out=np.zeros(len(sums)), where=counts > 0)


def make_vectors(
    values: sp.csr_matrix, centering: str, implicit: bool, column_means: np.ndarray
) -> Vectors:
    """Center ``values`` ``(m, d)``: ``"none"``, ``"own"`` (row means) or ``"other"`` (the
    training ``column_means`` ``(d,)``, shared by every set of rows compared with them)."""
    m, d = values.shape
    row_shift, col_shift = np.zeros(m), np.zeros(d)
    if centering == "own" and implicit:
        row_shift = row_sums(values) / max(d, 1)
    elif centering == "own":
        counts = np.diff(values.indptr)
        means = np.divide(row_sums(values), counts, out=np.zeros(m), where=counts > 0)
        values = values.copy()
        values.data -= np.repeat(means, counts)
    elif centering == "other" and implicit:
        col_shift = column_means
    elif centering == "other":
        values = values.copy()
        values.data -= column_means[values.indices]
    # |v - b 1 - c|^2 = |v|^2 - 2 v.c + c.c - 2 b (sum v - sum c) + d b^2
    sq_norms = (
        row_sums(values.multiply(values))
        - 2 * (values @ col_shift)
        + col_shift @ col_shift
        - 2 * row_shift * (row_sums(values) - col_shift.sum())
        + d * row_shift**2
    )
    return Vectors(values, row_shift, col_shift, np.maximum(sq_norms, 0.0))


@dataclass(frozen=True)
class SimilarityIndex:
    """Training rows prepared once for `pair_similarity`: their `Vectors` ``(n, d)``, the values
    and sparsity pattern transposed (CSR ``(d, n)``), and per-row sums ``(n,)`` used by the
    centering corrections."""

    vectors: Vectors
    values_t: sp.csr_matrix
    pattern_t: sp.csr_matrix
    sums: np.ndarray
    dot_col_shift: np.ndarray

    @classmethod
    def of(cls, vectors: Vectors) -> SimilarityIndex:
        values_t = vectors.values.T.tocsr()
        return cls(
            vectors,
            values_t,
            binarized(values_t),
            row_sums(vectors.values),
            vectors.values @ vectors.col_shift,
        )


def pair_similarity(query: Vectors, train: SimilarityIndex, config: KNNConfig) -> np.ndarray:
    """Dense similarities ``(m, n)`` of ``query`` rows to the ``train`` rows, shrunk and cut by
    ``min_support``. Row-wise: a row's result does not depend on the other rows of the block.

    Centering shifts are applied through the expansion of ``(b - beta - c) . (a - alpha - c)``,
    so the sparse product never sees a densified matrix.
    """
    q, t = query, train.vectors
    dot = (q.values @ train.values_t).toarray()
    c = t.col_shift
    if c.any():
        dot -= (q.values @ c)[:, None] + train.dot_col_shift[None, :] - c @ c
    if q.row_shift.any() or t.row_shift.any():
        d, c_sum = q.values.shape[1], c.sum()
        dot -= np.outer(row_sums(q.values) - c_sum, t.row_shift)
        dot -= np.outer(q.row_shift, train.sums - c_sum)
        dot += d * np.outer(q.row_shift, t.row_shift)
    norms = np.sqrt(np.outer(q.sq_norms, t.sq_norms))
    sim = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    if config.shrinkage > 0 or config.min_support > 0:
        n_common = (binarized(q.values) @ train.pattern_t).toarray()
        if config.shrinkage > 0:
            sim *= n_common / (n_common + config.shrinkage)
        sim[n_common < config.min_support] = 0.0
    return sim


def vector_rows(vectors: Vectors, rows: slice) -> Vectors:
    return Vectors(
        vectors.values[rows], vectors.row_shift[rows], vectors.col_shift, vectors.sq_norms[rows]
    )


def keep_top(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """The ``k`` largest positive entries of each row of ``sim`` ``(m, n)`` as CSR ``(m, n)``;
    ties at the cut go to lower column indices."""
    sim = np.where(sim > 0, sim, 0.0)  # also drops NaN
    keep = sim > 0
    if k < sim.shape[1]:
        kth = np.partition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k]
        above = sim > kth[:, None]
        tied = keep & (sim == kth[:, None])
        room = k - above.sum(axis=1)
        keep = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    rows, cols = np.nonzero(keep)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return sp.csr_matrix((sim[rows, cols], cols, indptr), shape=sim.shape)


def top_neighbours(
    query: Vectors, train: SimilarityIndex, config: KNNConfig, exclude: np.ndarray
) -> sp.csr_matrix:
    """Top-k similarity graph ``(m, n)`` of ``query`` rows to ``train`` rows, in row blocks.

    ``exclude`` ``(m,)``: a train row that may not be row ``r``'s neighbour (itself), or -1.
    """
    m, n = query.values.shape[0], train.vectors.values.shape[0]
    block = max(1, BLOCK_CELLS // max(n, 1))
    parts = []
    for start in range(0, m, block):
        rows = slice(start, min(start + block, m))
        sim = pair_similarity(vector_rows(query, rows), train, config)
        own = exclude[rows]
        sim[np.flatnonzero(own >= 0), own[own >= 0]] = 0.0
        parts.append(keep_top(sim, config.k_neighbours))
    if not parts:
        return sp.csr_matrix((m, n))
    return sp.csr_matrix(sp.vstack(parts, format="csr"))


# ----------------------------------------------------------------------------- models

#: How each similarity centers the compared vectors: by their own mean or the other side's.
CENTERING = {"cosine": "none", "pearson": "own", "adjusted_cosine": "other"}


def item_index(user_items: sp.csr_matrix, config: KNNConfig) -> SimilarityIndex:
    """The item columns of ``user_items`` ``(n_users, n_items)``, centered for the configured
    similarity, as an `SimilarityIndex` over ``n_items`` rows of length ``n_users``."""
    columns = user_items.T.tocsr()
    means = column_means(columns, config.implicit)
    return SimilarityIndex.of(
        make_vectors(columns, CENTERING[config.similarity], config.implicit, means)
    )
