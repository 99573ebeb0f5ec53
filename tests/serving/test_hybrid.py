"""Rules + model in one answer (issue #5), with the tiny real model of test_logic: context cold
start, filters, boosts, slots, the diversity re-rank, variants, degraded mode, similar items."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models.bundle import context_popularity
from models.scoring import Scorer
from serving.logic import UnknownItemError, read_features, recommend, similar_items
from serving.rules import parse_rules
from serving.schemas import RecommendRequest, SimilarItemsRequest
from tests.serving.test_logic import CATEGORY, GLOBAL_POPULAR, HISTORIES, _scorer


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return _scorer("ease")


@pytest.fixture(scope="module")
def with_context(scorer: Scorer) -> Scorer:
    """The same model with context tables: in the US hats lead, on tablets s4 alone."""
    rows = [("h3", "US", "mobile")] * 3 + [("h4", "US", "mobile")] * 2 + [("s4", "DE", "tablet")]
    events = pd.DataFrame(rows, columns=["item_id", "country", "device_type"])
    events["category"] = events["item_id"].map(CATEGORY)
    table = context_popularity(events, scorer.bundle.items)
    return Scorer.from_bundle(replace(scorer.bundle, context_popular=table), scorer.label)


def _rules(*rules: dict):
    return parse_rules({"rules": list(rules)})


def _ids(response) -> list[str]:
    return [item.item_id for item in response.items]


def _ask(scorer, features=None, rules=None, degraded=None, **request):
    return recommend(scorer, RecommendRequest(**request), features, rules, degraded)


# ----------------------------------------------------------------------------- cold start


def test_first_time_visitor_gets_popular_items_in_their_country(with_context) -> None:
    answer = _ask(with_context, anonymous_id="v1", k=3, context={"country": "us"})
    assert answer.user_id == "anon:v1"
    assert answer.strategy == "popular_in_country:US"
    assert _ids(answer) == ["h3", "h4", "s0"]  # the US table, then global popularity
    assert [i.strategy for i in answer.items] == ["popular_in_country:US"] * 2 + ["popular"]
    assert answer.items[0].rule == "first-time-visitor"
    assert answer.personalized is False  # the request's context, not the person
    assert answer.rules_fired[0] == "first-time-visitor"


def test_request_category_comes_before_country_and_device(with_context) -> None:
    context = {"country": "US", "device_type": "tablet", "category": "shoes"}
    answer = _ask(with_context, anonymous_id="v1", k=2, context=context)
    assert answer.strategy == "popular_in_category:shoes"
    assert _ids(answer) == ["s4", "s0"]  # the category table has s4 alone, then global order


def test_device_is_used_when_country_is_unknown(with_context) -> None:
    answer = _ask(with_context, anonymous_id="v1", k=1, context={"device_type": "tablet"})
    assert answer.strategy == "popular_in_device_type:tablet"
    assert _ids(answer) == ["s4"]


def test_flat_device_type_still_counts_as_context(with_context) -> None:
    answer = _ask(with_context, user_id="new-user", k=1, device_type="tablet")
    assert answer.strategy == "popular_in_device_type:tablet"


def test_missing_context_tables_fall_back_and_say_so(scorer) -> None:
    context = {"country": "US", "device_type": "mobile"}
    answer = _ask(scorer, anonymous_id="v1", k=3, context=context)
    assert answer.strategy == "popular (fallback: no country table, no device_type table)"
    assert _ids(answer) == GLOBAL_POPULAR[:3]


def test_returning_visitor_gets_the_category_of_their_live_activity(with_context) -> None:
    features = {"last_event_type": "product_view", "last_category": "hats"}
    answer = _ask(
        with_context, anonymous_id="v1", k=2, features=features, context={"country": "US"}
    )
    assert answer.rules_fired[0] == "returning-visitor"
    assert answer.strategy == "popular_in_category:hats"
    assert answer.personalized is True  # from the person's own features


# ----------------------------------------------------------------------------- filters


def test_given_ids_are_excluded_for_known_and_new_people(scorer) -> None:
    known = _ask(scorer, user_id="a3", k=3)
    dropped = _ids(known)[:2]
    assert not set(_ids(_ask(scorer, user_id="a3", k=3, exclude=dropped))) & set(dropped)
    cold = _ask(scorer, user_id="nobody", k=3, exclude=["s0", "unknown-id"])
    assert _ids(cold) == ["h0", "s1", "h1"]


def test_latest_purchase_is_excluded(scorer) -> None:
    features = {"last_event_type": "purchase", "last_product_id": "h0", "last_category": "hats"}
    answer = _ask(scorer, user_id="nobody", k=3, features=features)
    assert _ids(answer) == ["h1", "h2", "h3"]


def test_without_the_filter_rule_purchases_are_not_excluded(scorer) -> None:
    rules = _rules({"name": "pop", "when": {}, "then": {"source": "popular_in_category"}})
    features = {"last_event_type": "purchase", "last_product_id": "h0", "last_category": "hats"}
    answer = _ask(scorer, user_id="nobody", k=1, features=features, rules=rules)
    assert _ids(answer) == ["h0"]


def test_known_user_never_gets_their_history(scorer) -> None:
    for user_id, history in HISTORIES.items():
        assert not set(_ids(_ask(scorer, user_id=user_id, k=10))) & set(history)


# ----------------------------------------------------------------------------- re-ranking


def test_diversity_cap_moves_extra_items_of_a_category_down(scorer) -> None:
    rules = _rules(
        {"name": "cat", "when": {}, "then": {"source": "popular_in_category"}},
        {"name": "cap", "when": {}, "then": {"diversity": {"max_per_category": 2}}},
    )
    answer = _ask(scorer, user_id="x", k=6, context={"category": "hats"}, rules=rules)
    assert _ids(answer) == ["h0", "h1", "s0", "s1", "h2", "h3"]
    head = [CATEGORY[i] for i in _ids(answer)[:4]]
    assert head.count("hats") == 2 and head.count("shoes") == 2


def test_default_cap_keeps_at_most_five_of_a_category_ahead(scorer) -> None:
    answer = _ask(scorer, user_id="x", k=7, context={"category": "hats"})
    assert [CATEGORY[i] for i in _ids(answer)] == ["hats"] * 5 + ["shoes"] * 2


def test_boost_lifts_a_category_and_reports_the_boosted_score(scorer) -> None:
    rules = _rules(
        {"name": "pop", "when": {}, "then": {"source": "popular"}},
        {"name": "hats", "when": {}, "then": {"boost": [{"category": "hats", "factor": 2}]}},
    )
    answer = _ask(scorer, user_id="x", k=3, rules=rules)
    # popularity s0 5/9, h0 4/9, s1 4/9, h1 3/9: hats doubled to 8/9 and 6/9
    assert _ids(answer) == ["h0", "h1", "s0"]
    assert [item.score for item in answer.items] == pytest.approx([8 / 9, 6 / 9, 5 / 9])


def test_boost_by_the_request_category(scorer) -> None:
    rules = _rules(
        {"name": "pop", "when": {}, "then": {"source": "popular"}},
        {"name": "ctx", "when": {}, "then": {"boost": [{"category": "@context", "factor": 2}]}},
    )
    answer = _ask(scorer, user_id="x", k=1, rules=rules, context={"category": "hats"})
    assert _ids(answer) == ["h0"]


def test_slot_pins_a_popular_item_among_model_items(scorer) -> None:
    rules = _rules(
        {
            "name": "m",
            "when": {},
            "then": {"source": "model", "filters": ["exclude_purchased"]},
        },
        {"name": "pin", "when": {}, "then": {"slots": [{"source": "popular", "positions": [1]}]}},
    )
    answer = _ask(scorer, user_id="b2", k=3, rules=rules)
    assert answer.items[1].strategy == "popular" and answer.items[1].rule == "pin"
    assert answer.items[1].item_id == "s0"  # the most popular item b2 has not met
    assert [answer.items[i].strategy for i in (0, 2)] == ["model:ease"] * 2
    assert len(set(_ids(answer))) == 3


# ----------------------------------------------------------------------------- variants


def test_variant_and_rules_fired_follow_the_context(scorer) -> None:
    answer = _ask(scorer, user_id="a3", k=1, context={"country": "US", "device_type": "mobile"})
    assert answer.variant == {"hero_banner": "us-free-shipping"}
    assert answer.rules_fired == [
        "known-user",
        "exclude-purchased-and-given",
        "diversity-cap",
        "hero-us",
        "hero-mobile",
        "hero-default",
    ]
    assert _ask(scorer, user_id="a3", k=1).variant == {"hero_banner": "default"}


def test_segment_comes_from_the_features(scorer) -> None:
    rules = _rules({"name": "vip", "when": {"segment": "vip"}, "then": {"source": "popular"}})
    answer = _ask(scorer, user_id="a3", k=1, features={"segment": "vip"}, rules=rules)
    assert answer.segment == "vip"
    assert answer.rules_fired == ["vip"]


# ----------------------------------------------------------------------------- degraded mode


def test_failing_online_store_gives_a_degraded_popular_answer(scorer) -> None:
    """issue #10 item 6: the degraded reason is a fixed public text, never the error's."""

    def broken_store() -> dict:
        raise ConnectionError("online store is down at 10.0.0.7")

    features, degraded = read_features(broken_store)
    assert features == {}
    # issue #10 item 8: a fixed public reason, never the exception's text
    assert degraded == "online store unavailable"
    answer = _ask(scorer, user_id="a3", k=4, features=features, degraded=degraded)
    assert answer.degraded == degraded
    assert answer.personalized is False
    assert answer.strategy == "popular"
    assert _ids(answer) == ["h0", "h1", "s2", "h2"]  # global popularity without a3's s0, s1
    assert read_features(lambda: {"n": 1}) == ({"n": 1}, None)


def test_degraded_answer_still_uses_the_request_context(with_context) -> None:
    answer = _ask(with_context, user_id="a3", k=2, context={"country": "US"}, degraded="down")
    assert answer.strategy == "popular_in_country:US"
    assert answer.personalized is False


class _BrokenModel:
    def recommend(self, *args, **kwargs):
        raise RuntimeError("boom")

    def similar_items(self, *args, **kwargs):
        raise RuntimeError("boom")


def test_failing_model_falls_back_to_popularity(scorer, caplog) -> None:
    broken = Scorer.from_bundle(replace(scorer.bundle, model=_BrokenModel()), scorer.label)
    with caplog.at_level("ERROR", logger="serving.logic"):
        answer = _ask(broken, user_id="a3", k=3)
    assert answer.degraded == "model failed"  # issue #10 item 8: not "RuntimeError: boom"
    # the fault is logged (with its traceback), but not the person's id
    assert "failed for user index" in caplog.text and "for a3" not in caplog.text
    assert answer.personalized is False
    assert not any(item.strategy.startswith("model:") for item in answer.items)
    assert len(answer.items) == 3


# ----------------------------------------------------------------------------- similar items


def test_similar_items_from_the_model(scorer) -> None:
    answer = similar_items(scorer, SimilarItemsRequest(item_id="s0", k=3))
    assert answer.item_id == "s0"
    assert len(answer.items) == 3
    assert "s0" not in _ids(answer)
    assert {item.strategy for item in answer.items} == {"similar:ease"}
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    assert len(similar_items(scorer, SimilarItemsRequest(item_id="s0", k=200)).items) == 9


def test_similar_items_of_an_unknown_item_names_it(scorer) -> None:
    with pytest.raises(UnknownItemError, match="'nope'"):
        similar_items(scorer, SimilarItemsRequest(item_id="nope"))


def test_similar_items_fall_back_to_category_popularity(scorer) -> None:
    broken = Scorer.from_bundle(replace(scorer.bundle, model=_BrokenModel()), scorer.label)
    answer = similar_items(broken, SimilarItemsRequest(item_id="h0", k=2))
    assert _ids(answer) == ["h1", "h2"]
    assert {item.strategy for item in answer.items} == {"popular_in_category:hats"}


# ----------------------------------------------------------------------------- request model


def test_request_context_and_person_keys() -> None:
    request = RecommendRequest(anonymous_id="dev-1", context={"country": "gb", "page": "home"})
    assert request.person == "anon:dev-1"
    assert request.context.country == "GB"
    assert RecommendRequest(user_id="u1", anonymous_id="dev-1").person == "u1"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "u1", "context": {"country": "USA"}}, "country"),
        ({"user_id": "u1", "context": {"country": "1A"}}, "country"),
        ({"user_id": "u1", "context": {"device_type": "fridge"}}, "device_type"),
        ({"user_id": "u1", "context": {"weather": "rain"}}, "weather"),
        ({"user_id": "u1", "colour": "red"}, "colour"),
        ({"user_id": "u1", "exclude": [str(i) for i in range(1001)]}, "exclude"),
        ({"anonymous_id": ""}, "anonymous_id"),
        ({}, "user_id or anonymous_id"),
    ],
)
def test_bad_requests_name_the_field(payload, field) -> None:
    with pytest.raises(ValidationError, match=field):
        RecommendRequest.model_validate(payload)


def test_response_json_leaves_out_empty_optional_fields(scorer) -> None:
    answer = _ask(scorer, user_id="a3", k=1)
    data = answer.model_dump(mode="json")
    assert "degraded" not in data and "segment" not in data
    assert np.isfinite(data["items"][0]["score"])
