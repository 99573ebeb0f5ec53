"""The event-log write of a consumer: a :data:`~features.broker.contract.Handler` that appends a
batch of event messages to the :class:`~features.eventlog.EventLog`, idempotently by
``event_id``.

Each message body is one event as JSON (the event schema). The batch goes through
:func:`features.ingest.ingest_rows`, the same path as ``tailor data import``: validated,
de-duplicated against the log and within the batch under the log's writer lock, appended as one
part per day; an event already stored (a redelivery, a duplicate publish) is skipped, a bad one
(invalid, not JSON, an ``event_id`` stored with other content) goes to the quarantine with its
reason. Either way the message is done: retrying cannot fix it, so it is acknowledged, not
dead-lettered. Only a failure of the write itself (disk full, log unreadable) raises, which fails
the whole batch: it is delivered again and dead-lettered after ``max_attempts``.

The handler returns once the part is written (renamed into place), so the broker's
acknowledgement follows the write: a consumer killed at any point loses nothing, and the
redelivery it causes changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from features.broker.contract import Handler, Message
from features.event_files import Rejection
from features.eventlog import EventLog
from features.ingest import IngestReport, ingest_rows
from features.quarantine import Quarantine
from features.schema import EventLimits

SOURCE = "broker"


def _text(message: Message) -> str:
    """What the quarantine keeps of a body that is not an event object."""
    return message.body[:2000].decode("utf-8", "replace")


def _rows(batch: list[Message]) -> Iterator[dict[str, Any] | Rejection]:
    for number, message in enumerate(batch, start=1):
        try:
            row = json.loads(message.body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            yield Rejection(number, "<row>", f"message body is not JSON: {exc}", _text(message))
            continue
        if not isinstance(row, dict):
            yield Rejection(number, "<row>", "message body is not a JSON object", _text(message))
            continue
        yield row


def log_writer(
    log: EventLog,
    quarantine: Path | Quarantine,
    *,
    limits: EventLimits | None = None,
    reports: list[IngestReport] | None = None,
) -> Handler:
    """A handler appending each batch to ``log`` (bad events to ``quarantine``); every
    :class:`IngestReport` is appended to ``reports`` when given (counts for ``tailor consume``)."""

    def handle(batch: list[Message]) -> dict[str, str]:
        report = ingest_rows(_rows(batch), log, quarantine, SOURCE, limits=limits)
        if reports is not None:
            reports.append(report)
        return {}

    return handle
