"""The ``tailor`` CLI answers bad input with one ``error:`` line, fast, and prints plainly.

Issue #10 items 9 (one error line, never a traceback), 15 (``--set`` typos before any heavy
import) and 17 (console output: ``--quiet``, counts as integers, the demo's answering model).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cli import common as cli_base
from cli.app import app
from cli.common import TailorGroup, format_value, summary_table

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging():
    """`--quiet` / `--verbose` set the root logger's level (for the process, as a command
    should); put it back so later tests' log capture is unaffected."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    for package in ("features", "models", "training", "serving"):
        logging.getLogger(package).setLevel(logging.NOTSET)


def _one_error_line(result, *needles: str) -> str:
    """The result is exit code 1 with exactly one ``error:`` line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _invoke(args: list[str]):
    return runner.invoke(app, args)


def test_a_missing_spec_file_is_one_error_line(tmp_path):
    """Issue #10 item 9: `train --spec` of a missing file raised FileNotFoundError."""
    result = _invoke(["train", "--spec", str(tmp_path / "no.yaml"), "--home", str(tmp_path)])
    _one_error_line(result, "train spec not found", "no.yaml")


def test_broken_yaml_in_specs_is_one_error_line_naming_file_and_line(tmp_path):
    """Issue #10 item 9: a YAML syntax error in a spec was a ParserError traceback
    (`benchmark --spec`) or a multi-line message with the parser's excerpt (`tune`)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: ease\nparams: [\n", encoding="utf-8")
    for command in (
        ["benchmark", "--spec", str(bad)],
        ["tune", str(bad)],
        ["train", "--spec", str(bad)],
    ):
        result = _invoke([*command, "--home", str(tmp_path / "ws")])
        _one_error_line(result, f"{bad}: not valid YAML at line 3")


def test_a_set_value_that_is_not_yaml_is_one_error_line(tmp_path):
    """Issue #10 item 9: `--set params.l2=[` raised yaml's ParserError."""
    result = _invoke(["train", "--set", "params.l2=[", "--home", str(tmp_path)])
    _one_error_line(result, "--set params.l2='['", "not a valid value")


def test_home_that_is_a_file_is_one_error_line(tmp_path):
    """Issue #10 item 9: `--home FILE` raised NotADirectoryError."""
    home = tmp_path / "afile"
    home.write_text("x", encoding="utf-8")
    result = _invoke(["train", "--home", str(home)])
    _one_error_line(result, f"--home {home}", "writable folder")


def test_fit_predict_of_a_folder_is_one_error_line(tmp_path):
    """Issue #10 item 9: a folder as `--train` raised IsADirectoryError."""
    users = tmp_path / "users.csv"
    users.write_text("user_id\nu1\n", encoding="utf-8")
    args = ["fit-predict", "--train", str(tmp_path), "--users", str(users)]
    result = _invoke([*args, "--out", str(tmp_path / "out.csv")])
    _one_error_line(result, f"{tmp_path}: Is a directory", "CSV or Parquet")


def test_segment_bad_as_of_and_missing_truth_say_which_option(tmp_path):
    """Issue #10 item 9: pandas' own message ("Unknown datetime string format") and a bare
    "[Errno 2]" did not say which option was wrong or what to write."""
    result = _invoke(["segment", "--as-of", "notadate", "--home", str(tmp_path)])
    _one_error_line(result, "--as-of 'notadate'", "2026-01-22")
    result = _invoke(["segment", "--truth", str(tmp_path / "no.csv"), "--home", str(tmp_path)])
    _one_error_line(result, "--truth", "no such file")


def test_benchmark_of_a_data_set_that_cannot_be_fetched_is_one_error_line(tmp_path, monkeypatch):
    """Issue #10 item 9: a failed download raised DatasetFetchError as a traceback, with pip's
    output over many lines. Here pip has no index to download from (a real pip run)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    result = _invoke(["benchmark", "movielens-100k", "--home", str(tmp_path)])
    _one_error_line(result, "cannot fetch data set 'movielens-100k'", "by hand", "network")


def test_an_unexpected_exception_is_one_line_that_says_it_is_a_bug(monkeypatch):
    """Issue #10 item 9: the root group handles every exception once; a non-Tailor one is a
    bug, named as such (the traceback needs --verbose)."""
    probe = typer.Typer(cls=TailorGroup)

    @probe.command()
    def boom() -> None:
        raise RuntimeError("kaput")

    @probe.command()
    def other() -> None:
        pass

    result = runner.invoke(probe, ["boom"])
    _one_error_line(result, "unexpected RuntimeError: kaput", "bug", "--verbose")
    monkeypatch.setattr(cli_base, "_verbose", True)  # what `tailor --verbose` sets
    result = runner.invoke(probe, ["boom"])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "kaput"


def _run_cli_in_subprocess(args: list[str], tmp_path: Path) -> dict:
    """Run the app in a fresh interpreter; report exit code, stderr, seconds and which heavy
    modules were imported by the time it exited."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        started = time.perf_counter()
        from cli.app import app
        try:
            app({args!r})
            code = 0
        except SystemExit as exc:
            code = exc.code
        heavy = [m for m in ("mlflow", "feast", "torch", "bentoml", "optuna") if m in sys.modules]
        print(json.dumps({{"code": code, "heavy": heavy,
                          "seconds": time.perf_counter() - started}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TAILOR_HOME": str(tmp_path / "ws")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["stderr"] = done.stderr
    return report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--set", "modl=ease"], "key 'modl', value 'ease': unknown key; allowed: model"),
        (["train", "--set", "params.l3=1"], "ease: unknown parameter 'l3'"),
        (["train", "--set", "model=magic"], "model='magic': unknown model; allowed: popularity"),
        (["segment", "--set", "k_maxx=3"], "key 'k_maxx', value '3': unknown key; allowed:"),
        (["tune", "{spec}"], "key 'trails', value 3: unknown key; allowed: model"),
    ],
    ids=["train-key", "train-param", "train-model", "segment-key", "tune-spec-key"],
)
def test_a_typo_fails_before_any_heavy_import(tmp_path, args, message):
    """Issue #10 item 15: `tailor train --set modl=ease` took 7-10 s (MLflow, Feast and torch
    were imported, and for `params.*` the event log and Feast read, before the config was
    checked); now each typo is reported with none of them imported."""
    spec = tmp_path / "ease.yaml"
    spec.write_text(
        "model: ease\ntrails: 3\nsearch_space:\n  l2: {type: float, low: 1, high: 9}\n",
        encoding="utf-8",
    )
    started = time.perf_counter()
    report = _run_cli_in_subprocess([a.format(spec=spec) for a in args], tmp_path)
    wall = time.perf_counter() - started
    assert report["code"] == 1, report
    assert report["stderr"].startswith("error: ") and message in report["stderr"], report
    assert report["heavy"] == [], report
    assert wall < 30  # generous on a shared machine; the point is the imports above


def test_quiet_hides_progress_but_not_errors_and_excludes_verbose(tmp_path, monkeypatch):
    """Issue #10 item 17: `--quiet` / `--verbose` are global options (no such option before)."""
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # --quiet sets them; restored after the test
    loud = _invoke(["train", "--home", str(tmp_path)])
    assert "reading the event log" in loud.stdout
    quiet = _invoke(["--quiet", "train", "--home", str(tmp_path)])
    assert quiet.stdout == ""
    _one_error_line(quiet, "event log", "import events first")
    both = _invoke(["-q", "-v", "train", "--home", str(tmp_path)])
    assert both.exit_code == 2 and "exclude each other" in both.output
    verbose = _invoke(["--verbose", "train", "--set", "nope=1", "--home", str(tmp_path)])
    _one_error_line(verbose, "key 'nope', value '1': unknown key")


def test_progress_lines_carry_no_source_file_and_line(tmp_path):
    """Issue #10 item 17: every progress line ended in `cli_models.py:54`."""
    result = _invoke(["train", "--home", str(tmp_path)])
    assert "reading the event log" in result.stdout
    assert ".py:" not in result.stdout


def _render(table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def test_summary_counts_print_as_integers():
    """Issue #10 item 17: counts arriving as floats printed as `1234.0000`."""
    text = _render(
        summary_table(
            "t",
            {"users": 1234.0, "items": np.float64(56.0), "rows": np.int64(7), "ndcg": 0.123456},
        )
    )
    assert "1234.0000" not in text and "56.0000" not in text
    assert "│ 1234 " in text and "│ 56 " in text and "│ 7 " in text and "│ 0.1235 " in text
    assert format_value(True) == "True" and format_value("a@1") == "a@1"
    assert format_value(float("nan")) == "nan"


def test_demo_summary_names_the_model_that_answered():
    """Issue #10 item 17: the demo's table said `@2` (the model just trained, kept as
    challenger) while the answer came from the champion `@1`."""
    from cli.demo import demo_summary

    result = SimpleNamespace(
        model_label="tailor-recommender@2",
        promotion=SimpleNamespace(promoted=False),
        metrics={"ndcg_at_10": 0.2},
        baseline_metrics={"ndcg_at_10": 0.1},
    )
    answer = {"model": "tailor-recommender@1", "items": []}
    summary = demo_summary(100, 10, result, 10, 200, "u1", answer)
    assert summary["answered by"] == "tailor-recommender@1"
    assert summary["model trained"] == "tailor-recommender@2 (challenger, not promoted)"


def test_every_user_facing_error_class_is_a_tailor_error():
    """Issue #10 item 9: one base, so the CLI handles them all in one place (each class keeps
    its old builtin base, so existing ``except ValueError`` callers still catch it)."""
    from features.datasets.types import DatasetFetchError, DatasetFormatError
    from features.persona_rules import PersonaRulesError
    from models.errors import ConfigError, DataError, SpecError, TailorError
    from serving.loader import ServingStartupError
    from serving.rules import RulesError
    from serving.wrk import LoadGeneratorMissing
    from training.promote import PromotionError
    from training.segments.micro import RuleError

    assert issubclass(SpecError, ConfigError)
    for error, kind, builtin in [
        (ConfigError, TailorError, ValueError),
        (DatasetFetchError, DataError, RuntimeError),
        (DatasetFormatError, DataError, ValueError),
        (PersonaRulesError, SpecError, ValueError),
        (RulesError, SpecError, ValueError),
        (RuleError, SpecError, ValueError),
        (PromotionError, TailorError, ValueError),
        (ServingStartupError, TailorError, RuntimeError),
        (LoadGeneratorMissing, TailorError, RuntimeError),
    ]:
        assert issubclass(error, kind) and issubclass(error, builtin), error
