"""``/events``, after the event log append: fold the new events into each person's persona state.

For the people in the events a call *appended* (duplicates are never appended, so never folded
twice), the previous states are read in one online read of ``user_persona_v1``, the new events
are folded (:func:`features.personas.fold`) and the new states pushed through the persona push
source, so the next ``/recommend`` reads the persona in its single ``user_profile_v1`` read.

A failed read or push never fails the request nor loses events (they are in the log already, and
the next ``tailor features build`` folds them offline); the answer's ``degraded`` says the
personas were not updated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from features.ids import person_keys
from features.personas import PersonaConfig, PersonaState, fold, persona_frame, state_row
from serving.rules import RuleSet
from serving.schemas import PERSONAS_NOT_UPDATED

logger = logging.getLogger(__name__)

#: ``people -> one row per person`` with their stored ``persona_state`` (None when unknown).
ReadStates = Callable[[list[str]], list[dict[str, Any]]]
Push = Callable[[pd.DataFrame], None]


def update_personas(
    appended: pd.DataFrame, read: ReadStates, push: Push, config: PersonaConfig
) -> tuple[int, str | None]:
    """Fold ``appended`` events into their people's stored states and push the new states.

    Returns ``(people updated, None)``, or ``(0, reason)`` when the store failed.
    """
    if appended.empty:
        return 0, None
    people: list[str] = []
    try:
        by_person = dict(tuple(appended.groupby(person_keys(appended).to_numpy(), sort=True)))
        people = list(by_person)
        stored = read(people)
        rows = []
        for person, row in zip(people, stored, strict=True):
            state = PersonaState.from_json(row.get("persona_state"))
            rows.append(state_row(person, fold(state, by_person[person], config), config))
        push(persona_frame(rows))
    except Exception:  # the events are safe in the log; say the personas lag behind
        logger.exception("updating the personas of %d people failed", len(people))
        return 0, PERSONAS_NOT_UPDATED
    return len(people), None


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
