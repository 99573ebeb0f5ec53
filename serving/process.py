"""Start and stop a real ``bentoml serve`` process (used by ``tailor serve``, the demo, tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from features.settings import env_name
from features.workspace import Workspace

SERVICE = "serving.service:Tailor"
SERVICE_NAME = "tailor"  # the name in @bentoml.service(name=...)
DEFAULT_ALIAS = "champion"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TLSFiles:
    """A certificate (chain) and its private key, PEM files: ``bentoml serve`` speaks HTTPS."""

    certfile: Path
    keyfile: Path


def serve_command(
    port: int, host: str = "127.0.0.1", service: str = SERVICE, tls: TLSFiles | None = None
) -> list[str]:
    """``bentoml serve`` for ``service`` from the project's source tree (HTTPS with ``tls``).

    No worker count here: for a ``@bentoml.service`` class BentoML 1.4 ignores
    ``--api-workers`` and takes it from the service's config, which :func:`workers_env` sets.
    """
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        service,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
        *(["--ssl-certfile", str(tls.certfile), "--ssl-keyfile", str(tls.keyfile)] if tls else []),
    ]


def serve_env(ws: Workspace, workers: int = 1) -> dict[str, str]:
    """The service's environment: this process's, with the workspace's home, profile and
    MLflow store (the service reads its settings from it, as any command does)."""
    env = dict(os.environ)
    env[env_name("home")] = str(ws.home)
    env[env_name("profile")] = ws.profile
    env[env_name("mlflow_tracking_uri")] = ws.mlflow_uri
    env.setdefault("BENTOML_HOME", str(ws.home / "bentoml"))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return workers_env(env, SERVICE_NAME, workers)


def workers_env(env: dict[str, str], service_name: str, workers: int) -> dict[str, str]:
    """``env`` with ``services.<service_name>.workers`` set in ``BENTOML_CONFIG_OVERRIDES``
    (BentoML's JSON config override, merged into any overrides already there)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    overrides = json.loads(env.get("BENTOML_CONFIG_OVERRIDES") or "{}")
    overrides.setdefault("services", {}).setdefault(service_name, {})["workers"] = workers
    return {**env, "BENTOML_CONFIG_OVERRIDES": json.dumps(overrides)}


def wait_ready(
    base_url: str,
    process: subprocess.Popen,
    timeout: float = 180.0,
    log_path: Path | None = None,
    verify: str | bool = True,
) -> None:
    """Poll ``/readyz`` until the service has loaded its model; fail if the process dies.

    BentoML restarts a worker whose ``__init__`` raised, so the log is watched as well: a
    start-up error there fails at once instead of after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {process.returncode} during start")
        if log_path is not None and "ServingStartupError" in log_path.read_text(errors="replace"):
            raise RuntimeError("the service failed to start (ServingStartupError)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2.0, verify=verify).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the service at {base_url} was not ready after {timeout:.0f} s")


@contextlib.contextmanager
def running_service(
    ws: Workspace,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 180.0,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    tls: TLSFiles | None = None,
) -> Iterator[str]:
    """Run the service until the block exits; yields its base URL. Output goes to ``log_path``;
    ``extra_env`` is added to the service's environment; with ``tls`` it serves HTTPS (the URL
    is ``https://``). Requests need keys (:func:`service_key`) unless ``TAILOR_AUTH=0``."""
    from serving.loader import preflight

    preflight(ws, ws.settings.model_name, ws.settings.model_alias)
    port = port or free_port()
    log_path = log_path or ws.home / "logs" / f"serve-{port}.log"
    env = {**serve_env(ws, workers), **(extra_env or {})}
    with running(SERVICE, env, port, log_path, timeout, tls) as url:
        yield url


@contextlib.contextmanager
def running(
    service: str,
    env: dict[str, str],
    port: int,
    log_path: Path,
    timeout: float = 180.0,
    tls: TLSFiles | None = None,
) -> Iterator[str]:
    """Run ``bentoml serve service`` until the block exits; yields its base URL once
    ``/readyz`` answers 200. Output goes to ``log_path``; the worker count travels in ``env``
    (:func:`workers_env`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(port, service=service, tls=tls),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        verify = str(tls.certfile) if tls else True
        try:
            try:
                wait_ready(base_url, process, timeout, log_path, verify)
            except (RuntimeError, TimeoutError) as exc:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{exc}\n--- {log_path} (tail) ---\n{tail}") from exc
            yield base_url
        finally:
            stop(process)


def service_key(ws: Workspace, role: str, name: str | None = None) -> str:
    """A new API key of ``role`` in ``ws``'s key store (what ``tailor keys create`` does), for
    the demo, the benchmarks and the tests that call the service."""
    from features.security.api_keys import KeyStore

    return KeyStore.for_workspace(ws).create(role, name).key


def bearer(key: str) -> dict[str, str]:
    """The request header that carries ``key``."""
    return {"Authorization": f"Bearer {key}"}


def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
