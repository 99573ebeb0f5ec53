"""Ingestion of CSV, Parquet and JSON Lines event files into the event log.

Every file mixes good rows, duplicates (within the file and against the log), a conflict (a known
``event_id`` with other content) and bad rows, so each test checks the exact accepted / duplicate /
conflict / rejected counts and the quarantine file line by line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.eventlog import EventLog
from features.ingest import IngestReport, ingest_file, ingest_frame
from features.schema import EVENT_COLUMNS

SEED_ID = "seed-1"


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    """An event log that already holds one event, ``seed-1``."""
    event_log = EventLog(tmp_path / "log")
    seed = pd.DataFrame(
        [
            {
                "event_id": SEED_ID,
                "event_type": "page_view",
                "timestamp": "2024-03-01T00:00:00Z",
                "user_id": "u0",
                "session_id": "s0",
            }
        ]
    )
    report = ingest_frame(seed, event_log, tmp_path / "seed-quarantine", "seed")
    assert (report.accepted, len(event_log)) == (1, 1)
    return event_log


@pytest.fixture
def quarantine(tmp_path: Path) -> Path:
    return tmp_path / "quarantine"


def quarantine_records(report: IngestReport) -> list[dict[str, Any]]:
    assert report.quarantine_path is not None
    lines = report.quarantine_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def assert_counts(
    report: IngestReport, total: int, accepted: int, duplicate: int, conflict: int = 0
) -> None:
    rejected = total - accepted - duplicate - conflict
    assert (
        report.total,
        report.accepted,
        report.duplicate,
        report.conflict,
        report.rejected,
    ) == (total, accepted, duplicate, conflict, rejected)
    assert report.accepted + report.duplicate + report.conflict + report.rejected == report.total


# ---------------------------------------------------------------------------------------- CSV

# Every row names its device: a blank device_type cell is a known bug (pinned below).
CSV_ROWS: list[dict[str, str]] = [
    # 1: accepted; numeric-looking ids stay text, country upper-cased, -05:00 stored as UTC.
    {
        "event_id": "e1",
        "event_type": "product_view",
        "timestamp": "2024-03-10T05:00:00-05:00",
        "user_id": "007",
        "session_id": "0001",
        "device_type": "mobile",
        "country": "us",
        "product_id": "0042",
        "category": "shoes",
        "price": "19.99",
    },
    # 2: accepted; anonymous visitor, epoch milliseconds.
    {
        "event_id": "e2",
        "event_type": "page_view",
        "timestamp": "1710064800000",
        "anonymous_id": "a1",
        "session_id": "s2",
        "device_type": "desktop",
        "page": "/home",
    },
    # 3: duplicate of row 1 within the file (the same event, its instant written in UTC).
    {
        "event_id": "e1",
        "event_type": "product_view",
        "timestamp": "2024-03-10T10:00:00Z",
        "user_id": "007",
        "session_id": "0001",
        "device_type": "mobile",
        "country": "US",
        "product_id": "0042",
        "category": "shoes",
        "price": "19.990",
    },
    # 4: duplicate of the event already in the log.
    {
        "event_id": SEED_ID,
        "event_type": "page_view",
        "timestamp": "2024-03-01T00:00:00Z",
        "user_id": "u0",
        "session_id": "s0",
        "device_type": "other",
    },
    # 5: rejected: naive timestamp.
    {
        "event_id": "e3",
        "event_type": "page_view",
        "timestamp": "2024-03-10T11:00:00",
        "user_id": "u3",
        "session_id": "s3",
        "device_type": "tablet",
    },
    # 6: accepted; quantity left blank defaults to 1.
    {
        "event_id": "e4",
        "event_type": "add_to_cart",
        "timestamp": "2024-03-10T12:00:00Z",
        "user_id": "u4",
        "session_id": "s4",
        "device_type": "tablet",
        "product_id": "p4",
        "price": "5",
    },
    # 7: rejected: alpha-3 country.
    {
        "event_id": "e5",
        "event_type": "page_view",
        "timestamp": "2024-03-10T12:00:00Z",
        "user_id": "u5",
        "session_id": "s5",
        "device_type": "tablet",
        "country": "USA",
    },
    # 8: rejected: unknown device type.
    {
        "event_id": "e6",
        "event_type": "page_view",
        "timestamp": "2024-03-10T12:00:00Z",
        "user_id": "u6",
        "session_id": "s6",
        "device_type": "phone",
    },
    # 9: accepted search.
    {
        "event_id": "e7",
        "event_type": "search",
        "timestamp": "2024-03-10T13:00:00Z",
        "user_id": "u7",
        "session_id": "s7",
        "device_type": "tablet",
        "query": "red shoes",
    },
    # 10: conflict: the log's event id with other content.
    {
        "event_id": SEED_ID,
        "event_type": "page_view",
        "timestamp": "2024-03-10T11:00:00Z",
        "user_id": "u0",
        "session_id": "s0",
        "device_type": "tablet",
    },
]


# Without ``properties``: a blank properties cell is a known bug (pinned below).
CSV_COLUMNS = [column for column in EVENT_COLUMNS if column != "properties"]


def write_csv(
    path: Path, rows: list[dict[str, str]] = CSV_ROWS, columns: list[str] = CSV_COLUMNS
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_counts_quarantine_and_stored_values(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "events.csv")

    report = ingest_file(path, log, quarantine)

    assert_counts(report, total=10, accepted=4, duplicate=2, conflict=1)
    assert len(log) == 1 + 4
    assert log.event_ids() == {SEED_ID, "e1", "e2", "e4", "e7"}

    records = quarantine_records(report)
    assert [(r["row"], r["field"]) for r in records] == [
        (5, "timestamp"),
        (7, "country"),
        (8, "device_type"),
        (10, "event_id"),
    ]
    assert "no time zone" in records[0]["reason"]
    assert "alpha-2" in records[1]["reason"]
    assert "device_type" in records[2]["reason"]
    assert records[3]["reason"] == "event_id 'seed-1' already stored with different content"
    assert records[3]["raw"]["timestamp"] == "2024-03-10T11:00:00+00:00"  # the row, validated
    records = records[:3]
    assert all(r["source"] == str(path) for r in records)
    # The raw row is the file's cells, blanks included, so it can be fixed and re-imported.
    for record, row_number in zip(records, (5, 7, 8), strict=True):
        expected_raw = {column: "" for column in CSV_COLUMNS} | CSV_ROWS[row_number - 1]
        assert record["raw"] == expected_raw
    assert [(r.row, r.field) for r in report.rejections] == [
        (r["row"], r["field"]) for r in quarantine_records(report)
    ]

    stored = log.read().set_index("event_id")
    e1 = stored.loc["e1"]
    assert (e1["user_id"], e1["session_id"], e1["product_id"]) == ("007", "0001", "0042")
    assert e1["country"] == "US"
    assert e1["price"] == pytest.approx(19.99)
    assert e1["timestamp"] == pd.Timestamp("2024-03-10T10:00:00Z")
    assert stored.loc["e2", "timestamp"] == pd.Timestamp("2024-03-10T10:00:00Z")
    assert pd.isna(stored.loc["e2", "user_id"])
    assert stored.loc["e2", "anonymous_id"] == "a1"
    assert stored.loc["e4", "quantity"] == 1
    assert stored.loc["e2", "device_type"] == "desktop"
    assert stored.loc["e7", "query"] == "red shoes"
    assert str(stored["timestamp"].dt.tz) == "UTC"


# ------------------------------------------------------------------------------------ Parquet


def write_parquet(path: Path) -> Path:
    """A Parquet file as a pandas user would write it: NaN for missing numbers."""
    nan = float("nan")
    frame = pd.DataFrame(
        {
            "event_id": ["p1", "p2", "p1", SEED_ID, "p3", "p4", "p5"],
            "event_type": [
                "purchase",
                "product_view",
                "purchase",
                "page_view",
                "page_view",
                "search",
                "click",
            ],
            "timestamp": [  # rows 3 and 4 repeat events of the file and the log, same instants
                "2024-03-10T10:00:00Z",
                "2024-03-10T10:00:00Z",
                "1710064800000",
                "2024-03-01T01:00:00+01:00",
                "2024-03-10T10:00:00Z",
                "1710064800000",
                "2024-03-10T10:00:00Z",
            ],
            "user_id": ["u1", "u2", "u1", "u0", "u3", None, "u5"],
            "anonymous_id": [None, None, None, None, None, "a4", None],
            "session_id": ["s1", "s2", "s1", "s0", None, "s4", "s5"],
            "product_id": ["p9", "p9", "p9", None, None, None, None],
            "price": [5.0, -1.0, 5.0, nan, nan, nan, nan],
            "quantity": [2.0, nan, 2.0, nan, nan, nan, nan],
            "query": [None, None, None, None, None, "boots", None],
        }
    )
    frame.to_parquet(path, index=False)
    return path


def test_parquet_counts_quarantine_and_stored_values(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_parquet(tmp_path / "events.parquet")

    report = ingest_file(path, log, quarantine)

    assert_counts(report, total=7, accepted=2, duplicate=2)
    assert log.event_ids() == {SEED_ID, "p1", "p4"}
    records = quarantine_records(report)
    assert [(r["row"], r["field"]) for r in records] == [
        (2, "price"),
        (5, "session_id"),
        (7, "event_type"),
    ]
    assert "greater than or equal to 0" in records[0]["reason"]
    assert records[0]["raw"]["event_id"] == "p2"
    assert records[0]["raw"]["price"] == -1.0
    assert records[1]["raw"]["session_id"] is None  # missing cells are null, not NaN
    assert records[2]["raw"]["event_type"] == "click"

    stored = log.read().set_index("event_id")
    assert stored.loc["p1", "quantity"] == 2
    assert stored.loc["p1", "price"] == 5.0
    assert stored.loc["p4", "anonymous_id"] == "a4"
    assert stored.loc["p4", "timestamp"] == pd.Timestamp("2024-03-10T10:00:00Z")


# -------------------------------------------------------------------------------- JSON Lines

JSONL_LINES = [
    # 1: accepted; an integer user id becomes text.
    json.dumps(
        {
            "event_id": "j1",
            "event_type": "page_view",
            "timestamp": 1710064800000,
            "user_id": 7,
            "session_id": "s1",
        }
    ),
    # 2: rejected: malformed JSON.
    '{"event_id": "j9", "event_type": ',
    # 3: duplicate within the file (row 1 as text: the same event).
    json.dumps(
        {
            "event_id": "j1",
            "event_type": "page_view",
            "timestamp": "2024-03-10T10:00:00Z",
            "user_id": "7",
            "session_id": "s1",
        }
    ),
    # 4: duplicate against the log.
    json.dumps(
        {
            "event_id": SEED_ID,
            "event_type": "page_view",
            "timestamp": "2024-03-01T00:00:00Z",
            "user_id": "u0",
            "session_id": "s0",
        }
    ),
    # 5: rejected: valid JSON but not an object.
    "[1, 2]",
    # 6: accepted; properties as a nested object.
    json.dumps(
        {
            "event_id": "j2",
            "event_type": "purchase",
            "timestamp": "2024-03-10T11:00:00+01:00",
            "user_id": "u2",
            "session_id": "s2",
            "product_id": "p2",
            "price": 3,
            "quantity": 4,
            "properties": {"coupon": "SPRING", "gift": True},
        }
    ),
    # 7: rejected: naive timestamp.
    json.dumps(
        {
            "event_id": "j3",
            "event_type": "page_view",
            "timestamp": "2024-03-10 10:00:00",
            "user_id": "u3",
            "session_id": "s3",
        }
    ),
]


def write_jsonl(path: Path) -> Path:
    path.write_text("\n".join(JSONL_LINES) + "\n", encoding="utf-8")
    return path


def test_jsonl_counts_quarantine_and_stored_values(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl")

    report = ingest_file(path, log, quarantine)

    assert_counts(report, total=7, accepted=2, duplicate=2)
    assert log.event_ids() == {SEED_ID, "j1", "j2"}
    records = quarantine_records(report)
    assert [(r["row"], r["field"]) for r in records] == [
        (2, "<line>"),
        (5, "<line>"),
        (7, "timestamp"),
    ]
    assert records[0]["reason"].startswith("invalid JSON")
    assert records[0]["raw"] == JSONL_LINES[1]
    assert records[1]["reason"] == "a JSON object is required"
    assert records[1]["raw"] == "[1, 2]"
    assert records[2]["raw"] == json.loads(JSONL_LINES[6])

    stored = log.read().set_index("event_id")
    assert stored.loc["j1", "user_id"] == "7"
    assert stored.loc["j2", "timestamp"] == pd.Timestamp("2024-03-10T10:00:00Z")
    assert stored.loc["j2", "quantity"] == 4
    assert json.loads(stored.loc["j2", "properties"]) == {"coupon": "SPRING", "gift": True}


# ------------------------------------------------------------------------------- idempotence

WRITERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "csv": ("events.csv", write_csv),
    "parquet": ("events.parquet", write_parquet),
    "jsonl": ("events.jsonl", write_jsonl),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_reimport_is_idempotent(tmp_path: Path, log: EventLog, quarantine: Path, kind: str) -> None:
    name, write = WRITERS[kind]
    path = write(tmp_path / name)
    first = ingest_file(path, log, quarantine)
    files_before = sorted(log.root.rglob("*"))
    length_before = len(log)

    again = ingest_file(path, log, quarantine)

    stored = first.total - first.rejected - first.conflict
    assert_counts(again, total=first.total, accepted=0, duplicate=stored, conflict=first.conflict)
    assert again.rejected == first.rejected
    assert again.files_written == []
    assert len(log) == length_before
    assert sorted(log.root.rglob("*")) == files_before
    assert [(r["row"], r["field"]) for r in quarantine_records(again)] == [
        (r["row"], r["field"]) for r in quarantine_records(first)
    ]


# ------------------------------------------------------------------------------ file errors


def test_unknown_suffix_is_a_clear_error(tmp_path: Path, log: EventLog, quarantine: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("event_id\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'events\.txt'.*'\.txt'.*\.csv.*\.jsonl.*\.parquet"):
        ingest_file(path, log, quarantine)
    assert len(log) == 1
    assert not quarantine.exists()


def test_unknown_format_name_is_a_clear_error(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "events.csv")
    with pytest.raises(ValueError, match=r"unknown format 'xml'; allowed: csv, parquet, jsonl"):
        ingest_file(path, log, quarantine, fmt="xml")


def test_format_option_overrides_the_suffix(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "export.txt")
    report = ingest_file(path, log, quarantine, fmt="csv")
    assert_counts(report, total=10, accepted=4, duplicate=2, conflict=1)


def test_missing_file_is_a_clear_error(tmp_path: Path, log: EventLog, quarantine: Path) -> None:
    path = tmp_path / "nowhere" / "events.csv"
    with pytest.raises(FileNotFoundError, match=r"events file not found: .*nowhere/events\.csv"):
        ingest_file(path, log, quarantine)
    assert len(log) == 1


def test_clean_file_writes_no_quarantine(tmp_path: Path, log: EventLog, quarantine: Path) -> None:
    path = write_csv(tmp_path / "clean.csv", [CSV_ROWS[0], CSV_ROWS[1]])
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=2, accepted=2, duplicate=0)
    assert report.quarantine_path is None
    assert not quarantine.exists()


def test_progress_sees_every_input_row(tmp_path: Path, log: EventLog, quarantine: Path) -> None:
    ticks: list[int] = []
    report = ingest_file(write_jsonl(tmp_path / "e.jsonl"), log, quarantine, progress=ticks.append)
    assert sum(ticks) == report.total == len(JSONL_LINES)


def test_csv_properties_cell_is_parsed_json(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    row = CSV_ROWS[0] | {"properties": '{"colour": "red", "size": 42}'}
    path = write_csv(tmp_path / "props.csv", [row], columns=list(EVENT_COLUMNS))
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=1, accepted=1, duplicate=0)
    stored = log.read().set_index("event_id")
    assert json.loads(stored.loc["e1", "properties"]) == {"colour": "red", "size": 42}


# ------------------------------------------------------------------------------- known bugs


def test_csv_blank_properties_cell_is_missing_not_rejected(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "all-columns.csv", CSV_ROWS[:2], columns=list(EVENT_COLUMNS))
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=2, accepted=2, duplicate=0)


def test_csv_blank_device_type_defaults_to_other(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "no-device.csv", [CSV_ROWS[1] | {"device_type": ""}])
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=1, accepted=1, duplicate=0)
    assert log.read().set_index("event_id").loc["e2", "device_type"] == "other"


def test_out_of_range_epoch_row_is_quarantined_not_fatal(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    bad = CSV_ROWS[1] | {"event_id": "far", "timestamp": "99999999999999999999"}
    path = write_csv(tmp_path / "far.csv", [CSV_ROWS[0], bad])
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=2, accepted=1, duplicate=0)
    assert [(r["row"], r["field"]) for r in quarantine_records(report)] == [(2, "timestamp")]


def test_csv_row_with_extra_cell_is_quarantined_not_fatal(
    tmp_path: Path, log: EventLog, quarantine: Path
) -> None:
    path = write_csv(tmp_path / "ragged.csv", [CSV_ROWS[0], CSV_ROWS[1]])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("e9,page_view,2024-03-10T10:00:00Z,u9,,s9,,,,,,,,,,surplus\n")
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=3, accepted=2, duplicate=0)
    assert [r["row"] for r in quarantine_records(report)] == [3]


CROSS_FIELD_ROWS = [
    ("purchase without price", {"event_type": "purchase", "product_id": "p1"}, "price"),
    ("product_view without product_id", {"event_type": "product_view", "price": "1"}, "product_id"),
    ("search without query", {"event_type": "search"}, "query"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [case[1:] for case in CROSS_FIELD_ROWS],
    ids=[case[0] for case in CROSS_FIELD_ROWS],
)
def test_quarantine_names_the_field_of_a_cross_field_rule(
    tmp_path: Path, log: EventLog, quarantine: Path, overrides: dict[str, str], field: str
) -> None:
    base = {"event_id": "x1", "timestamp": "2024-03-10T10:00:00Z", "device_type": "mobile"}
    path = write_csv(tmp_path / "x.csv", [base | {"user_id": "u1", "session_id": "s1"} | overrides])
    report = ingest_file(path, log, quarantine)
    assert_counts(report, total=1, accepted=0, duplicate=0)
    record = quarantine_records(report)[0]
    assert f"{field} is required" in record["reason"]
    assert record["field"] == field
