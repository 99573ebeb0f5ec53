"""A loaded model bundle ready to answer: the `Scorer`, and `top_k`, the model's own answer.

`Scorer` is what the service (`serving.logic`, which adds rules, filters and context on top) and
the MLflow pyfunc (`training.tracking`) both load a bundle into. `top_k` is the rule-free answer:
the model's top ``k`` unseen items for a person it was trained on, filled up with popular items,
and popular items for anyone else. It is what the pyfunc serves, and what the service answers for
the same person when no rule filters, boosts or diversifies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from models.bundle import ModelBundle, popularity_scores

#: Known users whose model output is kept per loaded model (see :meth:`Scorer.model_top`).
MODEL_CACHE_SIZE = 4096
#: The ``strategy`` of popular items (a cold person's list, or the fill behind the model's).
POPULAR = "popular"


@dataclass(frozen=True)
class Scorer:
    """A loaded bundle plus what every request needs precomputed, built once per loaded model:
    popularity, and id -> dense index dicts (a dict lookup for one id costs ~0.1 µs, the
    bundle's pandas-backed ``IdMap`` ~100 µs, four times per request), and item ids and
    categories as lists of ``str`` by dense index (indexing a list and skipping ``str()`` costs a
    fifth of reading an object array, ~100 times per request).

    ``model_top(user_idx, n)`` is the model's top ``n`` for a known user, memoised for the
    :data:`MODEL_CACHE_SIZE` most recent users: a bundle's model and histories never change
    (a new version is a new ``Scorer``), and everything that does change per request (live
    activity, ``exclude``, rules) is applied after it, so a warm user skips the scoring.
    """

    bundle: ModelBundle
    label: str
    popularity: np.ndarray
    user_positions: dict[str, int]
    item_positions: dict[str, int]
    model_top: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    item_ids: list[str]
    categories: list[str]

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, label: str) -> Scorer:
        @lru_cache(maxsize=MODEL_CACHE_SIZE)
        def model_top(user_idx: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            item_idx, scores = bundle.model.recommend(user_idx, bundle.history[user_idx], k=n)
            item_idx, scores = np.array(item_idx), np.array(scores)
            item_idx.setflags(write=False)  # shared by every later request for this user
            scores.setflags(write=False)
            return item_idx, scores

        return cls(
            bundle=bundle,
            label=label,
            popularity=popularity_scores(bundle.history),
            user_positions={str(u): i for i, u in enumerate(bundle.users.ids.tolist())},
            item_positions={str(p): i for i, p in enumerate(bundle.items.ids.tolist())},
            model_top=model_top,
            item_ids=[str(p) for p in bundle.items.ids.tolist()],
            categories=[str(c) for c in bundle.item_categories.tolist()],
        )

    def user_idx(self, person: str) -> int:
        """Dense index of a person in the model, -1 when the model has not seen them."""
        return self.user_positions.get(person, -1)

    def item_indices(self, item_ids: Iterable[Any]) -> list[int]:
        """Dense indices of the known ones among ``item_ids`` (unknown and empty ids dropped)."""
        found = (self.item_positions.get(str(i), -1) for i in item_ids if i)
        return [i for i in found if i >= 0]

    def history(self, user_idx: int) -> np.ndarray:
        """Item indices in a known user's history row (CSR slice, no sparse-matrix copy)."""
        indptr = self.bundle.history.indptr
        return self.bundle.history.indices[indptr[user_idx] : indptr[user_idx + 1]]


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item: dense index, score, and the source that produced it."""

    item_idx: int
    score: float
    strategy: str


def model_strategy(scorer: Scorer) -> str:
    """The ``strategy`` of items the model ranked: ``model:<model name>``."""
    return f"model:{scorer.bundle.model_name}"


def top_k(scorer: Scorer, person: str, k: int) -> list[ScoredItem]:
    """At most ``k`` items for ``person``, best first: the model's top items the person has not
    interacted with (finite scores only) when the model was trained on them, then the most
    popular items not already listed or seen, scored by their popularity share."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    out: list[ScoredItem] = []
    seen: set[int] = set()
    user_idx = scorer.user_idx(person)
    if user_idx >= 0:
        seen = set(scorer.history(user_idx).tolist())
        n = min(k, scorer.bundle.history.shape[1])
        item_idx, scores = scorer.model_top(user_idx, n)
        strategy = model_strategy(scorer)
        for i, score in zip(item_idx.tolist(), scores.tolist(), strict=True):
            if i >= 0 and i not in seen and math.isfinite(score):
                out.append(ScoredItem(i, score, strategy))
    taken = seen | {item.item_idx for item in out}
    for i in scorer.bundle.popular.tolist():
        if len(out) >= k:
            break
        if i not in taken:
            out.append(ScoredItem(i, float(scorer.popularity.item(i)), POPULAR))
    return out[:k]
