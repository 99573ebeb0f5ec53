"""From the event log to model inputs: weighted interactions and a temporal hold-out.

Weights say how strongly an event signals interest; page views and searches carry no item and
``remove_from_cart`` is not a positive signal, so they are left out of the matrix (they still feed
the user features).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.identity.keys import person_keys
from models.interactions import IdMap
from training.protocols import EvalSet, temporal_global_split, to_eval

EVENT_WEIGHTS = {"product_view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


def interaction_frame(
    events: pd.DataFrame, resolve: Callable[[pd.DataFrame], pd.Series] = person_keys
) -> pd.DataFrame:
    """One row per positive product event: ``user_id, item_id, weight, timestamp``; ``user_id``
    is ``resolve``'s key (the identity graph's canonical key in ``tailor train``)."""
    positive = events[events["event_type"].isin(list(EVENT_WEIGHTS))]
    positive = positive[positive["product_id"].notna()]
    return pd.DataFrame(
        {
            "user_id": resolve(positive).to_numpy(),
            "item_id": positive["product_id"].astype(str).to_numpy(),
            "weight": positive["event_type"].map(EVENT_WEIGHTS).astype("float32").to_numpy(),
            "timestamp": positive["timestamp"].to_numpy(),
            "category": positive["category"].to_numpy(),
        }
    )


def holdout_cut(frame: pd.DataFrame, test_days: int) -> pd.Timestamp:
    """The global time cut ``test_days`` before the end of the last interaction's day (UTC
    midnight), checked to leave interactions on both sides."""
    if test_days <= 0:
        raise ValueError(f"test_days must be positive, got {test_days}")
    if frame.empty:
        raise ValueError("no interactions to split: the event log has no product events")
    end = pd.Timestamp(frame["timestamp"].max())
    cut = end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(days=test_days)
    n_before = int((frame["timestamp"] < cut).sum())
    if n_before in (0, len(frame)):
        raise ValueError(
            f"a cut at {cut} leaves {n_before} train and {len(frame) - n_before} test "
            f"interactions; the data spans {frame['timestamp'].min()} to {end}: lower test_days"
        )
    return cut


def temporal_holdout(frame: pd.DataFrame, test_days: int) -> tuple[pd.Timestamp, EvalSet]:
    """``(cut, evalset)``: train on the weighted interactions before `holdout_cut`; each known
    user's test items are those met at or after the cut and never before it (seen items are
    removed, as in the published protocols). One `training.protocols.temporal_global_split`,
    evaluated as every other split."""
    cut = holdout_cut(frame, test_days)
    split = temporal_global_split(frame, cut=cut)
    return cut, to_eval(split, weight_col="weight")


def item_categories(frame: pd.DataFrame, items: IdMap) -> np.ndarray:
    """The latest category of each item, aligned with ``items`` ('' when unknown)."""
    latest = frame.sort_values("timestamp").groupby("item_id")["category"].last()
    return np.array([str(latest.get(i) or "") for i in items.ids], dtype=object)
