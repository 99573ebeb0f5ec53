"""Loading and validating persona rule files (``features/personas.yaml``).

The grammar is described in :mod:`features.personas`; the file is a pydantic model (unknown keys
forbidden). Every error names the file, the rule, the key, the offending value and what is
allowed, so a broken file never reaches ``/events``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from features.personas import SEPARATOR, STATE_FIELDS, PersonaConfig, PersonaRule
from features.settings import env_name
from features.yaml_files import (
    Bounds,
    FileModel,
    Invalid,
    Text,
    read_yaml,
    unique_names,
    validate,
)
from models.errors import SpecError


class PersonaRulesError(SpecError):
    """A persona rules file is invalid; the message names the rule, the key and the value."""


StateField = Literal[STATE_FIELDS]
Fields = Annotated[
    tuple[StateField, ...],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    Field(min_length=1),
]
_KINDS = ("share", "saturate", "all", "any")


class _Score(FileModel):
    """``{share: F, over: G}``, ``{saturate: F, at: n}``, ``{all: [...]}`` or ``{any: [...]}``."""

    share: Fields = None  # type: ignore[assignment]
    over: Fields = None  # type: ignore[assignment]
    saturate: Fields = None  # type: ignore[assignment]
    at: Annotated[float, Field(gt=0)] = None  # type: ignore[assignment]
    all: Annotated[tuple[_Score, ...], Field(min_length=1)] = None  # type: ignore[assignment]
    any: Annotated[tuple[_Score, ...], Field(min_length=1)] = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_kind(self) -> _Score:
        given = self.model_fields_set
        kinds = [kind for kind in _KINDS if kind in given]
        if len(kinds) != 1:
            raise Invalid(f"expected exactly one score; allowed: {', '.join(_KINDS)}")
        companion = {"share": "over", "saturate": "at"}.get(kinds[0])
        if companion and companion not in given:
            raise Invalid(f"a {kinds[0]} needs {companion!r}", companion, None)
        allowed = (kinds[0], companion) if companion else (kinds[0],)
        extra = sorted(given - set(allowed))
        if extra:
            why = f"not used by a {kinds[0]} score; allowed: {', '.join(allowed)}"
            raise Invalid(why, extra[0], getattr(self, extra[0]))
        return self

    def term(self) -> tuple:
        """The score as :class:`features.personas.PersonaRule` holds it."""
        if self.share is not None:
            return "share", self.share, self.over
        if self.saturate is not None:
            return "saturate", self.saturate, float(self.at)
        kind = "all" if self.all is not None else "any"
        return kind, tuple(t.term() for t in getattr(self, kind))


class _PersonaRule(FileModel):
    name: Text
    description: str = ""
    when: Annotated[
        dict[StateField, Bounds], BeforeValidator(lambda v: {} if v is None else v)
    ] = {}
    score: _Score
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.5

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not name.strip() or SEPARATOR in name:
            raise Invalid(f"needs a non-empty name without {SEPARATOR!r}")
        return name


def _price_tier(cuts: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= cuts[0] <= cuts[1]:
        raise Invalid(
            "expected [budget_max, high_end_above] with 0 <= budget_max <= high_end_above"
        )
    return cuts


class _PersonaFile(FileModel):
    version: Literal[1] = 1
    price_tiers: Annotated[
        dict[str, Annotated[tuple[float, float], AfterValidator(_price_tier)]],
        BeforeValidator(lambda v: {} if v is None else {str(k): c for k, c in v.items()}
                        if isinstance(v, dict) else v),
    ] = {}  # fmt: skip
    deal_words: tuple[Text, ...] = ()
    personas: Annotated[tuple[_PersonaRule, ...], Field(min_length=1)]

    @field_validator("personas")
    @classmethod
    def _unique_names(cls, rules: tuple[_PersonaRule, ...]) -> tuple[_PersonaRule, ...]:
        return unique_names(rules, "needs a unique name: used by an earlier rule")


def parse_personas(data: Any, origin: str = "<memory>") -> PersonaConfig:
    """Validate a parsed persona document into a :class:`PersonaConfig`; a problem raises
    :class:`PersonaRulesError` naming the file, the rule, the key, the value and what is
    allowed."""
    document = validate(
        _PersonaFile, data, PersonaRulesError, origin, entries="personas", entry="persona rule"
    )
    rules = tuple(
        PersonaRule(
            rule.name,
            rule.score.term(),
            rule.threshold,
            {field: (b.min, b.max) for field, b in rule.when.items()},
            rule.description,
        )
        for rule in document.personas
    )
    return PersonaConfig(
        rules=rules,
        price_tiers={category: tuple(cuts) for category, cuts in document.price_tiers.items()},
        deal_words=frozenset(word.lower() for word in document.deal_words),
        origin=origin,
    )


def load_personas(path: str | Path | None = None) -> PersonaConfig:
    """Read and validate a persona file; ``None`` reads the packaged ``features/personas.yaml``."""
    data, origin = _read(path)
    return parse_personas(data, origin)


def _read(path: str | Path | None) -> tuple[Any, str]:
    return read_yaml(
        path, PersonaRulesError, "persona rules file", package="features", name="personas.yaml"
    )


#: Environment variable naming a persona rules file to use instead of the packaged one (the
#: ``personas`` setting: the service and ``tailor features build`` load
#: ``load_personas(settings.personas)``, so both fold with the same file).
PERSONAS_ENV = env_name("personas")


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
