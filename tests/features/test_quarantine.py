"""Issue #10 item 4 (quarantine part): bounded records, a bounded folder, list/purge/replay.

Before, five 10 MB invalid events grew the quarantine by their full size (150 MB in 3 s for the
issue's run), the folder grew without bound, and a quarantined row could only be re-imported by
hand.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.broker.embedded import EmbeddedBroker
from features.eventlog import EventLog
from features.ingest import ingest_frame, replay_quarantine
from features.quarantine import TRUNCATED, Quarantine
from features.schema import EventLimits
from serving.publish import publish_events
from tests.features.test_ingest_conflicts import view


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.jsonl"))


def test_huge_invalid_events_keep_a_few_kib_each(tmp_path: Path) -> None:
    """Issue #10 item 4: five 10 MB invalid events → a few KiB of quarantine, not 50 MB."""
    broker, folder = EmbeddedBroker(tmp_path / "queue.db"), tmp_path / "q"
    huge = "x" * (10 * 2**20)
    for n in range(5):
        answer = publish_events(view(f"big{n}", page=huge, user_id=huge), broker, folder)
        assert (answer.accepted, answer.rejected, broker.depth()) == (0, 1, 0)
        assert answer.rejections[0].field == "user_id"
    assert folder_bytes(folder) < 5 * 5 * 1024
    for path in folder.glob("*.jsonl"):
        (record,) = [json.loads(line) for line in path.read_text().splitlines()]
        assert record["truncated"] is True and record["row"] == 1
        assert record["raw"].endswith(TRUNCATED) and len(json.dumps(record["raw"])) <= 4096
        assert record["raw"].startswith('{"event_id": "big')  # the start of the row, readable


def test_small_rows_are_kept_whole(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    raw = {"event_id": "é" * 100, "page": "x" * 3000}
    assert quarantine.bounded_raw(raw) == (raw, False)


def test_one_write_stops_at_the_folder_limit_and_counts_the_rest(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q", max_raw_bytes=500, max_bytes=5_000)
    records = [
        {"source": "s", "row": n, "field": "f", "reason": "r", "raw": "y" * 400} for n in range(100)
    ]
    path = quarantine.write("s", records)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.stat().st_size <= 5_000
    assert [line["row"] for line in lines[:-1]] == list(range(len(lines) - 1))
    assert lines[-1]["omitted"] == 100 - (len(lines) - 1) > 80


def _old_file(folder: Path, days: float, size: int = 100) -> Path:
    stamp = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}-0000-old.csv.jsonl"
    path.write_text(json.dumps({"row": 1, "raw": "z" * size}) + "\n")
    return path


def test_rotation_by_age_size_and_count(tmp_path: Path) -> None:
    """Issue #10 item 4: each write leaves the folder within its bounds, oldest files first."""
    folder = tmp_path / "q"
    folder.mkdir()
    ancient = _old_file(folder, days=40)
    recent = [_old_file(folder, days=d, size=2_000) for d in (3, 2, 1)]
    quarantine = Quarantine(folder, max_raw_bytes=100, max_bytes=5_000, max_age=timedelta(days=30))
    newest = quarantine.write("s", [{"row": 1, "raw": "w"}])
    assert not ancient.exists()  # too old
    assert not recent[0].exists() and recent[1].exists() and recent[2].exists()  # too big
    assert newest.exists() and folder_bytes(folder) <= 5_000
    few = Quarantine(folder, max_files=2)
    few.write("s", [{"row": 1, "raw": "v"}])
    assert len(few.files()) == 2 and not recent[1].exists()


def test_purge_all_or_older_than(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    _old_file(folder, days=10)
    _old_file(folder, days=5)
    quarantine = Quarantine(folder)
    quarantine.write("s", [{"row": 1, "raw": "a"}, {"row": 2, "raw": "b"}])
    assert quarantine.purge(timedelta(days=7)) == (1, 1)
    assert quarantine.purge() == (2, 3)
    assert quarantine.files() == []


def test_replay_imports_fixed_rows_and_keeps_the_still_bad(tmp_path: Path) -> None:
    """Issue #10 item 4: rows fixed in the quarantine file, or valid in a wider window, are
    imported and leave the quarantine; the others stay, with today's reason."""
    log, folder = EventLog(tmp_path / "log"), tmp_path / "q"
    ingest_frame(pd.DataFrame([view("kept")]), log, folder, "seed")
    rows = [
        view("old", timestamp="1985-06-01T00:00:00Z"),  # 1: valid in a wider window
        view("typo", device_type="phone"),  # 2: fixed by hand below
        view("bad", event_type="click"),  # 3: stays
        view("kept", user_id="u9"),  # 4: conflict, stays
        view("long", page="x" * 10_000, session_id=None),  # 5: cut in quarantine, stays
    ]
    report = ingest_frame(pd.DataFrame(rows), log, folder, "batch")
    assert (report.rejected, report.conflict) == (4, 1)
    path = report.quarantine_path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["raw"]["device_type"] = "mobile"  # the operator's fix
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    replayed = replay_quarantine(
        log, Quarantine(folder), limits=EventLimits(earliest=datetime(1980, 1, 1, tzinfo=UTC))
    )
    assert (replayed.files, replayed.replayed, replayed.still_quarantined) == (1, 2, 3)
    assert {"old", "typo"} <= log.event_ids() and "bad" not in log.event_ids()
    left = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in left] == [
        (3, "event_type"),
        (4, "event_id"),
        (5, "session_id"),
    ]
    assert "already stored with different content" in left[1]["reason"]
    assert left[2]["truncated"] is True

    left[0]["raw"]["event_type"] = "page_view"  # fixed later; replaying twice is harmless
    path.write_text("".join(json.dumps(r) + "\n" for r in left))
    again = replay_quarantine(log, Quarantine(folder), path.name)
    assert (again.replayed, again.still_quarantined) == (1, 2)
    left[0]["raw"] = view("typo", device_type="mobile")  # already stored: a duplicate
    path.write_text("".join(json.dumps(r) + "\n" for r in left[:1]))
    done = replay_quarantine(log, Quarantine(folder), path.name)
    assert (done.already_stored, done.still_quarantined, done.files_removed) == (1, 0, 1)
    assert not path.exists()


def test_replay_of_an_unknown_file_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no quarantine file 'nope.jsonl' in"):
        replay_quarantine(EventLog(tmp_path / "log"), Quarantine(tmp_path / "q"), "nope.jsonl")


def test_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_raw_bytes >= 64"):
        Quarantine(tmp_path, max_raw_bytes=10)
    assert os.fspath(Quarantine(str(tmp_path)).folder) == str(tmp_path)
