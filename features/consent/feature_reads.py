"""Consent on feature reads (issue #12): the rules :mod:`features.store` applies to Feast.

* Every feature service carries a ``purpose`` tag (:data:`PURPOSE_TAG`); one without a tag, or
  with a purpose the policy does not know, cannot be read (:class:`ServiceWithoutPurpose`).
* An online read of a service whose purpose is not ``necessary`` asks the one consent check for
  every row's person, in one call (:func:`allowed_keys`).
* Historical retrieval joins the consent feature view: :func:`consent_table` turns the ledger
  into that view's rows (decisions in time, ``consent_<purpose>`` booleans) and
  :func:`allowed_after_join` reads the joined field, a missing value being the default regime's
  answer for a person without any record. :class:`ConsentDrops` says what was left out.

Kept apart from :mod:`features.store` (the Feast adapter), which calls these with its store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from features.consent.check import ConsentCheck, ConsentDecision
from features.consent.policy import NECESSARY, PURPOSES, ConsentPolicy
from models.errors import ConfigError

#: The purpose of profiles and personalized answers: person features, training sets, segments.
PERSONALIZATION = "personalization"
#: The Feast tag of a feature service naming the consent purpose its reads need. Person
#: services: ``personalization``; item services: ``necessary`` (item features are aggregates
#: over the catalogue, about no one, and serve non-personalized answers too).
PURPOSE_TAG = "purpose"
#: Prefix of the consent view's fields: ``consent_<purpose>`` for each of :data:`PURPOSES`.
CONSENT_FIELD_PREFIX = "consent_"
#: The consent view's join key: the person's canonical key in the identity graph.
CONSENT_KEY = "consent_key"


class ServiceWithoutPurpose(ConfigError):
    """A feature service without a valid ``purpose`` tag: it cannot be read (issue #12)."""


def service_purpose(service: str, tags: Mapping[str, str], policy: ConsentPolicy) -> str:
    """The purpose in ``tags`` of feature service ``service``, checked against ``policy``."""
    purpose = tags.get(PURPOSE_TAG)
    if not purpose:
        raise ServiceWithoutPurpose(
            f"feature_service={service!r} has no {PURPOSE_TAG!r} tag, so it cannot be read; "
            f"tag it with the consent purpose its reads need (one of {', '.join(policy.purposes)})"
        )
    if purpose not in policy.purposes:
        raise ServiceWithoutPurpose(
            f"feature_service={service!r}: its {PURPOSE_TAG!r} tag {purpose!r} is not a purpose "
            f"of the consent policy; allowed: {', '.join(policy.purposes)}"
        )
    return purpose


def allowed_keys(
    check: ConsentCheck,
    keys: Sequence[str],
    purpose: str,
    *,
    country: str | None = None,
    decisions: Mapping[str, ConsentDecision] | None = None,
) -> list[bool]:
    """Whether ``purpose`` is allowed now for each person key: one check for one key (every
    request), one batched check for several. ``decisions`` the caller already made for these
    keys and this purpose (in the same request) are used instead of asking again."""
    if purpose == NECESSARY:
        return [True] * len(keys)
    if decisions is not None and all(
        key in decisions and decisions[key].purpose == purpose for key in keys
    ):
        return [decisions[key].allowed for key in keys]
    if len(keys) == 1:
        return [check.decide(keys[0], purpose, country=country).allowed]
    found = check.decide_many(keys, purpose, country=country)
    return [found[key].allowed for key in keys]


def consent_field(purpose: str) -> str:
    """The consent view's field of ``purpose``; only the purposes every policy has."""
    if purpose not in PURPOSES:
        raise ConfigError(
            f"purpose={purpose!r}: the consent view has fields for {', '.join(PURPOSES)} only"
        )
    return CONSENT_FIELD_PREFIX + purpose


def consent_table(check: ConsentCheck) -> pd.DataFrame:
    """The consent view's rows: the whole ledger as decisions in time
    (:meth:`ConsentCheck.timeline`), ``consent_key``, ``event_timestamp`` and a boolean
    ``consent_<purpose>`` per purpose."""
    timeline = check.timeline()
    return timeline[[CONSENT_KEY, "event_timestamp", *PURPOSES]].rename(
        columns={purpose: consent_field(purpose) for purpose in PURPOSES}
    )


def allowed_after_join(check: ConsentCheck, joined: pd.DataFrame, purpose: str) -> pd.Series:
    """Each joined row's consent for ``purpose`` (a person without a consent row as of the
    row's time: the default regime's answer without a choice)."""
    default = check.default_allowed(purpose)
    values = joined[consent_field(purpose)].astype("boolean").fillna(default)
    return values.astype(bool)


@dataclass(frozen=True)
class ConsentDrops:
    """What a consent filter left out: rows asked and dropped, people asked and people with no
    row left (logged to MLflow by the training and segment jobs)."""

    purpose: str
    rows: int
    rows_dropped: int
    people: int
    people_dropped: int

    def metrics(self, prefix: str = "consent_") -> dict[str, float]:
        """``{prefix}rows_dropped`` and ``{prefix}people_dropped`` for MLflow."""
        return {
            f"{prefix}rows_dropped": float(self.rows_dropped),
            f"{prefix}people_dropped": float(self.people_dropped),
        }

    @classmethod
    def of(cls, purpose: str, keys: Sequence, allowed: Sequence[bool]) -> ConsentDrops:
        """The drops of rows of person ``keys``, ``allowed`` or not."""
        keys = pd.Series(list(keys), dtype=object)
        allowed = pd.Series(list(allowed), dtype=bool)
        people = set(keys.tolist())
        left = set(keys[allowed.to_numpy()].tolist())
        return cls(purpose, len(keys), int((~allowed).sum()), len(people), len(people - left))
