"""``tailor consent show|import|export`` (issue #12) on a real workspace database."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from features.consent.check import ConsentCheck
from features.workspace import Workspace

runner = CliRunner()

CSV = """user_id,anonymous_id,analytics,personalization,marketing,recorded_at,country
u1,,true,true,false,2026-01-02T10:00:00Z,FR
,dev9,yes,no,no,,
u1,,,false,,2026-01-03T10:00:00Z,FR
"""


def _run(*args: str, home) -> object:
    return runner.invoke(app, [*args, "--home", str(home)], env={"COLUMNS": "200"})


def test_import_show_and_export_round_trip(tmp_path) -> None:
    source = tmp_path / "choices.csv"
    source.write_text(CSV)
    imported = _run("consent", "import", str(source), home=tmp_path / "ws")
    assert imported.exit_code == 0, imported.output
    assert "records" in imported.output and "3" in imported.output
    check = ConsentCheck.for_workspace(Workspace(tmp_path / "ws"))
    assert check.ledger.counts() == {"records": 3, "people": 2}
    assert not check.decide("u1", "personalization").allowed  # withdrawn on the 3rd
    assert check.decide("u1", "analytics").allowed

    shown = _run("consent", "show", "--user-id", "u1", home=tmp_path / "ws")
    assert shown.exit_code == 0, shown.output
    assert "personalization refused" in shown.output and "opt-in" in shown.output
    assert "2 records in the history" in shown.output
    overview = _run("consent", "show", home=tmp_path / "ws")
    assert "policy_version" in overview.output and "opt-out" in overview.output

    out = tmp_path / "out" / "ledger.csv"
    exported = _run("consent", "export", "--out", str(out), home=tmp_path / "ws")
    assert exported.exit_code == 0 and "3 records" in exported.output
    rows = list(csv.DictReader(out.open()))
    assert [r["user_id"] or r["anonymous_id"] for r in rows] == ["u1", "dev9", "u1"]
    assert rows[2]["personalization"] == "false" and rows[2]["analytics"] == ""
    again = _run("consent", "import", str(out), home=tmp_path / "copy")
    assert again.exit_code == 0, again.output
    copy = ConsentCheck.for_workspace(Workspace(tmp_path / "copy"))
    assert [r.as_dict()["purposes"] for r in copy.ledger.all_records()] == [
        r.as_dict()["purposes"] for r in check.ledger.all_records()
    ]

    person = tmp_path / "u1.json"
    one = _run("consent", "export", "--user-id", "u1", "--out", str(person), home=tmp_path / "ws")
    assert one.exit_code == 0
    assert [r["user_id"] for r in json.loads(person.read_text())["consent"]] == ["u1", "u1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_id,analytics\nu1,true\nu2,maybe\n", "row 3, field 'analytics': 'maybe' is not"),
        ("user_id,ads\nu1,true\n", "row 1, field 'ads': unknown column"),
        ("user_id,analytics\nu1,true\n,true\n", "row 3, field 'user_id': give user_id"),
        ("user_id,analytics,recorded_at\nu1,true,yesterday\n", "row 2, field 'recorded_at'"),
        ("user_id,analytics\nu1,\n", "row 2, field 'purposes': no purpose chosen"),
        ("user_id,analytics,country\nu1,true,France\n", "row 2, field 'country'"),
    ],
)
def test_a_bad_csv_imports_nothing_and_names_row_and_field(tmp_path, text, message) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(text)
    result = _run("consent", "import", str(source), home=tmp_path / "ws")
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()), result.output
    assert "nothing imported" in result.output or "row 1" in result.output
    assert ConsentCheck.for_workspace(Workspace(tmp_path / "ws")).ledger.counts()["records"] == 0


def test_show_needs_a_valid_id(tmp_path) -> None:
    result = _run("consent", "show", "--user-id", " x", home=tmp_path)
    assert result.exit_code == 1 and "error: user_id" in result.output


def test_every_consent_option_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app).commands["consent"]
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, (name, param.name)
