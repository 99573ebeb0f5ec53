"""MLproject entry points call real `tailor` commands with options that exist (issue #4)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli.app import app

ROOT = Path(__file__).resolve().parents[2]
PROJECT = yaml.safe_load((ROOT / "MLproject").read_text(encoding="utf-8"))
ENTRY_POINTS = PROJECT["entry_points"]
#: `mlflow run` exports the project run's id; tracking commands unset it (see MLproject).
ENV_PREFIX = ["env", "-u", "MLFLOW_RUN_ID"]


def _commands(entry: dict) -> list[list[str]]:
    """Each `&&`-joined part of an entry point's command as tokens, without the env prefix."""
    parts = []
    for part in entry["command"].split("&&"):
        tokens = shlex.split(part)
        if tokens[:3] == ENV_PREFIX:
            tokens = tokens[3:]
        parts.append(tokens)
    return parts


def _resolve(tokens: list[str]):
    """(sub-command path, its Click command, the remaining tokens) for ``tailor ...``.

    Typer vendors its own Click, so groups are recognised by their ``commands``, not by class.
    """
    assert tokens[0] == "tailor", f"{tokens}: entry points call the tailor CLI"
    command = typer.main.get_command(app)
    path, rest = [], tokens[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest[0]]
        rest = rest[1:]
    assert not hasattr(command, "commands"), f"{tokens}: {path} is a group, not a command"
    return path, command, rest


def test_project_names_an_environment_and_the_issue_entry_points():
    assert (ROOT / PROJECT["python_env"]).is_file()
    env = yaml.safe_load((ROOT / PROJECT["python_env"]).read_text(encoding="utf-8"))
    assert env["python"] == "3.11" and "-e ." in env["dependencies"]
    wanted = {"generate", "features", "train", "tune", "benchmark", "serve"}
    assert wanted <= set(ENTRY_POINTS), wanted - set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_calls_a_real_command_with_real_options(name):
    entry = ENTRY_POINTS[name]
    declared = set(entry.get("parameters") or {})
    used = set(re.findall(r"{(\w+)}", entry["command"]))
    assert used == declared, f"{name}: parameters {declared} but the command uses {used}"
    for param, spec in (entry.get("parameters") or {}).items():
        if spec.get("type") == "path" and "default" in spec:
            assert (ROOT / spec["default"]).is_file(), f"{name}: {param} default is missing"
    runner = CliRunner()
    for tokens in _commands(entry):
        path, command, rest = _resolve(tokens)
        options = {opt for param in command.params for opt in param.opts}
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        flags = [t for t in rest if t.startswith("-")]
        assert set(flags) <= options, f"{name}: {set(flags) - options} not options of {path}"
        positional = [
            t
            for i, t in enumerate(rest)
            if not t.startswith("-")
            and not (i > 0 and rest[i - 1] in options and _takes_value(command, rest[i - 1]))
        ]
        assert len(positional) <= len(arguments), f"{name}: {positional} for {path}'s arguments"
        shown = runner.invoke(app, [*path, "--help"])
        assert shown.exit_code == 0, shown.output
        assert "Usage" in shown.output


def _takes_value(command, option: str) -> bool:
    found = [p for p in command.params if option in p.opts]
    return bool(found) and not getattr(found[0], "is_flag", False)


def test_the_tune_entry_point_keeps_movielens_out_of_the_shop_recommender():
    """Issue #10 item 11: the ``tune`` entry's default spec trains on MovieLens, so it registers
    under a name of its own, never as a version of ``tailor-recommender``."""
    from training.spec import load_experiment_spec

    default = ENTRY_POINTS["tune"]["parameters"]["spec"]["default"]
    spec = load_experiment_spec(ROOT / default)
    assert spec.dataset == "movielens-100k"
    assert spec.registered_model == "movielens-100k-ease"


def test_the_benchmark_entry_point_writes_to_the_workspace_by_default():
    """Issue #10 item 12: the ``benchmark`` entry names no result path, and the command's own
    default is the workspace, so ``mlflow run . -e benchmark`` leaves experiments/results alone."""
    tokens = _commands(ENTRY_POINTS["benchmark"])[0]
    assert "--out" not in tokens
    _, command, _ = _resolve(tokens)
    out = next(p for p in command.params if p.name == "out")
    assert out.default is None and "<home>/results" in out.help
