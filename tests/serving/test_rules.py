"""The rules engine (issue #5): the default rules, merging of actions, and validation on load."""

from pathlib import Path

import pytest

from serving.rules import Facts, RulesError, load_rules, parse_rules


@pytest.fixture(scope="module")
def defaults():
    return load_rules(None)


def _doc(then: dict | None = None, when: dict | None = None, **rule) -> dict:
    then = {"source": "popular"} if then is None else then
    return {"version": 1, "rules": [{"name": "r1", "when": when or {}, "then": then, **rule}]}


# ----------------------------------------------------------------------------- default rules


def test_default_rules_file_loads_and_names_its_rules(defaults) -> None:
    names = [rule.name for rule in defaults.rules]
    assert names[:3] == ["known-user", "returning-visitor", "first-time-visitor"]
    assert "exclude-purchased-and-given" in names
    assert "diversity-cap" in names


def test_known_user_gets_the_model(defaults) -> None:
    decision = defaults.decide(Facts(maturity="known", interactions=4))
    assert (decision.source, decision.source_rule) == ("model", "known-user")
    assert "first-time-visitor" not in decision.fired


@pytest.mark.parametrize("maturity", ["new", "returning"])
def test_people_the_model_has_not_seen_get_context_popularity(defaults, maturity) -> None:
    decision = defaults.decide(Facts(maturity=maturity))
    assert decision.source == "popular_in_context"
    assert decision.context_order == ("category", "country", "device_type")
    assert (
        decision.source_rule
        == {"new": "first-time-visitor", "returning": "returning-visitor"}[maturity]
    )


def test_everyone_gets_the_filters_and_the_diversity_cap(defaults) -> None:
    decision = defaults.decide(Facts(maturity="known"))
    assert decision.filters == {
        "exclude_purchased": "exclude-purchased-and-given",
        "exclude_given": "exclude-purchased-and-given",
    }
    assert decision.max_per_category == 5


@pytest.mark.parametrize(
    ("country", "device", "banner", "fired"),
    [
        ("US", "desktop", "us-free-shipping", {"hero-us", "hero-default"}),
        ("GB", "mobile", "mobile-app", {"hero-mobile", "hero-default"}),
        ("US", "mobile", "us-free-shipping", {"hero-us", "hero-mobile", "hero-default"}),
        (None, "other", "default", {"hero-default"}),
    ],
)
def test_content_variant_follows_location_and_device(defaults, country, device, banner, fired):
    decision = defaults.decide(Facts(maturity="new", country=country, device_type=device))
    assert decision.variant == {"hero_banner": banner}
    assert {name for name in decision.fired if name.startswith("hero-")} == fired


# ----------------------------------------------------------------------------- semantics


def test_first_source_wins_while_filters_boosts_and_slots_add_up() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "a",
                    "when": {},
                    "then": {"source": "popular", "filters": ["exclude_seen"]},
                },
                {
                    "name": "b",
                    "when": {},
                    "then": {
                        "source": "model",
                        "filters": ["exclude_given"],
                        "boost": [{"category": "hats", "factor": 2}],
                        "slots": [{"source": "popular_in_country", "positions": [2, 0]}],
                    },
                },
            ]
        }
    )
    decision = rules.decide(Facts(maturity="known"))
    assert (decision.source, decision.source_rule) == ("popular", "a")
    assert decision.fired == ["a", "b"]
    assert decision.filters == {"exclude_seen": "a", "exclude_given": "b"}
    assert [(b.category, b.factor, b.rule) for b in decision.boosts] == [("hats", 2.0, "b")]
    assert [(s.source, s.positions) for s in decision.slots] == [("popular_in_country", (0, 2))]


@pytest.mark.parametrize(
    ("when", "facts", "holds"),
    [
        ({"interactions": {"min": 3}}, Facts("known", interactions=3), True),
        ({"interactions": {"min": 3}}, Facts("known", interactions=2), False),
        ({"interactions": {"max": 0}}, Facts("new"), True),
        ({"interactions": {"min": 1, "max": 5}}, Facts("known", interactions=6), False),
        ({"segment": ["bargain", "loyal"]}, Facts("known", segment="loyal"), True),
        ({"segment": "bargain"}, Facts("known"), False),
        ({"country": "us"}, Facts("new", country="US"), True),  # codes compare upper-case
        ({"country": ["DE", "FR"]}, Facts("new", country="US"), False),
        ({"page": "checkout"}, Facts("new", page="checkout"), True),
        ({"category": "hats", "device_type": "mobile"}, Facts("new", category="hats"), False),
        ({"maturity": ["new", "returning"]}, Facts("returning"), True),
    ],
)
def test_conditions(when, facts, holds) -> None:
    rules = parse_rules(_doc(when=when))
    assert (rules.decide(facts).fired == ["r1"]) is holds


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_doc(colour="red"), "rule 'r1', key 'colour': unknown key"),
        (
            _doc(when={"maturity": "ancient"}),
            "rule 'r1', key 'when.maturity': 'ancient' is not one of",
        ),
        (_doc(when={"weather": "sunny"}), "rule 'r1', key 'when.weather': unknown key"),
        (_doc(when={"interactions": {"min": -1}}), "key 'when.interactions.min': expected a count"),
        (
            _doc(when={"interactions": {"min": 5, "max": 2}}),
            "key 'when.interactions': min 5 is above max 2",
        ),
        (_doc(when={"interactions": {"least": 1}}), "key 'when.interactions.least': unknown key"),
        (_doc(when={"device_type": "fridge"}), "key 'when.device_type': 'fridge' is not one of"),
        (_doc(when={"country": []}), "key 'when.country': expected a non-empty text"),
        (_doc(when="always"), "key 'when': expected a mapping"),
        (_doc(then={"source": "magic"}), "key 'then.source': 'magic' is not one of"),
        (_doc(then={"sauce": "model"}), "key 'then.sauce': unknown key"),
        (_doc(then={}), "key 'then': expected a non-empty mapping"),
        (
            _doc(then={"filters": ["exclude_everything"]}),
            "key 'then.filters': 'exclude_everything'",
        ),
        (_doc(then={"diversity": {"max_per_category": 0}}), "then.diversity.max_per_category"),
        (_doc(then={"boost": [{"category": "hats", "factor": -1}]}), "then.boost[0].factor"),
        (_doc(then={"slots": [{"source": "model", "positions": [0]}]}), "then.slots[0].source"),
        (
            _doc(then={"slots": [{"source": "popular", "positions": "first"}]}),
            "then.slots[0].positions",
        ),
        (_doc(then={"variant": "blue"}), "key 'then.variant'"),
        (_doc(then={"context_order": ["page"]}), "key 'then.context_order': 'page' is not one of"),
        ({"rules": [{"when": {}, "then": {"source": "model"}}]}, "rule '#1', key 'name'"),
        (
            {"rules": [{"name": "x", "then": {"source": "model"}}] * 2},
            "rule 'x', key 'name': the name is used",
        ),
        ({"rules": []}, "'rules' must be a non-empty list"),
        ({"version": 2, "rules": []}, "version 2 is not supported"),
        ({"rules": [], "extra": 1}, "unknown key 'extra'"),
    ],
)
def test_invalid_rules_name_the_rule_and_key(document, message) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(document)
    assert message in str(caught.value)


def test_rules_file_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: all-popular\n    when: {}\n    then: {source: popular}\n")
    rules = load_rules(path)
    assert rules.origin == str(path)
    assert rules.decide(Facts("known")).source == "popular"


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [unclosed\n")
    with pytest.raises(RulesError, match="broken.yaml: not valid YAML"):
        load_rules(broken)
