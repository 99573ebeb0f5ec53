"""Consent enforced where Tailor collects and serves (issue #12), through the one check.

:class:`ConsentGate` puts :class:`features.consent.check.ConsentCheck` in front of

- **collection** (``/events``, ``/collect``): :meth:`ConsentGate.refused_events` says which
  events of a batch belong to people without ``analytics``; :func:`serving.publish.
  publish_events` then neither publishes nor quarantines them and counts them as
  ``suppressed``. One :meth:`~features.consent.check.ConsentCheck.decide_many` per batch.
- **serving** (``/recommend``, ``/segment``): :meth:`ConsentGate.personalization` says whether
  the person may get a personalized answer; when not, the service reads nothing of the person
  (no online features, segment or live session) and the answer says
  :data:`NOT_PERSONALIZED` in ``consent``.
- **personas** (the event consumer): :meth:`ConsentGate.personalized` keeps the people whose
  persona may be folded and pushed; the others get an empty persona state.

The regime of an event is its own ``country``, else the request's country header; of a request,
``context.country``, else the header (as ``/consent``: what the body says wins). Nothing is
cached: every call reads the ledger, so a withdrawal counts from the very next event or request,
in every process. A ledger that cannot be read fails closed: collection answers 503 (nothing
stored, :class:`ConsentUnavailable`), serving answers non-personalized, personas are not folded.

``ConsentGate(None)`` enforces nothing (``TAILOR_CONSENT_CHECKS=0``, the consent benchmark's
comparison run only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from features.consent.check import ConsentCheck, ConsentDecision
from features.consent.ledger import LedgerUnavailable
from features.identity.keys import ANON_PREFIX
from models.errors import TailorError

logger = logging.getLogger(__name__)

ANALYTICS, PERSONALIZATION = "analytics", "personalization"
#: The ``consent`` provenance of an answer that could not be personalized (refused, never
#: chosen under opt-in, or the ledger unreadable: fail closed).
NOT_PERSONALIZED = "personalization not given"
#: Seconds a client waits before sending events again when the ledger could not be read.
RETRY_AFTER_SECONDS = 1


class ConsentUnavailable(TailorError):
    """The ledger could not be read for a batch of events: nothing of it is collected (503)."""

    retry_after = RETRY_AFTER_SECONDS


def header_country(headers: Mapping[str, str], name: str) -> str | None:
    """The two-letter country in the header ``name`` (lower-cased ``headers``), else None."""
    value = headers.get(name.lower(), "").strip().upper()
    return value if len(value) == 2 and value.isalpha() else None


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def event_keys(event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(user key, anonymous key)`` an event names (either may be None)."""
    user, anon = _id(event.get("user_id")), _id(event.get("anonymous_id"))
    return user, (ANON_PREFIX + anon if anon else None)


def _country(event: Mapping[str, Any], fallback: str | None) -> str | None:
    value = event.get("country")
    if isinstance(value, str) and len(value.strip()) == 2 and value.strip().isalpha():
        return value.strip().upper()
    return fallback


def allows(user: ConsentDecision | None, anon: ConsentDecision | None) -> bool:
    """Whether an event naming these keys may be collected: the user's decision when they
    chose (or their regime allows without a choice), else the anonymous id's. An event with
    both ids says they are one person (a login), so a choice made on the device before it
    counts, as it will once the identity graph links them; a refusal on the user id wins."""
    if user is not None and (user.allowed or user.choice is not None or anon is None):
        return user.allowed
    return anon is not None and anon.allowed


@dataclass(frozen=True)
class ConsentGate:
    """The enforcement points' view of the one check (see the module docstring)."""

    check: ConsentCheck | None

    @property
    def enabled(self) -> bool:
        return self.check is not None

    def refused_events(
        self, events: Sequence[Mapping[str, Any] | Any], country: str | None = None
    ) -> list[bool]:
        """For each of ``events`` (raw or validated rows; anything else counts as not
        refused), whether its person lacks ``analytics``; ``country``: the request's header
        country, used for events without their own. Raises :class:`ConsentUnavailable` when
        the ledger cannot be read."""
        if self.check is None:
            return [False] * len(events)
        people: dict[str, str | None] = {}
        named = []
        for event in events:
            keys = event_keys(event) if isinstance(event, Mapping) else (None, None)
            named.append(keys)
            for key in keys:
                if key is not None:
                    people.setdefault(key, _country(event, country))
        if not people:
            return [False] * len(events)
        try:
            decisions = self.check.decide_many(list(people), ANALYTICS, country=people)
        except LedgerUnavailable as exc:
            raise ConsentUnavailable(
                "the consent ledger cannot be read; nothing collected"
            ) from exc
        return [
            (user is not None or anon is not None)
            and not allows(decisions.get(user or ""), decisions.get(anon or ""))
            for user, anon in named
        ]

    def personalization(self, key: str, country: str | None, gpc: bool = False) -> str | None:
        """None when the person of ``key`` may get a personalized answer, else the
        ``consent`` provenance (:data:`NOT_PERSONALIZED`; also when the ledger fails)."""
        if self.check is None:
            return None
        try:
            decision = self.check.decide(key, PERSONALIZATION, country=country, gpc=gpc)
        except LedgerUnavailable:
            logger.warning("consent ledger unreadable: answering without personalization")
            return NOT_PERSONALIZED
        return None if decision.allowed else NOT_PERSONALIZED

    def personalized(self, people: Iterable[str], countries: Mapping[str, str | None]) -> set[str]:
        """The people (canonical keys) whose persona may be updated: ``personalization``
        allowed under their event's country (``countries``), else their recorded one. Empty
        when the ledger fails (no persona is folded for anyone then)."""
        people = list(dict.fromkeys(people))
        if self.check is None:
            return set(people)
        if not people:
            return set()
        try:
            wanted = {person: countries.get(person) for person in people}
            decisions = self.check.decide_many(people, PERSONALIZATION, country=wanted)
        except LedgerUnavailable:
            logger.warning("consent ledger unreadable: no persona updated in this batch")
            return set()
        return {person for person, decision in decisions.items() if decision.allowed}
