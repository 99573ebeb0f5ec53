"""A servable bundle: a fitted model plus what serving needs beside it.

Serving must answer for a known user (their history, as the model's input), for a new user
(popularity, optionally within a category) and say which item ids the dense indices are. All of
it is saved as plain JSON and ``.npz`` files next to the model's own files, no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.base import IdMap, Recommender
from models.registry import load_model


def popularity_scores(history: sp.csr_matrix) -> np.ndarray:
    """Share of users who interacted with each item, shape ``(n_items,)``."""
    n_users = max(history.shape[0], 1)
    return np.asarray((history > 0).sum(axis=0)).ravel().astype(np.float64) / n_users


def popularity_order(history: sp.csr_matrix) -> np.ndarray:
    """Item indices, most popular first (ties: lower index first)."""
    return np.argsort(-popularity_scores(history), kind="stable")


@dataclass(frozen=True)
class ModelBundle:
    """``history`` is users × items (same maps as the model); ``popular`` item indices by rank."""

    model_name: str
    model: Recommender
    users: IdMap
    items: IdMap
    history: sp.csr_matrix
    popular: np.ndarray
    item_categories: np.ndarray

    def popular_in(self, category: str) -> np.ndarray:
        """Popular item indices restricted to one category (empty when the category is unknown)."""
        mask = self.item_categories[self.popular] == category
        return self.popular[mask]

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model")
        sp.save_npz(directory / "history.npz", self.history.tocsr())
        np.save(directory / "popular.npy", self.popular.astype(np.int64))
        meta = {
            "model_name": self.model_name,
            "users": self.users.to_list(),
            "items": self.items.to_list(),
            "item_categories": [str(c) for c in self.item_categories],
        }
        (directory / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / "bundle.json").read_text(encoding="utf-8"))
        return cls(
            model_name=meta["model_name"],
            model=load_model(directory / "model"),
            users=IdMap(np.array(meta["users"], dtype=object)),
            items=IdMap(np.array(meta["items"], dtype=object)),
            history=sp.load_npz(directory / "history.npz").tocsr(),
            popular=np.load(directory / "popular.npy"),
            item_categories=np.array(meta["item_categories"], dtype=object),
        )
