"""Unit tests for the synthetic clickstream generator (features/synthetic/generate.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.schema import EVENT_COLUMNS, PRODUCT_EVENTS, QUANTITY_EVENTS, Event
from features.synthetic.generate import (
    DEFAULT_START,
    GeneratedData,
    generate_clickstream,
    write_generated,
)
from features.synthetic.specs import CATEGORIES, PERSONAS, PRICE_TIERS

STRING_COLUMNS = [c for c in EVENT_COLUMNS if c not in ("timestamp", "price", "quantity")]


@pytest.fixture(scope="module")
def small() -> GeneratedData:
    """A quick generation for contract checks (about 2,000 events)."""
    return generate_clickstream(n_users=60, days=7, seed=11)


@pytest.fixture(scope="module")
def planted() -> GeneratedData:
    """Enough users and days per persona for behaviour checks (about 60,000 events)."""
    return generate_clickstream(n_users=600, days=21, seed=5)


@pytest.fixture(scope="module")
def labelled(planted: GeneratedData) -> pd.DataFrame:
    """Logged-in events with the ground-truth persona and the product's price tier joined on."""
    events = planted.events.merge(planted.personas, on="user_id", how="inner")
    tiers = planted.catalogue.set_index("product_id")["price_tier"]
    return events.assign(price_tier=events["product_id"].map(tiers))


def _pairs(frame: pd.DataFrame, first: str, second: str) -> pd.MultiIndex:
    """Row-wise (first, second) pairs, for membership tests."""
    return pd.MultiIndex.from_frame(frame[[first, second]])


def _count(frame: pd.DataFrame, event_type: str) -> int:
    return int((frame["event_type"] == event_type).sum())


def test_same_seed_gives_identical_frames(small: GeneratedData) -> None:
    again = generate_clickstream(n_users=60, days=7, seed=11)
    pd.testing.assert_frame_equal(small.events, again.events)
    pd.testing.assert_frame_equal(small.personas, again.personas)
    pd.testing.assert_frame_equal(small.catalogue, again.catalogue)


def test_different_seed_gives_different_frames(small: GeneratedData) -> None:
    other = generate_clickstream(n_users=60, days=7, seed=12)
    assert not small.events.equals(other.events)
    assert not small.personas["persona"].equals(other.personas["persona"])
    assert not small.catalogue["price"].equals(other.catalogue["price"])


def test_columns_and_dtypes(small: GeneratedData) -> None:
    events = small.events
    assert tuple(events.columns) == EVENT_COLUMNS
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert events["price"].dtype == np.float64
    assert str(events["quantity"].dtype) == "Int64"
    for column in STRING_COLUMNS:
        assert events[column].dtype == object, column
        values = events[column].dropna()
        assert values.map(type).eq(str).all(), column
    assert list(small.personas.columns) == ["user_id", "persona"]
    assert list(small.catalogue.columns) == ["product_id", "category", "price", "price_tier"]
    assert "persona" not in events.columns


def test_every_row_validates_against_the_schema(small: GeneratedData) -> None:
    rows = small.events.to_dict("records")  # Int64 <NA> -> None, price NaN -> missing
    assert len(rows) > 1000
    for row in rows:
        event = Event.model_validate(row)
        assert event.event_id == row["event_id"]


def test_event_ids_unique_and_events_sorted_by_time(small: GeneratedData) -> None:
    events = small.events
    assert events["event_id"].is_unique
    assert events["event_id"].iloc[0] == "g11-60x7-e0000001"  # seed 11, 60 users, 7 days
    assert events["timestamp"].is_monotonic_increasing
    assert events.index.equals(pd.RangeIndex(len(events)))


def test_timestamps_within_window_for_default_and_custom_start(small: GeneratedData) -> None:
    assert small.events["timestamp"].min() >= pd.Timestamp(DEFAULT_START)
    assert small.events["timestamp"].max() < pd.Timestamp(DEFAULT_START + timedelta(days=7))
    start = datetime(2025, 6, 30, 22, 15, tzinfo=UTC)
    shifted = generate_clickstream(n_users=30, days=2, seed=3, start=start).events["timestamp"]
    assert shifted.min() >= pd.Timestamp(start)
    assert shifted.max() < pd.Timestamp(start + timedelta(days=2))


def test_product_fields_follow_the_event_type(small: GeneratedData) -> None:
    events = small.events
    needs_product = events["event_type"].isin(PRODUCT_EVENTS)
    assert events.loc[needs_product, ["product_id", "price", "category"]].notna().all().all()
    assert events.loc[~needs_product, ["product_id"]].isna().all().all()
    assert events.loc[~needs_product, "price"].isna().all()
    needs_quantity = events["event_type"].isin(QUANTITY_EVENTS)
    assert (events.loc[needs_quantity, "quantity"] >= 1).all()
    assert events.loc[~needs_quantity, "quantity"].isna().all()
    searches = events[events["event_type"] == "search"]
    assert searches["query"].notna().all() and searches["page"].eq("search").all()
    assert events.loc[events["event_type"] != "search", "query"].isna().all()
    catalogue = small.catalogue.set_index("product_id")
    products = events[needs_product]
    assert products["product_id"].isin(catalogue.index).all()
    np.testing.assert_array_equal(products["price"], catalogue.loc[products["product_id"], "price"])
    assert set(events["page"]) <= {"home", "category", "product", "search", "cart", "checkout"}
    assert events["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert set(events["device_type"]) <= {"desktop", "mobile", "tablet", "other"}


def test_properties_are_json_objects_or_none(small: GeneratedData) -> None:
    properties = small.events["properties"].dropna()
    assert len(properties) > 0
    assert all(isinstance(json.loads(text), dict) for text in properties)
    purchases = small.events[small.events["event_type"] == "purchase"]
    assert purchases["properties"].map(lambda t: "payment" in json.loads(t)).all()


def test_funnel_is_coherent_within_sessions(planted: GeneratedData) -> None:
    """add_to_cart follows a view of the same product; a purchase buys a product carted earlier
    in the same session."""
    events = planted.events.sort_values(["session_id", "timestamp"], kind="stable")
    previous = events.groupby("session_id")[["event_type", "product_id"]].shift(1)
    carts = events["event_type"] == "add_to_cart"
    assert (previous.loc[carts, "event_type"] == "product_view").all()
    assert (previous.loc[carts, "product_id"] == events.loc[carts, "product_id"]).all()
    bought = events[events["event_type"] == "purchase"]
    carted = _pairs(events[carts], "session_id", "product_id")
    assert _pairs(bought, "session_id", "product_id").isin(carted).all()


def test_sessions_are_single_visitor_single_device_and_minutes_apart(
    planted: GeneratedData,
) -> None:
    sessions = planted.events.groupby("session_id")
    assert (sessions["anonymous_id"].nunique() == 1).all()
    assert (sessions["device_type"].nunique() == 1).all()
    assert (sessions["user_id"].nunique(dropna=False) == 1).all()
    gaps = planted.events.sort_values("timestamp").groupby("session_id")["timestamp"].diff()
    gaps = gaps.dropna().dt.total_seconds()
    assert gaps.min() >= 2 and gaps.max() <= 1200
    assert 20 <= gaps.median() <= 180
    # Each user keeps one cookie and one country.
    logged_in = planted.events.dropna(subset=["user_id"]).groupby("user_id")
    assert (logged_in["anonymous_id"].nunique() == 1).all()
    assert (logged_in["country"].nunique() == 1).all()


def test_sessions_follow_a_diurnal_cycle(planted: GeneratedData) -> None:
    starts = planted.events.groupby("session_id")["timestamp"].min()
    us_users = planted.events.loc[planted.events["country"] == "US", "session_id"].unique()
    local_hour = (starts.loc[us_users] - pd.Timedelta(hours=5)).dt.hour
    assert (local_hour.between(18, 21)).mean() > 3 * (local_hour.between(1, 4)).mean()


def test_personas_cover_every_user_and_anonymous_visitors_exist(
    planted: GeneratedData,
) -> None:
    personas, events = planted.personas, planted.events
    assert personas["user_id"].is_unique
    assert set(personas["user_id"]) == set(events["user_id"].dropna())
    assert set(personas["persona"]) == set(PERSONAS)
    assert personas["persona"].value_counts(normalize=True).min() > 0.1
    # Anonymous-only visitors: cookies never seen with a user_id; they have no persona row.
    known = set(events["anonymous_id"][events["user_id"].notna()])
    anonymous_only = set(events["anonymous_id"]) - known
    share = len(anonymous_only) / events["anonymous_id"].nunique()
    assert 0.01 < share < 0.06
    logged_out = events.groupby("session_id")["user_id"].first().isna().mean()
    assert 0.07 < logged_out < 0.16


def test_catalogue_shape_and_price_tiers(planted: GeneratedData) -> None:
    catalogue = planted.catalogue
    assert 200 <= len(catalogue) <= 2000 and catalogue["product_id"].is_unique
    assert catalogue["product_id"].iloc[0] == "p0001"
    assert 8 <= catalogue["category"].nunique() <= 12
    assert set(catalogue["category"]) == set(CATEGORIES)
    assert set(catalogue["price_tier"]) == set(PRICE_TIERS)
    assert (catalogue["price"] > 0).all()
    rank = {tier: i for i, tier in enumerate(PRICE_TIERS)}
    for _, products in catalogue.groupby("category"):
        ordered = products.sort_values("price")
        assert ordered["price_tier"].map(rank).is_monotonic_increasing
    assert len(generate_clickstream(n_users=12_000, days=1, seed=0).catalogue) == 2000


def test_window_shoppers_cart_electronics_but_rarely_buy(labelled: pd.DataFrame) -> None:
    by_persona = dict(tuple(labelled.groupby("persona")))
    shopper, buyer = by_persona["electronics_window_shopper"], by_persona["frequent_buyer"]
    shopper_carts = shopper[shopper["event_type"] == "add_to_cart"]
    assert (shopper_carts["category"] == "electronics").mean() > 0.4
    shopper_ratio = _count(shopper, "purchase") / _count(shopper, "add_to_cart")
    buyer_ratio = _count(buyer, "purchase") / _count(buyer, "add_to_cart")
    assert shopper_ratio < 0.05 and buyer_ratio > 0.5
    views = shopper[shopper["event_type"] == "product_view"]
    assert (views["category"] == "electronics").mean() > 0.4


def test_devices_per_persona(labelled: pd.DataFrame) -> None:
    device_share = pd.crosstab(labelled["persona"], labelled["device_type"], normalize="index")
    assert device_share.loc["mobile_casual_browser", "mobile"] > 0.7
    assert device_share.loc["frequent_buyer", "desktop"] > 0.6


def test_session_shape_per_persona(labelled: pd.DataFrame) -> None:
    sessions = labelled.groupby(["persona", "user_id", "session_id"]).size()
    events_per_session = sessions.groupby("persona").mean()
    sessions_per_user = sessions.groupby(["persona", "user_id"]).size().groupby("persona").mean()
    assert (
        events_per_session["mobile_casual_browser"]
        < 0.5 * events_per_session.drop("mobile_casual_browser").min()
    )
    assert sessions_per_user.idxmax() == "frequent_buyer"


def test_luxury_browsers_view_expensive_and_buy_budget(labelled: pd.DataFrame) -> None:
    luxury = labelled[labelled["persona"] == "luxury_browser_budget_buyer"]
    views = luxury[luxury["event_type"] == "product_view"]
    bought = luxury[luxury["event_type"].isin(["add_to_cart", "purchase"])]
    assert views["price_tier"].isin(["premium", "luxury"]).mean() > 0.6
    assert (bought["price_tier"] == "budget").mean() > 0.6


def test_bargain_hunters_search_a_lot_and_buy_budget(labelled: pd.DataFrame) -> None:
    search_share = labelled.groupby("persona")["event_type"].apply(lambda s: (s == "search").mean())
    assert search_share.idxmax() == "bargain_hunter"
    assert search_share["bargain_hunter"] > 2 * search_share.drop("bargain_hunter").max()
    hunter = labelled[labelled["persona"] == "bargain_hunter"]
    bought = hunter[hunter["event_type"] == "purchase"]
    assert (bought["price_tier"] == "budget").mean() > 0.6


def test_users_return_to_earlier_interests(planted: GeneratedData) -> None:
    """Personal taste: a user's later purchases and views hit products and categories that user
    met earlier far more often than another user's would (user ids shuffled as the baseline)."""
    events = planted.events.dropna(subset=["user_id", "product_id"])
    cut = events["timestamp"].quantile(0.7)
    early, late = events[events["timestamp"] < cut], events[events["timestamp"] >= cut]
    shuffle = np.random.default_rng(0).permutation
    for event_type, column, floor in (
        ("purchase", "product_id", 0.35),
        ("product_view", "category", 0.7),
    ):
        later = late[late["event_type"] == event_type]
        seen = _pairs(early, "user_id", column)
        own = _pairs(later, "user_id", column).isin(seen).mean()
        others = _pairs(
            later.assign(user_id=shuffle(later["user_id"].to_numpy())), "user_id", column
        )
        assert own > floor and own > 1.5 * others.isin(seen).mean(), (event_type, own)


def test_write_generated_round_trips(small: GeneratedData, tmp_path) -> None:
    paths = write_generated(small, tmp_path / "gen")
    assert set(paths) == {"events", "personas", "catalogue", "consent"}
    assert [p.name for p in paths.values()] == [
        "events.parquet",
        "personas.csv",
        "catalogue.csv",
        "consent.csv",
    ]
    events = pd.read_parquet(paths["events"])
    events["timestamp"] = events["timestamp"].astype("datetime64[ns, UTC]")
    events["quantity"] = events["quantity"].astype("Int64")
    pd.testing.assert_frame_equal(events, small.events)
    personas = pd.read_csv(paths["personas"], dtype=str)
    pd.testing.assert_frame_equal(personas, small.personas, check_dtype=False)
    catalogue = pd.read_csv(paths["catalogue"], dtype={"product_id": str, "category": str})
    pd.testing.assert_frame_equal(catalogue, small.catalogue, check_dtype=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0, "days": 1, "seed": 0}, "n_users"),
        ({"n_users": 5, "days": 0, "seed": 0}, "days"),
        ({"n_users": 5, "days": 1, "seed": -1}, "seed"),
        ({"n_users": 5, "days": 1, "seed": 0, "start": datetime(2026, 1, 1)}, "time zone"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_clickstream(**kwargs)


def test_generated_consent_has_both_paths_and_imports(small: GeneratedData, tmp_path) -> None:
    """Issue #12: most people consent, some refuse, some withdraw midway; the file imports."""
    from features.consent.check import ConsentCheck
    from features.consent.files import import_csv
    from features.workspace import Workspace

    consent = small.consent
    people = consent["user_id"].fillna("anon:" + consent["anonymous_id"].astype(str))
    firsts = consent[~people.duplicated()]
    assert (firsts["personalization"] == "true").mean() > 0.6
    assert (firsts["personalization"] == "false").any()
    assert people.duplicated().any()  # withdrawals: a second record of the same person
    assert set(people[~people.str.startswith("anon:")]) <= set(small.personas["user_id"])
    paths = write_generated(small, tmp_path / "gen")
    check = ConsentCheck.for_workspace(Workspace(tmp_path / "ws"))
    done = import_csv(check.ledger, paths["consent"])
    assert done.rows == len(consent) and done.people == people.nunique()
    withdrawn = people[people.duplicated()].iloc[0]
    assert not check.decide(withdrawn, "personalization", country="US").allowed
