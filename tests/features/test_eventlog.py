"""The append-only, date-partitioned Parquet event log."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.eventlog import EventLog
from features.ingest import ingest_frame
from features.schema import EVENT_COLUMNS, Event


def events_frame(*events: tuple[str, str]) -> pd.DataFrame:
    """Validated page views ``(event_id, timestamp)`` as ingestion hands them to the log."""
    rows = [
        Event.model_validate(
            {
                "event_id": event_id,
                "event_type": "page_view",
                "timestamp": timestamp,
                "user_id": "u1",
                "session_id": "s1",
            }
        ).to_row()
        for event_id, timestamp in events
    ]
    frame = pd.DataFrame.from_records(rows, columns=list(EVENT_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["quantity"] = frame["quantity"].astype("Int64")
    frame["price"] = frame["price"].astype("float64")
    return frame


def partitions(log: EventLog) -> dict[str, list[str]]:
    """``{partition folder: sorted event ids}``."""
    out: dict[str, list[str]] = {}
    for path in sorted(log.root.glob("event_date=*/*.parquet")):
        ids = pd.read_parquet(path, columns=["event_id"])["event_id"].tolist()
        out.setdefault(path.parent.name, []).extend(ids)
    return {folder: sorted(ids) for folder, ids in out.items()}


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def test_ingested_event_is_partitioned_by_its_utc_date(log: EventLog, tmp_path: Path) -> None:
    raw = events_frame(("late", "2024-03-10T23:30:00-05:00"), ("early", "2024-03-10T00:30:00Z"))
    raw["timestamp"] = ["2024-03-10T23:30:00-05:00", "2024-03-10T00:30:00Z"]
    report = ingest_frame(raw, log, tmp_path / "quarantine", "frame")
    assert report.accepted == 2
    assert partitions(log) == {
        "event_date=2024-03-10": ["early"],
        "event_date=2024-03-11": ["late"],  # 23:30-05:00 is 04:30 UTC the next day
    }
    stored = log.read().set_index("event_id")
    assert stored.loc["late", "timestamp"] == pd.Timestamp("2024-03-11T04:30:00Z")


def test_append_writes_one_new_file_per_utc_day(log: EventLog) -> None:
    frame = events_frame(
        ("a", "2024-03-10T10:00:00Z"), ("b", "2024-03-11T00:00:00Z"), ("c", "2024-03-10T23:59:59Z")
    )
    written = log.append(frame)
    assert [path.parent.name for path in written] == [
        "event_date=2024-03-10",
        "event_date=2024-03-11",
    ]
    assert all(path.exists() and path.suffix == ".parquet" for path in written)
    assert partitions(log) == {"event_date=2024-03-10": ["a", "c"], "event_date=2024-03-11": ["b"]}
    assert not list(log.root.rglob("*.tmp"))  # written under a temp name, then renamed


def test_append_partitions_a_non_utc_frame_by_utc_date(log: EventLog) -> None:
    frame = events_frame(("late", "2024-03-10T23:30:00-05:00"))
    frame["timestamp"] = frame["timestamp"].dt.tz_convert("-05:00")
    log.append(frame)
    assert partitions(log) == {"event_date=2024-03-11": ["late"]}


def test_append_of_nothing_writes_nothing(log: EventLog) -> None:
    assert log.append(events_frame()) == []
    assert not log.root.exists()
    assert len(log) == 0


def test_appended_files_are_never_rewritten(log: EventLog) -> None:
    first = log.append(events_frame(("a", "2024-03-10T10:00:00Z"), ("b", "2024-03-11T10:00:00Z")))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in first}

    second = log.append(events_frame(("c", "2024-03-10T11:00:00Z"), ("d", "2024-03-11T11:00:00Z")))

    assert set(second).isdisjoint(first)
    assert [path.parent for path in second] == [path.parent for path in first]  # same days
    for path, (mtime, content) in before.items():
        assert path.stat().st_mtime_ns == mtime
        assert path.read_bytes() == content
    assert sorted(log.root.rglob("*.parquet")) == sorted([*first, *second])
    assert len(log) == 4


def test_event_ids_returns_every_id_across_partitions(log: EventLog) -> None:
    assert log.event_ids() == set()
    log.append(events_frame(("a", "2024-03-10T10:00:00Z"), ("b", "2024-03-12T10:00:00Z")))
    log.append(events_frame(("c", "2024-03-11T10:00:00Z")))
    assert log.event_ids() == {"a", "b", "c"}
    assert len(log) == 3


def test_dedup_index_reads_only_new_parts_including_other_writers(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #5 (/events at ~5 RPS): de-duplication reads each part once, not the whole log."""
    import features.eventlog as eventlog

    log.append(events_frame(("a", "2024-03-10T10:00:00Z")))
    other = EventLog(log.root)  # another worker or process appending to the same log
    other.append(events_frame(("b", "2024-03-11T10:00:00Z")))
    reads: list[str] = []
    read_table = eventlog.pq.read_table
    monkeypatch.setattr(
        eventlog.pq, "read_table", lambda path, **kw: reads.append(path) or read_table(path, **kw)
    )
    assert log.existing(["a", "b", "c"]) == {"a", "b"}
    assert [Path(p).parent.name for p in reads] == ["event_date=2024-03-11"]  # its own is known
    assert log.existing(["b"]) == {"b"} and len(reads) == 1  # nothing new: nothing read
    log.append(events_frame(("c", "2024-03-10T11:00:00Z")))
    assert log.event_ids() == {"a", "b", "c"} and len(reads) == 1
    assert EventLog(log.root).event_ids() == {"a", "b", "c"}  # a fresh instance reads them all


def test_dedup_index_starts_over_when_a_part_disappears(log: EventLog) -> None:
    log.append(events_frame(("a", "2024-03-10T10:00:00Z")))
    (gone,) = log.append(events_frame(("b", "2024-03-11T10:00:00Z")))
    assert log.event_ids() == {"a", "b"}
    gone.unlink()
    assert log.event_ids() == {"a"}
    assert log.existing(["a", "b"]) == {"a"}


@pytest.fixture
def hourly(log: EventLog) -> EventLog:
    """Events at 10:00, 11:00 (two, appended in reverse id order) and 12:00 UTC on 2024-03-10."""
    log.append(events_frame(("h12", "2024-03-10T12:00:00Z"), ("h11b", "2024-03-10T11:00:00Z")))
    log.append(events_frame(("h11a", "2024-03-10T11:00:00Z"), ("h10", "2024-03-10T10:00:00Z")))
    return log


def test_read_returns_everything_sorted_by_time_then_id(hourly: EventLog) -> None:
    frame = hourly.read()
    assert list(frame.columns) == list(EVENT_COLUMNS)
    assert frame["event_id"].tolist() == ["h10", "h11a", "h11b", "h12"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(frame.index) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2024-03-10T10:00:00Z", "2024-03-10T12:00:00Z", ["h10", "h11a", "h11b"]),
        ("2024-03-10T11:00:00Z", "2024-03-10T12:00:00Z", ["h11a", "h11b"]),
        ("2024-03-10T10:00:00.000001Z", None, ["h11a", "h11b", "h12"]),
        (None, "2024-03-10T11:00:00Z", ["h10"]),
        ("2024-03-10T11:00:00Z", "2024-03-10T11:00:00Z", []),
        ("2024-03-10T06:00:00-05:00", "2024-03-10T07:00:00-05:00", ["h11a", "h11b"]),
        (None, None, ["h10", "h11a", "h11b", "h12"]),
    ],
    ids=["start in end out", "one hour", "open end", "open start", "empty", "other zone", "all"],
)
def test_read_filters_half_open(
    hourly: EventLog, start: str | None, end: str | None, expected: list[str]
) -> None:
    frame = hourly.read(
        start=None if start is None else pd.Timestamp(start),
        end=None if end is None else pd.Timestamp(end),
    )
    assert frame["event_id"].tolist() == expected


def test_read_selected_columns_only(hourly: EventLog) -> None:
    frame = hourly.read(columns=["user_id", "event_type"])
    assert list(frame.columns) == ["user_id", "event_type"]
    assert frame["event_type"].tolist() == ["page_view"] * 4


def test_read_of_empty_log_has_the_schema_columns(log: EventLog) -> None:
    frame = log.read()
    assert frame.empty
    assert list(frame.columns) == list(EVENT_COLUMNS)
    assert list(log.read(columns=["event_id"]).columns) == ["event_id"]


def _ingest_at_once(root: str, n: int, barrier, results) -> None:
    """One writer process: its own EventLog on the shared folder, started with the others."""
    frame = events_frame(*((f"e{i:04d}", "2026-01-05T10:00:00Z") for i in range(n)))
    log = EventLog(Path(root))
    barrier.wait()
    report = ingest_frame(frame, log, Path(root) / "quarantine", "race")
    results.put(report.accepted)


def test_writer_processes_given_the_same_events_append_them_once(tmp_path: Path) -> None:
    """Four processes ingest the same 200 events at the same moment (two ``bentoml serve``
    workers, or an import beside the service): the writer lock lets exactly one append them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    barrier, results = context.Barrier(4), context.Queue()
    root = tmp_path / "events"
    workers = [
        context.Process(target=_ingest_at_once, args=(str(root), 200, barrier, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    accepted = sorted(results.get(timeout=5) for _ in workers)
    assert accepted == [0, 0, 0, 200]
    stored = pd.read_parquet(root, columns=["event_id"])["event_id"]
    assert len(stored) == 200 and stored.is_unique


def test_the_writer_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(
    tmp_path: Path,
) -> None:
    import threading

    log = EventLog(tmp_path / "events")
    entered = threading.Event()

    def write() -> None:
        with log.writer():
            entered.set()

    with log.writer(), log.writer():  # nested in one thread: no deadlock
        other = threading.Thread(target=write)
        other.start()
        other.join(timeout=0.3)
        assert not entered.is_set()  # the other thread waits while this one holds it
    other.join(timeout=5)
    assert entered.is_set()


def test_len_counts_parts_of_other_writers_and_forgets_removed_ones(log: EventLog) -> None:
    """``len`` reads each part's footer once (issue #11: the realtime benchmark polls it), yet
    sees parts another writer added and forgets parts removed by hand."""
    first = log.append(events_frame(("a", "2024-03-10T10:00:00Z"), ("b", "2024-03-11T10:00:00Z")))
    assert len(log) == 2
    EventLog(log.root).append(events_frame(("c", "2024-03-10T11:00:00Z")))
    assert len(log) == 3
    first[0].unlink()
    assert len(log) == 2
