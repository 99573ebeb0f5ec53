"""Issue #10 item 2: imports decode per row.

A Latin-1 byte, a binary tail or a stray row never stops an import (bad rows are quarantined with
their row number); UTF-8 with a byte-order mark and UTF-16 files are read; a file that is not an
event file at all is one clear error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from features.event_files import EventFileError
from features.eventlog import EventLog
from features.ingest import ingest_file

HEADER = "event_id,event_type,timestamp,user_id,session_id,country"
GOOD = [
    "e1,page_view,2024-03-10T10:00:00Z,u1,s1,DE",
    "e2,page_view,2024-03-10T10:01:00Z,u2,s2,FR",
    "e3,page_view,2024-03-10T10:02:00Z,u3,s3,IT",
]


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def records(path: Path | None) -> list[dict]:
    assert path is not None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_latin1_byte_quarantines_its_row_only(tmp_path: Path, log: EventLog) -> None:
    """Issue #10 item 2: before, the first non-UTF-8 byte stopped the import."""
    path = tmp_path / "latin1.csv"
    body = csv_text(GOOD[0], "e9,page_view,2024-03-10T10:00:00Z,ren\xe9,s9,DE", *GOOD[1:])
    path.write_bytes(body.encode("latin-1"))
    report = ingest_file(path, log, tmp_path / "q")
    assert (report.total, report.accepted, report.rejected) == (4, 3, 1)
    assert log.event_ids() == {"e1", "e2", "e3"}
    (record,) = records(report.quarantine_path)
    assert (record["row"], record["field"]) == (2, "user_id")
    assert record["reason"] == "user_id: not UTF-8 text: byte 0xE9 at character 3"
    assert record["raw"]["user_id"] == "ren\\xe9"  # kept readable, the byte shown
    assert record["undecodable"] is True


def test_a_binary_tail_and_a_stray_row_never_stop_the_import(tmp_path: Path, log: EventLog) -> None:
    """Issue #10 item 2: rows after the damage are read; the damage is quarantined by row."""
    path = tmp_path / "tail.csv"
    stray = "this line is not an event"
    head = csv_text(GOOD[0], stray, GOOD[1]).encode()
    path.write_bytes(head + b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + (GOOD[2] + "\n").encode())
    report = ingest_file(path, log, tmp_path / "q")
    assert report.accepted == 3 and log.event_ids() == {"e1", "e2", "e3"}
    quarantined = records(report.quarantine_path)
    # the tail holds a line break (\r\n): two damaged rows, then the good one after them
    assert [(r["row"], r["reason"]) for r in quarantined] == [
        (2, "1 cells but the header has 6"),
        (4, "1 cells but the header has 6"),
        (5, "1 cells but the header has 6"),
    ]
    assert quarantined[0]["raw"] == stray
    assert quarantined[1]["raw"] == "\x00\\xff\\xfe\\x89PNG"  # bytes shown, not lost
    assert report.total == report.accepted + report.rejected == 6


def test_an_unclosed_quote_is_one_bad_row(tmp_path: Path, log: EventLog) -> None:
    path = tmp_path / "quote.csv"
    path.write_text(csv_text(GOOD[0], 'e8,page_view,"2024-03-10,u8,s8,DE', GOOD[1]))
    report = ingest_file(path, log, tmp_path / "q")
    assert report.accepted == 1 and report.rejected == 1  # the quote swallowed the next line
    assert records(report.quarantine_path)[0]["row"] == 2


@pytest.mark.parametrize(
    "encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"], ids=lambda e: e
)
def test_byte_order_marks_and_utf16_are_read(tmp_path: Path, log: EventLog, encoding: str) -> None:
    """Issue #10 item 2: before, a UTF-8 mark made the header's first column '\\ufeffevent_id'
    (every row rejected) and UTF-16 stopped the import."""
    path = tmp_path / "marked.csv"
    path.write_bytes(
        csv_text(*GOOD, "e4,page_view,2024-03-10T10:00:00Z,zoë,s4,DE").encode(encoding)
    )
    report = ingest_file(path, log, tmp_path / "q")
    assert (report.accepted, report.rejected) == (4, 0)
    assert log.read().set_index("event_id").loc["e4", "user_id"] == "zoë"


def test_jsonl_with_a_mark_and_a_latin1_line(tmp_path: Path, log: EventLog) -> None:
    good = json.dumps(
        {"event_id": "j1", "event_type": "page_view", "timestamp": "2024-03-10T10:00:00Z"}
        | {"user_id": "u1", "session_id": "s1"}
    )
    bad = '{"event_id": "j2", "user_id": "caf\xe9"}'
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n" + bad.encode("latin-1") + b"\n")
    report = ingest_file(path, log, tmp_path / "q")
    assert (report.accepted, report.rejected) == (1, 1)
    (record,) = records(report.quarantine_path)
    assert record["row"] == 2 and "not UTF-8 text: byte 0xE9" in record["reason"]


NOT_EVENTS = [
    ("png.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "is not an event file"),
    ("other.csv", b"name,colour\nhat,red\n", "none of its columns ('name', 'colour')"),
    ("sales.csv", b"name,price\nhat,3\n", "lacks the event columns event_id, event_type"),
    ("partial.csv", b"event_id,user_id\ne1,u1\n", "lacks the event columns event_type"),
    ("lines.jsonl", b"[1, 2]\n[3]\n", "none of its 2 lines is a JSON object"),
    ("zip.parquet", b"PK\x03\x04 not parquet", "not a Parquet file"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), NOT_EVENTS, ids=[case[0] for case in NOT_EVENTS]
)
def test_a_file_that_is_not_events_is_one_clear_error(
    tmp_path: Path, log: EventLog, name: str, content: bytes, message: str
) -> None:
    """Issue #10 item 2: one error naming the file and what is wrong, nothing stored or
    quarantined."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EventFileError, match=re.escape(message)) as info:
        ingest_file(path, log, tmp_path / "q")
    assert "\n" not in str(info.value) and name in str(info.value)
    assert len(log) == 0 and not (tmp_path / "q").exists()


def test_a_parquet_table_of_something_else_is_one_clear_error(
    tmp_path: Path, log: EventLog
) -> None:
    path = tmp_path / "sales.parquet"
    pd.DataFrame({"store": ["a"], "amount": [3.0]}).to_parquet(path)
    with pytest.raises(EventFileError, match="sales.parquet is not an event file"):
        ingest_file(path, log, tmp_path / "q")
