"""Neighbourhood models: user-based and item-based k-nearest neighbours.

Both models compare vectors (item columns for `ItemKNN`, user rows for `UserKNN`) with sparse
matrix products and keep, per vector, its ``k_neighbours`` most similar others with a positive
similarity (self excluded). Similarities:

- ``"cosine"``: ``a . b / (|a| |b|)`` with norms over whole vectors. (Surprise takes norms over the
  co-rated part only; on binary data that is 1 for every overlapping pair.)
- ``"pearson"``: cosine after centering each vector by its own mean (user mean for users, item
  mean for items).
- ``"adjusted_cosine"``: cosine after centering by the other side's mean (user mean between item
  columns, as in Sarwar et al. 2001; item mean between user rows).

With ``implicit=False`` the stored ratings are centered by means over rated entries, and absent
entries stay missing. With ``implicit=True`` the matrix is binarized and absence is a 0 observation,
so means run over every entry (centering over rated entries would leave nothing but zeros).
Then ``similarity * n_common / (n_common + shrinkage)``, as in Surprise, where ``n_common`` counts
co-rated entries; pairs with ``n_common < min_support`` get 0.

Top-k scores: ItemKNN ``score(u, i) = sum_j sim(i, j) r_uj`` over the history items ``j`` among
``i``'s neighbours; UserKNN ``score(u, i) = sum_v sim(u, v) r_vi`` over the neighbours ``v`` of the
given history, found on the fly among the training users, so fresh histories work.
`KNNModel.predict_ratings` is Surprise's ``KNNBasic`` estimate on the kept neighbours.

Memory: dense blocks of at most ``_BLOCK_CELLS`` similarities; the kept graph is sparse.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from models.base import Callback, Interactions, Recommender
from models.checks import check_int as _check_int

SIMILARITIES = ("cosine", "pearson", "adjusted_cosine")
_BLOCK_CELLS = 1 << 24  # dense similarities per block: 16M float64 = 128 MiB
_PAIR_BLOCK = 1 << 16  # (user, item) pairs per block in predict_ratings


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
class _Vectors:
    """Rows to compare: row ``r`` stands for ``values[r] - row_shift[r] - col_shift`` (length d).

    ``values`` ``(m, d)`` CSR ``float64`` keeps the sparsity pattern of the input (centering over
    rated entries is already applied to its data); the shifts apply to every entry, stored or
    not (implicit centering). ``sq_norms`` ``(m,)`` are the squared norms of the centered rows.
    """

    values: sp.csr_matrix
    row_shift: np.ndarray
    col_shift: np.ndarray
    sq_norms: np.ndarray


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    pattern = matrix.copy()
    pattern.data = np.ones_like(pattern.data)
    return pattern


def _row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel()


def _column_means(values: sp.csr_matrix, implicit: bool) -> np.ndarray:
    """``(d,)`` column means: over all rows (implicit) or over stored entries (0 when none)."""
    sums = np.asarray(values.sum(axis=0)).ravel()
    counts = np.full(values.shape[1], values.shape[0]) if implicit else values.getnnz(axis=0)
    return np.divide(sums, counts, out=np.zeros(len(sums)), where=counts > 0)


def _vectors(
    values: sp.csr_matrix, centering: str, implicit: bool, column_means: np.ndarray
) -> _Vectors:
    """Center ``values`` ``(m, d)``: ``"none"``, ``"own"`` (row means) or ``"other"`` (the
    training ``column_means`` ``(d,)``, shared by every set of rows compared with them)."""
    m, d = values.shape
    row_shift, col_shift = np.zeros(m), np.zeros(d)
    if centering == "own" and implicit:
        row_shift = _row_sums(values) / max(d, 1)
    elif centering == "own":
        counts = np.diff(values.indptr)
        means = np.divide(_row_sums(values), counts, out=np.zeros(m), where=counts > 0)
        values = values.copy()
        values.data -= np.repeat(means, counts)
    elif centering == "other" and implicit:
        col_shift = column_means
    elif centering == "other":
        values = values.copy()
        values.data -= column_means[values.indices]
    # |v - b 1 - c|^2 = |v|^2 - 2 v.c + c.c - 2 b (sum v - sum c) + d b^2
    sq_norms = (
        _row_sums(values.multiply(values))
        - 2 * (values @ col_shift)
        + col_shift @ col_shift
        - 2 * row_shift * (_row_sums(values) - col_shift.sum())
        + d * row_shift**2
    )
    return _Vectors(values, row_shift, col_shift, np.maximum(sq_norms, 0.0))


@dataclass(frozen=True)
class _Index:
    """Training rows prepared once for `_similarity`: their `_Vectors` ``(n, d)``, the values
    and sparsity pattern transposed (CSR ``(d, n)``), and per-row sums ``(n,)`` used by the
    centering corrections."""

    vectors: _Vectors
    values_t: sp.csr_matrix
    pattern_t: sp.csr_matrix
    sums: np.ndarray
    dot_col_shift: np.ndarray

    @classmethod
    def of(cls, vectors: _Vectors) -> _Index:
        values_t = vectors.values.T.tocsr()
        return cls(
            vectors,
            values_t,
            _binary(values_t),
            _row_sums(vectors.values),
            vectors.values @ vectors.col_shift,
        )


def _similarity(query: _Vectors, train: _Index, config: KNNConfig) -> np.ndarray:
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
        dot -= np.outer(_row_sums(q.values) - c_sum, t.row_shift)
        dot -= np.outer(q.row_shift, train.sums - c_sum)
        dot += d * np.outer(q.row_shift, t.row_shift)
    norms = np.sqrt(np.outer(q.sq_norms, t.sq_norms))
    sim = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    if config.shrinkage > 0 or config.min_support > 0:
        n_common = (_binary(q.values) @ train.pattern_t).toarray()
        if config.shrinkage > 0:
            sim *= n_common / (n_common + config.shrinkage)
        sim[n_common < config.min_support] = 0.0
    return sim


def _rows(vectors: _Vectors, rows: slice) -> _Vectors:
    return _Vectors(
        vectors.values[rows], vectors.row_shift[rows], vectors.col_shift, vectors.sq_norms[rows]
    )


def _keep_top(sim: np.ndarray, k: int) -> sp.csr_matrix:
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


def _neighbours(
    query: _Vectors, train: _Index, config: KNNConfig, exclude: np.ndarray
) -> sp.csr_matrix:
    """Top-k similarity graph ``(m, n)`` of ``query`` rows to ``train`` rows, in row blocks.

    ``exclude`` ``(m,)``: a train row that may not be row ``r``'s neighbour (itself), or -1.
    """
    m, n = query.values.shape[0], train.vectors.values.shape[0]
    block = max(1, _BLOCK_CELLS // max(n, 1))
    parts = []
    for start in range(0, m, block):
        rows = slice(start, min(start + block, m))
        sim = _similarity(_rows(query, rows), train, config)
        own = exclude[rows]
        sim[np.flatnonzero(own >= 0), own[own >= 0]] = 0.0
        parts.append(_keep_top(sim, config.k_neighbours))
    if not parts:
        return sp.csr_matrix((m, n))
    return sp.csr_matrix(sp.vstack(parts, format="csr"))


# ----------------------------------------------------------------------------- models

#: How each similarity centers the compared vectors: by their own mean or the other side's.
_CENTERING = {"cosine": "none", "pearson": "own", "adjusted_cosine": "other"}


def _item_index(user_items: sp.csr_matrix, config: KNNConfig) -> _Index:
    """The item columns of ``user_items`` ``(n_users, n_items)``, centered for the configured
    similarity, as an `_Index` over ``n_items`` rows of length ``n_users``."""
    columns = user_items.T.tocsr()
    means = _column_means(columns, config.implicit)
    return _Index.of(_vectors(columns, _CENTERING[config.similarity], config.implicit, means))


class KNNModel(Recommender):
    """Shared parts of `UserKNN` and `ItemKNN`: input handling, rating prediction and state.

    ``neighbours`` is the kept similarity graph (CSR, items x items or users x users); row ``r``
    holds ``r``'s neighbours. ``user_means`` ``(n_users,)`` are the mean stored values per user
    (NaN without any) and ``global_mean`` the mean of all stored values.
    """

    config: KNNConfig

    def __init__(self, config: KNNConfig | None = None) -> None:
        super().__init__(config)
        self.neighbours: sp.csr_matrix | None = None
        self.user_means: np.ndarray | None = None
        self.global_mean: float = math.nan
        self._ratings: sp.csr_matrix | None = None  # training values (n_users, n_items) float64

    # ------------------------------------------------------------- what the two models differ in

    def _prepare(self, matrix: sp.csr_matrix) -> None:
        """Caches derived from the training matrix ``(n_users, n_items)`` (after fit and load)."""
        ratings = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        ratings.eliminate_zeros()
        self._ratings = ratings

    @abstractmethod
    def _build_graph(self) -> sp.csr_matrix:
        """The top-k similarity graph, from the prepared caches."""

    @abstractmethod
    def _graph_size(self) -> int:
        """Rows (= columns) of ``neighbours``: ``n_items`` or ``n_users``."""

    def _index_graph(self) -> None:
        """Caches derived from ``neighbours`` (after fit and load)."""

    @abstractmethod
    def _pair_rows(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(neighbour weights, neighbours' ratings) for each pair, both ``(n_pairs, n_nodes)``."""

    # ------------------------------------------------------------- shared

    def _input(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """What similarities and scores see: ``float64``, binarized when ``implicit``."""
        matrix = sp.csr_matrix(user_items, dtype=np.float64, copy=True)
        matrix.eliminate_zeros()
        return _binary(matrix) if self.config.implicit else matrix

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        started = time.perf_counter()
        self._prepare(interactions.matrix)
        counts = np.diff(self._ratings.indptr)
        sums = _row_sums(self._ratings)
        self.user_means = np.divide(sums, counts, out=np.full(len(sums), np.nan), where=counts > 0)
        self.global_mean = float(sums.sum() / counts.sum()) if counts.sum() else math.nan
        self.neighbours = self._build_graph()
        self._index_graph()
        self._report(callback, 0, {"fit_seconds": time.perf_counter() - started})

    def predict_ratings(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Rating estimates ``(n,)`` ``float64`` for the pairs ``(user_idx[p], item_idx[p])``.

        Like Surprise's ``KNNBasic``: the similarity-weighted mean of the training values given
        by the kept neighbours (of the item for `ItemKNN`, of the user for `UserKNN`); when no
        neighbour has one, the user's mean, else the global mean (NaN only for an empty training
        matrix). Uses the stored values whatever ``implicit`` says.
        """
        users, _ = self._as_user_idx(np.atleast_1d(user_idx))
        items = self._as_item_idx(np.atleast_1d(item_idx), "item_idx")
        if users.shape != items.shape:
            raise ValueError(
                f"user_idx and item_idx must have the same length, got {len(users)} and "
                f"{len(items)}"
            )
        estimates = np.where(
            np.isnan(self.user_means[users]), self.global_mean, self.user_means[users]
        )
        for start in range(0, len(users), _PAIR_BLOCK):
            block = slice(start, start + _PAIR_BLOCK)
            weights, ratings = self._pair_rows(users[block], items[block])
            weighted = _row_sums(weights.multiply(ratings))
            total = _row_sums(weights.multiply(_binary(ratings)))  # weights are all > 0
            found = np.flatnonzero(total > 0)
            estimates[start + found] = weighted[found] / total[found]
        return estimates

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "neighbours_data": self.neighbours.data,
            "neighbours_indices": self.neighbours.indices,
            "neighbours_indptr": self.neighbours.indptr,
            "user_means": self.user_means,
            "global_mean": np.array(self.global_mean),
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        size = self._graph_size()
        indptr = np.asarray(state["neighbours_indptr"])
        user_means = np.asarray(state["user_means"], dtype=np.float64)
        if indptr.shape != (size + 1,) or user_means.shape != (self.n_users,):
            raise ValueError(
                f"saved neighbours_indptr / user_means have shapes {indptr.shape} / "
                f"{user_means.shape}, expected ({size + 1},) / ({self.n_users},)"
            )
        self._prepare(self.train_user_items)
        self.neighbours = sp.csr_matrix(
            (state["neighbours_data"], state["neighbours_indices"], indptr), shape=(size, size)
        )
        self.user_means = user_means
        self.global_mean = float(state["global_mean"])
        self._index_graph()


class ItemKNN(KNNModel):
    """Item-item graph ``neighbours`` ``(n_items, n_items)``; scores are
    ``user_items @ neighbours.T``: item ``i`` collects ``sim(i, j) r_uj`` from each history item
    ``j`` among its neighbours. ``similar_items(i)`` ranks ``i``'s kept neighbours."""

    name = "item_knn"
    config_class = ItemKNNConfig

    def _graph_size(self) -> int:
        return self.n_items

    def _build_graph(self) -> sp.csr_matrix:
        items = _item_index(self._input(self._ratings), self.config)
        return _neighbours(items.vectors, items, self.config, np.arange(self._ratings.shape[1]))

    def _index_graph(self) -> None:
        self._neighbours_t = self.neighbours.T.tocsr()

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        return (self._input(user_items) @ self._neighbours_t).toarray()

    def _similar(self, item_idx: int) -> np.ndarray:
        return self.neighbours[item_idx].toarray().ravel()

    def _pair_rows(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return self.neighbours[items], self._ratings[users]


class UserKNN(KNNModel):
    """User-user graph ``neighbours`` ``(n_users, n_users)`` over the training users, used by
    `predict_ratings`. Top-k scoring finds the neighbours of the given histories on the fly (a
    user's own training row excluded), so fresh histories are scored as they are.
    ``similar_items(i)`` ranks items by their (untruncated) item-item similarity of the same kind.
    """

    name = "user_knn"
    config_class = UserKNNConfig

    def _graph_size(self) -> int:
        return self.n_users

    def _prepare(self, matrix: sp.csr_matrix) -> None:
        super()._prepare(matrix)
        rows = self._input(self._ratings)
        self._values = rows  # what a neighbour contributes: (n_users, n_items)
        self._column_means = _column_means(rows, self.config.implicit)
        self._users = _Index.of(self._query(rows))
        self._ratings_t = self._ratings.T.tocsr()  # (n_items, n_users)
        self._items: _Index | None = None  # for _similar, built when first asked

    def _query(self, rows: sp.csr_matrix) -> _Vectors:
        centering = _CENTERING[self.config.similarity]
        return _vectors(rows, centering, self.config.implicit, self._column_means)

    def _build_graph(self) -> sp.csr_matrix:
        users = np.arange(self._values.shape[0])
        return _neighbours(self._users.vectors, self._users, self.config, users)

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        query = self._query(self._input(user_items))
        graph = _neighbours(query, self._users, self.config, user_idx)
        return (graph @ self._values).toarray()

    def _similar(self, item_idx: int) -> np.ndarray:
        if self._items is None:
            self._items = _item_index(self._values, self.config)
        item = _rows(self._items.vectors, slice(item_idx, item_idx + 1))
        return _similarity(item, self._items, self.config)[0]

    def _pair_rows(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return self.neighbours[users], self._ratings_t[items]
