"""Real-time personas (issue #6): price tiers, the fold, each shipped persona, the offline table
and the validation of persona rule files."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from features.persona_rules import PersonaRulesError, load_personas, parse_personas
from features.personas import (
    RECENT_SESSIONS,
    PersonaState,
    fold,
    fold_people,
    label,
    persona_table,
    price_cuts,
    split_label,
    state_row,
)

T0 = pd.Timestamp("2026-03-01 12:00", tz="UTC")
CONFIG = load_personas()  # the packaged features/personas.yaml (electronics: [105.74, 305.24])


def _events(specs: list[tuple], person: str = "u1") -> list[dict]:
    """(event_type, session, device, category, price, query) per event, a minute apart."""
    events = []
    for n, (event_type, session, device, category, price, query) in enumerate(specs):
        events.append(
            {
                "event_id": f"{person}-{n:03d}",
                "event_type": event_type,
                "timestamp": T0 + pd.Timedelta(minutes=n),
                "user_id": person,
                "anonymous_id": None,
                "session_id": session,
                "device_type": device,
                "category": category,
                "price": price,
                "query": query,
            }
        )
    return events


def _view(price: float, session: str = "s1", device: str = "desktop") -> tuple:
    return ("product_view", session, device, "electronics", price, None)


def _personas(events: list[dict]) -> list[tuple[str, float]]:
    return CONFIG.assess(fold(PersonaState(), events, CONFIG))


# ----------------------------------------------------------------------------- price tiers


@pytest.mark.parametrize(
    ("category", "price", "tier"),
    [
        ("electronics", 105.74, "budget"),  # the 25th percentile itself is budget
        ("electronics", 105.75, "mid"),
        ("electronics", 305.24, "mid"),  # the 75th percentile itself is not yet high-end
        ("electronics", 305.25, "high_end"),
        ("grocery", 9.0, "high_end"),  # cuts are per category
        ("no-such-aisle", 5.0, ""),
        ("electronics", None, ""),
    ],
)
def test_price_tier_uses_the_category_cuts(category, price, tier):
    assert CONFIG.tier(category, price) == tier


def test_price_cuts_are_item_price_quartiles_per_category():
    frame = pd.DataFrame(
        {
            "timestamp": [T0] * 5 + [T0 + pd.Timedelta(days=1)],
            "product_id": ["a", "b", "c", "d", "e", "a"],
            "category": ["toys"] * 5 + ["toys"],
            "price": [99.0, 20.0, 30.0, 40.0, 50.0, 10.0],  # item a's latest price is 10
        }
    )
    assert price_cuts(frame) == {"toys": [20.0, 40.0]}  # quartiles of 10, 20, 30, 40, 50


# ----------------------------------------------------------------------------- each persona


def test_luxury_browser_budget_buyer():
    specs = [_view(400.0)] * 4 + [_view(150.0)]  # 4 of 5 tiered views high-end
    specs += [("add_to_cart", "s1", "desktop", "electronics", 50.0, None)]  # a budget add
    state = fold(PersonaState(), _events(specs), CONFIG)
    values = state.values()
    assert (values["views_tiered"], values["views_high_end"]) == (5, 4)
    assert (values["buys"], values["buys_budget"], values["buys_tiered"]) == (1, 1, 1)


def test_each_shipped_persona_from_a_hand_made_session():
    luxury = [_view(400.0)] * 4 + [_view(150.0)]
    luxury += [("add_to_cart", "s1", "desktop", "electronics", 50.0, None)]
    assert _personas(_events(luxury)) == [("Luxury Browser, Budget Buyer", 0.8)]

    mobile = [("page_view", f"s{n}", d, None, None, None) for n, d in enumerate(["mobile"] * 3)]
    mobile += [("page_view", "s9", "desktop", None, None, None)]
    assert _personas(_events(mobile)) == [("Mobile-First", 0.75)]

    window = [_view(150.0)] * 12
    assert _personas(_events(window)) == [("Window Shopper", 0.8)]

    queries = ["cheap headphones", "laptop SALE", "4k tv"]
    deals = [("search", "s1", "desktop", None, None, q) for q in queries]
    assert _personas(_events(deals)) == [("Deal Hunter", 0.6667)]


def test_several_personas_are_ordered_by_score_and_joined():
    specs = [_view(150.0, session=f"s{n}", device="mobile") for n in range(9)]  # 9 sessions
    found = _personas(_events(specs))
    assert found == [("Mobile-First", 1.0), ("Window Shopper", 0.6)]
    assert label(found) == "Mobile-First + Window Shopper"
    assert split_label(label(found)) == ("Mobile-First", "Window Shopper")
    assert split_label("") == ()


@pytest.mark.parametrize(
    "specs",
    [
        # an ordinary buyer: mid-priced views, an add and a purchase, on a desktop
        [_view(150.0, session=f"s{n}") for n in range(3)]
        + [("add_to_cart", "s2", "desktop", "electronics", 150.0, None)]
        + [("purchase", "s2", "desktop", "electronics", 150.0, None)],
        # all on mobile, but only 2 sessions: below Mobile-First's minimum of 3
        [_view(150.0, "s1", "mobile"), _view(150.0, "s2", "mobile")],
        # 12 views, but one cart add: not a Window Shopper
        [_view(150.0)] * 12 + [("add_to_cart", "s1", "desktop", "books", 5.0, None)],
        # luxury views, but the add is high-end too
        [_view(400.0)] * 4 + [("add_to_cart", "s1", "desktop", "electronics", 400.0, None)],
        # one deal search only: below Deal Hunter's minimum of 2 searches
        [("search", "s1", "desktop", None, None, "cheap shoes")],
        # "salesman" is not the word "sale"
        [("search", "s1", "desktop", None, None, q) for q in ("salesman", "discounted")],
    ],
)
def test_no_persona_without_enough_evidence(specs):
    state = fold(PersonaState(), _events(specs), CONFIG)
    assert CONFIG.assess(state) == []
    row = state_row("u1", state, CONFIG)
    assert (row["persona"], row["persona_score"]) == ("", 0.0)


# ----------------------------------------------------------------------------- the fold


def _mixed() -> list[dict]:
    specs = [_view(400.0, "s1", "mobile"), _view(50.0, "s1", "mobile")]
    specs += [("add_to_cart", "s2", "desktop", "electronics", 50.0, None)]
    specs += [("search", "s2", "desktop", None, None, "cheap tv")]
    specs += [("purchase", "s3", "mobile", "toys", 12.0, None), _view(150.0, "s3", "mobile")]
    return _events(specs)


def test_fold_counts_every_field():
    state = fold(PersonaState(), _mixed(), CONFIG)
    assert state.events == 6
    assert (state.sessions, state.mobile_sessions, state.session_id) == (3, 2, "s3")
    assert (state.views, state.views_budget, state.views_high_end, state.views_tiered) == (
        3,
        1,
        1,
        3,
    )
    assert (state.carts, state.carts_budget, state.purchases, state.purchases_budget) == (
        1,
        1,
        1,
        1,
    )
    assert (state.searches, state.deal_searches) == (1, 1)
    assert state.categories == {"electronics": 3}
    assert state.as_of == (T0 + pd.Timedelta(minutes=5)).isoformat()
    assert state.values()["buys_budget"] == 2


def test_fold_is_deterministic_in_any_arrival_order_and_in_batches():
    events = _mixed()
    whole = fold(PersonaState(), events, CONFIG)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    assert fold(PersonaState(), shuffled, CONFIG) == whole
    in_two = fold(fold(PersonaState(), events[:3], CONFIG), events[3:], CONFIG)
    assert in_two == whole  # a session split across two /events calls is counted once


def test_folding_many_people_in_one_pass_equals_folding_each():
    """``fold_people`` (the consumer's batch fold, issue #11) gives each person what ``fold``
    gives them alone, from their state before, whatever the rows' order."""
    events = _mixed() + _events([_view(400.0, "t1", "mobile")] * 3, "u2") + _events([], "u3")
    random.Random(5).shuffle(events)
    frame = pd.DataFrame(events)
    before = {"u1": fold(PersonaState(), _mixed()[:2], CONFIG)}
    after = fold_people(before, frame, frame["user_id"], CONFIG)
    assert set(after) == {"u1", "u2"}
    for person in ("u1", "u2"):
        mine = [e for e in events if e["user_id"] == person]
        assert after[person] == fold(before.get(person, PersonaState()), mine, CONFIG), person
    assert fold_people(before, frame.iloc[:0], [], CONFIG) == {}


def test_late_events_still_move_as_of_forward():
    events = _mixed()
    newest = fold(PersonaState(), events[3:], CONFIG)
    late = fold(newest, events[:3], CONFIG)  # older events arriving after newer ones
    assert late.events == 6
    assert pd.Timestamp(late.as_of) == pd.Timestamp(newest.as_of) + pd.Timedelta(microseconds=1)
    assert fold(late, [], CONFIG) is late  # nothing folded: the same state


def test_only_recent_session_ids_are_remembered():
    specs = [
        ("page_view", f"s{n}", "desktop", None, None, None) for n in range(RECENT_SESSIONS + 5)
    ]
    state = fold(PersonaState(), _events(specs), CONFIG)
    assert state.sessions == RECENT_SESSIONS + 5
    assert len(state.recent_sessions) == RECENT_SESSIONS
    assert state.recent_sessions[-1] == f"s{RECENT_SESSIONS + 4}"


def test_state_survives_its_json():
    state = fold(PersonaState(), _mixed(), CONFIG)
    assert PersonaState.from_json(state.to_json()) == state
    assert PersonaState.from_json(None) == PersonaState()
    assert PersonaState.from_json('{"events": 2, "dropped_field": 1}') == PersonaState(events=2)


def test_offline_table_is_the_same_fold_with_a_row_per_session():
    mine, theirs = _mixed(), _events([_view(150.0)] * 12, person="u2")
    table = persona_table(pd.DataFrame(mine + theirs), CONFIG)
    u1 = table[table["user_id"] == "u1"]
    assert len(u1) == 3  # sessions s1, s2, s3
    final = fold(PersonaState(), mine, CONFIG)
    assert u1["persona_state"].iloc[-1] == final.to_json()
    assert list(u1["event_timestamp"]) == [T0 + pd.Timedelta(minutes=m) for m in (1, 3, 5)]
    u2 = table[table["user_id"] == "u2"]
    assert list(u2["persona"]) == ["Window Shopper"]
    assert list(u2["persona_score"]) == [0.8]
    assert str(table["event_timestamp"].dtype) == "datetime64[ns, UTC]"


def test_offline_table_of_no_events_is_empty_but_typed():
    empty = persona_table(pd.DataFrame(columns=list(_mixed()[0])), CONFIG)
    assert empty.empty
    assert list(empty.columns) == [
        "user_id",
        "event_timestamp",
        "created",
        "persona",
        "persona_score",
        "persona_state",
    ]


# ----------------------------------------------------------------------------- rule files


def _doc(**rule) -> dict:
    base = {"name": "r", "score": {"share": "views", "over": "events"}, "threshold": 0.5}
    return {"version": 1, "personas": [base | rule]}


def test_the_packaged_rules_load():
    assert CONFIG.names == (
        "Luxury Browser, Budget Buyer",
        "Mobile-First",
        "Window Shopper",
        "Deal Hunter",
    )
    assert "cheap" in CONFIG.deal_words


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"version": 1, "personas": [], "colour": 1},
            "test.yaml: key 'colour', value 1: unknown key; allowed: version",
        ),
        ({"version": 2, "personas": [{}]}, "key 'version', value 2: not one of 1"),
        ({"version": 1}, "key 'personas': missing (required)"),
        (_doc(colour="red"), "persona rule 'r', key 'colour', value 'red': unknown key"),
        (
            _doc(score={"share": "clicks", "over": "events"}),
            "key 'score.share[0]', value 'clicks': not one of 'events', 'sessions'",
        ),
        (_doc(score={"share": "views"}), "key 'score.over', value None: a share needs 'over'"),
        (
            _doc(score={"ratio": "views"}),
            "key 'score.ratio', value 'views': unknown key; allowed: share: list, over: list",
        ),
        (_doc(score={"saturate": "views", "at": 0}), "key 'score.at', value 0: expected a number"),
        (_doc(score={"all": []}), "key 'score.all', value []: expected a non-empty list"),
        (_doc(threshold="high"), "key 'threshold', value 'high': expected a number"),
        (_doc(threshold=1.5), "key 'threshold', value 1.5: expected a number <= 1"),
        (_doc(when={"views": {"min": 5, "max": 2}}), "key 'when.views'"),
        (
            _doc(when={"views": {"min": -1}}),
            "key 'when.views.min', value -1: expected an integer >= 0",
        ),
        (_doc(when={"views": {"least": 1}}), "key 'when.views.least', value 1: unknown key"),
        (_doc(when={"clicks": {"min": 1}}), "key 'when', value 'clicks': not one of 'events'"),
        (_doc(name="A + B"), "key 'name', value 'A + B': needs a non-empty name without ' + '"),
        (
            {"version": 1, "price_tiers": {"toys": [50, 10]}, "personas": [_doc()["personas"][0]]},
            "key 'price_tiers.toys', value [50, 10]: expected [budget_max, high_end_above]",
        ),
        (
            {"version": 1, "deal_words": "cheap", "personas": [{}]},
            "key 'deal_words', value 'cheap': expected a list",
        ),
    ],
)
def test_invalid_rule_files_name_the_rule_key_value_and_what_is_allowed(doc, message):
    with pytest.raises(PersonaRulesError) as caught:
        parse_personas(doc, "test.yaml")
    assert message in str(caught.value)


def test_duplicate_names_are_refused():
    rule = _doc()["personas"][0]
    with pytest.raises(PersonaRulesError, match="key 'name', value 'r': needs a unique"):
        parse_personas({"version": 1, "personas": [rule, rule]})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PersonaRulesError, match="not found"):
        load_personas(tmp_path / "nope.yaml")


def test_a_bad_persona_file_names_the_file_rule_key_value_and_allowed(tmp_path):
    """issue #10 (one shape): the persona file is a pydantic model; its errors name the file,
    the rule, the key path, the value and the allowed values, like every spec file's."""
    path = tmp_path / "personas.yaml"
    path.write_text(
        "personas:\n  - name: Deal Hunter\n    score: {saturate: deal_searches, at: 3}\n"
        "    threshold: 0\n"
    )
    with pytest.raises(PersonaRulesError) as caught:
        load_personas(path)
    assert str(caught.value) == (
        f"{path}: persona rule 'Deal Hunter', key 'threshold', value 0: expected a number > 0"
    )


def test_state_json_is_the_dataclass_json_on_a_realistic_batch():
    """``PersonaState.to_json`` builds its JSON from the fields (``dataclasses.asdict`` was a
    third of a consumer batch's persona update, issue #11): the same text as before, for every
    state of many people with sessions, categories, searches and purchases."""
    import dataclasses
    import json

    rng = random.Random(11)
    kinds = ["product_view"] * 6 + ["add_to_cart", "purchase", "search", "page_view"]
    categories = ["electronics", "grocery", "toys", "books", None]
    events = []
    for person in range(60):
        specs = [
            (
                rng.choice(kinds),
                f"s{person}-{rng.randrange(60)}",
                rng.choice(["mobile", "desktop", None]),
                rng.choice(categories),
                rng.choice([None, rng.uniform(1, 900)]),
                rng.choice(["cheap deal tv", "sale", "lamp", None]),
            )
            for _ in range(rng.randrange(1, 120))
        ]
        events += _events(specs, f"u{person}")
    table = persona_table(pd.DataFrame(events), CONFIG)
    assert len(table) > 60
    for text in table["persona_state"]:
        state = PersonaState.from_json(text)
        old = json.dumps(dataclasses.asdict(state), sort_keys=True, separators=(",", ":"))
        assert state.to_json() == old == text
    assert any(len(PersonaState.from_json(t).categories) > 2 for t in table["persona_state"])
