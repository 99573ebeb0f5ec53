"""Shared machinery of feature snapshots: prepared events, time windows and the output frames.

:func:`prepare` validates the event log, factorises its strings to integer codes once and sorts
by time; :func:`events_in_window` slices that for one as-of time; :func:`stamp` and
:func:`finish` give snapshot rows their as-of keys and the declared column order and dtypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features.feature_specs import DEAL_WORDS
from features.identity.keys import person_keys
from features.schema import PRODUCT_EVENTS

DAY_NS = 86_400 * 10**9
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
_KEY_COLUMNS = ("event_timestamp", "created")


@dataclass(frozen=True)
class Prepared:
    """Events sorted by time as integer codes; ``-1`` codes mean missing."""

    frame: pd.DataFrame
    ts: np.ndarray
    persons: np.ndarray
    products: np.ndarray
    categories: np.ndarray
    devices: np.ndarray


def utc_ns(timestamps: pd.Series) -> np.ndarray:
    """Aware timestamps as int64 UTC nanoseconds; naive or missing ones are errors."""
    if not isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"timestamp must be timezone-aware datetime64, got {timestamps.dtype}")
    if timestamps.isna().any():
        raise ValueError(f"{int(timestamps.isna().sum())} events have no timestamp")
    return timestamps.dt.tz_convert("UTC").dt.as_unit("ns").array.asi8


def as_of_times(as_of: Sequence[pd.Timestamp] | pd.Timestamp) -> list[pd.Timestamp]:
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


def prepare(
    events: pd.DataFrame, resolve: Callable[[pd.DataFrame], pd.Series] | None = None
) -> Prepared:
    """Validate, factorise strings to codes once and sort by time; the heavy lifting is here.

    Strings are factorised in input order and only the integer arrays are reordered, which is
    much cheaper than sorting a frame of Python strings. People are person keys, or
    ``resolve``'s keys when given (the identity graph's canonical keys: a linked device's events
    count for its user).
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}; required: {list(_REQUIRED_COLUMNS)}")
    ts = utc_ns(events["timestamp"])
    order = np.argsort(ts, kind="stable")

    # Same keys as person_keys, built from codes so only the unique ids become strings.
    user, users = _codes(events["user_id"])
    anon, anons = _codes(events["anonymous_id"])
    if ((user < 0) & (anon < 0)).any():
        person_keys(events)  # raises with the count and the first offending row
    if resolve is None:
        person, first = pd.factorize(np.where(user >= 0, user, len(users) + anon)[order])
        persons = np.concatenate([users, "anon:" + anons])[first]
    else:
        person, persons = pd.factorize(resolve(events).to_numpy()[order])
        persons = np.asarray(persons, dtype=object)
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
    is_search = is_type("search")
    is_deal = np.zeros(len(events), dtype=bool)
    if "query" in events.columns:
        words = events["query"].fillna("").astype(str).str.lower().str.findall(r"\w+")
        is_deal = words.map(lambda found: not DEAL_WORDS.isdisjoint(found)).to_numpy(bool)[order]
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
            "is_search": is_search,
            "is_deal_search": is_search & is_deal,
            "is_product": is_type(*PRODUCT_EVENTS) & (product >= 0),
            "is_mobile": np.isin(device, mobile),
            "price": price,
            "amount": amount,
        }
    )
    return Prepared(
        frame=frame,
        ts=frame["ts"].to_numpy(),
        persons=persons,
        products=products,
        categories=categories,
        devices=devices,
    )


def events_in_window(prep: Prepared, as_of: pd.Timestamp, days: int | None) -> pd.DataFrame:
    """Events in ``[as_of - days, as_of)``; all events before ``as_of`` when ``days`` is None."""
    end = int(np.searchsorted(prep.ts, as_of.value, side="left"))
    start = 0 if days is None else int(np.searchsorted(prep.ts, as_of.value - days * DAY_NS))
    return prep.frame.iloc[start:end]


def code_names(uniques: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes back to names; code ``-1`` (missing) becomes ``""``."""
    return np.append(uniques, "").astype(object)[codes]


def stamp(out: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    out.insert(1, "event_timestamp", as_of)
    out.insert(2, "created", as_of)
    return out.reset_index(drop=True)


def finish(
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
