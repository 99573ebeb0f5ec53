"""Following the ``champion`` alias (issue #5): swap on a move, keep serving on failures."""

import threading
import time

import pytest

from features.settings import Settings
from models.errors import ConfigError
from serving.watcher import ModelHolder


class _Registry:
    def __init__(self) -> None:
        self.alias = "1"
        self.fail_load = False
        self.loads = 0

    def load(self) -> dict:
        self.loads += 1
        if self.fail_load:
            raise OSError("artifact store unreachable")
        return {"version": self.alias}


def _holder(registry: _Registry, swaps: list) -> ModelHolder:
    return ModelHolder(
        {"version": "1"},
        version_of=lambda model: model["version"],
        alias_version=lambda: registry.alias,
        load=registry.load,
        on_swap=lambda old, new: swaps.append((old["version"], new["version"])),
    )


def test_swaps_only_when_the_alias_moves() -> None:
    registry, swaps = _Registry(), []
    holder = _holder(registry, swaps)
    assert holder.check() is False and registry.loads == 0
    registry.alias = "2"
    assert holder.check() is True
    assert holder.current == {"version": "2"}
    assert swaps == [("1", "2")]
    assert holder.check() is False


def test_a_failed_load_keeps_the_current_model(caplog) -> None:
    registry, swaps = _Registry(), []
    holder = _holder(registry, swaps)
    registry.alias, registry.fail_load = "2", True
    assert holder.check() is False
    assert holder.current == {"version": "1"} and swaps == []
    assert "keeping the current one" in caplog.text
    registry.alias = None  # the alias was removed: keep serving what we have
    assert holder.check() is False


def test_background_thread_picks_up_a_move() -> None:
    registry, swaps = _Registry(), []
    holder = _holder(registry, swaps)
    holder.start(0.01)
    try:
        registry.alias = "3"
        deadline = time.monotonic() + 5
        while holder.current["version"] != "3" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.current == {"version": "3"}
        assert any(t.name == "tailor-model-watcher" for t in threading.enumerate())
    finally:
        holder.stop()


@pytest.mark.parametrize(("raw", "seconds"), [(None, 30.0), ("", 30.0), ("2.5", 2.5)])
def test_poll_seconds(raw, seconds) -> None:
    environ = {} if raw is None else {"TAILOR_MODEL_POLL_SECONDS": raw}
    assert Settings.from_env(environ).model_poll_seconds == seconds


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "inf"])
def test_bad_poll_seconds_name_the_variable(raw) -> None:
    with pytest.raises(ConfigError, match=f"TAILOR_MODEL_POLL_SECONDS='{raw}' must be"):
        Settings.from_env({"TAILOR_MODEL_POLL_SECONDS": raw})
