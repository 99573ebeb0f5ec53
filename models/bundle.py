"""A servable bundle: a fitted model plus what serving needs beside it.

Serving must answer for a known user (their history, as the model's input), for a new user
(popularity, optionally within a category or a request context such as the visitor's country or
device) and say which item ids the dense indices are. All of it is saved as plain JSON and
``.npz`` files next to the model's own files, no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import Recommender
from models.interactions import IdMap
from models.registry import load_model


def popularity_scores(history: sp.csr_matrix) -> np.ndarray:
    """Share of users who interacted with each item, shape ``(n_items,)``."""
    n_users = max(history.shape[0], 1)
    return np.asarray((history > 0).sum(axis=0)).ravel().astype(np.float64) / n_users


def popularity_order(history: sp.csr_matrix) -> np.ndarray:
    """Item indices, most popular first (ties: lower index first)."""
    return np.argsort(-popularity_scores(history), kind="stable")


#: Request-context columns a context popularity table can be built for (event-log columns).
CONTEXT_COLUMNS = ("country", "device_type", "category")
CONTEXT_FILE = "context_popular.json"


def context_popularity(
    frame: pd.DataFrame,
    items: IdMap,
    columns: tuple[str, ...] = CONTEXT_COLUMNS,
    item_column: str = "item_id",
    top_n: int = 200,
) -> dict[str, dict[str, np.ndarray]]:
    """Popular item indices per context value: ``{column: {value: item_idx (<= top_n,)}}``.

    ``frame`` has one row per interaction (the event log, or an interactions frame) with
    ``item_column`` and the context ``columns``; popularity is the number of rows for the item in
    that context, ties broken by the lower item index. Rows whose item is not in ``items`` (not
    servable) or whose context value is missing or blank are left out; a column the frame lacks
    is an error naming it and the columns present.
    """
    missing = [c for c in (item_column, *columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are missing; the frame has {list(frame.columns)}")
    item_idx = items.index_or(
        frame[item_column].astype(object).where(frame[item_column].notna(), "")
    )
    table: dict[str, dict[str, np.ndarray]] = {}
    for column in columns:
        values = frame[column].astype(object)
        keep = (item_idx >= 0) & values.notna().to_numpy() & (values.astype(str).str.strip() != "")
        pairs = pd.DataFrame({"value": values[keep].astype(str).to_numpy(), "item": item_idx[keep]})
        counts = pairs.groupby(["value", "item"], sort=False).size().reset_index(name="n")
        counts = counts.sort_values(["value", "n", "item"], ascending=[True, False, True])
        top = counts.groupby("value", sort=True).head(top_n)
        table[column] = {
            str(value): group["item"].to_numpy(dtype=np.int64)
            for value, group in top.groupby("value", sort=True)
        }
    return table


@dataclass(frozen=True)
class ModelBundle:
    """``history`` is users × items (same maps as the model); ``popular`` item indices by rank.

    ``context_popular`` (optional; bundles saved before it existed load with ``None``) holds popular
    item indices per request-context value, see :func:`context_popularity`.
    """

    model_name: str
    model: Recommender
    users: IdMap
    items: IdMap
    history: sp.csr_matrix
    popular: np.ndarray
    item_categories: np.ndarray
    context_popular: dict[str, dict[str, np.ndarray]] | None = None

    def popular_in_context(self, column: str, value: str) -> np.ndarray | None:
        """Popular item indices for one context value; ``None`` when the bundle has no table for
        ``column`` (the caller falls back and says so), empty when the value is unknown."""
        if not self.context_popular or column not in self.context_popular:
            return None
        return self.context_popular[column].get(str(value), np.empty(0, dtype=np.int64))

    def popular_in(self, category: str) -> np.ndarray:
        """Popular item indices restricted to one category (empty when the category is unknown)."""
        mask = self.item_categories[self.popular] == category
        return self.popular[mask]

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model")
        shared = _same_matrix(self.history, self.model.train_user_items)
        if not shared:  # the model saves its training matrix already: no second copy
            sp.save_npz(directory / "history.npz", self.history.tocsr())
        np.save(directory / "popular.npy", self.popular.astype(np.int64))
        meta = {
            "model_name": self.model_name,
            "users": self.users.to_list(),
            "items": self.items.to_list(),
            "item_categories": [str(c) for c in self.item_categories],
            "history": "model" if shared else "history.npz",
        }
        (directory / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
        if self.context_popular is not None:
            table = {
                column: {value: [int(i) for i in idx] for value, idx in values.items()}
                for column, values in self.context_popular.items()
            }
            (directory / CONTEXT_FILE).write_text(json.dumps(table), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / "bundle.json").read_text(encoding="utf-8"))
        context_popular = None
        if (directory / CONTEXT_FILE).exists():  # absent in bundles saved before it existed
            raw = json.loads((directory / CONTEXT_FILE).read_text(encoding="utf-8"))
            context_popular = {
                column: {value: np.array(idx, dtype=np.int64) for value, idx in values.items()}
                for column, values in raw.items()
            }
        model = load_model(directory / "model")
        if meta.get("history") == "model":  # one matrix in memory, shared with the model
            history = model.train_user_items
        else:  # bundles saved before the history was shared
            history = sp.load_npz(directory / "history.npz").tocsr()
        return cls(
            model_name=meta["model_name"],
            model=model,
            users=IdMap(np.array(meta["users"], dtype=object)),
            items=IdMap(np.array(meta["items"], dtype=object)),
            history=history,
            popular=np.load(directory / "popular.npy"),
            item_categories=np.array(meta["item_categories"], dtype=object),
            context_popular=context_popular,
        )


def _same_matrix(a: sp.spmatrix | None, b: sp.spmatrix | None) -> bool:
    """Whether ``b`` (the model's float32 training matrix) holds exactly the cells and values of
    ``a`` (the history), compared in ``a``'s own dtype, so no value is rounded on the way."""
    if a is None or b is None or a.shape != b.shape:
        return False
    a, b = sp.csr_matrix(a, copy=True), sp.csr_matrix(b, copy=True)
    a.sort_indices()
    b.sort_indices()
    return bool(
        np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data.astype(a.data.dtype))
    )
