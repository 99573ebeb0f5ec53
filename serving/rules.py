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

Files are validated when loaded (a pydantic model per section, unknown keys forbidden): an unknown
key, a bad value or a bad condition raises :class:`RulesError` naming the file, the rule, the key,
the value and what is allowed, so a broken file never reaches traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from features.personas import SEPARATOR
from features.schema import DEVICE_TYPES
from features.yaml_files import (
    Bounds,
    Count,
    FileModel,
    Invalid,
    Text,
    read_yaml,
    unique_names,
    validate,
)
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
#: The context columns ``popular_in_context`` can use, in its default order of preference.
CONTEXT_ORDER = ("category", "country", "device_type")
CONTEXT_CATEGORY = "@context"


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


# ----------------------------------------------------------------------------- the file


def _as_list(value: Any) -> Any:
    """A single value where a list is allowed reads as a list of one."""
    return [value] if isinstance(value, str) else value


Texts = Annotated[tuple[Text, ...], BeforeValidator(_as_list), Field(min_length=1)]


def _upper(codes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(code.upper() for code in codes)


class _When(FileModel):
    maturity: Annotated[
        tuple[Literal[MATURITY], ...], BeforeValidator(_as_list), Field(min_length=1)
    ] = None  # type: ignore[assignment]
    interactions: Bounds = None  # type: ignore[assignment]
    segment: Texts = None  # type: ignore[assignment]
    persona: Texts = None  # type: ignore[assignment]
    country: Annotated[Texts, AfterValidator(_upper)] = None  # type: ignore[assignment]
    device_type: Annotated[
        tuple[Literal[DEVICE_TYPES], ...], BeforeValidator(_as_list), Field(min_length=1)
    ] = None  # type: ignore[assignment]
    page: Texts = None  # type: ignore[assignment]
    category: Texts = None  # type: ignore[assignment]

    @field_validator("persona")
    @classmethod
    def _one_persona_each(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for i, name in enumerate(names):
            if SEPARATOR in name:
                raise Invalid(f"one persona name per entry (no {SEPARATOR!r})", (i,), name)
        return names


class _Boost(FileModel):
    category: Text  # a category name, or CONTEXT_CATEGORY for the request's category
    factor: Annotated[float, Field(gt=0)]


class _Slot(FileModel):
    source: Literal[SOURCES]
    positions: Annotated[tuple[Count, ...], Field(min_length=1)]  # 0-based ranks

    @field_validator("source")
    @classmethod
    def _popularity_only(cls, source: str) -> str:
        if source == "model":
            allowed = ", ".join(SOURCES[1:])
            raise Invalid(f"a slot takes a popularity source, not the model; allowed: {allowed}")
        return source


class _Diversity(FileModel):
    max_per_category: Annotated[int, Field(ge=1)]


class _Then(FileModel):
    source: Literal[SOURCES] = None  # type: ignore[assignment]
    context_order: Annotated[
        tuple[Literal[CONTEXT_ORDER], ...], BeforeValidator(_as_list), Field(min_length=1)
    ] = None  # type: ignore[assignment]
    filters: Annotated[
        tuple[Literal[FILTERS], ...], BeforeValidator(_as_list), Field(min_length=1)
    ] = None  # type: ignore[assignment]
    boost: Annotated[tuple[_Boost, ...], Field(min_length=1)] = None  # type: ignore[assignment]
    slots: Annotated[tuple[_Slot, ...], Field(min_length=1)] = None  # type: ignore[assignment]
    variant: Annotated[dict[Text, Text], Field(min_length=1)] = None  # type: ignore[assignment]
    diversity: _Diversity = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _some_action(self) -> _Then:
        if not self.model_fields_set:
            raise Invalid(f"expected at least one action; allowed: {', '.join(_Then.model_fields)}")
        return self


class _Rule(FileModel):
    name: Text
    description: str = ""
    when: Annotated[_When, BeforeValidator(lambda v: {} if v is None else v)] = _When()
    then: _Then


class _RulesFile(FileModel):
    version: Literal[1] = 1
    rules: Annotated[tuple[_Rule, ...], Field(min_length=1)]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[_Rule, ...]) -> tuple[_Rule, ...]:
        return unique_names(rules)


def _conditions(when: _When) -> dict[str, Any]:
    conditions = {
        key: getattr(when, key) for key in _When.model_fields if key in when.model_fields_set
    }
    if "interactions" in conditions:
        conditions["interactions"] = conditions["interactions"].model_dump(exclude_unset=True)
    return conditions


def _actions(then: _Then) -> dict[str, Any]:
    actions = {
        key: getattr(then, key) for key in _Then.model_fields if key in then.model_fields_set
    }
    if "boost" in actions:
        actions["boost"] = tuple((b.category, b.factor) for b in actions["boost"])
    if "slots" in actions:
        actions["slots"] = tuple((s.source, tuple(sorted(set(s.positions)))) for s in then.slots)
    if "diversity" in actions:
        actions["diversity"] = {"max_per_category": then.diversity.max_per_category}
    if "variant" in actions:
        actions["variant"] = dict(then.variant)
    return actions


def parse_rules(data: Any, origin: str = "<memory>") -> RuleSet:
    """Validate a parsed rules document (``{version: 1, rules: [...]}``) into a :class:`RuleSet`;
    a problem raises :class:`RulesError` naming the file, the rule, the key, the value and what
    is allowed."""
    document = validate(_RulesFile, data, RulesError, origin, entries="rules", entry="rule")
    rules = tuple(
        Rule(rule.name, _conditions(rule.when), _actions(rule.then), rule.description)
        for rule in document.rules
    )
    return RuleSet(rules, origin)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file; ``None`` reads the packaged ``serving/rules.yaml``."""
    data, origin = read_yaml(path, RulesError, "rules file", package="serving", name="rules.yaml")
    return parse_rules(data, origin)
