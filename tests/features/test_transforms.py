"""Unit tests for point-in-time user and item feature transforms (no Feast).

The fixture log is small enough to compute every checked value by hand; the comments next to each
assertion show the arithmetic.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.feature_specs import ITEM_FEATURES, NO_PURCHASE_DAYS, USER_FEATURES, WINDOWS_DAYS
from features.schema import EVENT_COLUMNS
from features.transforms import item_features, person_key, snapshot_times, user_features

AS_OF = pd.Timestamp("2024-03-15 00:00", tz="UTC")

# (event_type, timestamp, user_id, anonymous_id, session_id, device, product, category, price, qty)
ROWS = [
    # u1, s3: 10 days before AS_OF -> 30d window only. 600 s long.
    ("product_view", "2024-03-05 12:00", "u1", None, "s3", "mobile", "p3", "shoes", 100.0, None),
    ("page_view", "2024-03-05 12:10", "u1", None, "s3", "mobile", None, None, None, None),
    # u1, s1: buys what it carted. 300 s long.
    ("product_view", "2024-03-10 10:00", "u1", None, "s1", "mobile", "p1", "shoes", 50.0, None),
    ("add_to_cart", "2024-03-10 10:02", "u1", None, "s1", "mobile", "p1", "shoes", 50.0, 2),
    ("purchase", "2024-03-10 10:05", "u1", None, "s1", "mobile", "p1", "shoes", 50.0, 2),
    # u1, s2: carts and leaves (abandoned). 60 s long.
    ("product_view", "2024-03-12 09:00", "u1", None, "s2", "desktop", "p2", "shirts", 20.0, None),
    ("add_to_cart", "2024-03-12 09:01", "u1", None, "s2", "desktop", "p2", "shirts", 20.0, 1),
    # u2: one event 43 days before AS_OF (outside every window), then a purchase without a cart.
    ("product_view", "2024-02-01 08:00", "u2", "dev7", "s5", "desktop", "p1", "shoes", 50.0, None),
    ("product_view", "2024-03-14 20:00", "u2", "dev7", "s6", "desktop", "p2", "shirts", 20.0, None),
    ("purchase", "2024-03-14 20:30", "u2", "dev7", "s6", "desktop", "p2", "shirts", 20.0, 3),
    # An anonymous visitor.
    ("product_view", "2024-03-14 08:00", None, "a9", "s4", "tablet", "p2", "shirts", 20.0, None),
    ("search", "2024-03-14 08:03", None, "a9", "s4", "tablet", None, None, None, None),
]


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """An event log with the schema's columns and dtypes (UTC ns timestamps, Int64 quantity)."""
    names = [
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
    ]
    frame = pd.DataFrame(rows, columns=names)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    for column in ("country", "query", "page", "properties"):
        frame[column] = None
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype(
        "datetime64[ns, UTC]"
    )
    frame["price"] = frame["price"].astype("float64")
    frame["quantity"] = frame["quantity"].astype("Int64")
    return frame[list(EVENT_COLUMNS)]


@pytest.fixture
def events() -> pd.DataFrame:
    return make_events(ROWS)


def row_of(frame: pd.DataFrame, key: str, value: str) -> pd.Series:
    matches = frame[frame[key] == value]
    assert len(matches) == 1, f"expected one row for {key}={value}, got {len(matches)}"
    return matches.iloc[0]


def test_user_features_match_hand_computed_values(events: pd.DataFrame) -> None:
    users = user_features(events, [AS_OF])
    assert sorted(users["user_id"]) == ["anon:a9", "u1", "u2"]
    u1 = row_of(users, "user_id", "u1")

    assert u1["sessions_7d"] == 2  # s1, s2 (s3 is 10 days old)
    assert u1["sessions_30d"] == 3
    assert u1["mean_session_seconds_7d"] == pytest.approx((300 + 60) / 2)
    assert u1["mean_session_seconds_30d"] == pytest.approx((300 + 60 + 600) / 3)
    assert u1["events_per_session_7d"] == pytest.approx(5 / 2)
    assert u1["product_views_30d"] == 3
    assert u1["add_to_carts_7d"] == 2
    assert u1["purchases_7d"] == 1
    assert u1["purchase_frequency_7d"] == pytest.approx(1 / 7)
    assert u1["purchase_frequency_30d"] == pytest.approx(1 / 30)
    assert u1["monetary_7d"] == pytest.approx(50.0 * 2)
    assert u1["cart_abandonment_rate_7d"] == pytest.approx(1 / 2)  # s2 of {s1, s2}
    assert u1["mobile_share_7d"] == pytest.approx(3 / 5)
    assert u1["mobile_share_30d"] == pytest.approx(5 / 7)
    # Last event 2024-03-12 09:01 -> 2 days 14 h 59 min before AS_OF.
    assert u1["recency_days"] == pytest.approx(2 + (14 * 60 + 59) / 1440)
    # Last purchase 2024-03-10 10:05 -> 4 days 13 h 55 min.
    assert u1["days_since_last_purchase"] == pytest.approx(4 + (13 * 60 + 55) / 1440)
    # Product events: shoes 4 (p3 view, p1 view/cart/buy), shirts 2 (p2 view/cart).
    assert u1["top_category"] == "shoes"
    assert u1["top_category_share"] == pytest.approx(4 / 6)
    assert u1["category_shares"] == '{"shirts":0.3333,"shoes":0.6667}'
    assert json.loads(u1["category_shares"]) == {"shirts": 0.3333, "shoes": 0.6667}
    # Category medians over items: shoes {p1 50, p3 100} -> 75, shirts {p2 20} -> 20.
    # Viewed/bought: p3 100/75, p1 view 50/75, p1 buy 50/75, p2 view 20/20.
    assert u1["price_tier_preference"] == pytest.approx((4 / 3 + 2 / 3 + 2 / 3 + 1) / 4)
    assert u1["main_device"] == "mobile"

    u2 = row_of(users, "user_id", "u2")
    assert u2["sessions_30d"] == 1  # s5 is 43 days old
    assert u2["monetary_30d"] == pytest.approx(20.0 * 3)
    assert u2["cart_abandonment_rate_30d"] == 0.0  # no session added to cart
    assert u2["mobile_share_30d"] == 0.0
    assert u2["mean_session_seconds_30d"] == pytest.approx(1800.0)


def test_user_without_purchase_or_recent_events_gets_documented_fills(
    events: pd.DataFrame,
) -> None:
    users = user_features(events, [AS_OF])
    anon = row_of(users, "user_id", "anon:a9")
    assert anon["days_since_last_purchase"] == NO_PURCHASE_DAYS
    assert anon["cart_abandonment_rate_7d"] == 0.0
    assert anon["top_category"] == "shirts"
    assert anon["main_device"] == "tablet"

    # u2 only has its 43-day-old event before 2024-03-14: not active in 30 days, so no row.
    early = user_features(events, [pd.Timestamp("2024-03-14", tz="UTC")])
    assert "u2" not in set(early["user_id"])


def test_item_features_match_hand_computed_values(events: pd.DataFrame) -> None:
    items = item_features(events, [AS_OF])
    assert list(items["item_id"]) == ["p1", "p2", "p3"]
    p1 = row_of(items, "item_id", "p1")
    p2 = row_of(items, "item_id", "p2")
    p3 = row_of(items, "item_id", "p3")
    assert (p1["views_30d"], p1["carts_30d"], p1["purchases_30d"]) == (1, 1, 1)
    assert p1["popularity_30d"] == 1  # only u1 in 30 days; u2's view is 43 days old
    assert p2["views_30d"] == 3
    assert p2["popularity_30d"] == 3  # u1, u2, anon:a9
    assert p2["conversion_rate_30d"] == pytest.approx(1 / 3)
    assert p3["conversion_rate_30d"] == 0.0
    assert (p1["price"], p1["category"]) == (50.0, "shoes")
    # shoes prices {50, 100}: quartiles 62.5 / 75 / 87.5; shirts has one price -> no spread.
    assert (p1["price_tier"], p3["price_tier"], p2["price_tier"]) == ("budget", "luxury", "mid")


def test_item_price_and_category_are_the_latest_seen(events: pd.DataFrame) -> None:
    late = (
        "product_view",
        "2024-03-14 23:00",
        "u1",
        None,
        "s9",
        "mobile",
        "p1",
        "boots",
        60.0,
        None,
    )
    items = item_features(make_events([*ROWS, late]), [AS_OF])
    p1 = row_of(items, "item_id", "p1")
    assert (p1["price"], p1["category"]) == (60.0, "boots")


def test_events_at_or_after_as_of_never_change_the_snapshot(events: pd.DataFrame) -> None:
    future = [
        ("purchase", "2024-03-15 00:00", "u1", None, "s2", "mobile", "p2", "shirts", 999.0, 9),
        ("add_to_cart", "2024-03-16 00:00", "u3", None, "s7", "mobile", "p4", "hats", 5.0, 1),
        ("product_view", "2024-03-20 00:00", None, "a9", "s4", "mobile", "p3", "hats", 1.0, None),
    ]
    with_future = make_events([*ROWS, *future])
    for transform in (user_features, item_features):
        pd.testing.assert_frame_equal(transform(events, [AS_OF]), transform(with_future, [AS_OF]))


def test_no_leakage_on_a_random_log() -> None:
    """Every snapshot equals the one computed from the log cut at its as-of time."""
    rng = np.random.default_rng(7)
    n = 2_000
    start = pd.Timestamp("2024-01-01", tz="UTC")
    products = rng.integers(0, 30, n)
    kinds = rng.choice(["page_view", "product_view", "add_to_cart", "purchase"], n)
    is_product = kinds != "page_view"
    rows = list(
        zip(
            kinds,
            (start + pd.to_timedelta(rng.integers(0, 60 * 86_400, n), unit="s")).astype(str),
            [f"u{u}" for u in rng.integers(0, 40, n)],
            [None] * n,
            [f"s{s}" for s in rng.integers(0, 300, n)],
            rng.choice(["mobile", "desktop", "tablet"], n),
            np.where(is_product, [f"p{p}" for p in products], None),
            np.where(is_product, [f"c{p % 4}" for p in products], None),
            np.where(is_product, rng.uniform(1, 100, n).round(2), np.nan),
            np.where(kinds == "purchase", rng.integers(1, 3, n), None),
            strict=True,
        )
    )
    log = make_events(rows)
    times = snapshot_times(log, "9D")
    for transform in (user_features, item_features):
        full = transform(log, times)
        for t in times:
            cut = transform(log[log["timestamp"] < t], [t])
            snapshot = full[full["event_timestamp"] == t].reset_index(drop=True)
            pd.testing.assert_frame_equal(snapshot, cut)


def test_row_order_and_string_dtypes_of_the_input_do_not_matter(events: pd.DataFrame) -> None:
    shuffled = events.sample(frac=1, random_state=3)
    for column in ("user_id", "anonymous_id", "session_id", "product_id", "category"):
        shuffled[column] = shuffled[column].astype("string")
    shuffled["timestamp"] = shuffled["timestamp"].dt.tz_convert("Europe/Berlin")
    for transform in (user_features, item_features):
        pd.testing.assert_frame_equal(transform(events, [AS_OF]), transform(shuffled, [AS_OF]))


def test_window_boundaries() -> None:
    rows = [
        # 8 days before AS_OF: in the 30-day window, not in the 7-day one.
        ("purchase", "2024-03-07 00:00", "u1", None, "s1", "desktop", "p1", "shoes", 10.0, 1),
        # Exactly 7 days before: windows are [AS_OF - w, AS_OF), so it counts in both.
        ("purchase", "2024-03-08 00:00", "u1", None, "s2", "desktop", "p1", "shoes", 10.0, 1),
        # Exactly 30 days before: in the 30-day window; one second earlier would not be.
        ("purchase", "2024-02-14 00:00", "u1", None, "s3", "desktop", "p1", "shoes", 10.0, 1),
        ("purchase", "2024-02-13 23:59:59", "u1", None, "s4", "desktop", "p1", "shoes", 10.0, 1),
    ]
    u1 = row_of(user_features(make_events(rows), [AS_OF]), "user_id", "u1")
    assert (u1["purchases_7d"], u1["sessions_7d"]) == (1, 1)
    assert (u1["purchases_30d"], u1["sessions_30d"]) == (3, 3)
    assert u1["monetary_30d"] == pytest.approx(30.0)
    p1 = row_of(item_features(make_events(rows), [AS_OF]), "item_id", "p1")
    assert p1["purchases_30d"] == 3


def test_anonymous_visitors_are_keyed_with_prefix(events: pd.DataFrame) -> None:
    keys = person_key(events)
    assert keys.index.equals(events.index)
    assert keys.tolist()[-2:] == ["anon:a9", "anon:a9"]
    assert keys.iloc[7] == "u2"  # user_id wins over anonymous_id
    assert "anon:a9" in set(user_features(events, [AS_OF])["user_id"])


def test_person_key_rejects_rows_without_any_id(events: pd.DataFrame) -> None:
    broken = events.copy()
    broken.loc[3, "user_id"] = None
    with pytest.raises(ValueError, match="neither user_id nor anonymous_id"):
        person_key(broken)


@pytest.mark.parametrize(
    ("transform", "key", "features"),
    [(user_features, "user_id", USER_FEATURES), (item_features, "item_id", ITEM_FEATURES)],
)
def test_dtypes_are_as_declared_and_dense(
    events: pd.DataFrame, transform, key: str, features: dict[str, tuple[str, str]]
) -> None:
    times = [AS_OF, pd.Timestamp("2024-03-11", tz="UTC"), pd.Timestamp("2030-01-01", tz="UTC")]
    out = transform(events, times)
    assert list(out.columns) == [key, "event_timestamp", "created", *features]
    assert out[key].map(type).eq(str).all()
    for column in ("event_timestamp", "created"):
        assert out[column].dtype == "datetime64[ns, UTC]"
    assert (out["event_timestamp"] == out["created"]).all()
    for name, (kind, _) in features.items():
        if kind == "string":
            assert out[name].dtype == object, name
            assert out[name].map(type).eq(str).all(), name
        else:
            assert out[name].dtype == kind, name
    assert not out.isna().any().any()
    # 2030 is more than 30 days after every event: no rows. Rows are (as-of, key) sorted.
    assert set(out["event_timestamp"]) == {times[0], times[1]}
    assert not out.duplicated([key, "event_timestamp"]).any()
    assert out.equals(out.sort_values(["event_timestamp", key], ignore_index=True))


def test_empty_inputs_give_empty_typed_frames(events: pd.DataFrame) -> None:
    users = user_features(events.iloc[:0], [AS_OF])
    assert users.empty
    assert list(users.columns) == ["user_id", "event_timestamp", "created", *USER_FEATURES]
    assert users["sessions_7d"].dtype == "int64"
    assert item_features(events, []).empty


def test_feature_lists_cover_every_window() -> None:
    for w in WINDOWS_DAYS:
        assert {f"sessions_{w}d", f"cart_abandonment_rate_{w}d"} <= set(USER_FEATURES)
    kinds = {kind for kind, _ in [*USER_FEATURES.values(), *ITEM_FEATURES.values()]}
    assert kinds == {"int64", "float64", "string"}


def test_naive_as_of_is_rejected(events: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        user_features(events, [pd.Timestamp("2024-03-15")])


def test_snapshot_times(events: pd.DataFrame) -> None:
    # First event 2024-02-01, last 2024-03-14 -> from 02-01 (exclusive) to 03-15 (inclusive).
    times = snapshot_times(events, "7D")
    day = pd.Timedelta(days=1)
    first = pd.Timestamp("2024-02-01", tz="UTC")
    assert times[0] == first + 7 * day
    assert times[-1] == AS_OF  # 42 days is 6 weeks, then the final day after the last event
    assert times == [first + 7 * k * day for k in range(1, 7)] + [AS_OF]
    assert all(t.tz is not None and t.utcoffset() == pd.Timedelta(0) for t in times)
    assert snapshot_times(events, "30D") == [first + 30 * day, AS_OF]
    assert snapshot_times(events, "100D") == [AS_OF]
    assert snapshot_times(events.iloc[:0]) == []
    with pytest.raises(ValueError, match="freq"):
        snapshot_times(events, "weekly")
    with pytest.raises(ValueError, match="positive"):
        snapshot_times(events, "0D")
