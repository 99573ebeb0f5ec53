"""Idempotent, lossless ingestion of event files into the event log.

Every input row ends up in exactly one of three places: the log (accepted), nowhere because its
``event_id`` is already known (duplicate), or the quarantine file with its row number, field and
reason (rejected). The three counts always add up to the input.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from features.eventlog import EventLog
from features.schema import EVENT_COLUMNS, Event

logger = logging.getLogger(__name__)

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass
class Rejection:
    """One rejected input row: ``row`` is 1-based (a CSV's line is ``row + 1``)."""

    row: int
    field: str
    reason: str
    raw: dict[str, Any] | str


@dataclass
class IngestReport:
    source: str
    total: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    quarantine_path: Path | None = None
    files_written: list[Path] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    #: The accepted events as appended (columns ``EVENT_COLUMNS``), so callers such as
    #: ``/events`` need not read the new parts back; None when nothing was accepted.
    appended: pd.DataFrame | None = None

    def check(self) -> None:
        if self.accepted + self.duplicate + self.rejected != self.total:
            raise AssertionError(f"ingestion lost rows: {self}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool | dict | list):
        return value
    return str(value)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown format {fmt!r}; allowed: csv, parquet, jsonl")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {path.name!r} from its suffix {suffix!r}; "
            f"use one of {', '.join(sorted(FORMATS))} or pass fmt"
        )
    return FORMATS[suffix]


def read_rows(path: Path, fmt: str | None = None) -> Iterator[dict[str, Any] | Rejection]:
    """Yield raw rows of a CSV, Parquet or JSON Lines file; unparseable lines as Rejections."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"events file not found: {path}")
    kind = _format_of(path, fmt)
    if kind == "jsonl":
        with path.open(encoding="utf-8") as handle:
            row = 0
            for line in handle:
                if not line.strip():
                    continue
                row += 1
                try:
                    parsed = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield Rejection(row, "<line>", f"invalid JSON: {exc.msg}", line.rstrip("\n"))
                    continue
                if not isinstance(parsed, dict):
                    yield Rejection(row, "<line>", "a JSON object is required", line.rstrip("\n"))
                    continue
                yield parsed
        return
    if kind == "csv":
        yield from _csv_rows(path)
        return
    frame = pd.read_parquet(path)
    frame = frame.astype(object).where(frame.notna(), None)
    yield from frame.to_dict(orient="records")


def _csv_rows(path: Path) -> Iterator[dict[str, Any] | Rejection]:
    """Stream a CSV as text cells (ids stay text; '' means missing); ragged lines are rejected."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        for number, cells in enumerate(reader, start=1):
            if not cells:
                continue
            if len(cells) != width:
                reason = f"{len(cells)} cells but the header has {width}"
                yield Rejection(number, "<line>", reason, ",".join(cells))
                continue
            yield dict(zip(header, cells, strict=True))


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


def validate_rows(rows: Iterator[dict[str, Any] | Rejection]) -> tuple[list[dict], list[Rejection]]:
    """Validate each row with :class:`Event`; bad rows become Rejections, never exceptions."""
    valid: list[dict] = []
    rejected: list[Rejection] = []
    for number, raw in enumerate(rows, start=1):
        if isinstance(raw, Rejection):
            rejected.append(raw)
            continue
        try:
            valid.append(Event.model_validate(raw).to_row() | {"_row": number})
        except ValidationError as exc:
            errors = exc.errors()
            where = _error_field(errors[0])
            reason = "; ".join(f"{_error_field(err)}: {err['msg']}" for err in errors)
            rejected.append(Rejection(number, where, reason, raw))
    return valid, rejected


def ingest_rows(
    rows: Iterator[dict[str, Any] | Rejection],
    log: EventLog,
    quarantine_dir: Path,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Validate, de-duplicate by ``event_id`` and append; write rejections to quarantine."""
    report = IngestReport(source=source)
    valid, rejected = validate_rows(_counting(rows, progress))
    report.total = len(valid) + len(rejected)
    with log.writer():  # no other writer between the duplicate check and the append
        in_log = log.existing(row["event_id"] for row in valid)
        seen: set[str] = set()
        fresh: list[dict] = []
        for row in valid:
            if row["event_id"] in in_log or row["event_id"] in seen:
                report.duplicate += 1
                continue
            seen.add(row["event_id"])
            fresh.append(row)
        if fresh:
            frame = pd.DataFrame.from_records(fresh, columns=list(EVENT_COLUMNS))
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
            frame["quantity"] = frame["quantity"].astype("Int64")
            frame["price"] = frame["price"].astype("float64")
            report.files_written = log.append(frame)
            report.appended = frame
    report.accepted = len(fresh)
    report.rejected = len(rejected)
    report.rejections = rejected
    if rejected:
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = quarantine_dir / f"{stamp}-{Path(source).name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for item in rejected:
                raw = (
                    {k: _jsonable(v) for k, v in item.raw.items()}
                    if isinstance(item.raw, dict)
                    else item.raw
                )
                record = {
                    "source": source,
                    "row": item.row,
                    "field": item.field,
                    "reason": item.reason,
                }
                handle.write(json.dumps(record | {"raw": raw}) + "\n")
        report.quarantine_path = path
    report.check()
    logger.info("ingested %s: %s", source, report)
    return report


def _counting(rows: Iterator, progress: Callable[[int], None] | None) -> Iterator:
    for row in rows:
        if progress is not None:
            progress(1)
        yield row


def ingest_file(
    path: Path,
    log: EventLog,
    quarantine_dir: Path,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest one CSV / Parquet / JSON Lines file in the event schema."""
    return ingest_rows(read_rows(Path(path), fmt), log, quarantine_dir, str(path), progress)


def ingest_frame(
    frame: pd.DataFrame,
    log: EventLog,
    quarantine_dir: Path,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest an in-memory frame (the generator's output, a test's rows)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return ingest_rows(iter(clean.to_dict(orient="records")), log, quarantine_dir, source, progress)
