"""Segmentation inputs: per-user feature matrices, blocks, heavy tails and label vocabularies.

Three sources, one shape (:class:`SegmentInputs`):

* the event schema's user features (``USER_FEATURES`` rows, as Feast returns them);
* MovieLens-100K users: demographics and rating behaviour;
* CDNOW customers: recency, frequency and monetary value (RFM).

Pure pandas (no Feast, no models). The vocabularies say what a high or low value of a feature
means for a segment's name: ``(kind, text)`` with kind ``adj`` or ``noun``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

Phrase = tuple[str, str]


@dataclass(frozen=True)
class SegmentInputs:
    """One row per user: ``numeric`` clusters and is tested, ``categorical`` is only tested."""

    source: str
    user_ids: np.ndarray  # (n,) object
    numeric: pd.DataFrame  # (n, d) float, no NaN
    categorical: pd.DataFrame  # (n, c) str
    groups: dict[str, str] = field(default_factory=dict)  # column -> block (shares)
    log_features: tuple[str, ...] = ()  # non-negative, heavy-tailed
    vocabulary: dict[str, tuple[Phrase | None, Phrase | None]] = field(default_factory=dict)
    default_noun: str = "Users"

    def categorical_codes(self) -> tuple[np.ndarray, list[str]]:
        """(n, c) integer codes of the categorical columns and their names."""
        names = list(self.categorical.columns)
        if not names:
            return np.zeros((len(self.numeric), 0), dtype=np.int64), []
        codes = [pd.factorize(self.categorical[c].astype(str))[0] for c in names]
        return np.stack(codes, axis=1).astype(np.int64), names


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).fillna(0.0)


def _shares(json_shares: pd.Series, prefix: str = "share_") -> pd.DataFrame:
    """Compact JSON ``{"cat": share}`` per row → one column per category, 0 when absent."""
    rows = [json.loads(text) if isinstance(text, str) and text else {} for text in json_shares]
    frame = pd.DataFrame(rows, index=json_shares.index).fillna(0.0).astype(float)
    return frame.reindex(sorted(frame.columns), axis=1).add_prefix(prefix)


#: User features (Feast ``user_features``) the event segmentation reads.
EVENT_SOURCE_FEATURES = (
    "sessions_30d", "mean_session_seconds_30d", "product_views_30d", "add_to_carts_30d",
    "purchases_30d", "cart_abandonment_rate_30d", "mobile_share_30d", "search_share",
    "view_price_preference", "purchase_price_preference", "category_shares", "main_device",
    "top_category",
)  # fmt: skip

EVENT_VOCABULARY: dict[str, tuple[Phrase | None, Phrase | None]] = {
    "sessions_30d": (("adj", "Frequent"), ("adj", "Occasional")),
    "mean_session_seconds_30d": (("adj", "Unhurried"), None),
    "purchases_per_session_30d": (("noun", "Buyers"), ("noun", "Browsers")),
    "cart_rate_30d": (("noun", "Cart Fillers"), None),
    "cart_abandonment_rate_30d": (("noun", "Window Shoppers"), None),
    "mobile_share_30d": (("adj", "Mobile-First"), ("adj", "Desktop")),
    "search_share": (("noun", "Searchers"), None),
    "view_price_preference": (("adj", "Luxury-Browsing"), ("noun", "Bargain Hunters")),
    "purchase_price_preference": (("adj", "Premium"), ("adj", "Budget")),
}


def event_inputs(users: pd.DataFrame) -> SegmentInputs:
    """From user feature rows (``user_id`` + :data:`EVENT_SOURCE_FEATURES`): behaviour rates,
    device, search and price taste, and category shares as one block."""
    missing = [c for c in ("user_id", *EVENT_SOURCE_FEATURES) if c not in users.columns]
    if missing:
        raise ValueError(f"user features lack {missing}; need {list(EVENT_SOURCE_FEATURES)}")
    users = users.reset_index(drop=True)
    numeric = pd.DataFrame(
        {
            "sessions_30d": users["sessions_30d"].astype(float),
            "mean_session_seconds_30d": users["mean_session_seconds_30d"].astype(float),
            "purchases_per_session_30d": _ratio(users["purchases_30d"], users["sessions_30d"]),
            "cart_rate_30d": _ratio(users["add_to_carts_30d"], users["product_views_30d"]),
            "cart_abandonment_rate_30d": users["cart_abandonment_rate_30d"].astype(float),
            "mobile_share_30d": users["mobile_share_30d"].astype(float),
            "search_share": users["search_share"].astype(float),
            "view_price_preference": users["view_price_preference"].astype(float),
            "purchase_price_preference": users["purchase_price_preference"].astype(float),
        }
    )
    shares = _shares(users["category_shares"])
    vocabulary = dict(EVENT_VOCABULARY)
    for column in shares.columns:
        vocabulary[column] = (("adj", column.removeprefix("share_").title()), None)
    return SegmentInputs(
        source="events",
        user_ids=users["user_id"].astype(str).to_numpy(dtype=object),
        numeric=pd.concat([numeric, shares], axis=1).fillna(0.0),
        categorical=users[["main_device", "top_category"]].fillna("").astype(str),
        groups={c: "category_shares" for c in shares.columns},
        log_features=(
            "sessions_30d",
            "mean_session_seconds_30d",
            "view_price_preference",
            "purchase_price_preference",
        ),  # fmt: skip
        vocabulary=vocabulary,
        default_noun="Shoppers",
    )


def movielens_inputs(
    users: pd.DataFrame, ratings: pd.DataFrame, items: pd.DataFrame
) -> SegmentInputs:
    """MovieLens-100K: age, number of ratings, mean rating and genre shares (a rating of a movie
    with g genres adds 1/g to each) are clustered; gender and occupation are tested with χ² and
    described, not clustered (a 0/1 column splits users into two slabs that win any silhouette
    contest and hide the behaviour)."""
    genres = items.set_index("item_id")["genres"].fillna("").str.split("|")
    exploded = ratings[["user_id", "item_id"]].assign(genre=ratings["item_id"].map(genres))
    exploded = exploded.explode("genre")
    exploded = exploded[exploded["genre"].astype(str) != ""]
    exploded["w"] = 1.0 / exploded.groupby(["user_id", "item_id"])["genre"].transform("size")
    share = exploded.pivot_table(index="user_id", columns="genre", values="w", aggfunc="sum")
    share = share.div(share.sum(axis=1), axis=0).fillna(0.0)
    share.columns = [f"share_{g}" for g in share.columns]
    by_user = ratings.groupby("user_id")["rating"].agg(n_ratings="size", mean_rating="mean")
    users = users.set_index("user_id")
    numeric = pd.DataFrame({"age": users["age"].astype(float)}).join(by_user).join(share)
    numeric = numeric.fillna(0.0)
    vocabulary: dict[str, tuple[Phrase | None, Phrase | None]] = {
        "age": (("adj", "Older"), ("adj", "Young")),
        "n_ratings": (("noun", "Heavy Raters"), ("noun", "Light Raters")),
        "mean_rating": (("adj", "Generous"), ("adj", "Critical")),
    }
    for column in share.columns:
        vocabulary[column] = (("noun", f"{column.removeprefix('share_')} Fans"), None)
    return SegmentInputs(
        source="movielens-100k",
        user_ids=numeric.index.astype(str).to_numpy(dtype=object),
        numeric=numeric.reset_index(drop=True),
        categorical=users.loc[numeric.index, ["gender", "occupation"]].reset_index(drop=True),
        groups={c: "genre_shares" for c in share.columns},
        log_features=("n_ratings",),
        vocabulary=vocabulary,
        default_noun="Viewers",
    )


def cdnow_inputs(purchases: pd.DataFrame, as_of: pd.Timestamp | None = None) -> SegmentInputs:
    """CDNOW RFM per customer from purchase rows (``user_id``, ``timestamp``, ``rating`` =
    dollars): recency (days from the last purchase to ``as_of``, default the day after the
    last purchase in the file), frequency (distinct purchase days) and monetary (mean dollars
    per purchase day)."""
    as_of = purchases["timestamp"].max() + pd.Timedelta(days=1) if as_of is None else as_of
    days = purchases.assign(day=purchases["timestamp"].dt.floor("D"))
    per_day = days.groupby(["user_id", "day"], sort=False)["rating"].sum().reset_index()
    by_user = per_day.groupby("user_id", sort=False)
    numeric = pd.DataFrame(
        {
            "recency_days": (as_of - by_user["day"].max()).dt.days.astype(float),
            "frequency": by_user.size().astype(float),
            "monetary": by_user["rating"].mean().astype(float),
        }
    )
    vocabulary: dict[str, tuple[Phrase | None, Phrase | None]] = {
        "recency_days": (("adj", "Lapsed"), ("adj", "Recent")),
        "frequency": (("noun", "Repeat Buyers"), ("noun", "One-Time Buyers")),
        "monetary": (("adj", "Big-Basket"), ("adj", "Small-Basket")),
    }
    return SegmentInputs(
        source="cdnow",
        user_ids=numeric.index.astype(str).to_numpy(dtype=object),
        numeric=numeric.reset_index(drop=True),
        categorical=pd.DataFrame(index=range(len(numeric))),
        log_features=("frequency", "monetary"),
        vocabulary=vocabulary,
        default_noun="Customers",
    )
