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
    "purchases_30d", "cart_abandonment_rate_30d", "searches_per_session_30d",
    "deal_search_share", "recency_days", "purchase_frequency_30d", "monetary_30d",
    "category_shares", "device_shares", "view_tier_shares", "cart_tier_shares",
    "purchase_tier_shares", "main_device", "top_category",
)  # fmt: skip

#: Share blocks of the event inputs: the JSON user feature and the prefix of its columns.
EVENT_SHARE_BLOCKS = {
    "category_shares": "share_",
    "device_shares": "device_",
    "view_tier_shares": "view_tier_",
}
#: Carts and purchases are few per person, so their tier shares are mostly 0/1 noise; they enter
#: as one tier score each (mean tier, budget 0 .. luxury 1) instead of a block of four.
TIER_SCORES = {"budget": 0.0, "mid": 1 / 3, "premium": 2 / 3, "luxury": 1.0}
#: Heavy-tailed event inputs, log1p'd before scaling.
EVENT_LOG_FEATURES = (
    "sessions_30d", "mean_session_seconds_30d", "views_per_session_30d",
    "searches_per_session_30d", "recency_days", "purchase_frequency_30d", "monetary_30d",
)  # fmt: skip

EVENT_VOCABULARY: dict[str, tuple[Phrase | None, Phrase | None]] = {
    "sessions_30d": (("adj", "Frequent"), ("adj", "Occasional")),
    "mean_session_seconds_30d": (("adj", "Unhurried"), None),
    "views_per_session_30d": (("noun", "Browsers"), None),
    "purchase_rate_30d": (("noun", "Buyers"), None),
    "cart_rate_30d": (("noun", "Cart Fillers"), None),
    "cart_abandonment_rate_30d": (("noun", "Window Shoppers"), None),
    "searches_per_session_30d": (("noun", "Searchers"), None),
    "deal_search_share": (("noun", "Deal Seekers"), None),
    "recency_days": (("adj", "Lapsed"), ("adj", "Recent")),
    "monetary_30d": (("adj", "Big-Spending"), None),
    "device_mobile": (("adj", "Mobile-First"), None),
    "device_desktop": (("adj", "Desktop"), None),
    "view_tier_luxury": (("adj", "Luxury-Browsing"), None),
    "view_tier_budget": (("noun", "Bargain Hunters"), None),
    "purchase_tier_score": (("adj", "Premium"), ("adj", "Budget")),
}


def _block(json_shares: pd.Series, prefix: str, active: pd.Series) -> pd.DataFrame:
    """A share block; rows without any event of the kind (``active`` False, e.g. no purchase)
    get the block's mean over active rows: "nothing to say" rather than an all-zero profile
    that the clustering would read as a taste of its own (the rates already say "no purchase")."""
    block = _shares(json_shares, prefix)
    if len(block.columns) and (~active).any() and active.any():
        block.loc[~active.to_numpy()] = block[active.to_numpy()].mean().to_numpy()
    return block


def _tier_score(json_shares: pd.Series, active: pd.Series) -> pd.Series:
    """Mean price tier (budget 0, mid 1/3, premium 2/3, luxury 1) of a person's events of one
    kind; people without such an event get the mean of the others (neutral)."""
    shares = _shares(json_shares, "")
    weights = pd.Series(TIER_SCORES).reindex(shares.columns).fillna(0.5)
    score = (shares * weights).sum(axis=1)
    fill = float(score[active.to_numpy()].mean()) if active.any() else 0.5
    return score.where(active.to_numpy(), fill).reindex(json_shares.index).fillna(fill)


def event_inputs(users: pd.DataFrame) -> SegmentInputs:
    """From user feature rows (``user_id`` + :data:`EVENT_SOURCE_FEATURES`): behaviour rates
    (visits, session length, views and searches per session, cart and purchase rates,
    abandonment, deal searches), recency/frequency/monetary, the mean price tier of carts and of
    purchases, and three share blocks (category, device, price tier of views)."""
    missing = [c for c in ("user_id", *EVENT_SOURCE_FEATURES) if c not in users.columns]
    if missing:
        raise ValueError(f"user features lack {missing}; need {list(EVENT_SOURCE_FEATURES)}")
    users = users.reset_index(drop=True)
    views, carts = users["product_views_30d"], users["add_to_carts_30d"]
    numeric = pd.DataFrame(
        {
            "sessions_30d": users["sessions_30d"].astype(float),
            "mean_session_seconds_30d": users["mean_session_seconds_30d"].astype(float),
            "views_per_session_30d": _ratio(views, users["sessions_30d"]),
            "searches_per_session_30d": users["searches_per_session_30d"].astype(float),
            "cart_rate_30d": _ratio(carts, views).clip(upper=1.0),
            "purchase_rate_30d": _ratio(users["purchases_30d"], carts).clip(upper=1.0),
            "cart_abandonment_rate_30d": users["cart_abandonment_rate_30d"].astype(float),
            "deal_search_share": users["deal_search_share"].astype(float),
            "recency_days": users["recency_days"].astype(float),
            "purchase_frequency_30d": users["purchase_frequency_30d"].astype(float),
            "monetary_30d": users["monetary_30d"].astype(float),
        }
    )
    for kind, count in (("cart", carts), ("purchase", users["purchases_30d"])):
        numeric[f"{kind}_tier_score"] = _tier_score(users[f"{kind}_tier_shares"], count > 0)
    active = {
        "category_shares": views > 0,
        "device_shares": pd.Series(True, index=users.index),
        "view_tier_shares": views > 0,
    }
    blocks = {
        feature: _block(users[feature], prefix, active[feature])
        for feature, prefix in EVENT_SHARE_BLOCKS.items()
    }
    vocabulary = dict(EVENT_VOCABULARY)
    for column in blocks["category_shares"].columns:
        vocabulary[column] = (("adj", column.removeprefix("share_").title()), None)
    return SegmentInputs(
        source="events",
        user_ids=users["user_id"].astype(str).to_numpy(dtype=object),
        numeric=pd.concat([numeric, *blocks.values()], axis=1).fillna(0.0),
        categorical=users[["main_device", "top_category"]].fillna("").astype(str),
        groups={c: feature for feature, block in blocks.items() for c in block.columns},
        log_features=EVENT_LOG_FEATURES,
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
