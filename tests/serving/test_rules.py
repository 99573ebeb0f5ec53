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
        (
            _doc(colour="red"),
            "rule 'r1', key 'colour', value 'red': unknown key; allowed: name: str",
        ),
        (
            _doc(when={"maturity": "ancient"}),
            "rule 'r1', key 'when.maturity[0]', value 'ancient': not one of 'new'",
        ),
        (
            _doc(when={"weather": "sunny"}),
            "rule 'r1', key 'when.weather', value 'sunny': unknown key; allowed: maturity",
        ),
        (
            _doc(when={"interactions": {"min": -1}}),
            "key 'when.interactions.min', value -1: expected an integer >= 0",
        ),
        (
            _doc(when={"interactions": {"min": 5, "max": 2}}),
            "key 'when.interactions', value {'min': 5, 'max': 2}: min 5 is above max 2",
        ),
        (
            _doc(when={"interactions": {"least": 1}}),
            "key 'when.interactions.least', value 1: unknown key; allowed: min: int, max: int",
        ),
        (
            _doc(when={"device_type": "fridge"}),
            "key 'when.device_type[0]', value 'fridge': not one of 'desktop'",
        ),
        (_doc(when={"country": []}), "key 'when.country', value []: expected a non-empty list"),
        (_doc(when="always"), "key 'when', value 'always': expected a mapping"),
        (_doc(then={"source": "magic"}), "key 'then.source', value 'magic': not one of 'model'"),
        (
            _doc(then={"sauce": "model"}),
            "key 'then.sauce', value 'model': unknown key; allowed: source",
        ),
        (_doc(then={}), "key 'then', value {}: expected at least one action; allowed: source"),
        (
            _doc(then={"filters": ["exclude_everything"]}),
            "key 'then.filters[0]', value 'exclude_everything': not one of",
        ),
        (_doc(then={"diversity": {"max_per_category": 0}}), "then.diversity.max_per_category"),
        (_doc(then={"boost": [{"category": "hats", "factor": -1}]}), "then.boost[0].factor"),
        (_doc(then={"slots": [{"source": "model", "positions": [0]}]}), "then.slots[0].source"),
        (
            _doc(then={"slots": [{"source": "popular", "positions": "first"}]}),
            "then.slots[0].positions",
        ),
        (_doc(then={"variant": "blue"}), "key 'then.variant', value 'blue': expected a mapping"),
        (
            _doc(then={"context_order": ["page"]}),
            "key 'then.context_order[0]', value 'page': not one of",
        ),
        (
            {"rules": [{"when": {}, "then": {"source": "model"}}]},
            "<memory>: rule #1, key 'name': missing (required)",
        ),
        (
            {"rules": [{"name": "x", "then": {"source": "model"}}] * 2},
            "rule 'x', key 'name', value 'x': the name is used",
        ),
        ({"rules": []}, "<memory>: key 'rules', value []: expected a non-empty list"),
        ({"version": 2, "rules": []}, "key 'version', value 2: not one of 1"),
        ({"rules": [], "extra": 1}, "key 'extra', value 1: unknown key; allowed: version"),
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


def test_a_bad_rules_file_names_the_file_rule_key_value_and_allowed(tmp_path: Path) -> None:
    """issue #10 (one shape): the rules file is a pydantic model; its errors name the file, the
    rule, the key path, the value and the allowed values, in the shape every spec file uses."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: ok\n    then: {source: model}\n"
        "  - name: budget-deals\n    when: {maturity: [new, ancient]}\n    then: {source: model}\n"
    )
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value) == (
        f"{path}: rule 'budget-deals', key 'when.maturity[1]', value 'ancient': "
        "not one of 'new', 'returning' or 'known'"
    )
