"""The consent policy: purposes, ``policy_version`` and the regime of each country (issue #12).

One YAML file (the packaged ``features/consent/policy.yaml``; a workspace overrides it with
``<home>/consent_policy.yaml`` or the file of the ``TAILOR_CONSENT_POLICY`` setting), read by the
one YAML reader into :class:`ConsentPolicy` (unknown keys are errors naming the key).

Regimes: ``opt-in`` (EU/EEA, UK: nothing but ``necessary`` until a choice is recorded) and
``opt-out`` (US: allowed until refused; ``Sec-GPC: 1`` refuses ``marketing``). A country that is
not listed, or no country at all, gets ``default_regime`` (``opt-in``, the safe one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from features.yaml_files import FileModel, Invalid, Text, read_yaml, validate
from models.errors import SpecError

#: The purpose that is always on (what the site needs to work).
NECESSARY = "necessary"
#: The purposes every policy has: Tailor's enforcement points check these names.
PURPOSES = (NECESSARY, "analytics", "personalization", "marketing")
OPT_IN, OPT_OUT = "opt-in", "opt-out"
REGIMES = (OPT_IN, OPT_OUT)
#: The purpose a ``Sec-GPC: 1`` header refuses under the opt-out regime ("sale/share").
GPC_PURPOSE = "marketing"
#: Name of a workspace's own policy file inside its home folder.
WORKSPACE_FILE = "consent_policy.yaml"

_PURPOSE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class PolicyError(SpecError):
    """A consent policy file that cannot be read or does not validate."""


class Purpose(FileModel):
    """One purpose: a plain description shown on the consent page."""

    description: Text


class ConsentPolicy(FileModel):
    """A validated policy file (see the module docstring)."""

    policy_version: Annotated[str, Field(min_length=1, max_length=64)]
    policy_url: Text = "/privacy"
    purposes: dict[str, Purpose]
    regimes: dict[Literal[REGIMES], tuple[str, ...]]
    default_regime: Literal[REGIMES] = OPT_IN
    _country_regime: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("policy_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads 2026-12-01 as a date and 2 as a number; the version is text either way
        return value if isinstance(value, str) or value is None else str(value)

    @field_validator("purposes")
    @classmethod
    def _purpose_names(cls, purposes: dict[str, Purpose]) -> dict[str, Purpose]:
        for name in purposes:
            if not _PURPOSE_NAME.match(name):
                raise Invalid("a purpose name is lower-case letters, digits and _", name, name)
        missing = [name for name in PURPOSES if name not in purposes]
        if missing:
            raise Invalid(f"missing purposes {missing}; every policy has {list(PURPOSES)}")
        return purposes

    @field_validator("regimes")
    @classmethod
    def _countries(cls, regimes: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        seen: dict[str, str] = {}
        for regime, countries in regimes.items():
            for i, country in enumerate(countries):
                if not isinstance(country, str) or not _COUNTRY.match(country):
                    raise Invalid(
                        "expected an ISO 3166-1 alpha-2 code in capitals (FR, US)",
                        (regime, i),
                        country,
                    )
                if country in seen and seen[country] != regime:
                    raise Invalid(f"already listed under {seen[country]}", (regime, i), country)
                seen[country] = regime
        return regimes

    @model_validator(mode="after")
    def _lookup(self) -> ConsentPolicy:
        table = {c: regime for regime, countries in self.regimes.items() for c in countries}
        self._country_regime = table
        return self

    @property
    def purpose_names(self) -> tuple[str, ...]:
        return tuple(self.purposes)

    @property
    def optional_purposes(self) -> tuple[str, ...]:
        """Every purpose a person chooses (all but ``necessary``)."""
        return tuple(name for name in self.purposes if name != NECESSARY)

    def regime(self, country: str | None) -> str:
        """The regime of ``country`` (ISO alpha-2, any case); unknown or None: the default."""
        if not country:
            return self.default_regime
        return self._country_regime.get(country.strip().upper(), self.default_regime)


def parse_policy(data: Any, origin: str = "<memory>") -> ConsentPolicy:
    """Validate a parsed policy document; a problem raises :class:`PolicyError` naming the file,
    the key, the value and what is allowed."""
    return validate(ConsentPolicy, data, PolicyError, origin)


def load_policy(path: str | Path | None = None) -> ConsentPolicy:
    """Read and validate a policy file; ``None`` reads the packaged one."""
    data, origin = read_yaml(
        path, PolicyError, "consent policy file", package="features.consent", name="policy.yaml"
    )
    return parse_policy(data, origin)


def workspace_policy(ws) -> ConsentPolicy:
    """The policy of the workspace ``ws``: the ``consent_policy`` setting's file, else
    ``<home>/consent_policy.yaml`` when it exists, else the packaged policy."""
    if ws.settings.consent_policy is not None:
        return load_policy(ws.settings.consent_policy)
    own = Path(ws.home) / WORKSPACE_FILE
    return load_policy(own if own.is_file() else None)
