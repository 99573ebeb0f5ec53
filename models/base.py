"""The one model contract: the `Recommender` base class every model subclasses.

`Recommender` owns everything models share (validation, top-k selection, exclusion of seen items,
candidate restriction, padding, save/load), so a model only implements fitting, full-catalogue
scoring and its weights. The pieces it stands on live beside it, each imported from its own
module (one import path per name):

- `models.interactions`: `IdMap` and `Interactions` (ids are translated at the edges; models see
  dense indices and arrays only);
- `models.ranking`: `top_k` and `cosine_to`;
- `models.storage`: the saved-model format (`read_saved_meta`, the file names).

An interaction is a nonzero entry of the matrix; explicit zeros count as "not seen".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from models.interactions import IdMap, Interactions
from models.ranking import check_k, nonzero_cells, top_k
from models.storage import (
    read_model,
    write_model,
)

__all__ = [
    "Callback",
    "NotFittedError",
    "Recommender",
]

#: ``callback(epoch, metrics)``; returning ``False`` asks the model to stop early.
Callback = Callable[[int, dict[str, float]], bool | None]


class NotFittedError(RuntimeError):
    """Raised when a model is used before `fit` or `load`."""


class Recommender(ABC):
    """Base class of every model. Subclasses implement only fitting, scoring and their weights.

    A subclass sets ``name`` (its registry key) and ``config_class`` (a frozen dataclass whose
    fields are JSON values), and implements `_fit`, `_score`, `_similar`, `_get_state` and
    `_set_state`. Everything else (validation, top-k, exclusion of seen items, candidates,
    padding, save/load) lives here so all models behave the same.

    After fitting, ``users``/``items`` are the training id maps and ``train_user_items`` the
    training matrix ``(n_users, n_items)``, used when scoring without an explicit history.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.users: IdMap | None = None
        self.items: IdMap | None = None
        self.train_user_items: sp.csr_matrix | None = None

    def __repr__(self) -> str:
        state = f"{self.n_users} users x {self.n_items} items" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({self.config!r}, {state})"

    # ----------------------------------------------------------------- what subclasses implement

    @abstractmethod
    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        """Learn weights from ``interactions.matrix`` ``(n_users, n_items)``."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """Scores ``(n, n_items)`` for users ``(n,)`` whose histories are ``user_items`` rows."""

    @abstractmethod
    def _similar(self, item_idx: int) -> np.ndarray:
        """Similarity ``(n_items,)`` of every item to ``item_idx`` (higher is more similar)."""

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """Weights to save, as plain numeric arrays (no object arrays: loaded without pickle)."""

    @abstractmethod
    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore weights from `_get_state` output; ``users``/``items`` are already set."""

    # ----------------------------------------------------------------- the contract

    @property
    def is_fitted(self) -> bool:
        return self.items is not None

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return len(self.users)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items)

    def fit(self, interactions: Interactions, *, callback: Callback | None = None) -> Self:
        """Fit on ``interactions``; returns ``self``.

        ``callback(epoch, metrics)`` is called after each epoch (closed-form models call it once,
        with epoch 0); returning ``False`` stops training early.
        """
        if not isinstance(interactions, Interactions):
            raise TypeError(f"fit needs Interactions, got {type(interactions).__name__}")
        if interactions.n_items == 0:
            raise ValueError("cannot fit on interactions with no items")
        self._fit(interactions, callback)
        self.users = interactions.users
        self.items = interactions.items
        self.train_user_items = interactions.matrix
        return self

    def score(
        self,
        user_idx: int | np.ndarray,
        item_idx: np.ndarray | None = None,
        user_items: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """Scores (``float32``): ``(n_selected_items,)`` for one user, ``(n, n_selected)`` for many.

        ``item_idx`` selects items (all items when ``None``). ``user_items`` gives the histories to
        score from, one row per user (``(n, n_items)``); ``None`` uses the training history.
        """
        users, single = self._as_user_idx(user_idx)
        user_items = self._resolve_user_items(users, user_items)
        scores = self._checked_scores(users, user_items)
        if item_idx is not None:
            scores = scores[:, self._as_item_idx(item_idx, "item_idx")]
        return scores[0] if single else scores

    def recommend(
        self,
        user_idx: int | np.ndarray,
        user_items: sp.csr_matrix | None,
        *,
        k: int = 10,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for one user or a batch.

        Args:
            user_idx: one dense user index (``int``) or a batch ``(n,)``.
            user_items: histories, one row per requested user: ``(1, n_items)`` or
                ``(n, n_items)`` (see `Interactions.user_items`). They are both the scoring input
                and what ``exclude_seen`` removes, so serving can pass fresh history. ``None``
                uses the training history.
            k: items per user (> 0).
            exclude_seen: drop items with a nonzero entry in ``user_items``.
            candidates: ``(m,)`` item indices; when given only these can be returned.

        Returns:
            ``(item_idx, scores)`` sorted by score descending, ties broken by lower item index.
            One user: 1-D arrays of length ``<= k``. A batch: ``(n, k)`` arrays padded with -1 /
            -inf where fewer than ``k`` items are available.
        """
        k = check_k(k)
        users, single = self._as_user_idx(user_idx)
        user_items = self._resolve_user_items(users, user_items)
        scores = self._checked_scores(users, user_items)
        valid = np.ones(scores.shape, dtype=bool)
        if candidates is not None:
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[self._as_item_idx(candidates, "candidates")] = True
            valid &= allowed
        if exclude_seen:
            valid[nonzero_cells(user_items)] = False
        item_idx, top_scores = top_k(scores, valid, k)
        if single:
            n_found = int((item_idx[0] >= 0).sum())
            return item_idx[0, :n_found], top_scores[0, :n_found]
        return item_idx, top_scores

    def similar_items(self, item_idx: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to ``item_idx`` (itself excluded): 1-D arrays, len ``<= k``.

        Sorted by similarity descending, ties broken by lower item index.
        """
        k = check_k(k)
        item = int(self._as_item_idx(np.array([item_idx]), "item_idx")[0])
        similarity = np.asarray(self._similar(item), dtype=np.float32).reshape(1, -1)
        if similarity.shape != (1, self.n_items):
            raise RuntimeError(
                f"{type(self).__name__}._similar returned shape {similarity.shape[1:]}, "
                f"expected ({self.n_items},)"
            )
        valid = np.ones(similarity.shape, dtype=bool)
        valid[0, item] = False
        found, scores = top_k(similarity, valid, k)
        n_found = int((found[0] >= 0).sum())
        return found[0, :n_found], scores[0, :n_found]

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` (name + config), ``ids.npz``, ``weights.npz`` and the training
        matrix. Everything is JSON or plain arrays, so `load` never unpickles code."""
        self._check_fitted()
        write_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a model written by `save` (use `models.registry.load_model` when the class is
        not known in advance)."""
        return read_model(cls, directory)

    # ----------------------------------------------------------------- helpers for subclasses

    @staticmethod
    def _report(callback: Callback | None, epoch: int, metrics: dict[str, float]) -> bool:
        """Call ``callback``; ``True`` means keep training."""
        if callback is None:
            return True
        return callback(epoch, metrics) is not False

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load()")

    # ----------------------------------------------------------------- validation

    def _as_user_idx(self, user_idx: int | np.ndarray) -> tuple[np.ndarray, bool]:
        self._check_fitted()
        single = np.ndim(user_idx) == 0
        users = np.atleast_1d(np.asarray(user_idx))
        if users.ndim != 1:
            raise ValueError(f"user_idx must be an int or 1-D array, got shape {users.shape}")
        if users.size and not np.issubdtype(users.dtype, np.integer):
            raise TypeError(f"user_idx must be integer dense indices, got dtype {users.dtype}")
        users = users.astype(np.int64)
        bad = (users < 0) | (users >= self.n_users)
        if bad.any():
            raise IndexError(
                f"user_idx {int(users[bad][0])} out of range [0, {self.n_users}); "
                "translate external ids with IdMap.index first"
            )
        return users, single

    def _as_item_idx(self, item_idx: np.ndarray, what: str) -> np.ndarray:
        items = np.asarray(item_idx)
        if items.ndim != 1:
            raise ValueError(f"{what} must be a 1-D array of item indices, got shape {items.shape}")
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise TypeError(f"{what} must be integer dense indices, got dtype {items.dtype}")
        items = items.astype(np.int64)
        bad = (items < 0) | (items >= self.n_items)
        if bad.any():
            raise IndexError(f"{what} {int(items[bad][0])} out of range [0, {self.n_items})")
        return items

    def _resolve_user_items(
        self, users: np.ndarray, user_items: sp.csr_matrix | None
    ) -> sp.csr_matrix:
        if user_items is None:
            return self.train_user_items[users]
        if not sp.issparse(user_items):
            user_items = np.asarray(user_items)
            if user_items.ndim != 2:
                raise ValueError(
                    f"user_items must be 2-D (n_users, n_items), got shape {user_items.shape}"
                )
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        expected = (len(users), self.n_items)
        if user_items.shape != expected:
            raise ValueError(
                f"user_items has shape {user_items.shape}, expected {expected}: one row per "
                "requested user (use interactions.user_items(user_idx))"
            )
        return user_items

    def _checked_scores(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        scores = np.asarray(self._score(users, user_items), dtype=np.float32)
        expected = (len(users), self.n_items)
        if scores.shape != expected:
            raise RuntimeError(
                f"{type(self).__name__}._score returned shape {scores.shape}, expected {expected}"
            )
        return scores
