"""Most-popular baseline: every user gets the same item ranking, or their segment's.

With ``segment_column`` set, popularity is counted within each segment of users (a column of
``Interactions.user_features``, e.g. gender, age band, main device or a cluster label) and a
user gets their segment's ranking, with global popularity breaking ties; users without a segment
get the global ranking.

``similar_items`` is item-item cosine over co-occurrence (two items co-occur when one user has
both); items that never co-occur with the query score 0 and follow in lower-index order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from models.base import Callback, Recommender
from models.interactions import Interactions

WEIGHTINGS = ("count", "users")


@dataclass(frozen=True)
class PopularityConfig:
    """How to rank items.

    ``weighting``: ``"count"`` ranks by total interaction weight, ``"users"`` by distinct users.
    """

    weighting: Literal["count", "users"] = "users"
    segment_column: str = ""

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")


class Popularity(Recommender):
    """Scores every item by its popularity in the training matrix, ignoring user history."""

    name = "popularity"
    config_class = PopularityConfig
    config: PopularityConfig

    def __init__(self, config: PopularityConfig | None = None) -> None:
        super().__init__(config)
        self.popularity: np.ndarray | None = None  # (n_items,) float32
        self.segment_of_user = np.zeros(0, dtype=np.int64)  # (n_users,) code, -1 = none
        self.segment_popularity = np.zeros((0, 0), dtype=np.float32)  # (n_segments, n_items)
        self._cooccurrence: tuple[sp.csc_matrix, sp.csr_matrix, np.ndarray] | None = None

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        started = time.perf_counter()
        matrix = interactions.matrix
        if self.config.weighting == "users":
            popularity = np.bincount(matrix.indices[matrix.data != 0], minlength=matrix.shape[1])
        else:
            popularity = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
        self.popularity = popularity.astype(np.float32)
        self.segment_of_user, self.segment_popularity = self._segments(interactions)
        self._cooccurrence = None
        self._report(callback, 0, {"fit_seconds": time.perf_counter() - started})

    def _segments(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        column = self.config.segment_column
        if not column:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        features = interactions.user_features
        if features is None or column not in features.columns:
            found = [] if features is None else list(features.columns)
            raise ValueError(
                f"segment_column {column!r} is not a user feature; user features: {found}"
            )
        labels = features[column].reindex(interactions.users.ids)
        codes, _ = labels.factorize()  # -1 for users without a value
        binary = interactions.matrix.copy()
        binary.data = (binary.data != 0).astype(np.float32)
        weights = binary if self.config.weighting == "users" else interactions.matrix
        n_segments = int(codes.max()) + 1 if len(codes) else 0
        member = sp.csr_matrix(
            (np.ones(int((codes >= 0).sum())), (codes[codes >= 0], np.flatnonzero(codes >= 0))),
            shape=(n_segments, len(codes)),
        )
        per_segment = np.asarray((member @ weights).todense(), dtype=np.float32)
        return codes.astype(np.int64), per_segment

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        scores = np.tile(self.popularity, (len(user_idx), 1))
        if not self.config.segment_column:
            return scores
        # Segment counts first; global popularity (scaled below one count) breaks ties.
        tie_break = self.popularity / (float(self.popularity.max()) + 1.0)
        for row, user in enumerate(user_idx.tolist()):
            code = self.segment_of_user[user] if user < len(self.segment_of_user) else -1
            if code >= 0:
                scores[row] = self.segment_popularity[code] + tie_break
        return scores

    def _similar(self, item_idx: int) -> np.ndarray:
        by_item, by_user, n_users_per_item = self._binary_views()
        item_users = by_item.indices[by_item.indptr[item_idx] : by_item.indptr[item_idx + 1]]
        together = np.asarray(by_user[item_users].sum(axis=0)).ravel()  # (n_items,)
        norms = np.sqrt(n_users_per_item[item_idx] * n_users_per_item)
        return np.divide(together, norms, out=np.zeros(len(norms)), where=norms > 0)

    def _binary_views(self) -> tuple[sp.csc_matrix, sp.csr_matrix, np.ndarray]:
        """Binarized training matrix by item (CSC) and by user (CSR), and users per item."""
        if self._cooccurrence is None:
            binary = self.train_user_items.copy()
            binary.eliminate_zeros()
            binary.data = np.ones_like(binary.data, dtype=np.float64)
            by_item = binary.tocsc()
            self._cooccurrence = (by_item, binary, np.diff(by_item.indptr).astype(np.float64))
        return self._cooccurrence

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "popularity": self.popularity,
            "segment_of_user": self.segment_of_user,
            "segment_popularity": self.segment_popularity,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        popularity = np.asarray(state["popularity"], dtype=np.float32)
        if popularity.shape != (self.n_items,):
            raise ValueError(
                f"saved popularity has shape {popularity.shape}, expected ({self.n_items},)"
            )
        self.popularity = popularity
        self.segment_of_user = np.asarray(state["segment_of_user"], dtype=np.int64)
        self.segment_popularity = np.asarray(state["segment_popularity"], dtype=np.float32)
        self._cooccurrence = None
