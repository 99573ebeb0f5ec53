"""Point-in-time user and item features from the event log, as snapshots at given as-of times.

Each snapshot is one row per entity with ``event_timestamp`` (and ``created``) equal to the as-of
time ``T``, which is what a Feast feature view joins on. A row at ``T`` uses only events with
``timestamp < T`` (strictly before), so training never sees the future. A window of ``w`` days is
the half-open interval ``[T - w days, T)``: an event exactly ``w`` days old still counts.

Everything is vectorised: events are factorised to integer codes once and each snapshot is a few
``groupby`` calls over a timestamp-sorted slice; there are no per-user Python loops. Outputs are
dense (no NaN) because online stores and models need a value for every feature; where a feature
has no data the fill value is documented in its description.

This module is plain pandas and must not import Feast (see ``feature_repo/`` for declarations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features.ids import person_keys
from features.schema import PRODUCT_EVENTS

WINDOWS_DAYS = (7, 30)
#: ``days_since_last_purchase`` when there is no purchase in the largest window.
NO_PURCHASE_DAYS = 999.0
#: ``price_tier_preference`` when the user viewed or bought nothing priced: "typical prices".
NEUTRAL_PRICE_PREFERENCE = 1.0
#: Item price tiers, cheapest first, split at the 25th, 50th and 75th percentiles of the category.
PRICE_TIERS = ("budget", "mid", "premium", "luxury")

_DAY_NS = 86_400 * 10**9
_LARGEST_WINDOW = max(WINDOWS_DAYS)
_REQUIRED_COLUMNS = (
    "event_type",
    "timestamp",
    "user_id",
    "anonymous_id",
    "session_id",
    "device_type",
    "product_id",
    "category",
    "price",
    "quantity",
)


def _window_features(w: int) -> dict[str, tuple[str, str]]:
    """The per-window user features for a window of ``w`` days, named with a ``_{w}d`` suffix."""
    return {
        f"sessions_{w}d": ("int64", f"Distinct sessions with an event in the last {w} days."),
        f"mean_session_seconds_{w}d": (
            "float64",
            f"Mean session duration (last minus first in-window event), {w}d; 0 if none.",
        ),
        f"events_per_session_{w}d": ("float64", f"Events per session in the last {w} days."),
        f"product_views_{w}d": ("int64", f"product_view events in the last {w} days."),
        f"add_to_carts_{w}d": ("int64", f"add_to_cart events in the last {w} days."),
        f"purchases_{w}d": ("int64", f"purchase events (order lines) in the last {w} days."),
        f"purchase_frequency_{w}d": (
            "float64",
            f"Purchases per window day (purchases_{w}d / {w}), comparable across users.",
        ),
        f"monetary_{w}d": ("float64", f"Sum of price * quantity over purchases, last {w} days."),
        f"cart_abandonment_rate_{w}d": (
            "float64",
            f"Share of sessions with add_to_cart but no purchase among sessions with add_to_cart,"
            f" last {w} days; 0 when no session added to cart.",
        ),
        f"mobile_share_{w}d": ("float64", f"Share of events on mobile in the last {w} days."),
    }


USER_FEATURES: dict[str, tuple[str, str]] = {
    **{name: spec for w in WINDOWS_DAYS for name, spec in _window_features(w).items()},
    "recency_days": ("float64", "Days from the last event before as-of to as-of."),
    "days_since_last_purchase": (
        "float64",
        f"Days since the last purchase in the last {_LARGEST_WINDOW} days;"
        f" {NO_PURCHASE_DAYS} when none.",
    ),
    "top_category": (
        "string",
        f"Most frequent category of product events, last {_LARGEST_WINDOW} days (ties:"
        " alphabetical); '' when none.",
    ),
    "top_category_share": ("float64", "Share of categorised product events in top_category."),
    "category_shares": (
        "string",
        'Compact JSON {"category": share} of categorised product events, sorted keys, 4 decimals;'
        " '{}' when none.",
    ),
    "price_tier_preference": (
        "float64",
        "Mean of price / category median item price over viewed and bought products;"
        f" {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
    "main_device": ("string", "Most frequent device_type (ties: alphabetical)."),
    "search_share": (
        "float64",
        f"Share of the user's events that are searches, last {_LARGEST_WINDOW} days.",
    ),
    "view_price_preference": (
        "float64",
        "Mean of price / category median item price over viewed products only, last"
        f" {_LARGEST_WINDOW} days; {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
    "purchase_price_preference": (
        "float64",
        "Mean of price / category median item price over bought products only, last"
        f" {_LARGEST_WINDOW} days; {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
}

ITEM_FEATURES: dict[str, tuple[str, str]] = {
    "views_30d": ("int64", "product_view events in the last 30 days."),
    "carts_30d": ("int64", "add_to_cart events in the last 30 days."),
    "purchases_30d": ("int64", "purchase events in the last 30 days."),
    "popularity_30d": ("int64", "Distinct users (or anonymous visitors) with any event, 30d."),
    "conversion_rate_30d": (
        "float64",
        "purchases_30d / views_30d; 0 when no views (may exceed 1 when buys skip the view).",
    ),
    "price": ("float64", "Latest price seen before as-of; 0 when never priced."),
    "price_tier": (
        "string",
        "budget|mid|premium|luxury by the item's price among the category's item prices at the"
        " 25/50/75th percentiles (all items seen before as-of); 'mid' when the category has no"
        " price spread; '' when never priced.",
    ),
    "category": ("string", "Latest category seen before as-of; '' when none."),
}

_KEY_COLUMNS = ("event_timestamp", "created")


def person_key(events: pd.DataFrame) -> pd.Series:
    """The user entity key per event; see :func:`features.ids.person_keys` (the one id module)."""
    return person_keys(events)


def snapshot_times(events: pd.DataFrame, freq: str = "7D") -> list[pd.Timestamp]:
    """As-of times covering the log: every ``freq`` after the first event's UTC day, plus the end.

    Starts one ``freq`` after midnight of the first event day (that midnight itself would be an
    empty snapshot) and always ends with midnight after the last event day, so the final snapshot
    sees every event. Returns UTC timestamps (ns); ``[]`` for an empty log.
    """
    try:
        step = pd.to_timedelta(freq)
    except ValueError:
        raise ValueError(
            f"freq {freq!r} is not a fixed duration such as '1D', '7D' or '12h'"
        ) from None
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq {freq!r} must be a positive duration")
    if events.empty:
        return []
    ts = pd.to_datetime(_utc_ns(events["timestamp"]), utc=True)
    start = ts.min().floor("D")
    end = ts.max().floor("D") + pd.Timedelta(days=1)
    times = [t.as_unit("ns") for t in pd.date_range(start + step, end, freq=step)]
    if not times or times[-1] != end:
        times.append(end.as_unit("ns"))
    return times


def user_features(events: pd.DataFrame, as_of: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """User feature snapshots: one row per (user, as-of) for users active in the last 30 days.

    Columns: ``user_id`` (see :func:`person_key`), ``event_timestamp`` and ``created`` (both the
    as-of time, datetime64[ns, UTC]), then :data:`USER_FEATURES` in order with their dtypes.
    Rows are sorted by (event_timestamp, user_id).
    """
    prep = _prepare(events)
    parts = [_user_snapshot(prep, t) for t in _as_of_times(as_of)]
    return _finish(parts, "user_id", USER_FEATURES)


def item_features(events: pd.DataFrame, as_of: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Item feature snapshots: one row per (item, as-of) for items with an event in the last 30d.

    Columns: ``item_id``, ``event_timestamp``, ``created``, then :data:`ITEM_FEATURES` in order.
    """
    prep = _prepare(events)
    parts = [_item_snapshot(prep, t) for t in _as_of_times(as_of)]
    return _finish(parts, "item_id", ITEM_FEATURES)


@dataclass(frozen=True)
class _Prepared:
    """Events sorted by time as integer codes; ``-1`` codes mean missing."""

    frame: pd.DataFrame
    ts: np.ndarray
    persons: np.ndarray
    products: np.ndarray
    categories: np.ndarray
    devices: np.ndarray


def _utc_ns(timestamps: pd.Series) -> np.ndarray:
    """Aware timestamps as int64 UTC nanoseconds; naive or missing ones are errors."""
    if not isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"timestamp must be timezone-aware datetime64, got {timestamps.dtype}")
    if timestamps.isna().any():
        raise ValueError(f"{int(timestamps.isna().sum())} events have no timestamp")
    return timestamps.dt.tz_convert("UTC").dt.as_unit("ns").array.asi8


def _as_of_times(as_of: Sequence[pd.Timestamp] | pd.Timestamp) -> list[pd.Timestamp]:
    """Distinct, sorted UTC (ns) as-of times; naive times are refused rather than guessed."""
    if isinstance(as_of, str | datetime):
        as_of = [as_of]
    times = set()
    for value in as_of:
        t = pd.Timestamp(value)
        if t.tzinfo is None:
            raise ValueError(f"as_of {value!r} has no time zone; give UTC-aware timestamps")
        times.add(t.tz_convert("UTC").as_unit("ns"))
    return sorted(times)


def _codes(values: pd.Series, *, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their names as str; missing and blank values get code ``-1``.

    With ``sort=True`` code order is alphabetical, so "lowest code" breaks ties alphabetically.
    """
    codes, uniques = pd.factorize(values, sort=sort)
    names = np.array([str(u) for u in uniques], dtype=object)
    keep = names != ""
    if not keep.all():
        remap = np.full(len(names) + 1, -1, dtype=np.int64)  # remap[-1] keeps -1 as missing
        remap[:-1][keep] = np.arange(int(keep.sum()))
        codes, names = remap[codes], names[keep]
    return codes.astype(np.int64, copy=False), names


def _prepare(events: pd.DataFrame) -> _Prepared:
    """Validate, factorise strings to codes once and sort by time; the heavy lifting is here.

    Strings are factorised in input order and only the integer arrays are reordered, which is
    much cheaper than sorting a frame of Python strings.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}; required: {list(_REQUIRED_COLUMNS)}")
    ts = _utc_ns(events["timestamp"])
    order = np.argsort(ts, kind="stable")

    # Same keys as person_key, built from codes so only the unique ids become strings.
    user, users = _codes(events["user_id"])
    anon, anons = _codes(events["anonymous_id"])
    if ((user < 0) & (anon < 0)).any():
        person_key(events)  # raises with the count and the first offending row
    person, first = pd.factorize(np.where(user >= 0, user, len(users) + anon)[order])
    persons = np.concatenate([users, "anon:" + anons])[first]
    session_raw, session_ids = _codes(events["session_id"])
    session_raw = session_raw[order] + 1
    session = pd.factorize(person.astype(np.int64) * (len(session_ids) + 1) + session_raw)[0]
    product, products = _codes(events["product_id"])
    category, categories = _codes(events["category"], sort=True)
    device, devices = _codes(events["device_type"].fillna("other"), sort=True)
    event_code, event_types = _codes(events["event_type"])
    product, category, device = product[order], category[order], device[order]
    event_code = event_code[order]

    def is_type(*names: str) -> np.ndarray:
        return np.isin(event_code, np.flatnonzero(np.isin(event_types, names)))

    is_purchase = is_type("purchase")
    price = pd.to_numeric(events["price"], errors="coerce")
    price = price.to_numpy(dtype=float, na_value=np.nan)[order]
    quantity = pd.to_numeric(events["quantity"], errors="coerce")
    quantity = quantity.to_numpy(dtype=float, na_value=np.nan)[order]
    amount = np.where(is_purchase, np.nan_to_num(price) * np.nan_to_num(quantity, nan=1.0), 0.0)
    mobile = np.flatnonzero(devices == "mobile")
    frame = pd.DataFrame(
        {
            "ts": ts[order],
            "person": person,
            "session": session,
            "product": product,
            "category": category,
            "category_or_nan": np.where(category >= 0, category, np.nan),
            "device": device,
            "is_view": is_type("product_view"),
            "is_cart": is_type("add_to_cart"),
            "is_purchase": is_purchase,
            "is_search": is_type("search"),
            "is_product": is_type(*PRODUCT_EVENTS) & (product >= 0),
            "is_mobile": np.isin(device, mobile),
            "price": price,
            "amount": amount,
        }
    )
    return _Prepared(
        frame=frame,
        ts=frame["ts"].to_numpy(),
        persons=persons,
        products=products,
        categories=categories,
        devices=devices,
    )


def _window(prep: _Prepared, as_of: pd.Timestamp, days: int | None) -> pd.DataFrame:
    """Events in ``[as_of - days, as_of)``; all events before ``as_of`` when ``days`` is None."""
    end = int(np.searchsorted(prep.ts, as_of.value, side="left"))
    start = 0 if days is None else int(np.searchsorted(prep.ts, as_of.value - days * _DAY_NS))
    return prep.frame.iloc[start:end]


def _catalog(prep: _Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every item seen before ``as_of``: latest price and category, and its price tier.

    Quartiles are over items (not events), so a best-seller does not drag its category's median.
    """
    history = _window(prep, as_of, None)
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


def _user_snapshot(prep: _Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    recent = _window(prep, as_of, _LARGEST_WINDOW)
    persons = pd.Index(recent["person"].unique(), name="person")
    parts = [_activity(_window(prep, as_of, w), w).reindex(persons) for w in WINDOWS_DAYS]
    out = pd.concat(parts, axis=1).fillna(0)

    last_event = recent.groupby("person", sort=False)["ts"].max().reindex(persons)
    out["recency_days"] = (as_of.value - last_event) / _DAY_NS
    bought = recent[recent["is_purchase"]].groupby("person", sort=False)["ts"].max()
    since = (as_of.value - bought.reindex(persons)) / _DAY_NS
    out["days_since_last_purchase"] = since.fillna(NO_PURCHASE_DAYS)

    categorised = recent[recent["is_product"] & (recent["category"] >= 0)]
    shares, top = _mode(categorised, "category")
    top_name = _names(prep.categories, top["category"].to_numpy())
    out["top_category"] = pd.Series(top_name, top.index).reindex(persons)
    out["top_category_share"] = top["share"].reindex(persons)
    out["category_shares"] = _shares_json(shares, prep.categories).reindex(persons)

    catalog = _catalog(prep, as_of)
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
    device_name = _names(prep.devices, device["device"].to_numpy())
    out["main_device"] = pd.Series(device_name, device.index).reindex(persons)
    out["search_share"] = recent.groupby("person", sort=False)["is_search"].mean().reindex(persons)
    out = out.fillna({"top_category": "", "top_category_share": 0.0, "category_shares": "{}"})
    out.insert(0, "user_id", prep.persons[persons.to_numpy()])
    return _stamp(out, as_of)


def _item_snapshot(prep: _Prepared, as_of: pd.Timestamp) -> pd.DataFrame:
    recent = _window(prep, as_of, _LARGEST_WINDOW)
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
    catalog = _catalog(prep, as_of).reindex(out.index)
    out["price"] = catalog["price"].fillna(0.0)
    out["price_tier"] = catalog["tier"]
    out["category"] = _names(prep.categories, catalog["category"].to_numpy())
    out.insert(0, "item_id", prep.products[out.index.to_numpy()])
    return _stamp(out, as_of)


def _names(uniques: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes back to names; code ``-1`` (missing) becomes ``""``."""
    return np.append(uniques, "").astype(object)[codes]


def _stamp(out: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    out.insert(1, "event_timestamp", as_of)
    out.insert(2, "created", as_of)
    return out.reset_index(drop=True)


def _finish(
    parts: list[pd.DataFrame], key: str, features: dict[str, tuple[str, str]]
) -> pd.DataFrame:
    """Concatenate snapshots, fix column order and dtypes exactly as declared."""
    columns = [key, *_KEY_COLUMNS, *features]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    dtypes = {key: object, **{c: "datetime64[ns, UTC]" for c in _KEY_COLUMNS}}
    dtypes |= {name: object if kind == "string" else kind for name, (kind, _) in features.items()}
    out = out[columns].astype(dtypes)
    out = out.sort_values(["event_timestamp", key], kind="stable", ignore_index=True)
    return out


#: Segment assignments written by ``tailor segment`` (the ``user_segments`` feature view).
SEGMENT_FEATURES: dict[str, tuple[str, str]] = {
    "segment_id": (
        "int64",
        "Segment of the user at the as-of time; ids keep their meaning across re-clusterings"
        " (matched to the previous run).",
    ),
    "segment_label": ("string", "Readable segment name, e.g. 'Frequent Buyers'."),
}
