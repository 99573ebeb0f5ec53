"""What tests ask before they use a local service (PostgreSQL, Redis), a tool (wrk, chromium) or
an optional Python package (playwright): is it there? Locally a missing one skips the test with
its name and address; with ``TAILOR_REQUIRE_SERVICES=1`` (set by ``.ci/run``) it fails the test,
because CI's machine starts these services and installs these tools (``make tools``) and the dev
extras, so a missing one there is a defect, not a choice."""

from __future__ import annotations

import importlib.util
import shutil
import socket

import pytest

from features.settings import Settings, env_name

REQUIRE_ENV = env_name("require_services")


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def required() -> bool:
    """Whether a missing service or tool fails the test instead of skipping it."""
    return Settings.from_env().require_services


def _missing(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: CI provides it, so this is a failure)")
    pytest.skip(reason)


def require_service(name: str, host: str, port: int, why: str) -> None:
    """Skip (or, when required, fail) unless ``name`` listens at ``host:port``."""
    if not reachable(host, port):
        _missing(f"{name} is not reachable at {host}:{port} ({why})")


def require_tool(name: str, why: str) -> None:
    """Skip (or, when required, fail) unless the program ``name`` is on PATH."""
    if shutil.which(name) is None:
        _missing(f"{name} is not installed ({why}); `make tools` installs it")


def require_package(name: str, why: str) -> None:
    """Skip (or, when required, fail) unless the Python package ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        _missing(f"the Python package {name} is not installed ({why}); `make dev` installs it")


def require_redis(why: str = "scale-profile online store") -> None:
    require_service("Redis", "127.0.0.1", 6379, why)


def require_postgres(why: str = "scale-profile registry") -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432, why)
