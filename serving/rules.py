"""The declarative rules engine: which candidates a request gets, and what is done to them.

A rules file (YAML, ``serving/rules.yaml`` by default, ``$TAILOR_RULES`` to override) is a list of
rules, each ``{name, description?, when, then}``. Every rule whose ``when`` holds *fires* (and is
listed in the response's ``rules_fired``); what it does depends on the action:

- ``source``, ``context_order``, ``diversity`` and each ``variant`` slot: the first firing rule
  that sets it wins (put specific rules before general ones);
- ``filters``, ``boost`` and ``slots`` add up over all firing rules.

``when`` keys (all must hold; an empty ``when`` always holds): ``maturity`` (``new``: nothing known
about the person; ``returning``: not in the model, but the feature store has their activity;
``known``: in the model), ``interactions`` (``{min, max}`` on the person's number of items in the
model's history), ``segment``, ``persona`` (holds when any of the person's real-time personas,
see :mod:`features.personas`, is listed), and the request context ``country``, ``device_type``,
``page``, ``category`` (a value or a list of values).

Files are validated when loaded: an unknown key, a bad value or a bad condition raises
:class:`RulesError` naming the rule and the key, so a broken file never reaches traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.personas import SEPARATOR
from features.schema import DEVICE_TYPES
from features.yaml_files import read_yaml
from models.errors import SpecError

SOURCES = (
    "model",
    "popular",
    "popular_in_context",
    "popular_in_country",
    "popular_in_device_type",
    "popular_in_category",
)
FILTERS = ("exclude_purchased", "exclude_seen", "exclude_given")
MATURITY = ("new", "returning", "known")
CONTEXT_KEYS = ("country", "device_type", "page", "category")
#: The context columns ``popular_in_context`` can use, in its default order of preference.
CONTEXT_ORDER = ("category", "country", "device_type")
CONTEXT_CATEGORY = "@context"

_TOP_KEYS = ("version", "rules")
_RULE_KEYS = ("name", "description", "when", "then")
_WHEN_KEYS = ("maturity", "interactions", "segment", "persona", *CONTEXT_KEYS)
_THEN_KEYS = ("source", "context_order", "filters", "boost", "slots", "variant", "diversity")


class RulesError(SpecError):
    """A rules file is invalid; the message names the rule and the key."""


@dataclass(frozen=True)
class Facts:
    """What the rules may look at for one request."""

    maturity: str
    interactions: int = 0
    segment: str | None = None
    personas: tuple[str, ...] = ()  # the person's real-time personas, best first
    country: str | None = None
    device_type: str | None = None
    page: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Boost:
    category: str  # a category name, or CONTEXT_CATEGORY for the request's category
    factor: float
    rule: str


@dataclass(frozen=True)
class Slot:
    source: str
    positions: tuple[int, ...]
    rule: str


@dataclass(frozen=True)
class Rule:
    name: str
    when: Mapping[str, Any]
    then: Mapping[str, Any]
    description: str = ""

    def holds(self, facts: Facts) -> bool:
        for key, wanted in self.when.items():
            if key == "interactions":
                low, high = wanted.get("min"), wanted.get("max")
                if (low is not None and facts.interactions < low) or (
                    high is not None and facts.interactions > high
                ):
                    return False
            elif key == "persona":
                if not any(name in wanted for name in facts.personas):
                    return False
            elif getattr(facts, key) not in wanted:  # wanted is a tuple of allowed values
                return False
        return True


@dataclass
class Decision:
    """The merged actions of every firing rule."""

    source: str = "popular"
    source_rule: str | None = None
    context_order: tuple[str, ...] = CONTEXT_ORDER
    filters: dict[str, str] = field(default_factory=dict)  # filter -> rule that asked for it
    boosts: list[Boost] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    variant: dict[str, str] = field(default_factory=dict)
    max_per_category: int | None = None
    fired: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    origin: str = "<memory>"

    def decide(self, facts: Facts) -> Decision:
        decision = Decision()
        chosen: set[str] = set()
        for rule in self.rules:
            if not rule.holds(facts):
                continue
            decision.fired.append(rule.name)
            then = rule.then
            if "source" in then and "source" not in chosen:
                chosen.add("source")
                decision.source, decision.source_rule = then["source"], rule.name
            if "context_order" in then and "context_order" not in chosen:
                chosen.add("context_order")
                decision.context_order = then["context_order"]
            if "diversity" in then and "diversity" not in chosen:
                chosen.add("diversity")
                decision.max_per_category = then["diversity"]["max_per_category"]
            for name in then.get("filters", ()):
                decision.filters.setdefault(name, rule.name)
            decision.boosts += [Boost(c, f, rule.name) for c, f in then.get("boost", ())]
            decision.slots += [Slot(s, p, rule.name) for s, p in then.get("slots", ())]
            for slot, value in then.get("variant", {}).items():
                decision.variant.setdefault(slot, value)
        return decision


# ----------------------------------------------------------------------------- loading


def _fail(rule: str, key: str, why: str) -> RulesError:
    return RulesError(f"rule {rule!r}, key {key!r}: {why}")


def _unknown(rule: str, where: str, given: Mapping, allowed: tuple[str, ...]) -> None:
    extra = [k for k in given if k not in allowed]
    if extra:
        raise _fail(rule, f"{where}{extra[0]}", f"unknown key; allowed: {', '.join(allowed)}")


def _values(rule: str, key: str, raw: Any, allowed: tuple[str, ...] | None = None) -> tuple:
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise _fail(rule, key, f"expected a non-empty text or a list of texts, got {raw!r}")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise _fail(rule, key, f"{bad[0]!r} is not one of {', '.join(allowed)}")
    if key == "when.country":
        items = [v.upper() for v in items]
    return tuple(items)


def _when(rule: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(rule, "when", f"expected a mapping of conditions, got {raw!r}")
    _unknown(rule, "when.", raw, _WHEN_KEYS)
    when: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"when.{key}"
        if key == "interactions":
            if not isinstance(value, dict) or not value:
                raise _fail(rule, where, f"expected {{min: n, max: n}}, got {value!r}")
            _unknown(rule, f"{where}.", value, ("min", "max"))
            for bound, number in value.items():
                if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                    raise _fail(rule, f"{where}.{bound}", f"expected a count >= 0, got {number!r}")
            if value.get("min", 0) > value.get("max", value.get("min", 0)):
                raise _fail(rule, where, f"min {value['min']} is above max {value['max']}")
            when[key] = dict(value)
        else:
            allowed = {"maturity": MATURITY, "device_type": DEVICE_TYPES}.get(key)
            when[key] = _values(rule, where, value, allowed)
            if key == "persona" and any(SEPARATOR in name for name in when[key]):
                raise _fail(
                    rule, where, f"one persona name per entry (no {SEPARATOR!r}): {value!r}"
                )
    return when


def _then(rule: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(rule, "then", f"expected a non-empty mapping of actions, got {raw!r}")
    _unknown(rule, "then.", raw, _THEN_KEYS)
    then: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"then.{key}"
        if key == "source":
            then[key] = _values(rule, where, value, SOURCES)[0]
        elif key == "context_order":
            then[key] = _values(rule, where, value, CONTEXT_ORDER)
        elif key == "filters":
            then[key] = _values(rule, where, value, FILTERS)
        elif key == "variant":
            if not isinstance(value, dict) or not value:
                raise _fail(rule, where, f"expected {{slot: variant}}, got {value!r}")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise _fail(rule, where, "slot and variant names must be texts")
            then[key] = dict(value)
        elif key == "diversity":
            if not isinstance(value, dict):
                raise _fail(rule, where, f"expected {{max_per_category: n}}, got {value!r}")
            _unknown(rule, f"{where}.", value, ("max_per_category",))
            cap = value.get("max_per_category")
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                raise _fail(rule, f"{where}.max_per_category", f"expected n >= 1, got {cap!r}")
            then[key] = {"max_per_category": cap}
        elif key == "boost":
            then[key] = tuple(
                _boost(rule, where, i, entry) for i, entry in enumerate(_list(rule, where, value))
            )
        else:  # slots
            then[key] = tuple(
                _slot(rule, where, i, entry) for i, entry in enumerate(_list(rule, where, value))
            )
    return then


def _list(rule: str, where: str, value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise _fail(rule, where, f"expected a non-empty list, got {value!r}")
    return value


def _boost(rule: str, where: str, i: int, entry: Any) -> tuple[str, float]:
    where = f"{where}[{i}]"
    if not isinstance(entry, dict):
        raise _fail(rule, where, f"expected {{category: c, factor: f}}, got {entry!r}")
    _unknown(rule, f"{where}.", entry, ("category", "factor"))
    category, factor = entry.get("category"), entry.get("factor")
    if not isinstance(category, str) or not category:
        raise _fail(rule, f"{where}.category", f"expected a category or {CONTEXT_CATEGORY!r}")
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 0:
        raise _fail(rule, f"{where}.factor", f"expected a number > 0, got {factor!r}")
    return category, float(factor)


def _slot(rule: str, where: str, i: int, entry: Any) -> tuple[str, tuple[int, ...]]:
    where = f"{where}[{i}]"
    if not isinstance(entry, dict):
        raise _fail(rule, where, f"expected {{source: s, positions: [n, ...]}}, got {entry!r}")
    _unknown(rule, f"{where}.", entry, ("source", "positions"))
    source = _values(rule, f"{where}.source", entry.get("source"), SOURCES)[0]
    if source == "model":
        raise _fail(rule, f"{where}.source", "a slot takes a popularity source, not the model")
    positions = entry.get("positions")
    if (
        not isinstance(positions, list)
        or not positions
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions)
    ):
        raise _fail(
            rule, f"{where}.positions", f"expected a list of 0-based ranks, got {positions!r}"
        )
    return source, tuple(sorted(set(positions)))


def parse_rules(data: Any, origin: str = "<memory>") -> RuleSet:
    """Validate a parsed rules document (``{version: 1, rules: [...]}``) into a :class:`RuleSet`."""
    if not isinstance(data, dict):
        raise RulesError(f"{origin}: expected a mapping with 'version' and 'rules', got {data!r}")
    extra = [k for k in data if k not in _TOP_KEYS]
    if extra:
        raise RulesError(f"{origin}: unknown key {extra[0]!r}; allowed: {', '.join(_TOP_KEYS)}")
    if data.get("version", 1) != 1:
        raise RulesError(f"{origin}: version {data['version']!r} is not supported (only 1)")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulesError(f"{origin}: 'rules' must be a non-empty list")
    rules: list[Rule] = []
    for number, raw in enumerate(raw_rules, start=1):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"#{number}"
        if not isinstance(raw, dict):
            raise _fail(label, "<rule>", f"expected a mapping, got {raw!r}")
        _unknown(label, "", raw, _RULE_KEYS)
        if label.startswith("#"):
            raise _fail(label, "name", "every rule needs a non-empty name")
        if any(r.name == label for r in rules):
            raise _fail(label, "name", "the name is used by an earlier rule")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise _fail(label, "description", "expected text")
        rules.append(
            Rule(label, _when(label, raw.get("when")), _then(label, raw.get("then")), description)
        )
    return RuleSet(tuple(rules), origin)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file; ``None`` reads the packaged ``serving/rules.yaml``."""
    data, origin = read_yaml(path, "serving", "rules.yaml", RulesError, "rules file")
    return parse_rules(data, origin)
