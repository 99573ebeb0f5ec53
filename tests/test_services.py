"""Issue #10 (honest CI): a missing service or tool skips a test locally and fails it in CI."""

from __future__ import annotations

import socket

import pytest

from tests.services import REQUIRE_ENV, require_package, require_service, require_tool


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_service_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="Nothing is not reachable"):
        require_service("Nothing", "127.0.0.1", _closed_port(), "a test")


def test_an_unreachable_service_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_ENV} is set"):
        require_service("Nothing", "127.0.0.1", _closed_port(), "a test")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-xyz is not installed"):
        require_tool("no-such-tool-xyz", "a test")
    with pytest.raises(pytest.fail.Exception, match="package no_such_package_xyz is not"):
        require_package("no_such_package_xyz", "a test")


def test_a_missing_package_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="make dev"):
        require_package("no_such_package_xyz", "a test")


def test_a_listening_service_passes_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        require_service("Listener", "127.0.0.1", server.getsockname()[1], "a test")
    require_tool("sh", "a test")
    require_package("pytest", "a test")
