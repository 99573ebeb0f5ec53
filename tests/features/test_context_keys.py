"""Person keys (:mod:`features.identity.keys`), request-time and real-time features (context)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.context import activity_rows, context_features
from features.identity.keys import ANON_PREFIX, person_key, person_keys

# ------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("user_id", "anonymous_id", "expected"),
    [
        ("u1", None, "u1"),
        ("u1", "dev9", "u1"),
        (None, "dev9", "anon:dev9"),
        ("", "dev9", "anon:dev9"),
    ],
    ids=["user only", "user wins", "anonymous only", "blank user"],
)
def test_person_key(user_id: str | None, anonymous_id: str | None, expected: str) -> None:
    assert person_key(user_id, anonymous_id) == expected


@pytest.mark.parametrize(("user_id", "anonymous_id"), [(None, None), ("", ""), (None, "")])
def test_person_key_raises_without_any_id(user_id: str | None, anonymous_id: str | None) -> None:
    with pytest.raises(ValueError, match="one of user_id or anonymous_id is required"):
        person_key(user_id, anonymous_id)


def test_person_keys_matches_person_key_row_by_row() -> None:
    events = pd.DataFrame(
        {"user_id": ["u1", None, "", "007"], "anonymous_id": ["dev1", "dev2", "dev3", None]},
        index=[10, 11, 12, 13],
    )
    keys = person_keys(events)
    assert keys.tolist() == ["u1", "anon:dev2", "anon:dev3", "007"]
    assert keys.tolist() == [
        person_key(u, a) for u, a in zip(events["user_id"], events["anonymous_id"], strict=True)
    ]
    assert list(keys.index) == [10, 11, 12, 13]
    assert ANON_PREFIX == "anon:"


# ---------------------------------------------------------------------------- activity rows


def activity_events() -> pd.DataFrame:
    """Two users and an anonymous visitor, deliberately out of time order."""
    rows = [
        # event_id, type, minute, user_id, anonymous_id, product, category, device
        ("e4", "page_view", 4, "u1", None, None, None, "desktop"),
        ("e1", "product_view", 1, "u1", None, "p1", "shoes", "mobile"),
        ("e2", "page_view", 2, "u1", None, None, None, "mobile"),
        ("e3", "add_to_cart", 3, "u1", None, "p2", "shirts", "mobile"),
        ("e5", "page_view", 5, "u2", None, None, None, "tablet"),
        ("e6", "product_view", 6, None, "dev9", "p3", "hats", "other"),
        ("e7", "search", 7, None, "dev9", None, None, "other"),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "event_id",
            "event_type",
            "minute",
            "user_id",
            "anonymous_id",
            "product_id",
            "category",
            "device_type",
        ],
    )
    frame["timestamp"] = pd.Timestamp("2024-03-10T10:00:00Z") + pd.to_timedelta(
        frame.pop("minute"), unit="min"
    )
    return frame


def test_activity_rows_carry_the_last_product_forward() -> None:
    out = activity_rows(activity_events())

    assert list(out.columns) == [
        "user_id",
        "event_timestamp",
        "last_event_type",
        "last_product_id",
        "last_category",
        "last_device_type",
        "created",
    ]
    got = out[["user_id", "last_event_type", "last_product_id", "last_category"]]
    assert got.values.tolist() == [
        ["u1", "product_view", "p1", "shoes"],
        ["u1", "page_view", "p1", "shoes"],  # carried over the page view
        ["u1", "add_to_cart", "p2", "shirts"],
        ["u1", "page_view", "p2", "shirts"],
        ["u2", "page_view", "", ""],  # never saw a product; not u1's
        ["anon:dev9", "product_view", "p3", "hats"],
        ["anon:dev9", "search", "p3", "hats"],
    ]
    assert out["last_device_type"].tolist() == [
        "mobile",
        "mobile",
        "mobile",
        "desktop",
        "tablet",
        "other",
        "other",
    ]


def test_activity_rows_timestamps_are_utc_and_sorted() -> None:
    out = activity_rows(activity_events())
    expected = [pd.Timestamp("2024-03-10T10:00:00Z") + pd.Timedelta(minutes=m) for m in range(1, 8)]
    assert out["event_timestamp"].tolist() == expected
    assert str(out["event_timestamp"].dt.tz) == "UTC"
    assert out["created"].equals(out["event_timestamp"])
    assert list(out.index) == list(range(7))


# ------------------------------------------------------------------------- context features


def test_context_features_flags() -> None:
    inputs = pd.DataFrame(
        {
            "device_type": ["mobile", "mobile", "desktop", "tablet", None],
            "main_device": ["mobile", "desktop", "desktop", None, "mobile"],
        },
        index=[5, 6, 7, 8, 9],
    )
    out = context_features(inputs)
    assert list(out.columns) == ["request_is_mobile", "device_matches_main"]
    assert list(out.index) == [5, 6, 7, 8, 9]
    assert out["request_is_mobile"].tolist() == [1, 1, 0, 0, 0]
    assert out["device_matches_main"].tolist() == [1, 0, 1, 0, 0]
    assert (out.dtypes == "int64").all()


def test_context_features_without_a_main_device() -> None:
    out = context_features(pd.DataFrame({"device_type": ["mobile", "desktop"]}))
    assert out["request_is_mobile"].tolist() == [1, 0]
    assert out["device_matches_main"].tolist() == [0, 0]
