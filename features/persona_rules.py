"""Loading and validating persona rule files (``features/personas.yaml``).

The grammar is described in :mod:`features.personas`. Every error names the rule, the key, the
offending value and what is allowed, so a broken file never reaches ``/events``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from features.personas import SEPARATOR, STATE_FIELDS, PersonaConfig, PersonaRule
from features.yaml_files import read_yaml
from models.errors import SpecError


class PersonaRulesError(SpecError):
    """A persona rules file is invalid; the message names the rule, the key and the value."""


_TOP_KEYS = ("version", "price_tiers", "deal_words", "personas")
_RULE_KEYS = ("name", "description", "when", "score", "threshold")
_TERMS = ("share", "saturate", "all", "any")


def _fail(rule: str, key: str, value: Any, why: str) -> PersonaRulesError:
    return PersonaRulesError(f"persona rule {rule!r}, key {key!r}, value {value!r}: {why}")


def _field_names(rule: str, key: str, raw: Any) -> tuple[str, ...]:
    names = raw if isinstance(raw, list) else [raw]
    if not names or not all(isinstance(n, str) for n in names):
        raise _fail(rule, key, raw, "expected a state field or a list of state fields")
    for name in names:
        if name not in STATE_FIELDS:
            raise _fail(rule, key, name, f"unknown state field; allowed: {', '.join(STATE_FIELDS)}")
    return tuple(names)


def _count(rule: str, key: str, raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise _fail(rule, key, raw, "expected a whole number >= 0")
    return raw


def _term(rule: str, key: str, raw: Any) -> tuple:
    if not isinstance(raw, dict) or not raw:
        raise _fail(rule, key, raw, f"expected a mapping with one of: {', '.join(_TERMS)}")
    kind = next((k for k in _TERMS if k in raw), None)
    if kind is None:
        raise _fail(rule, key, raw, f"unknown score; allowed: {', '.join(_TERMS)}")
    allowed = {"share": ("share", "over"), "saturate": ("saturate", "at")}.get(kind, (kind,))
    extra = [k for k in raw if k not in allowed]
    if extra:
        raise _fail(rule, f"{key}.{extra[0]}", raw[extra[0]], f"unknown key; allowed: {allowed}")
    if kind == "share":
        if "over" not in raw:
            raise _fail(rule, f"{key}.over", None, "a share needs 'over' (its denominator)")
        of = _field_names(rule, f"{key}.share", raw["share"])
        return kind, of, _field_names(rule, f"{key}.over", raw["over"])
    if kind == "saturate":
        at = raw.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool) or at <= 0:
            raise _fail(rule, f"{key}.at", at, "expected a number > 0")
        return kind, _field_names(rule, f"{key}.saturate", raw["saturate"]), float(at)
    terms = raw[kind]
    if not isinstance(terms, list) or not terms:
        raise _fail(rule, f"{key}.{kind}", terms, "expected a non-empty list of scores")
    return kind, tuple(_term(rule, f"{key}.{kind}[{i}]", t) for i, t in enumerate(terms))


def _when(rule: str, raw: Any) -> dict[str, tuple[int | None, int | None]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(rule, "when", raw, "expected {state_field: {min: n, max: n}}")
    when = {}
    for name, bounds in raw.items():
        key = f"when.{name}"
        _field_names(rule, "when", name)
        if not isinstance(bounds, dict) or not bounds:
            raise _fail(rule, key, bounds, "expected {min: n, max: n}")
        extra = [k for k in bounds if k not in ("min", "max")]
        if extra:
            raise _fail(
                rule, f"{key}.{extra[0]}", bounds[extra[0]], "unknown key; allowed: min, max"
            )
        low = _count(rule, f"{key}.min", bounds["min"]) if "min" in bounds else None
        high = _count(rule, f"{key}.max", bounds["max"]) if "max" in bounds else None
        if low is not None and high is not None and low > high:
            raise _fail(rule, key, bounds, "min is above max")
        when[name] = (low, high)
    return when


def _rule(number: int, raw: Any, seen: set[str]) -> PersonaRule:
    name = raw.get("name") if isinstance(raw, dict) else None
    label_ = name if isinstance(name, str) and name.strip() else f"#{number}"
    if not isinstance(raw, dict):
        raise _fail(label_, "<rule>", raw, "expected a mapping")
    extra = [k for k in raw if k not in _RULE_KEYS]
    if extra:
        raise _fail(label_, extra[0], raw[extra[0]], f"unknown key; allowed: {_RULE_KEYS}")
    if label_.startswith("#") or SEPARATOR in label_ or label_ in seen:
        why = "needs a unique non-empty name without " + repr(SEPARATOR)
        raise _fail(label_, "name", name, why)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail(label_, "description", description, "expected text")
    if "score" not in raw:
        raise _fail(label_, "score", None, "every rule needs a score")
    threshold = raw.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise _fail(label_, "threshold", threshold, "expected a number in (0, 1]")
    if not 0 < threshold <= 1:
        raise _fail(label_, "threshold", threshold, "expected a number in (0, 1]")
    score = _term(label_, "score", raw["score"])
    return PersonaRule(label_, score, float(threshold), _when(label_, raw.get("when")), description)


def _price_tiers(raw: Any, origin: str) -> dict[str, tuple[float, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PersonaRulesError(f"{origin}: price_tiers must map category -> [budget, high_end]")
    tiers = {}
    for category, cuts in raw.items():
        ok = isinstance(cuts, list) and len(cuts) == 2
        ok = ok and all(isinstance(c, int | float) and not isinstance(c, bool) for c in cuts)
        if not ok or cuts[0] > cuts[1] or cuts[0] < 0:
            raise PersonaRulesError(
                f"{origin}: price_tiers.{category} is {cuts!r}; expected [budget_max, "
                "high_end_above] with 0 <= budget_max <= high_end_above"
            )
        tiers[str(category)] = (float(cuts[0]), float(cuts[1]))
    return tiers


def parse_personas(data: Any, origin: str = "<memory>") -> PersonaConfig:
    """Validate a parsed persona document into a :class:`PersonaConfig`."""
    if not isinstance(data, dict):
        raise PersonaRulesError(f"{origin}: expected a mapping with 'personas', got {data!r}")
    extra = [k for k in data if k not in _TOP_KEYS]
    if extra:
        raise PersonaRulesError(
            f"{origin}: unknown key {extra[0]!r}; allowed: {', '.join(_TOP_KEYS)}"
        )
    if data.get("version", 1) != 1:
        raise PersonaRulesError(f"{origin}: version {data['version']!r} is not supported (only 1)")
    words = data.get("deal_words", [])
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise PersonaRulesError(f"{origin}: deal_words must be a list of words, got {words!r}")
    raw_rules = data.get("personas")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PersonaRulesError(f"{origin}: 'personas' must be a non-empty list of rules")
    rules: list[PersonaRule] = []
    for number, raw in enumerate(raw_rules, start=1):
        rules.append(_rule(number, raw, {r.name for r in rules}))
    return PersonaConfig(
        rules=tuple(rules),
        price_tiers=_price_tiers(data.get("price_tiers"), origin),
        deal_words=frozenset(w.lower() for w in words),
        origin=origin,
    )


def load_personas(path: str | Path | None = None) -> PersonaConfig:
    """Read and validate a persona file; ``None`` reads the packaged ``features/personas.yaml``."""
    data, origin = _read(path)
    return parse_personas(data, origin)


def _read(path: str | Path | None) -> tuple[Any, str]:
    return read_yaml(path, "features", "personas.yaml", PersonaRulesError, "persona rules file")


#: Environment variable naming a persona rules file to use instead of the packaged one.
PERSONAS_ENV = "TAILOR_PERSONAS"


def configured_personas() -> PersonaConfig:
    """The rules ``$TAILOR_PERSONAS`` names, else the packaged ones (read when called, so the
    service and ``tailor features build`` fold with the same file)."""
    import os

    return load_personas(os.environ.get(PERSONAS_ENV) or None)


def with_price_tiers(cuts: dict[str, list[float]], path: str | Path | None = None) -> str:
    """The persona file at ``path`` (the packaged one when None) as YAML text with its
    ``price_tiers`` replaced by ``cuts`` (see :func:`features.personas.price_cuts`), checked by
    the same validation as any persona file. Comments are not kept."""
    data, origin = _read(path)
    if not isinstance(data, dict):
        raise PersonaRulesError(f"{origin}: expected a mapping at the top level")
    data["price_tiers"] = {category: list(pair) for category, pair in sorted(cuts.items())}
    parse_personas(data, origin)  # the new cuts must pass the file's own checks
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
