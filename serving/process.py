"""Start and stop a real ``bentoml serve`` process (used by ``tailor serve``, the demo, tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from features.workspace import HOME_ENV, PROFILE_ENV, Workspace

SERVICE = "serving.service:Tailor"
DEFAULT_MODEL = "tailor-recommender"
DEFAULT_ALIAS = "champion"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, host: str = "127.0.0.1", workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--host",
        host,
        "--port",
        str(port),
        "--api-workers",
        str(workers),
        "--working-dir",
        str(PROJECT_ROOT),
    ]


def serve_env(ws: Workspace) -> dict[str, str]:
    env = dict(os.environ)
    env[HOME_ENV] = str(ws.home)
    env[PROFILE_ENV] = ws.profile
    env["MLFLOW_TRACKING_URI"] = ws.mlflow_uri
    env.setdefault("BENTOML_HOME", str(ws.home / "bentoml"))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


def wait_ready(
    base_url: str, process: subprocess.Popen, timeout: float = 180.0, log_path: Path | None = None
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
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the service at {base_url} was not ready after {timeout:.0f} s")


@contextlib.contextmanager
def running_service(
    ws: Workspace, port: int | None = None, log_path: Path | None = None, timeout: float = 180.0
) -> Iterator[str]:
    """Run the service until the block exits; yields its base URL. Output goes to ``log_path``."""
    from serving.loader import preflight

    preflight(ws, os.environ.get("TAILOR_MODEL_NAME", DEFAULT_MODEL), DEFAULT_ALIAS)
    port = port or free_port()
    log_path = log_path or ws.home / "logs" / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(port),
            env=serve_env(ws),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(base_url, process, timeout, log_path)
            except (RuntimeError, TimeoutError) as exc:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{exc}\n--- {log_path} (tail) ---\n{tail}") from exc
            yield base_url
        finally:
            stop(process)


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
