"""``/events`` (and the browser collector's ``/collect``): validate, publish, answer (issue #11).

Collection and processing are split by the broker (:mod:`features.broker.contract`). This side
validates each event exactly as ``tailor data import`` does (:func:`features.ingest.validate_rows`:
a bad row is a rejection with its row, field and reason, written to the quarantine, never an
error for the batch), publishes the valid ones (``message_id`` = ``event_id``, body = the
validated row as JSON, :func:`encode_event`) and returns only after the broker confirmed them,
so an answer's ``accepted`` events are durable. The consumer (:mod:`serving.consumer`) appends
them to the event log, idempotently by ``event_id``, and updates the online store.

What a publish cannot know yet (whether an event is a duplicate or a conflict of a stored one,
what reached the online store) is counted by the consumer: ``tailor consume`` prints it, the
service's ``/metrics`` shows it (``tailor_events_total{outcome=...}``) and conflicts are
quarantined as before.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from features.broker.contract import Broker, BrokerUnavailableError
from features.broker.spool import SpoolFullError
from features.event_files import Rejection
from features.ingest import quarantine_rejections, validate_rows
from features.schema import EventLimits
from models.errors import TailorError
from serving.consent_gate import ConsentGate
from serving.schemas import MAX_EVENTS, EventRejection, EventsResponse

logger = logging.getLogger(__name__)

#: Retry-After of a 503 when the broker's error does not say (seconds).
RETRY_AFTER_SECONDS = 5


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
    # validate_rows expects mappings; anything else becomes a rejection with its row number
    return [
        row
        if isinstance(row, dict)
        else Rejection(n, "<row>", "an event must be a JSON object", str(row))
        for n, row in enumerate(rows, start=1)
    ]


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def encode_event(row: dict[str, Any]) -> bytes:
    """A validated row (:meth:`features.schema.Event.to_row`, optionally with ``_row``) as a
    message body: JSON, missing values left out, the timestamp in ISO-8601 UTC."""
    clean = {k: _jsonable(v) for k, v in row.items() if v is not None and not k.startswith("_")}
    return json.dumps(clean, separators=(",", ":")).encode()  # ASCII: lone surrogates survive


def decode_event(body: bytes) -> dict[str, Any]:
    """A message body back as a raw event (validated again by the consumer); ValueError when it
    is not a JSON object."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"the message body is not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the message body is a JSON {type(raw).__name__}, not an event object")
    return raw


def publish_events(
    payload: dict[str, Any] | list[Any],
    broker: Broker,
    quarantine_dir: Path,
    source: str = "api:/events",
    *,
    limits: EventLimits | None = None,
    gate: ConsentGate | None = None,
    country: str | None = None,
) -> EventsResponse:
    """Validate one event or a batch, publish the valid ones and return once the broker
    confirmed them; the rejected ones are quarantined (after the publish: a batch refused by
    the broker is retried whole by the client, so nothing is quarantined twice).

    With a consent ``gate`` (issue #12), the valid events of people without ``analytics``
    (under the event's ``country``, else the request's ``country``) are ``suppressed``: not
    published, so never stored under any id; a rejected event of such a person is answered but
    not quarantined. ``accepted + rejected + suppressed`` is the number of events sent.

    Raises :class:`BatchTooLargeError` for more than :data:`MAX_EVENTS` events, whatever the
    broker raises when it did not confirm (``BrokerUnavailableError``, a full spool), and
    :class:`~serving.consent_gate.ConsentUnavailable` when the ledger cannot be read: then
    nothing of the batch counts as accepted."""
    rows = _non_objects(as_batch(payload))
    valid, rejected = validate_rows(iter(rows), limits)
    suppressed = 0
    if gate is not None and gate.enabled:
        raw_rejected = [rows[r.row - 1] for r in rejected]
        refused = gate.refused_events([*valid, *raw_rejected], country)
        n_valid = len(valid)
        valid = [row for row, no in zip(valid, refused[:n_valid], strict=True) if not no]
        suppressed = n_valid - len(valid)
        quarantined = [r for r, no in zip(rejected, refused[n_valid:], strict=True) if not no]
    else:
        quarantined = rejected
    broker.publish([(row["event_id"], encode_event(row)) for row in valid])
    quarantine_rejections(quarantine_dir, source, quarantined)
    if rejected or suppressed:
        logger.info(
            "%s: %d events queued, %d rejected, %d suppressed (no analytics consent)",
            source,
            len(valid),
            len(rejected),
            suppressed,
        )
    return EventsResponse(
        accepted=len(valid),
        rejected=len(rejected),
        suppressed=suppressed,
        rejections=[EventRejection(row=r.row, field=r.field, reason=r.reason) for r in rejected],
    )


def refused_retry_after(exc: BaseException) -> int | None:
    """The ``Retry-After`` seconds of a 503 when ``exc`` is the broker not taking a publish (a
    ``BrokerUnavailableError``: unreachable with no spool; a ``SpoolFullError``: the spool is
    full; or a Tailor error carrying ``retry_after``), else None (a bug: a 500).
    The error's own ``retry_after`` wins; at least 1 s."""
    refused = isinstance(exc, BrokerUnavailableError | SpoolFullError) or (
        isinstance(exc, TailorError) and hasattr(exc, "retry_after")
    )
    if not refused:
        return None
    value = getattr(exc, "retry_after", None)
    try:
        seconds = math.ceil(float(value)) if value is not None else RETRY_AFTER_SECONDS
    except (TypeError, ValueError, OverflowError):
        seconds = RETRY_AFTER_SECONDS
    return max(1, seconds)
