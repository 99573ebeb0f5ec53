"""Issue #10 item 3: an event_id seen before with other content is a conflict, not a duplicate.

A duplicate (same id, same event) is skipped; a conflict is quarantined with its reason, so no
event disappears under the wrong label. Generated data sets carry seed and size in their ids, so
a second one imported into a workspace neither duplicates nor conflicts with the first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.eventlog import EventLog
from features.ingest import ingest_frame
from features.schema import EVENT_COLUMNS
from features.synthetic.generate import generate_clickstream


def view(event_id: str, **overrides) -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "timestamp": "2024-03-10T10:00:00Z",
        "user_id": "u1",
        "session_id": "s1",
        **overrides,
    }


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def test_same_id_other_content_is_a_conflict_in_the_log_and_in_the_file(
    tmp_path: Path, log: EventLog
) -> None:
    """Issue #10 item 3: before, both rows were counted as duplicates and dropped silently."""
    ingest_frame(pd.DataFrame([view("a"), view("b")]), log, tmp_path / "q", "first")
    rows = [
        view("a"),  # the same event: duplicate
        view("b", user_id="u2"),  # another event under a stored id: conflict
        view("c"),
        view("c", page="/cart"),  # repeats row 3's id with other content: conflict
        view("c", timestamp="1710064800000"),  # row 3 again, its time as epoch ms: duplicate
    ]
    report = ingest_frame(pd.DataFrame(rows), log, tmp_path / "q", "second")
    assert (report.total, report.accepted, report.duplicate, report.conflict, report.rejected) == (
        5,
        1,
        2,
        2,
        0,
    )
    assert [(r.row, r.field, r.reason) for r in report.rejections] == [
        (2, "event_id", "event_id 'b' already stored with different content"),
        (4, "event_id", "event_id 'c' already stored with different content"),
    ]
    stored = log.read().set_index("event_id")
    assert stored.loc["b", "user_id"] == "u1" and pd.isna(stored.loc["c", "page"])
    lines = report.quarantine_path.read_text(encoding="utf-8").splitlines()
    quarantined = [json.loads(line) for line in lines]
    assert [(q["row"], q["raw"]["event_id"]) for q in quarantined] == [(2, "b"), (4, "c")]
    assert quarantined[0]["raw"]["user_id"] == "u2"  # the conflicting event is kept


def test_properties_in_another_key_order_are_the_same_event(tmp_path: Path, log: EventLog) -> None:
    first = view("p", properties={"colour": "red", "size": 42})
    again = view("p", properties='{"size": 42, "colour": "red"}')
    ingest_frame(pd.DataFrame([first]), log, tmp_path / "q", "first")
    report = ingest_frame(pd.DataFrame([again]), log, tmp_path / "q", "again")
    assert (report.duplicate, report.conflict) == (1, 0)


def test_two_generated_data_sets_share_no_event_id(tmp_path: Path, log: EventLog) -> None:
    """Issue #10 item 3: before, a second generated data set reported ~all its events as
    duplicates (ids e0000001... in both)."""
    one = generate_clickstream(n_users=40, days=3, seed=1).events
    two = generate_clickstream(n_users=40, days=3, seed=2).events
    bigger = generate_clickstream(n_users=41, days=3, seed=1).events
    first = ingest_frame(one, log, tmp_path / "q", "seed1")
    second = ingest_frame(two, log, tmp_path / "q", "seed2")
    third = ingest_frame(bigger, log, tmp_path / "q", "seed1-bigger")
    for report, events in ((first, one), (second, two), (third, bigger)):
        assert (report.accepted, report.duplicate, report.conflict) == (len(events), 0, 0)
    assert len(log) == len(one) + len(two) + len(bigger)
    again = ingest_frame(one, log, tmp_path / "q", "seed1-again")
    assert (again.accepted, again.duplicate, again.conflict) == (0, len(one), 0)


def test_stored_reads_only_the_parts_holding_the_ids(
    log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import features.eventlog as eventlog

    ingest_frame(pd.DataFrame([view("a")]), log, tmp_path / "q", "day1")
    ingest_frame(
        pd.DataFrame([view("b", timestamp="2024-03-11T10:00:00Z")]), log, tmp_path / "q", "day2"
    )
    reads: list[str] = []
    read_table = eventlog.pq.read_table
    monkeypatch.setattr(
        eventlog.pq, "read_table", lambda path, **kw: reads.append(path) or read_table(path, **kw)
    )
    found = log.stored(["b", "zz"])
    assert found["event_id"].tolist() == ["b"] and found["user_id"].tolist() == ["u1"]
    assert list(found.columns) == list(EVENT_COLUMNS)
    assert str(found["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert [Path(p).parent.name for p in reads] == ["event_date=2024-03-11"]
    assert log.stored(["zz"]).empty and len(reads) == 1
