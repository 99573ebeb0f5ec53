"""User feature snapshots: activity per window, recency, category mix, price taste, device."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from features.feature_specs import (
    LARGEST_WINDOW,
    NEUTRAL_PRICE_PREFERENCE,
    NO_PURCHASE_DAYS,
    PRICE_TIERS,
    WINDOWS_DAYS,
)
from features.snapshots.core import DAY_NS, Prepared, code_names, events_in_window, stamp
from features.snapshots.items import item_catalog


def _activity(window: pd.DataFrame, days: int) -> pd.DataFrame:
    """Per-person counts and session statistics over one window's events."""
    by_person = window.groupby("person", sort=False)
    counts = by_person.agg(
        events=("ts", "size"),
        views=("is_view", "sum"),
        carts=("is_cart", "sum"),
        purchases=("is_purchase", "sum"),
        monetary=("amount", "sum"),
        mobile=("is_mobile", "sum"),
    )
    sessions = window.groupby("session", sort=False).agg(
        person=("person", "first"),
        start=("ts", "min"),
        end=("ts", "max"),
        carted=("is_cart", "any"),
        purchased=("is_purchase", "any"),
    )
    sessions["seconds"] = (sessions["end"] - sessions["start"]) / 1e9
    sessions["abandoned"] = sessions["carted"] & ~sessions["purchased"]
    per_person = sessions.groupby("person", sort=False).agg(
        sessions=("seconds", "size"),
        mean_seconds=("seconds", "mean"),
        carted=("carted", "sum"),
        abandoned=("abandoned", "sum"),
    )
    stats = counts.join(per_person)
    return pd.DataFrame(
        {
            f"sessions_{days}d": stats["sessions"],
            f"mean_session_seconds_{days}d": stats["mean_seconds"],
            f"events_per_session_{days}d": stats["events"] / stats["sessions"],
            f"product_views_{days}d": stats["views"],
            f"add_to_carts_{days}d": stats["carts"],
            f"purchases_{days}d": stats["purchases"],
            f"purchase_frequency_{days}d": stats["purchases"] / days,
            f"monetary_{days}d": stats["monetary"],
            f"cart_abandonment_rate_{days}d": (stats["abandoned"] / stats["carted"]).where(
                stats["carted"] > 0, 0.0
            ),
            f"mobile_share_{days}d": stats["mobile"] / stats["events"],
        }
    )


def _mode(window: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per person: counts of each code of ``column`` and the most frequent (lowest code on ties)."""
    counts = window.groupby(["person", column]).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("person")["n"].transform("sum")
    top = counts.sort_values(["person", "n", column], ascending=[True, False, True])
    return counts, top.drop_duplicates("person").set_index("person")


def _shares_json(shares: pd.DataFrame, categories: np.ndarray) -> pd.Series:
    """Per person ``{"cat":share,...}`` as compact JSON with sorted keys and 4-decimal shares.

    ``shares`` is sorted by (person, category code) and codes are alphabetical, so keys come out
    sorted. Strings are glued with ``np.add.reduceat`` (one C loop) instead of a per-group join.
    """
    if shares.empty:
        return pd.Series(dtype=object)
    person = shares["person"].to_numpy()
    starts = np.flatnonzero(np.r_[True, person[1:] != person[:-1]])
    last = np.r_[starts[1:] - 1, len(person) - 1]
    quoted = np.array([json.dumps(c) for c in categories], dtype=object)
    # A share rounded to 4 decimals is one of 10001 floats k / 10000: format each once.
    ten_thousandths = np.rint(shares["share"].to_numpy() * 10_000).astype(np.int64)
    share_text = np.array([repr(k / 10_000) for k in range(10_001)], dtype=object)
    pairs = quoted[shares["category"].to_numpy()] + ":" + share_text[ten_thousandths]
    comma = np.ones(len(pairs), dtype=bool)
    comma[last] = False
    pairs[comma] += ","
    return pd.Series("{" + np.add.reduceat(pairs, starts) + "}", index=person[starts])


def user_snapshot(prep: Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    """One snapshot at ``as_of``: :data:`USER_FEATURES` of persons with an event in 30 days."""
    recent = events_in_window(prep, as_of, LARGEST_WINDOW)
    persons = pd.Index(recent["person"].unique(), name="person")
    parts = [_activity(events_in_window(prep, as_of, w), w).reindex(persons) for w in WINDOWS_DAYS]
    out = pd.concat(parts, axis=1).fillna(0)

    last_event = recent.groupby("person", sort=False)["ts"].max().reindex(persons)
    out["recency_days"] = (as_of.value - last_event) / DAY_NS
    bought = recent[recent["is_purchase"]].groupby("person", sort=False)["ts"].max()
    since = (as_of.value - bought.reindex(persons)) / DAY_NS
    out["days_since_last_purchase"] = since.fillna(NO_PURCHASE_DAYS)

    categorised = recent[recent["is_product"] & (recent["category"] >= 0)]
    shares, top = _mode(categorised, "category")
    top_name = code_names(prep.categories, top["category"].to_numpy())
    out["top_category"] = pd.Series(top_name, top.index).reindex(persons)
    out["top_category_share"] = top["share"].reindex(persons)
    out["category_shares"] = _shares_json(shares, prep.categories).reindex(persons)

    catalog = item_catalog(prep, as_of)
    seen = recent[(recent["is_view"] | recent["is_purchase"]) & (recent["category"] >= 0)]
    medians = catalog.groupby("category")["median"].first()
    relative = seen["price"] / seen["category"].map(medians).where(lambda m: m > 0)
    preference = relative.groupby(seen["person"]).mean().reindex(persons)
    out["price_tier_preference"] = preference.fillna(NEUTRAL_PRICE_PREFERENCE)
    # Browsing and buying taste apart: a luxury browser who buys budget items averages "typical".
    for name, flag in (("view", "is_view"), ("purchase", "is_purchase")):
        chosen = seen[flag].to_numpy()
        only = relative[chosen].groupby(seen["person"][chosen]).mean().reindex(persons)
        out[f"{name}_price_preference"] = only.fillna(NEUTRAL_PRICE_PREFERENCE)

    _, device = _mode(recent, "device")
    device_name = code_names(prep.devices, device["device"].to_numpy())
    out["main_device"] = pd.Series(device_name, device.index).reindex(persons)
    out["search_share"] = recent.groupby("person", sort=False)["is_search"].mean().reindex(persons)
    out = out.fillna({"top_category": "", "top_category_share": 0.0, "category_shares": "{}"})
    out = out.join(_behaviour_shares(prep, recent, catalog).reindex(persons))
    out.insert(0, "user_id", prep.persons[persons.to_numpy()])
    return stamp(out, as_of)


def _behaviour_shares(prep: Prepared, recent: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Search intensity, deal searches, device shares and price-tier shares of views, carts and
    purchases per person (the segmentation's behaviour shares, issue #18)."""
    by_person = recent.groupby("person", sort=False)
    searches = by_person["is_search"].sum()
    sessions = by_person["session"].nunique()
    out = pd.DataFrame(
        {
            f"searches_per_session_{LARGEST_WINDOW}d": searches / sessions,
            "deal_search_share": (by_person["is_deal_search"].sum() / searches).where(
                searches > 0, 0.0
            ),
        }
    )
    devices, _ = _mode(recent, "device")
    out["device_shares"] = _shares_json(
        devices.rename(columns={"device": "category"}), prep.devices
    )
    # Tier codes in alphabetical order, as _shares_json wants its keys sorted.
    names = np.array(sorted(PRICE_TIERS), dtype=object)
    tier_code = catalog["tier"].map({name: code for code, name in enumerate(names)})
    for kind, flag in (("view", "is_view"), ("cart", "is_cart"), ("purchase", "is_purchase")):
        chosen = recent[recent[flag].to_numpy() & (recent["product"] >= 0).to_numpy()]
        chosen = chosen.assign(tier=chosen["product"].map(tier_code)).dropna(subset=["tier"])
        counts, _ = _mode(chosen.astype({"tier": np.int64}), "tier")
        out[f"{kind}_tier_shares"] = _shares_json(
            counts.rename(columns={"tier": "category"}), names
        )
    fill = {f"{kind}_tier_shares": "{}" for kind in ("view", "cart", "purchase")}
    return out.fillna(fill | {"device_shares": "{}"})
