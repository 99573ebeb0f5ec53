"""``/events``, after the event log append: fold the new events into each person's persona state.

For the people in the events a call *appended* (duplicates are never appended, so never folded
twice), the previous states are read in one online read of ``user_persona_v1``, the new events
are folded (:func:`features.personas.fold`) and the new states pushed through the persona push
source, so the next ``/recommend`` reads the persona in its single ``user_profile_v1`` read.

A failed read or push never fails the request nor loses events (they are in the log already);
the answer's ``degraded`` says the personas were not updated, and the people are kept in
:class:`PendingPersonas`. When the store answers again (the next successful update, or the
service's periodic check) :func:`reapply_personas` folds each pending person's events again from
the event log, from the empty state, as ``tailor features build`` does offline, and pushes the
result: the same persona as if no update had failed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from features.identity.keys import person_keys
from features.personas import (
    PersonaConfig,
    PersonaState,
    fold,
    fold_people,
    persona_frame,
    state_row,
)
from serving.rules import RuleSet
from serving.schemas import PERSONAS_NOT_UPDATED

logger = logging.getLogger(__name__)

#: ``people -> one row per person`` with their stored ``persona_state`` (None when unknown).
ReadStates = Callable[[list[str]], list[dict[str, Any]]]
Push = Callable[[pd.DataFrame], None]
#: ``people -> their events in the event log`` (:meth:`features.eventlog.EventLog.read_people`).
ReadEvents = Callable[[list[str]], pd.DataFrame]
#: ``events -> each row's person key`` (:data:`features.identity.graph.Resolver`).
Resolve = Callable[[pd.DataFrame], pd.Series]
#: People kept for re-application at most; past it the oldest wait for `tailor features build`.
MAX_PENDING = 100_000
#: People re-applied per online read, log scan and push.
REAPPLY_BATCH = 500
#: ``(people, {person: country of their latest event}) -> the people whose persona may be
#: folded`` (:meth:`serving.consent_gate.ConsentGate.personalized`, issue #12).
Allowed = Callable[[list[str], dict[str, str | None]], set[str]]


def _countries(events: pd.DataFrame, keys: list[str]) -> dict[str, str | None]:
    """``{person: the country of their latest event in events}`` (None when it has none)."""
    if "country" not in events.columns:
        return {}
    out: dict[str, str | None] = {}
    for person, country in zip(keys, events["country"].tolist(), strict=True):
        if isinstance(country, str) and country:
            out[person] = country
        else:
            out.setdefault(person, None)
    return out


def blank_rows(
    people: Iterable[str], events: pd.DataFrame, keys: list[str], config: PersonaConfig
) -> list[dict[str, Any]]:
    """An empty persona state for each of ``people`` (no ``personalization`` consent: their
    stored persona is cleared, never folded), stamped with their latest event's time so a store
    keeping the newest row takes it."""
    times = pd.to_datetime(events["timestamp"], utc=True)
    latest = times.groupby(pd.Series(keys, index=events.index)).max()
    return [
        state_row(person, PersonaState(as_of=latest[person].isoformat()), config)
        for person in people
    ]


def update_personas(
    appended: pd.DataFrame,
    read: ReadStates,
    push: Push,
    config: PersonaConfig,
    resolve: Resolve = person_keys,
    allowed: Allowed | None = None,
) -> tuple[int, str | None]:
    """Fold ``appended`` events into their people's stored states and push the new states;
    people are ``resolve``'s keys (the service passes the identity graph's canonical keys).
    ``allowed`` (issue #12) keeps the people whose persona may be folded; the others' stored
    persona is replaced by an empty one (:func:`blank_rows`), whatever they had.

    Returns ``(people updated, None)``, or ``(0, reason)`` when the store failed.
    """
    if appended.empty:
        return 0, None
    people: list[str] = []
    try:
        keys = resolve(appended).tolist()
        people = sorted(set(keys))
        refused: list[str] = []
        if allowed is not None:
            ok = allowed(people, _countries(appended, keys))
            refused = [person for person in people if person not in ok]
            if refused:
                mine = [key in ok for key in keys]
                blanks = blank_rows(refused, appended, keys, config)
                appended = appended[mine]
                keys = [key for key, keep in zip(keys, mine, strict=True) if keep]
                people = [person for person in people if person in ok]
        stored = read(people) if people else []
        before = {
            person: PersonaState.from_json(row.get("persona_state"))
            for person, row in zip(people, stored, strict=True)
        }
        after = fold_people(before, appended, keys, config)  # one pass for the whole batch
        rows = [state_row(person, after[person], config) for person in people]
        push(persona_frame(rows + (blanks if refused else [])))
    except Exception as exc:  # the events are safe in the log; say the personas lag behind
        logger.warning(
            "updating the personas of %d people failed: %s", len(people), type(exc).__name__
        )
        return 0, PERSONAS_NOT_UPDATED
    return len(people), None


class PendingPersonas:
    """People whose persona update failed, waiting to be folded again from the event log."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self._people: dict[str, None] = {}  # insertion-ordered: the oldest dropped first
        self._lock = threading.Lock()

    def add(self, people: Iterable[str]) -> None:
        with self._lock:
            for person in people:
                self._people[person] = None
            dropped = 0
            while len(self._people) > self.limit:
                del self._people[next(iter(self._people))]
                dropped += 1
        if dropped:
            logger.warning(
                "more than %d people wait for their persona: the %d oldest wait for "
                "`tailor features build` instead",
                self.limit,
                dropped,
            )

    def take(self) -> list[str]:
        """Everyone pending, now no longer pending (:meth:`add` them back on failure)."""
        with self._lock:
            people, self._people = list(self._people), {}
        return people

    def __len__(self) -> int:
        return len(self._people)


def reapply_personas(
    people: list[str],
    read_events: ReadEvents,
    read: ReadStates,
    push: Push,
    config: PersonaConfig,
    resolve: Resolve = person_keys,
    allowed: Allowed | None = None,
) -> int:
    """Fold each person's events in the log again from the empty state and push the states;
    returns the people pushed (those with events). Raises what the store raises. ``allowed``
    as in :func:`update_personas`: the others get an empty persona.

    ``people`` are canonical keys when ``resolve`` is the identity graph's: ``read_events`` must
    then return the events of each person's every alias (:meth:`EventLog.read_people` with the
    graph's ``aliases``), and they are folded together under the canonical key (a login).

    The stored states are read first: a store still unavailable fails before the log is
    scanned. They are used only for their ``as_of``: the new one is later, so a store that keeps
    the newest row (Redis) takes it. Callers pass at most :data:`REAPPLY_BATCH` people (one
    query parameter per person and view)."""
    if not people:
        return 0
    states = read(people)
    stored = {p: row.get("persona_state") for p, row in zip(people, states, strict=True)}
    events = read_events(people)
    if events.empty:
        return 0
    keys = resolve(events)
    by_person = dict(tuple(events.groupby(keys.to_numpy(), sort=True)))
    ok = set(people) if allowed is None else allowed(people, _countries(events, keys.tolist()))
    rows = []
    for person in people:
        if person not in by_person:
            continue
        if person not in ok:
            rows += blank_rows([person], events, keys.tolist(), config)
            continue
        state = fold(PersonaState(), by_person[person], config)
        as_of = PersonaState.from_json(stored.get(person)).as_of
        if as_of and pd.Timestamp(state.as_of) <= pd.Timestamp(as_of):
            later = pd.Timestamp(as_of) + pd.Timedelta(microseconds=1)
            state = dataclasses.replace(state, as_of=later.isoformat())
        rows.append(state_row(person, state, config))
    push(persona_frame(rows))
    return len(rows)


def unknown_rule_personas(rules: RuleSet, personas: PersonaConfig) -> list[str]:
    """One message per persona a serving rule tests but the persona file cannot give (such a
    rule could never fire: a typo, or rules written for another persona file)."""
    known = [rule.name for rule in personas.rules]
    problems = []
    for rule in rules.rules:
        for name in rule.when.get("persona", ()):
            if name not in known:
                problems.append(
                    f"{rules.origin}: rule {rule.name!r} tests persona {name!r}, which "
                    f"{personas.origin} does not define; its personas: {', '.join(known)}"
                )
    return problems
