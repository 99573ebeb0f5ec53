"""Consent records in and out of files: ``tailor consent import`` and ``export`` (issue #12).

The CSV has one row per choice, the columns of :data:`COLUMNS` (``user_id`` or ``anonymous_id``,
one column per purpose with ``true``/``false``/``1``/``0``/``yes``/``no``, empty: not chosen by
that row); ``policy_version`` (empty: the current one), ``source`` (empty: ``import``),
``timestamp`` (the client's clock), ``recorded_at`` (when the choice was made; empty: now) and
``country``. An import checks every row first and stores nothing when one is wrong: the error
names the row (the file's line number), the field and why.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from features.consent.ledger import ConsentError, ConsentLedger, ConsentRecord
from models.errors import DataError

ID_COLUMNS = ("user_id", "anonymous_id")
META_COLUMNS = ("policy_version", "source", "timestamp", "recorded_at", "country")
#: Errors listed at most in one message.
MAX_ERRORS = 10
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}


class ConsentImportError(DataError):
    """A consent CSV that cannot be imported: each problem as ``row N, field F: why``."""


def columns(ledger: ConsentLedger) -> tuple[str, ...]:
    """The CSV's columns for the ledger's policy (ids, every purpose but necessary, meta)."""
    return (*ID_COLUMNS, *ledger.policy.optional_purposes, *META_COLUMNS)


@dataclass(frozen=True)
class Imported:
    rows: int
    people: int
    accepted: int  # purposes chosen true over all rows
    refused: int  # purposes chosen false


def _time(text: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConsentError(field, f"{text[:40]!r} is not an ISO 8601 date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _choice(text: str, field: str) -> bool | None:
    value = text.strip().lower()
    if not value:
        return None
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ConsentError(field, f"{text[:20]!r} is not true/false (or 1/0, yes/no, empty)")


def import_csv(ledger: ConsentLedger, path: str | Path) -> Imported:
    """Check every row of the CSV at ``path`` and append them all in one transaction; raises
    :class:`ConsentImportError` (nothing stored) listing the first problems by row and field."""
    path = Path(path)
    if not path.is_file():
        raise ConsentImportError(f"consent file not found: {path}")
    allowed = columns(ledger)
    rows, problems = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = [name for name in header if name not in allowed]
        if unknown:
            raise ConsentImportError(
                f"{path}: row 1, field {unknown[0]!r}: unknown column; allowed: "
                + ", ".join(allowed)
            )
        if not any(name in header for name in ID_COLUMNS):
            raise ConsentImportError(f"{path}: row 1: needs a user_id or anonymous_id column")
        for line, raw in enumerate(reader, start=2):
            values = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                if None in raw:
                    raise ConsentError("row", "has more cells than the header")
                purposes = {}
                for purpose in ledger.policy.optional_purposes:
                    chosen = _choice(values.get(purpose, ""), purpose)
                    if chosen is not None:
                        purposes[purpose] = chosen
                if not purposes:
                    raise ConsentError("purposes", "no purpose chosen in this row")
                rows.append(
                    ledger.row(
                        user_id=values.get("user_id") or None,
                        anonymous_id=values.get("anonymous_id") or None,
                        purposes=purposes,
                        policy_version=values.get("policy_version") or None,
                        source=values.get("source") or "import",
                        client_ts=_time(values.get("timestamp", ""), "timestamp"),
                        recorded_at=_time(values.get("recorded_at", ""), "recorded_at"),
                        country=values.get("country") or None,
                    )
                )
            except ConsentError as exc:
                why = str(exc).split(": ", 1)[-1]
                problems.append(f"row {line}, field {exc.field!r}: {why}")
    if problems:
        more = f" (and {len(problems) - MAX_ERRORS} more)" if len(problems) > MAX_ERRORS else ""
        shown = "; ".join(problems[:MAX_ERRORS])
        raise ConsentImportError(f"{path}: nothing imported: {shown}{more}")
    made = ledger.append_many(rows) if rows else []
    return _summary(made)


def _summary(records: Iterable[ConsentRecord]) -> Imported:
    records = list(records)
    values = [v for r in records for v in r.purposes.values()]
    return Imported(len(records), len({r.key for r in records}), sum(values), values.count(False))


def export_csv(ledger: ConsentLedger, path: str | Path) -> int:
    """Write every record to ``path`` in the import format (a round trip keeps every field);
    returns how many rows."""
    names = columns(ledger)
    records = ledger.all_records()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(names))
        writer.writeheader()
        for record in records:
            row = {record.id_kind: record.given_id}
            for purpose, value in record.purposes.items():
                if purpose in names:
                    row[purpose] = "true" if value else "false"
            row.update(
                policy_version=record.policy_version,
                source=record.source,
                timestamp=record.client_ts.isoformat() if record.client_ts else "",
                recorded_at=record.recorded_at.isoformat(),
                country=record.country or "",
            )
            writer.writerow(row)
    return len(records)
