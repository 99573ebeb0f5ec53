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

Memory: dense blocks of at most ``BLOCK_CELLS`` similarities; the kept graph is sparse.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from models.base import Callback, Recommender
from models.interactions import Interactions
from models.knn_similarity import (
    CENTERING,
    ItemKNNConfig,
    KNNConfig,
    SimilarityIndex,
    UserKNNConfig,
    Vectors,
    binarized,
    column_means,
    item_index,
    make_vectors,
    pair_similarity,
    row_sums,
    top_neighbours,
    vector_rows,
)

__all__ = [
    "ItemKNN",
    "KNNModel",
    "UserKNN",
]

_PAIR_BLOCK = 1 << 16  # (user, item) pairs per block in predict_ratings


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
        return binarized(matrix) if self.config.implicit else matrix

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        started = time.perf_counter()
        self._prepare(interactions.matrix)
        counts = np.diff(self._ratings.indptr)
        sums = row_sums(self._ratings)
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
            weighted = row_sums(weights.multiply(ratings))
            total = row_sums(weights.multiply(binarized(ratings)))  # weights are all > 0
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
        items = item_index(self._input(self._ratings), self.config)
        return top_neighbours(items.vectors, items, self.config, np.arange(self._ratings.shape[1]))

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
        self._column_means = column_means(rows, self.config.implicit)
        self._users = SimilarityIndex.of(self._query(rows))
        self._ratings_t = self._ratings.T.tocsr()  # (n_items, n_users)
        self._items: SimilarityIndex | None = None  # for _similar, built when first asked

    def _query(self, rows: sp.csr_matrix) -> Vectors:
        centering = CENTERING[self.config.similarity]
        return make_vectors(rows, centering, self.config.implicit, self._column_means)

    def _build_graph(self) -> sp.csr_matrix:
        users = np.arange(self._values.shape[0])
        return top_neighbours(self._users.vectors, self._users, self.config, users)

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        query = self._query(self._input(user_items))
        graph = top_neighbours(query, self._users, self.config, user_idx)
        return (graph @ self._values).toarray()

    def _similar(self, item_idx: int) -> np.ndarray:
        if self._items is None:
            self._items = item_index(self._values, self.config)
        item = vector_rows(self._items.vectors, slice(item_idx, item_idx + 1))
        return pair_similarity(item, self._items, self.config)[0]

    def _pair_rows(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return self.neighbours[users], self._ratings_t[items]
