"""Issue #10 item 1: one bad event never fails a batch.

Values the schema let through before (a timestamp outside pandas' range, a quantity of 2^63, ...)
turned the whole batch into an exception; each is now rejected alone, with its field and value,
and the 999 good events of the batch are stored.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.eventlog import EventLog
from features.ingest import IngestReport, ingest_file, ingest_frame
from features.schema import EVENT_COLUMNS, EventLimits


def good_event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"ok-{n:04d}",
        "event_type": "purchase",
        "timestamp": "2024-03-10T10:00:00Z",
        "user_id": f"u{n % 50}",
        "session_id": f"s{n % 80}",
        "device_type": "mobile",
        "country": "DE",
        "product_id": f"p{n % 30}",
        "category": "shoes",
        "price": 19.5,
        "quantity": 2,
    }


# (case id, overrides of a good purchase, field named, text the reason must hold)
BAD_VALUES = [
    ("year 2300", {"timestamp": "2300-01-01T00:00:00Z"}, "timestamp", "2300-01-01"),
    ("year 0001", {"timestamp": "0001-01-01T00:00:00Z"}, "timestamp", "0001-01-01"),
    ("epoch ms 9999", {"timestamp": 253402300799000}, "timestamp", "253402300799000"),
    ("before 1990", {"timestamp": "1989-12-31T23:59:59Z"}, "timestamp", "1989-12-31"),
    ("next week", {"timestamp": "NEXT_WEEK"}, "timestamp", "outside the accepted window"),
    ("quantity 2^63", {"quantity": 2**63}, "quantity", "9223372036854775807"),
    ("quantity over limit", {"quantity": 2**63 - 1}, "quantity", "9223372036854775807"),
    ("price inf", {"price": float("inf")}, "price", "finite"),
    ("price 'nan'", {"price": "nan"}, "price", "finite"),
    ("price negative", {"price": -0.01}, "price", "greater than or equal to 0"),
    ("id of 257 characters", {"event_id": "x" * 257}, "event_id", "257 characters"),
    ("id with a control char", {"user_id": "u\x07bell"}, "user_id", "'\\x07'"),
    ("id with a newline inside", {"session_id": "s1\ns2"}, "session_id", "'\\n'"),
    ("country not ASCII", {"country": "ÄÖ"}, "country", "'ÄÖ'"),
]


def bad_event(overrides: dict[str, Any]) -> dict[str, Any]:
    event = good_event(999) | {"event_id": "bad"} | overrides
    if event["timestamp"] == "NEXT_WEEK":
        event["timestamp"] = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    return event


def batch(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """999 good purchases with the bad one at position 500 (row 501)."""
    rows = [good_event(n) for n in range(999)]
    rows.insert(500, bad_event(overrides))
    return rows


def assert_one_rejected(report: IngestReport, field: str, text: str, log: EventLog) -> None:
    assert (report.total, report.accepted, report.rejected, report.duplicate) == (1000, 999, 1, 0)
    assert len(log) == 999
    (rejection,) = report.rejections
    assert (rejection.row, rejection.field) == (501, field)
    assert text in rejection.reason
    assert report.quarantine_path is not None
    (record,) = [json.loads(line) for line in report.quarantine_path.read_text().splitlines()]
    assert (record["row"], record["field"]) == (501, field)


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [case[1:] for case in BAD_VALUES],
    ids=[case[0] for case in BAD_VALUES],
)
def test_frame_with_one_bad_event_stores_the_999_others(
    tmp_path: Path, overrides: dict[str, Any], field: str, text: str
) -> None:
    """Issue #10 item 1: through features.ingest.ingest_frame."""
    log = EventLog(tmp_path / "log")
    frame = pd.DataFrame(batch(overrides))
    report = ingest_frame(frame, log, tmp_path / "quarantine", "frame")
    assert_one_rejected(report, field, text, log)


CSV_CASES = BAD_VALUES  # each value as its CSV cell (inf, nan, 2300-01-01T00:00:00Z)


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [case[1:] for case in CSV_CASES],
    ids=[case[0] for case in CSV_CASES],
)
def test_csv_import_with_one_bad_event_stores_the_999_others(
    tmp_path: Path, overrides: dict[str, Any], field: str, text: str
) -> None:
    """Issue #10 item 1: through the CSV import (``tailor data import``)."""
    path = tmp_path / "events.csv"
    columns = [c for c in EVENT_COLUMNS if c != "properties"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(batch(overrides))
    log = EventLog(tmp_path / "log")
    report = ingest_file(path, log, tmp_path / "quarantine")
    assert_one_rejected(report, field, text, log)


def test_time_window_is_a_keyword(tmp_path: Path) -> None:
    """Issue #10 item 1: the accepted window is configurable per call (not read at import)."""
    old = pd.DataFrame([good_event(1) | {"timestamp": "1985-06-01T00:00:00Z"}])
    log = EventLog(tmp_path / "log")
    refused = ingest_frame(old, log, tmp_path / "q", "old")
    assert (refused.accepted, refused.rejected) == (0, 1)
    assert "1990-01-01" in refused.rejections[0].reason
    wider = EventLimits(earliest=datetime(1980, 1, 1, tzinfo=UTC))
    taken = ingest_frame(old, log, tmp_path / "q", "old", limits=wider)
    assert (taken.accepted, taken.rejected) == (1, 0)
    tight = EventLimits(max_quantity=1)
    many = pd.DataFrame([good_event(2) | {"quantity": 2}])
    over = ingest_frame(many, log, tmp_path / "q", "many", limits=tight)
    assert over.rejected == 1 and "quantity 2 is over the limit of 1" in over.rejections[0].reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"earliest": datetime(1600, 1, 1, tzinfo=UTC)}, "outside the storable range"),
        ({"earliest": datetime(1990, 1, 1)}, "no time zone"),
        ({"max_quantity": 2**63}, "max_quantity"),
        ({"max_future": timedelta(days=-1)}, "negative"),
    ],
)
def test_limits_out_of_what_the_log_stores_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventLimits(**kwargs)
