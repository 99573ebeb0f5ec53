"""Item feature snapshots, and the item catalogue (price, category, tier) as of a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.feature_specs import LARGEST_WINDOW, PRICE_TIERS
from features.snapshots.core import Prepared, code_names, events_in_window, stamp


def item_catalog(prep: Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every item seen before ``as_of``: latest price and category, and its price tier.

    Quartiles are over items (not events), so a best-seller does not drag its category's median.
    """
    history = events_in_window(prep, as_of, None)
    items = history[history["product"] >= 0].groupby("product", sort=False)
    catalog = items.agg(price=("price", "last"), category=("category_or_nan", "last"))
    catalog["category"] = catalog["category"].fillna(-1).astype(np.int64)
    by_category = catalog.groupby("category")["price"]
    quartiles = pd.DataFrame(
        {q: by_category.quantile(p) for q, p in (("q25", 0.25), ("median", 0.5), ("q75", 0.75))}
    )
    catalog = catalog.join(quartiles, on="category")
    price = catalog["price"]
    catalog["tier"] = np.select(
        [price.isna(), catalog["q25"] == catalog["q75"], price <= catalog["q25"]]
        + [price <= catalog["median"], price <= catalog["q75"]],
        ["", "mid", *PRICE_TIERS[:3]],
        PRICE_TIERS[3],
    )
    return catalog


def item_snapshot(prep: Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    """One snapshot at ``as_of``: :data:`ITEM_FEATURES` of items with an event in the 30d window."""
    recent = events_in_window(prep, as_of, LARGEST_WINDOW)
    recent = recent[recent["product"] >= 0]
    by_item = recent.groupby("product", sort=False)
    out = by_item.agg(
        views_30d=("is_view", "sum"),
        carts_30d=("is_cart", "sum"),
        purchases_30d=("is_purchase", "sum"),
    )
    distinct = recent.drop_duplicates(["product", "person"])
    out["popularity_30d"] = distinct.groupby("product", sort=False).size()
    rate = out["purchases_30d"] / out["views_30d"]
    out["conversion_rate_30d"] = rate.where(out["views_30d"] > 0, 0.0)
    catalog = item_catalog(prep, as_of).reindex(out.index)
    out["price"] = catalog["price"].fillna(0.0)
    out["price_tier"] = catalog["tier"]
    out["category"] = code_names(prep.categories, catalog["category"].to_numpy())
    out.insert(0, "item_id", prep.products[out.index.to_numpy()])
    return stamp(out, as_of)
