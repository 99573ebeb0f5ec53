"""Request-time features and real-time activity rows, shared by Feast and serving.

Pure pandas so they are unit-tested without Feast; ``feature_repo/definitions.py`` wraps
:func:`context_features` in an on-demand feature view and the push source carries
:func:`activity_rows`.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from features.ids import person_keys

ACTIVITY_FEATURES: dict[str, tuple[str, str]] = {
    "last_event_type": ("string", "Type of the user's latest event."),
    "last_product_id": ("string", "Product of the user's latest product event ('' if none)."),
    "last_category": ("string", "Category of the user's latest product event ('' if none)."),
    "last_device_type": ("string", "Device of the user's latest event."),
}

CONTEXT_FEATURES: dict[str, tuple[str, str]] = {
    "request_is_mobile": ("int64", "1 when the request comes from a mobile device."),
    "device_matches_main": ("int64", "1 when the request device is the user's main device."),
}


def context_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Combine the request's ``device_type`` with the user's stored ``main_device``."""
    device = inputs["device_type"].fillna("other").astype(str)
    main = inputs["main_device"].fillna("").astype(str) if "main_device" in inputs else ""
    out = pd.DataFrame(index=inputs.index)
    out["request_is_mobile"] = (device == "mobile").astype("int64")
    out["device_matches_main"] = (device == main).astype("int64")
    return out


def activity_rows(
    events: pd.DataFrame, resolve: Callable[[pd.DataFrame], pd.Series] = person_keys
) -> pd.DataFrame:
    """One real-time activity row per identified event (the push payload).

    ``user_id`` is the person key ``resolve`` gives (default the user id, else
    ``anon:<anonymous_id>``; with an identity graph, the canonical key, so a linked device's
    events carry forward under its user), ``event_timestamp`` the event time, and product fields
    are carried forward from the latest product event so a page view does not erase what the user
    was looking at.
    """
    frame = events.sort_values(["timestamp", "event_id"], kind="stable")
    keys = resolve(frame)
    out = pd.DataFrame(
        {
            "user_id": keys.to_numpy(),
            "event_timestamp": frame["timestamp"].to_numpy(),
            "last_event_type": frame["event_type"].astype(str).to_numpy(),
            "last_product_id": frame["product_id"].to_numpy(),
            "last_category": frame["category"].to_numpy(),
            "last_device_type": frame["device_type"].astype(str).to_numpy(),
        }
    )
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    for column in ("last_product_id", "last_category"):
        out[column] = out.groupby("user_id")[column].ffill().fillna("").astype(str)
    out["created"] = out["event_timestamp"]
    return out.reset_index(drop=True)
