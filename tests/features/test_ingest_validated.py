"""Issue #11: ``ingest_validated`` stores rows the event consumer already validated exactly as
``ingest_rows`` stores the same raw rows (counts, log, quarantine), without validating again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.eventlog import EventLog
from features.ingest import ingest_rows, ingest_validated, validate_rows
from models.errors import DataError


def view(event_id: str, **overrides) -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "timestamp": "2024-03-10T10:00:00Z",
        "user_id": "u1",
        "session_id": "s1",
        **overrides,
    }


FIRST = [view("a"), view("b")]
SECOND = [
    view("a"),  # duplicate of a stored event
    view("b", user_id="u2"),  # conflict with a stored event
    view("c"),
    view("c", page="/cart"),  # conflict within the batch
    view("c", timestamp="1710064800000"),  # duplicate within the batch
    view("d", properties={"x": 1, "y": 2}),
]


def _outcome(tmp_path: Path, name: str, store) -> tuple:
    log = EventLog(tmp_path / name / "log")
    quarantine = tmp_path / name / "q"
    store(FIRST, log, quarantine)
    report = store(SECOND, log, quarantine)
    counts = (report.total, report.accepted, report.duplicate, report.conflict, report.rejected)
    records = [
        {k: v for k, v in json.loads(line).items() if k != "quarantined_at"}
        for path in sorted(quarantine.rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    stored = log.read().sort_values("event_id").reset_index(drop=True)
    rejections = [(r.row, r.field, r.reason, r.raw) for r in report.rejections]
    return counts, rejections, records, stored, report.appended


def test_validated_rows_are_stored_as_ingest_rows_stores_them(tmp_path: Path) -> None:
    def raw(rows, log, quarantine):
        return ingest_rows(iter(rows), log, quarantine, "src")

    def validated(rows, log, quarantine):
        valid, rejected = validate_rows(iter(rows))
        assert not rejected
        return ingest_validated(valid, log, quarantine, "src")

    expected = _outcome(tmp_path, "raw", raw)
    got = _outcome(tmp_path, "validated", validated)
    assert got[0] == expected[0] == (6, 2, 2, 2, 0)
    assert got[1] == expected[1]
    assert [r[0] for r in got[1]] == [2, 4]
    assert got[2] == expected[2] and len(got[2]) == 2
    assert got[3].equals(expected[3])
    assert got[4].equals(expected[4])


def test_rows_without_their_row_number_are_refused(tmp_path: Path) -> None:
    valid, _ = validate_rows(iter([view("a")]))
    del valid[0]["_row"]
    with pytest.raises(DataError, match="_row"):
        ingest_validated(valid, EventLog(tmp_path / "log"), tmp_path / "q", "src")
