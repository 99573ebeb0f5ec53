"""``/events``: validate, append to the event log, push real-time activity to the online store.

The same path as ``tailor data import`` (:func:`features.ingest.ingest_rows`: row-by-row
validation, idempotent by ``event_id``, rejections quarantined with row, field and reason), then
the activity rows of the newly appended events are pushed through the Feast push source, so the
next ``/recommend`` for those people sees them. A failed push never loses events: they are in the
log already, and the answer says the online store was not updated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from features.context import activity_rows
from features.event_files import Rejection
from features.eventlog import EventLog
from features.identity.keys import person_keys
from features.ingest import ingest_rows
from features.schema import EventLimits
from serving.schemas import MAX_EVENTS, STORE_NOT_UPDATED, EventRejection, EventsResponse

logger = logging.getLogger(__name__)

Push = Callable[[pd.DataFrame], None]
#: ``appended events -> (people updated, degraded reason or None)``: the persona update.
Fold = Callable[[pd.DataFrame], tuple[int, str | None]]


class BatchTooLargeError(ValueError):
    """More events in one call than :data:`serving.schemas.MAX_EVENTS`."""


def as_batch(payload: dict[str, Any] | list[Any]) -> list[Any]:
    """One event (an object) or a batch (a list) as a list; a batch over the limit is an error."""
    rows = [payload] if isinstance(payload, dict) else list(payload)
    if len(rows) > MAX_EVENTS:
        raise BatchTooLargeError(
            f"events: a batch holds at most {MAX_EVENTS} events, got {len(rows)}; split it"
        )
    return rows


def _non_objects(rows: list[Any]) -> list[Any]:
    # ingest_rows expects mappings; anything else becomes a rejection with its row number
    return [
        row
        if isinstance(row, dict)
        else Rejection(n, "<row>", "an event must be a JSON object", str(row))
        for n, row in enumerate(rows, start=1)
    ]


def ingest_events(
    payload: dict[str, Any] | list[Any],
    log: EventLog,
    quarantine_dir: Path,
    push: Push,
    source: str = "api:/events",
    fold: Fold | None = None,
    *,
    limits: EventLimits | None = None,
    link: Callable[[pd.DataFrame], object] | None = None,
    resolve: Callable[[pd.DataFrame], pd.Series] = person_keys,
) -> EventsResponse:
    """Append one event or a batch; push the new events' activity rows to the online store, and
    hand the appended events (never the duplicates) to ``fold``, the persona update.

    An event out of ``limits`` (default :data:`features.schema.DEFAULT_LIMITS`) is rejected
    alone, the rest stored. An ``event_id`` already stored with other content is a conflict:
    quarantined and counted in ``conflict`` with its reason in ``rejections``, never in
    ``duplicate``. ``link`` (the identity graph's) first links the appended ``identify`` events;
    activity rows are keyed by ``resolve`` (default person keys; the service: canonical keys)."""
    rows = _non_objects(as_batch(payload))
    report = ingest_rows(iter(rows), log, quarantine_dir, source, limits=limits)
    rejections = [
        EventRejection(row=r.row, field=r.field, reason=r.reason) for r in report.rejections
    ]
    pushed, degraded = 0, None
    if report.appended is not None and link is not None:
        link(report.appended)
    if report.appended is not None:
        activity = activity_rows(report.appended, resolve)
        try:
            push(activity)
            pushed = len(activity)
        except Exception:  # the events are safe in the log; say the store missed them
            logger.exception("pushing %d activity rows failed", len(activity))
            degraded = STORE_NOT_UPDATED
    personas = 0
    if fold is not None and report.appended is not None:
        personas, reason = fold(report.appended)
        degraded = "; ".join(r for r in (degraded, reason) if r) or None
    return EventsResponse(
        accepted=report.accepted,
        duplicate=report.duplicate,
        rejected=report.rejected,
        conflict=report.conflict,
        pushed=pushed,
        personas=personas,
        rejections=rejections,
        degraded=degraded,
    )
