"""Every serving decision, as plain functions testable without BentoML.

Known users get the model's ranking over their history; a user the model has never seen gets
popular items in the category their features point to (latest activity first, then their profile),
else global popularity. Every item says which strategy produced it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from models.bundle import ModelBundle, popularity_scores

MAX_K = 200


class RecommendRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=256, description="Person key (user id).")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")
    device_type: str = Field(default="other", description="Device of this request.")


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    strategy: str = Field(description="Which model or rule produced this item.")


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    model: str = Field(description="Registered model as name@version.")
    personalized: bool
    strategy: str
    features: dict[str, Any] = Field(default_factory=dict, description="Features read online.")
    request_id: str


@dataclass(frozen=True)
class Scorer:
    """A loaded bundle plus precomputed popularity, built once per service process."""

    bundle: ModelBundle
    label: str
    popularity: np.ndarray

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, label: str) -> Scorer:
        return cls(bundle=bundle, label=label, popularity=popularity_scores(bundle.history))


def _popular(scorer: Scorer, pool: np.ndarray, exclude: set[int], k: int, strategy: str) -> list:
    chosen = [int(i) for i in pool if int(i) not in exclude][:k]
    exclude.update(chosen)
    items = scorer.bundle.items.ids
    return [
        RecommendedItem(item_id=str(items[i]), score=float(scorer.popularity[i]), strategy=strategy)
        for i in chosen
    ]


def cold_start_category(features: dict[str, Any]) -> str:
    """The category a cold user's features point to: live activity first, then the profile."""
    for key in ("last_category", "top_category"):
        value = features.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def recommend(
    scorer: Scorer, request: RecommendRequest, features: dict[str, Any] | None = None
) -> RecommendResponse:
    """Answer one request; ``features`` are the user's online features (may be empty)."""
    features = {k: v for k, v in (features or {}).items() if v is not None and k != "user_id"}
    bundle = scorer.bundle
    k = request.k
    exclude: set[int] = set()
    items: list[RecommendedItem] = []
    if request.user_id in bundle.users:
        user_idx = int(bundle.users.index([request.user_id])[0])
        history = bundle.history[user_idx]
        exclude.update(int(i) for i in history.indices)
        item_idx, scores = bundle.model.recommend(user_idx, history, k=k, exclude_seen=True)
        strategy = f"model:{bundle.model_name}"
        for i, s in zip(item_idx.tolist(), scores.tolist(), strict=True):
            if i < 0 or not np.isfinite(s):
                continue
            exclude.add(int(i))
            items.append(
                RecommendedItem(item_id=str(bundle.items.ids[i]), score=float(s), strategy=strategy)
            )
        personalized = True
    else:
        category = cold_start_category(features)
        if category:
            strategy = f"popular_in_category:{category}"
            items = _popular(scorer, bundle.popular_in(category), exclude, k, strategy)
            personalized = True
        else:
            strategy = "popular"
            personalized = False
    if len(items) < k:  # fill from global popularity so the caller always gets k when possible
        items += _popular(scorer, bundle.popular, exclude, k - len(items), "popular")
    return RecommendResponse(
        user_id=request.user_id,
        items=items,
        model=scorer.label,
        personalized=personalized,
        strategy=strategy,
        features=features,
        request_id=uuid.uuid4().hex,
    )
