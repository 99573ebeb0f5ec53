"""``/identify``: a login links an anonymous id to a user, and their history becomes one.

Pure logic beside the service (:mod:`serving.service` keeps a thin API method). The link goes
through the identity graph (:mod:`features.identity.graph`: checks, idempotence, the merge log);
when it merged someone, :func:`refresh_person` folds the person's persona again from the event
log over every alias (the anonymous history included) and pushes it, with their latest activity
row, under the canonical key, so the next ``/recommend`` for the user sees the anonymous cart and
categories at once (within the request). A store that fails never fails the login: the answer
says ``degraded`` and the person waits for the persona re-application.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pandas as pd

from features.context import activity_rows
from features.identity.graph import IdentityGraph, Merge, Resolver
from features.personas import PersonaConfig
from serving.devices import fingerprint_hint
from serving.persona_updates import Push, ReadEvents, ReadStates, reapply_personas
from serving.schemas import STORE_NOT_UPDATED, IdentifyRequest, IdentifyResponse

logger = logging.getLogger(__name__)

#: The merge log's source of a ``/identify`` call.
SOURCE = "api:/identify"
#: ``canonical key -> degraded reason or None``: bring the online store up to the merge.
Refresh = Callable[[str], str | None]


def identify(request: IdentifyRequest, graph: IdentityGraph, refresh: Refresh) -> IdentifyResponse:
    """Link the request's ids and, when that merged anyone, :func:`refresh_person` them.

    Raises :class:`~features.identity.graph.IdentityError` (identical ids, a device of another
    user while user merges are off) for the service to answer as a 4xx naming the field."""
    merge = graph.link(request.anonymous_id, request.user_id, source=SOURCE)
    degraded = refresh(merge.canonical) if merge.recorded else None
    return answer(merge, degraded)


def answer(merge: Merge, degraded: str | None = None) -> IdentifyResponse:
    return IdentifyResponse(
        canonical=merge.canonical,
        aliases=list(merge.aliases),
        merged=list(merge.merged),
        previous=list(merge.previous),
        merge_id=merge.merge_id,
        kind=merge.kind if merge.recorded else None,
        degraded=degraded,
        request_id=uuid.uuid4().hex,
    )


def refresh_person(
    canonical: str,
    read_events: ReadEvents,
    read_states: ReadStates,
    push_personas: Push,
    push_activity: Push,
    config: PersonaConfig,
    resolve: Resolver,
) -> str | None:
    """Fold ``canonical``'s events over all their aliases (``read_events`` must read aliases)
    and push their persona and latest activity row under ``canonical``; returns None, or
    :data:`STORE_NOT_UPDATED` when the store failed (nothing raised)."""
    try:
        events = read_events([canonical])
        if events.empty:
            return None
        reapply_personas([canonical], lambda _: events, read_states, push_personas, config, resolve)
        activity = activity_rows(events, resolve)
        latest = activity[activity["user_id"] == canonical].tail(1)
        if not latest.empty:
            push_activity(latest.reset_index(drop=True))
    except Exception as exc:  # the merge is stored; the online store catches up later
        logger.warning("refreshing a merged person failed: %s", type(exc).__name__)
        return STORE_NOT_UPDATED
    return None


def resolve_person(graph: IdentityGraph, person: str) -> str:
    """``person``'s canonical key for a read (``/recommend``); on a graph failure the key itself
    (a degraded answer is better than none)."""
    try:
        return graph.canonical(person)
    except Exception as exc:
        logger.warning("identity look-up failed: %s", type(exc).__name__)
        return person


def link_identify_events(graph: IdentityGraph, events: pd.DataFrame) -> list[str]:
    """Link every ``identify`` event among ``events`` (see :meth:`IdentityGraph.link_events`);
    returns the canonical keys of the people a link merged, to :func:`refresh_person` once the
    events are folded (a refresh refolds the whole history, the events included)."""
    merged = [merge.canonical for merge in graph.link_events(events) if merge.recorded]
    return list(dict.fromkeys(merged))


def record_fingerprint_hints(graph: IdentityGraph, events: pd.DataFrame) -> int:
    """Store the weak device-fingerprint hints the collector put in ``events``' properties
    (:func:`serving.devices.fingerprint_hint`; only when ``TAILOR_FINGERPRINT=1``), one per
    anonymous id and fingerprint; hints never merge anyone. Returns how many were stored."""
    if "properties" not in events.columns or "anonymous_id" not in events.columns:
        return 0
    seen: dict[tuple[str, str], float] = {}
    for anonymous_id, properties in zip(events["anonymous_id"], events["properties"], strict=True):
        if not anonymous_id or not isinstance(anonymous_id, str) or properties is None:
            continue
        hint = fingerprint_hint(properties)
        if hint is not None:
            seen[(anonymous_id, hint[0])] = hint[1]
    for (anonymous_id, fingerprint), confidence in seen.items():
        graph.add_hint(anonymous_id, fingerprint, confidence)
    return len(seen)
