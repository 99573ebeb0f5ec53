"""Most-popular baseline: every user gets the same item ranking.

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

from models.base import Callback, Interactions, Recommender

WEIGHTINGS = ("count", "users")


@dataclass(frozen=True)
class PopularityConfig:
    """How to rank items.

    ``weighting``: ``"count"`` ranks by total interaction weight, ``"users"`` by distinct users.
    """

    weighting: Literal["count", "users"] = "users"

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
        self._cooccurrence: tuple[sp.csc_matrix, sp.csr_matrix, np.ndarray] | None = None

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        started = time.perf_counter()
        matrix = interactions.matrix
        if self.config.weighting == "users":
            popularity = np.bincount(matrix.indices[matrix.data != 0], minlength=matrix.shape[1])
        else:
            popularity = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
        self.popularity = popularity.astype(np.float32)
        self._cooccurrence = None
        self._report(callback, 0, {"fit_seconds": time.perf_counter() - started})

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.popularity, (len(user_idx), 1))

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
        return {"popularity": self.popularity}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        popularity = np.asarray(state["popularity"], dtype=np.float32)
        if popularity.shape != (self.n_items,):
            raise ValueError(
                f"saved popularity has shape {popularity.shape}, expected ({self.n_items},)"
            )
        self.popularity = popularity
        self._cooccurrence = None
