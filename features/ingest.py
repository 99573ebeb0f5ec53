"""Idempotent, lossless ingestion of event files into the event log.

Every input row ends up in exactly one of four places: the log (accepted), nowhere because the
log already holds the same event (duplicate: same ``event_id``, same content), or the quarantine
with its row number, field and reason: rejected (it failed validation, see
:class:`features.schema.Event` and :class:`features.schema.EventLimits`) or a conflict (its
``event_id`` is stored with other content). The four counts always add up to the input.

Files are read row by row by :mod:`features.event_files` (a row that is not text is a rejection;
a file that is not an event file at all raises its ``EventFileError``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from features.event_files import RawRow, Rejection, escaped, read_rows
from features.eventlog import EventLog
from features.quarantine import Quarantine
from features.schema import DEFAULT_LIMITS, EVENT_COLUMNS, Event, EventLimits
from models.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    source: str
    total: int = 0
    accepted: int = 0
    duplicate: int = 0
    #: Rows whose ``event_id`` was stored with different content (quarantined, in rejections).
    conflict: int = 0
    rejected: int = 0
    quarantine_path: Path | None = None
    files_written: list[Path] = field(default_factory=list)
    #: The rejected and the conflicting rows, in input order.
    rejections: list[Rejection] = field(default_factory=list)
    #: The accepted events as appended (columns ``EVENT_COLUMNS``), so callers such as
    #: ``/events`` need not read the new parts back; None when nothing was accepted.
    appended: pd.DataFrame | None = None
    #: Input row numbers that ended in the log or were already there (kept for a replay only:
    #: ``store_rows(..., keep_rows=True)``).
    stored_rows: list[int] = field(default_factory=list, repr=False)

    def check(self) -> None:
        if self.accepted + self.duplicate + self.conflict + self.rejected != self.total:
            raise AssertionError(f"ingestion lost rows: {self}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, str):
        return escaped(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


# -- validating -----------------------------------------------------------------------------
_REQUIRED = re.compile(r"^(?:Value error, )?(\w+) is required")


def _error_field(error: dict) -> str:
    """The field an error is about; cross-field rules name it at the start of their message."""
    where = ".".join(str(part) for part in error["loc"])
    if where:
        return where
    if "user_id or anonymous_id" in error["msg"]:
        return "user_id|anonymous_id"
    match = _REQUIRED.match(error["msg"])
    return match.group(1) if match else "<row>"


def validate_rows(
    rows: Iterator[dict[str, Any] | RawRow | Rejection], limits: EventLimits | None = None
) -> tuple[list[dict], list[Rejection]]:
    """Validate each row with :class:`Event` within ``limits`` (default
    :data:`features.schema.DEFAULT_LIMITS`, the clock read once for the batch); bad rows become
    Rejections, never exceptions. Valid rows carry their row number as ``_row``."""
    context = (limits or DEFAULT_LIMITS).context()
    valid: list[dict] = []
    rejected: list[Rejection] = []
    for position, item in enumerate(rows, start=1):
        if isinstance(item, Rejection):
            rejected.append(item)
            continue
        number, raw = (item.row, item.data) if isinstance(item, RawRow) else (position, item)
        try:
            valid.append(Event.model_validate(raw, context=context).to_row() | {"_row": number})
        except ValidationError as exc:
            errors = exc.errors()
            where = _error_field(errors[0])
            reason = "; ".join(f"{_error_field(err)}: {err['msg']}" for err in errors)
            rejected.append(Rejection(number, where, reason, raw))
    return valid, rejected


def _same_event(earlier: dict[str, Any], row: dict[str, Any]) -> bool:
    """Whether two validated rows hold the same event (``properties`` compared as JSON values,
    so key order does not matter)."""
    for column in EVENT_COLUMNS:
        old, new = earlier.get(column), row.get(column)
        if old != new:
            if column == "properties" and old is not None and new is not None:
                if json.loads(old) == json.loads(new):
                    continue
            return False
    return True


def _as_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated rows as the log stores them (columns :data:`EVENT_COLUMNS`)."""
    frame = pd.DataFrame.from_records(rows, columns=list(EVENT_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame["quantity"] = frame["quantity"].astype("Int64")
    frame["price"] = frame["price"].astype("float64")
    return frame


def _same_as_stored(valid: list[dict[str, Any]], stored: pd.DataFrame) -> dict[int, bool]:
    """``{position in valid: same event as the stored one}`` for the rows whose id is stored,
    column by column over whole columns (a re-import repeats millions of ids); ``properties``
    that differ as text are compared as JSON values, so key order does not matter."""
    known = set(stored["event_id"])
    positions = [i for i, row in enumerate(valid) if row["event_id"] in known]
    if not positions:
        return {}
    new = _as_frame([valid[i] for i in positions])
    old = stored.set_index("event_id").loc[new["event_id"]].reset_index()
    equal = np.ones(len(new), dtype=bool)
    for column in EVENT_COLUMNS:
        a, b = old[column], new[column]
        missing = a.isna().to_numpy() & b.isna().to_numpy()
        same = a.eq(b).fillna(False).to_numpy(dtype=bool) | missing
        if column == "properties":
            texts = ~same & a.notna().to_numpy() & b.notna().to_numpy()
            for k in np.flatnonzero(texts):
                same[k] = json.loads(a.iat[k]) == json.loads(b.iat[k])
        equal &= same
    return dict(zip(positions, equal.tolist(), strict=True))


def _conflict(row: dict[str, Any]) -> Rejection:
    reason = f"event_id {row['event_id']!r} already stored with different content"
    raw = {column: _jsonable(row[column]) for column in EVENT_COLUMNS if row[column] is not None}
    return Rejection(row["_row"], "event_id", reason, raw)


# -- storing --------------------------------------------------------------------------------
def store_rows(
    rows: Iterator[dict[str, Any] | RawRow | Rejection],
    log: EventLog,
    source: str,
    progress: Callable[[int], None] | None = None,
    *,
    limits: EventLimits | None = None,
    keep_rows: bool = False,
) -> IngestReport:
    """Validate, append the new events and sort out the rest (duplicate, conflict, rejected),
    without writing the quarantine: :func:`ingest_rows` and the replay do that."""
    valid, rejected = validate_rows(_counting(rows, progress), limits)
    return _store_valid(valid, rejected, log, source, keep_rows=keep_rows)


def _store_valid(
    valid: list[dict[str, Any]],
    rejected: list[Rejection],
    log: EventLog,
    source: str,
    *,
    keep_rows: bool = False,
) -> IngestReport:
    """Append the new of the validated rows ``valid`` (each with its ``_row``), sort out the
    duplicates and conflicts, and count ``rejected`` (the validation's rejections)."""
    report = IngestReport(source=source)
    report.total = len(valid) + len(rejected)
    conflicts: list[Rejection] = []
    with log.writer():  # no other writer between the duplicate check and the append
        as_stored = _same_as_stored(valid, log.stored(row["event_id"] for row in valid))
        seen: dict[str, dict] = {}
        fresh: list[dict] = []
        for position, row in enumerate(valid):
            same = as_stored.get(position)
            if same is None:  # not in the log: new, or a repeat within this batch
                earlier = seen.get(row["event_id"])
                if earlier is None:
                    seen[row["event_id"]] = row
                    fresh.append(row)
                    continue
                same = _same_event(earlier, row)
            if same:
                report.duplicate += 1
                if keep_rows:
                    report.stored_rows.append(row["_row"])
            else:
                conflicts.append(_conflict(row))
        if fresh:
            frame = _as_frame(fresh)
            report.files_written = log.append(frame)
            report.appended = frame
            if keep_rows:
                report.stored_rows.extend(row["_row"] for row in fresh)
    report.accepted = len(fresh)
    report.conflict = len(conflicts)
    report.rejected = len(rejected)
    report.rejections = sorted([*rejected, *conflicts], key=lambda r: r.row)
    report.check()
    return report


def ingest_rows(
    rows: Iterator[dict[str, Any] | RawRow | Rejection],
    log: EventLog,
    quarantine_dir: Path | Quarantine,
    source: str,
    progress: Callable[[int], None] | None = None,
    *,
    limits: EventLimits | None = None,
) -> IngestReport:
    """Validate, de-duplicate by ``event_id`` and append; write rejections and conflicts to the
    quarantine (a folder with the default bounds, or a :class:`Quarantine`)."""
    report = store_rows(rows, log, source, progress, limits=limits)
    report.quarantine_path = quarantine_rejections(quarantine_dir, source, report.rejections)
    logger.info("ingested %s: %s", source, report)
    return report


def ingest_validated(
    valid: list[dict[str, Any]],
    log: EventLog,
    quarantine_dir: Path | Quarantine,
    source: str,
) -> IngestReport:
    """:func:`ingest_rows` for rows :func:`validate_rows` already validated (each with its
    ``_row``, the row number a conflict is quarantined with): the same de-duplication by
    ``event_id``, append, quarantine of conflicts and counts, without validating them again.
    The event consumer validates each batch to match rows to messages, then stores them with
    this (issue #11)."""
    missing = [i for i, row in enumerate(valid) if "_row" not in row]
    if missing:
        raise DataError(f"rows {missing[:5]} carry no _row: pass the rows validate_rows returns")
    report = _store_valid(valid, [], log, source)
    report.quarantine_path = quarantine_rejections(quarantine_dir, source, report.rejections)
    logger.info("ingested %s: %s", source, report)
    return report


def quarantine_rejections(
    quarantine_dir: Path | Quarantine, source: str, rejections: list[Rejection]
) -> Path | None:
    """Write ``rejections`` (row, field, reason, raw row) to the quarantine (a folder with the
    default bounds, or a :class:`Quarantine`) under ``source``; the file written, None when there
    was nothing to write. ``/events`` quarantines its validation rejections with it before the
    valid events are queued (issue #11)."""
    if not rejections:
        return None
    quarantine = (
        quarantine_dir if isinstance(quarantine_dir, Quarantine) else Quarantine(quarantine_dir)
    )
    return quarantine.write(source, _records(source, rejections))


def _records(source: str, rejections: list[Rejection]) -> Iterator[dict[str, Any]]:
    for item in rejections:
        record = {"source": source, "row": item.row, "field": item.field, "reason": item.reason}
        if item.undecodable:
            record["undecodable"] = True
        yield record | {"raw": _jsonable(item.raw)}


def _counting(rows: Iterator, progress: Callable[[int], None] | None) -> Iterator:
    for row in rows:
        if progress is not None:
            progress(1)
        yield row


def ingest_file(
    path: Path,
    log: EventLog,
    quarantine_dir: Path | Quarantine,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    limits: EventLimits | None = None,
) -> IngestReport:
    """Ingest one CSV / Parquet / JSON Lines file in the event schema."""
    return ingest_rows(
        read_rows(Path(path), fmt), log, quarantine_dir, str(path), progress, limits=limits
    )


def ingest_frame(
    frame: pd.DataFrame,
    log: EventLog,
    quarantine_dir: Path | Quarantine,
    source: str,
    progress: Callable[[int], None] | None = None,
    *,
    limits: EventLimits | None = None,
) -> IngestReport:
    """Ingest an in-memory frame (the generator's output, a test's rows)."""
    clean = frame.astype(object).where(frame.notna(), None)
    rows = iter(clean.to_dict(orient="records"))
    return ingest_rows(rows, log, quarantine_dir, source, progress, limits=limits)


# -- replaying the quarantine ---------------------------------------------------------------
@dataclass
class ReplayReport:
    files: int = 0
    replayed: int = 0  # appended to the log now
    already_stored: int = 0  # the same event was in the log (a duplicate): out of quarantine
    still_quarantined: int = 0
    files_removed: int = 0


def replay_quarantine(
    log: EventLog,
    quarantine: Quarantine,
    name: str | None = None,
    *,
    limits: EventLimits | None = None,
) -> ReplayReport:
    """Validate the quarantined rows again (after an operator fixed their ``raw`` in the file,
    or with other ``limits``) and ingest them: rows now stored leave the quarantine, the others
    stay with their new reason. ``name`` picks one quarantine file; default all."""
    report = ReplayReport()
    paths = [quarantine.find(name)] if name else [f.path for f in quarantine.files()]
    for path in paths:
        records = quarantine.records(path)
        if not records:
            continue
        rows = [_replayable(index, record) for index, record in enumerate(records, start=1)]
        report.files += 1
        stored = store_rows(iter(rows), log, f"replay:{path.name}", limits=limits, keep_rows=True)
        done = set(stored.stored_rows)
        validated = {row.row for row in rows if isinstance(row, RawRow)}
        why = {r.row: r for r in stored.rejections if r.row in validated}
        kept = []
        for index, record in enumerate(records, start=1):
            if index in done:
                continue
            if index in why:  # validated again and still bad: today's reason
                record = record | {"field": why[index].field, "reason": why[index].reason}
            kept.append(record)
        quarantine.rewrite(path, kept)
        report.replayed += stored.accepted
        report.already_stored += stored.duplicate
        report.still_quarantined += len(kept)
        report.files_removed += not kept
    return report


def _replayable(index: int, record: dict[str, Any]) -> RawRow | Rejection:
    """A quarantine record as an input row (numbered by its line in the file), or a Rejection
    saying what the operator must fix first."""
    if "omitted" in record:
        return Rejection(index, "<row>", record.get("reason", "rows not kept"), "")
    if record.get("undecodable"):
        reason = (
            "the raw row held bytes that were not text (written as \\xNN): fix them and remove "
            '"undecodable" from the record, then replay'
        )
        return Rejection(index, record.get("field") or "<row>", reason, "")
    raw = record.get("raw")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            pass
    if isinstance(raw, dict):
        return RawRow(index, raw)
    what = "was cut to fit the quarantine" if record.get("truncated") else "is not a JSON object"
    reason = f"the raw row {what}: edit it into an event object in the file, then replay"
    return Rejection(index, record.get("field") or "<row>", reason, "")
