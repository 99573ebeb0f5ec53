"""The added user features and the segmentation inputs, computed by hand on a tiny log."""

from __future__ import annotations

import pandas as pd
import pytest

from features.segment_inputs import cdnow_inputs, event_inputs, movielens_inputs
from features.transforms import user_features
from tests.features.test_transforms import AS_OF, ROWS, make_events, row_of


def test_search_share_and_split_price_preferences() -> None:
    users = user_features(make_events(ROWS), [AS_OF])
    u1 = row_of(users, "user_id", "u1")
    # Medians: shoes 75, shirts 20. Viewed p3 100, p1 50, p2 20; bought p1 50.
    assert u1["view_price_preference"] == pytest.approx((4 / 3 + 2 / 3 + 1) / 3)
    assert u1["purchase_price_preference"] == pytest.approx(2 / 3)
    assert u1["search_share"] == 0.0
    anon = row_of(users, "user_id", "anon:a9")
    assert anon["search_share"] == pytest.approx(1 / 2)
    assert anon["purchase_price_preference"] == 1.0  # neutral: bought nothing


def test_behaviour_share_features_by_hand() -> None:
    """issue #18: searches per session, deal searches, device shares and price-tier shares of
    views, carts and purchases are user features (Feast), computed by hand here."""
    events = make_events(ROWS)
    events["query"] = None
    events.loc[events["event_type"] == "search", "query"] = "Cheap shirts"
    users = user_features(events, [AS_OF])
    u1 = row_of(users, "user_id", "u1")
    assert u1["device_shares"] == '{"desktop":0.2857,"mobile":0.7143}'
    # Shoes p1 50 and p3 100: quartiles 62.5 / 75 / 87.5, so p1 budget, p3 luxury; shirts have
    # one price, so p2 is mid.
    assert u1["view_tier_shares"] == '{"budget":0.3333,"luxury":0.3333,"mid":0.3333}'
    assert u1["cart_tier_shares"] == '{"budget":0.5,"mid":0.5}'
    assert u1["purchase_tier_shares"] == '{"budget":1.0}'
    assert (u1["searches_per_session_30d"], u1["deal_search_share"]) == (0.0, 0.0)
    anon = row_of(users, "user_id", "anon:a9")
    assert anon["searches_per_session_30d"] == 1.0 and anon["deal_search_share"] == 1.0
    assert anon["purchase_tier_shares"] == "{}"


def test_event_inputs_rates_shares_and_blocks() -> None:
    users = user_features(make_events(ROWS), [AS_OF])
    inputs = event_inputs(users)
    u1 = inputs.numeric.iloc[list(inputs.user_ids).index("u1")]
    assert u1["views_per_session_30d"] == pytest.approx(1.0)
    assert u1["cart_rate_30d"] == pytest.approx(2 / 3)
    assert u1["purchase_rate_30d"] == pytest.approx(1 / 2)
    assert u1["cart_tier_score"] == pytest.approx(1 / 6)  # budget 0 and mid 1/3
    assert u1["purchase_tier_score"] == 0.0
    assert u1["share_shoes"] == pytest.approx(0.6667)
    assert u1["device_mobile"] == pytest.approx(0.7143)
    assert u1["view_tier_luxury"] == pytest.approx(0.3333)
    assert inputs.groups["share_shoes"] == "category_shares"
    assert inputs.groups["device_mobile"] == "device_shares"
    assert inputs.groups["view_tier_mid"] == "view_tier_shares"
    assert inputs.vocabulary["share_shoes"] == (("adj", "Shoes"), None)
    # Nobody without a purchase gets a budget taste for free: the mean of the buyers (u1 0.0,
    # u2 bought p2, mid 1/3) fills in.
    anon = inputs.numeric.iloc[list(inputs.user_ids).index("anon:a9")]
    assert anon["purchase_tier_score"] == pytest.approx(1 / 6)
    assert not inputs.numeric.isna().any().any()


def test_cdnow_rfm_and_movielens_shares() -> None:
    day = pd.Timestamp("1997-01-01", tz="UTC")
    purchases = pd.DataFrame(
        {
            "user_id": ["1", "1", "1", "2"],
            "timestamp": [day, day, day + pd.Timedelta(days=10), day + pd.Timedelta(days=3)],
            "rating": [10.0, 5.0, 30.0, 8.0],
        }
    )
    rfm = cdnow_inputs(purchases).numeric
    # As of day 11: customer 1 bought on 2 days (15 and 30 dollars), last 1 day ago.
    assert rfm.iloc[0].to_dict() == {"recency_days": 1.0, "frequency": 2.0, "monetary": 22.5}
    assert rfm.iloc[1].to_dict() == {"recency_days": 8.0, "frequency": 1.0, "monetary": 8.0}
    users = pd.DataFrame({"user_id": ["1"], "age": [30], "gender": ["F"], "occupation": ["x"]})
    items = pd.DataFrame({"item_id": ["a", "b"], "genres": ["Drama|Comedy", "Drama"]})
    ratings = pd.DataFrame({"user_id": ["1", "1"], "item_id": ["a", "b"], "rating": [4.0, 2.0]})
    ml = movielens_inputs(users, ratings, items).numeric.iloc[0]
    assert ml["share_Drama"] == pytest.approx(0.75) and ml["share_Comedy"] == pytest.approx(0.25)
    assert (ml["n_ratings"], ml["mean_rating"], ml["age"]) == (2, 3.0, 30.0)
