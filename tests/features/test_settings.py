"""One settings object reads every ``TAILOR_*`` variable (issue #10, one shape): nothing else in
the product reads the environment, README's configuration table lists exactly its fields, bad
values are one clear error, and the defaults are the documented ones."""

from __future__ import annotations

import ast
import logging
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from features import settings as settings_module
from features.settings import DEFAULTS, Settings, env_name, markdown_table, variables
from features.workspace import Workspace
from models.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("features", "models", "training", "serving")
SETTINGS_FILE = ROOT / "features" / "settings.py"
#: ``TAILOR_*`` strings in the product that are not environment variables.
NOT_VARIABLES = {
    "TAILOR_FEAST_DIR",  # a placeholder in feature_repo/feature_store.yaml, see render_config
    "TAILOR_BENCH",  # the prefix of the summary line the wrk script prints
}


def _product_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` or ``os.getenv`` (or the bare names, imported from ``os``)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id == "os" and node.attr in {"environ", "getenv", "environb"}
    return isinstance(node, ast.Name) and node.id in {"environ", "getenv"}


def environment_reads(path: Path) -> list[str]:
    """Every place ``path`` reads the environment: ``os.environ.get``, ``os.environ[...]``,
    ``os.getenv``, ``x in os.environ``, ``from os import environ`` ... Passing the whole
    environment on to a child process (``dict(os.environ)``, ``{**os.environ, ...}``) and
    setting a variable (``os.environ[k] = v``) are not reads of a setting."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names}
            if names & {"environ", "getenv", "environb"}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from os import {names}")
            continue
        if not _is_environ(node):
            continue
        parent = parents.get(node)
        copied = (
            isinstance(parent, ast.Call)
            and isinstance(parent.func, ast.Name)
            and parent.func.id == "dict"
            and parent.args == [node]
        ) or (isinstance(parent, ast.Dict) and any(v is node for v in parent.values))
        written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)
        if not (copied or written):
            text = ast.get_source_segment(path.read_text(encoding="utf-8"), parent or node)
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    return found


def test_nothing_but_the_settings_reads_the_environment():
    """issue #10 (one shape): ``features/settings.py`` is the only reader of ``os.environ``."""
    reads = [
        read
        for path in _product_files()
        if path != SETTINGS_FILE
        for read in environment_reads(path)
    ]
    assert reads == []
    assert environment_reads(SETTINGS_FILE)  # the check does see a read where there is one


def test_every_tailor_name_in_the_product_is_a_setting():
    """A ``TAILOR_*`` name in the code (a Typer ``envvar``, a message, a child's environment) is
    one of the settings, so no variable is read or documented under a name they lack."""
    known = set(variables().values())
    named = {
        name
        for path in _product_files()
        for name in re.findall(r"\bTAILOR_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8"))
    }
    assert named - known - NOT_VARIABLES == set()
    assert {"TAILOR_HOME", "TAILOR_FAST_ONLINE_READ", "TAILOR_FEAST_DIR"} <= named  # it finds them


def _readme_table() -> list[str]:
    """The rows of the table in README's "## Configuration" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_the_readme_table_lists_exactly_the_settings():
    rows = _readme_table()
    documented = [re.match(r"\| `([A-Z0-9_]+)` \|", row).group(1) for row in rows[2:]]
    assert documented == list(variables().values())
    assert rows == markdown_table().splitlines()  # defaults and meanings too
    # every variable the README mentions anywhere is a setting
    mentioned = set(re.findall(r"\bTAILOR_[A-Z0-9_]*[A-Z0-9]", (ROOT / "README.md").read_text()))
    assert mentioned - set(documented) == set()


def test_the_defaults():
    settings = Settings.from_env({})
    assert settings == Settings() == DEFAULTS
    assert settings.model_dump() == {
        "home": Path("data"),
        "profile": "local",
        "mlflow_tracking_uri": None,
        "feast_project": "tailor",
        "redis": "127.0.0.1:6379",
        "postgres_url": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "personas": None,
        "rules": None,
        "consent_policy": None,
        "country_header": "CF-IPCountry",
        "consent_checks": True,
        "model_name": "tailor-recommender",
        "model_alias": "champion",
        "model_poll_seconds": 30.0,
        "bento_model": None,
        "fast_online_read": True,
        "online_read_timeout_ms": 100.0,
        "online_retry_seconds": 1.0,
        "online_answers": 4096,
        "max_events_bytes": 1 << 20,
        "max_request_bytes": 64 << 10,
        "require_services": False,
        "test_kafka": None,
        "database_url": None,
        "broker_url": None,
        "broker_queue": "tailor.events",
        "spool_max_bytes": 256 << 20,
        "serve_consumer": True,
        "session_timeout_minutes": 30.0,
        "collect_origins": "",
        "cookie_secret": None,
        "cookie_days": 395,
        "fingerprint": False,
        "allow_user_merge": False,
    }
    blank = {name: "  " for name in variables().values()}
    assert Settings.from_env(blank) == DEFAULTS  # blank is unset


def test_values_are_read_and_typed():
    settings = Settings.from_env(
        {
            "TAILOR_HOME": "/srv/tailor",
            "TAILOR_PROFILE": "scale",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "TAILOR_RULES": "my-rules.yaml",
            "TAILOR_MODEL_NAME": " movielens-100k-ease ",
            "TAILOR_MODEL_POLL_SECONDS": "2.5",
            "TAILOR_FAST_ONLINE_READ": "0",
            "TAILOR_ONLINE_ANSWERS": "0",
            "TAILOR_MAX_EVENTS_BYTES": "2048",
            "TAILOR_REQUIRE_SERVICES": "1",
            "PATH": "/usr/bin",
        }
    )
    assert settings.home == Path("/srv/tailor") and settings.profile == "scale"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.rules == Path("my-rules.yaml") and settings.personas is None
    assert settings.model_name == "movielens-100k-ease"
    assert settings.model_poll_seconds == 2.5
    assert settings.fast_online_read is False and settings.require_services is True
    assert (settings.online_answers, settings.max_events_bytes) == (0, 2048)
    with pytest.raises(ValueError):  # frozen: the object read once stays as read
        settings.model_name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("TAILOR_PROFILE", "big", "local or scale"),
        ("TAILOR_MODEL_POLL_SECONDS", "soon", "a finite number of seconds, more than 0"),
        ("TAILOR_MODEL_POLL_SECONDS", "nan", "a finite number of seconds, more than 0"),
        ("TAILOR_ONLINE_RETRY_SECONDS", "3601", "seconds, more than 0 and at most 3600"),
        ("TAILOR_ONLINE_READ_TIMEOUT_MS", "0", "milliseconds, more than 0 and at most 60000"),
        ("TAILOR_ONLINE_ANSWERS", "-1", "an integer >= 0 (0 keeps none)"),
        ("TAILOR_FAST_ONLINE_READ", "yes", "1 (fast path) or 0 (Feast's public read)"),
        ("TAILOR_REQUIRE_SERVICES", "true", "1 (a missing service fails the test) or 0"),
        ("TAILOR_MAX_REQUEST_BYTES", "64KiB", "a positive number of bytes, e.g. 65536"),
    ],
)
def test_a_bad_value_is_one_error_naming_variable_value_and_allowed(variable, value, allowed):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r} must be {allowed}")


def test_every_bad_value_in_one_error():
    environ = {"TAILOR_MAX_EVENTS_BYTES": "1MiB", "TAILOR_PROFILE": "big", "TAILOR_HOME": "x"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert str(caught.value) == (
        "TAILOR_PROFILE='big' must be local or scale; "
        "TAILOR_MAX_EVENTS_BYTES='1MiB' must be a positive number of bytes, e.g. 1048576"
    )


def test_an_unknown_tailor_variable_is_a_warning_naming_the_close_one(monkeypatch, caplog):
    monkeypatch.setattr(settings_module, "_warned", set())
    environ = {"TAILOR_MODEL_NAMES": "x", "TAILOR_SOMETHING_ELSE": "1", "OTHER_NAME": "1"}
    with caplog.at_level(logging.WARNING, logger="features.settings"):
        assert Settings.from_env(environ) == DEFAULTS
        Settings.from_env(environ)  # once per process, not once per read
    assert [record.getMessage() for record in caplog.records] == [
        "TAILOR_MODEL_NAMES is not a Tailor setting and is ignored; "
        "did you mean TAILOR_MODEL_NAME?",
        "TAILOR_SOMETHING_ELSE is not a Tailor setting and is ignored; see README, Configuration",
    ]


def test_the_workspace_and_its_feature_store_take_the_settings(tmp_path):
    settings = Settings.from_env(
        {
            "TAILOR_HOME": str(tmp_path / "home"),
            "TAILOR_PROFILE": "scale",
            "TAILOR_FEAST_PROJECT": "tailor_settings_test",
            "TAILOR_REDIS": "redis.example:6380",
            "TAILOR_POSTGRES_URL": "postgresql+psycopg://tailor@db.example:5432/feast",
            "MLFLOW_TRACKING_URI": "http://mlflow.example:5000",
        }
    )
    ws = Workspace.from_env(settings=settings)
    assert (ws.home, ws.profile, ws.settings) == (tmp_path / "home", "scale", settings)
    assert ws.mlflow_uri == "http://mlflow.example:5000"
    assert Workspace.from_env(tmp_path / "arg", "local", settings).home == tmp_path / "arg"

    from features.store import render_config

    text = render_config(ws).read_text(encoding="utf-8")
    assert "project: tailor_settings_test" in text
    assert "redis.example:6380" in text
    assert "postgresql+psycopg://tailor@db.example:5432/feast" in text


def test_nothing_reads_the_environment_at_import():
    """Importing every module that takes settings, with every setting bad, raises nothing: the
    values are read by commands and the service constructor, not at import."""
    bad = {
        "TAILOR_PROFILE": "big",
        "TAILOR_MODEL_POLL_SECONDS": "soon",
        "TAILOR_FAST_ONLINE_READ": "yes",
        "TAILOR_ONLINE_READ_TIMEOUT_MS": "soon",
        "TAILOR_ONLINE_RETRY_SECONDS": "soon",
        "TAILOR_ONLINE_ANSWERS": "lots",
        "TAILOR_MAX_EVENTS_BYTES": "1MiB",
        "TAILOR_MAX_REQUEST_BYTES": "1MiB",
    }
    with pytest.raises(ConfigError):
        Settings.from_env(bad)
    modules = [
        "features.workspace",
        "features.store",
        "features.online_read",
        "features.persona_rules",
        "features.build",
        "serving.error_bodies",
        "serving.store_health",
        "serving.watcher",
        "serving.process",
        "serving.service",
    ]
    env = {**os.environ, **bad, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(modules)}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_env_names():
    assert env_name("home") == "TAILOR_HOME"
    assert env_name("mlflow_tracking_uri") == "MLFLOW_TRACKING_URI"
    assert env_name("online_answers") == "TAILOR_ONLINE_ANSWERS"
    assert len(set(variables().values())) == len(Settings.model_fields)


def test_a_bad_setting_stops_a_command_with_one_error_line(tmp_path):
    """The CLI reads the settings when a command builds its workspace: a bad value is one
    ``error:`` line (exit 1), no traceback; an unknown variable only warns."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["tailor"]
    module, name = target.split(":")
    script = f"import sys; from {module} import {name} as app; sys.argv[0] = 'tailor'; app()"
    args = ["data", "quarantine", "list", "--home", str(tmp_path / "ws")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}

    def tailor(**variables: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            env={**env, **variables},
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad = tailor(TAILOR_PROFILE="big", TAILOR_MODEL_POLL_SECONDS="0")
    assert bad.returncode == 1
    output = bad.stdout + bad.stderr
    message = "error: TAILOR_PROFILE='big' must be local or scale; TAILOR_MODEL_POLL_SECONDS='0'"
    assert message in output
    assert "Traceback" not in output
    typo = tailor(TAILOR_MODEL_NAMES="x")
    assert typo.returncode == 0, typo.stderr
    assert "did you mean TAILOR_MODEL_NAME?" in typo.stderr
