"""From the event log to model inputs: weighted interactions and a temporal hold-out.

Weights say how strongly an event signals interest; page views and searches carry no item and
``remove_from_cart`` is not a positive signal, so they are left out of the matrix (they still feed
the user features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.ids import person_keys
from models.base import IdMap, Interactions

EVENT_WEIGHTS = {"product_view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


def interaction_frame(events: pd.DataFrame) -> pd.DataFrame:
    """One row per positive product event: ``user_id, item_id, weight, timestamp``."""
    positive = events[events["event_type"].isin(list(EVENT_WEIGHTS))]
    positive = positive[positive["product_id"].notna()]
    return pd.DataFrame(
        {
            "user_id": person_keys(positive).to_numpy(),
            "item_id": positive["product_id"].astype(str).to_numpy(),
            "weight": positive["event_type"].map(EVENT_WEIGHTS).astype("float32").to_numpy(),
            "timestamp": positive["timestamp"].to_numpy(),
            "category": positive["category"].to_numpy(),
        }
    )


@dataclass(frozen=True)
class TemporalSplit:
    """Train on everything before ``cut``; test on items each known user meets after it.

    ``relevant[u]`` holds the dense indices of items user ``u`` interacted with at or after the
    cut and never before it (seen items are removed, as in the published protocols).
    """

    train: Interactions
    cut: pd.Timestamp
    test_users: np.ndarray
    relevant: list[set[int]]
    n_test_interactions: int


def temporal_split(frame: pd.DataFrame, test_days: int) -> TemporalSplit:
    """Global time cut ``test_days`` before the last interaction."""
    if test_days <= 0:
        raise ValueError(f"test_days must be positive, got {test_days}")
    if frame.empty:
        raise ValueError("no interactions to split: the event log has no product events")
    end = pd.Timestamp(frame["timestamp"].max())
    cut = end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(days=test_days)
    before = frame[frame["timestamp"] < cut]
    after = frame[frame["timestamp"] >= cut]
    if before.empty or after.empty:
        raise ValueError(
            f"a cut at {cut} leaves {len(before)} train and {len(after)} test interactions; "
            f"the data spans {frame['timestamp'].min()} to {end}: lower test_days"
        )
    train = Interactions.from_frame(before, weight_col="weight")
    after = after[after["user_id"].isin(train.users.ids) & after["item_id"].isin(train.items.ids)]
    user_idx = train.users.index(after["user_id"].to_numpy())
    item_idx = train.items.index(after["item_id"].to_numpy())
    # One sparse lookup for every test pair instead of one per pair.
    unseen = np.asarray(train.matrix[user_idx, item_idx]).ravel() == 0
    relevant: dict[int, set[int]] = {}
    for u, i in zip(user_idx[unseen].tolist(), item_idx[unseen].tolist(), strict=True):
        relevant.setdefault(u, set()).add(i)
    users = np.array(sorted(relevant), dtype=np.int64)
    return TemporalSplit(
        train=train,
        cut=cut,
        test_users=users,
        relevant=[relevant[u] for u in users.tolist()],
        n_test_interactions=int(sum(len(r) for r in relevant.values())),
    )


def item_categories(frame: pd.DataFrame, items: IdMap) -> np.ndarray:
    """The latest category of each item, aligned with ``items`` ('' when unknown)."""
    latest = frame.sort_values("timestamp").groupby("item_id")["category"].last()
    return np.array([str(latest.get(i) or "") for i in items.ids], dtype=object)
