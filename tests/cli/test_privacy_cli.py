"""``tailor privacy erase|export|verify`` (issue #13) on a real workspace."""

from __future__ import annotations

import json
import zipfile

from typer.testing import CliRunner

from cli.app import app
from features.consent.ledger import ConsentLedger
from features.eventlog import EventLog
from features.ingest import ingest_rows
from features.workspace import Workspace

runner = CliRunner()


def _run(*args: str, home) -> object:
    return runner.invoke(app, [*args, "--home", str(home)], env={"COLUMNS": "200"})


def _event(n: int, user_id: str | None, anonymous_id: str) -> dict:
    return {
        "event_id": f"e{n}",
        "event_type": "page_view",
        "timestamp": f"2026-01-0{1 + n % 3}T10:00:00Z",
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "session_id": f"s{n}",
    }


def test_erase_export_and_verify_from_the_command_line(tmp_path) -> None:
    home = tmp_path / "ws"
    ws = Workspace(home).ensure()
    log = EventLog(ws.event_log_dir)
    rows = [
        _event(0, "user-one", "device-one"),
        _event(1, None, "device-one"),
        _event(2, "user-two", "device-two"),
    ]
    report = ingest_rows(iter(rows), log, ws.quarantine_dir, "test")
    assert report.rejected == 0
    ConsentLedger.for_workspace(ws).append(anonymous_id="device-one", purposes={"analytics": True})

    exported = _run(
        "privacy",
        "export",
        "--anonymous-id",
        "device-one",
        "--out",
        str(tmp_path / "device-one.zip"),
        home=home,
    )
    assert exported.exit_code == 0, exported.output
    with zipfile.ZipFile(tmp_path / "device-one.zip") as archive:
        events = json.loads(archive.read("event_log.json"))
        consent = json.loads(archive.read("consent_ledger.json"))
    assert [e["event_id"] for e in events] == ["e1"]  # e0: user-one, not linked
    assert [r["purposes"]["analytics"] for r in consent] == [True]

    erased = _run("privacy", "erase", "--anonymous-id", "device-one", home=home)
    assert erased.exit_code == 0, erased.output
    assert "device-one" not in erased.output and "event_log" in erased.output
    (receipt_path,) = (home / "privacy" / "receipts").glob("*.json")
    assert json.loads(receipt_path.read_text())["receipt"]["stores"]["event_log"] == 1
    assert sorted(EventLog(ws.event_log_dir).read()["event_id"]) == ["e0", "e2"]

    verified = _run("privacy", "verify", str(receipt_path), home=home)
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith("valid: erasure of p1_")

    document = json.loads(receipt_path.read_text())
    document["receipt"]["total"] = 0
    receipt_path.write_text(json.dumps(document))
    forged = _run("privacy", "verify", str(receipt_path), home=home)
    assert forged.exit_code == 1
    assert "does not match" in forged.output


def test_erasing_an_unknown_person_signs_a_receipt_that_nothing_was_held(tmp_path) -> None:
    erased = _run("privacy", "erase", "--user-id", "nobody", home=tmp_path / "ws")
    assert erased.exit_code == 0, erased.output
    assert "nothing was held" in erased.output
    (receipt_path,) = (tmp_path / "ws" / "privacy" / "receipts").glob("*.json")
    body = json.loads(receipt_path.read_text())["receipt"]
    assert body["total"] == 0 and body["nothing_held"] is True
    assert "nobody" not in receipt_path.read_text()


def test_erase_without_an_id_is_one_error_line(tmp_path) -> None:
    result = _run("privacy", "erase", home=tmp_path / "ws")
    assert result.exit_code == 1
    assert "give --user-id or --anonymous-id" in result.output
