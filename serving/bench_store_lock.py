"""``/recommend`` while the online store is locked (issue #10 item 6), against ``bentoml serve``.

One run, one service, one machine: ``/recommend`` for known users under wrk for ``--seconds``
with the store free, then again while a separate process holds ``BEGIN EXCLUSIVE`` on the online
SQLite file (``--lock-seconds``, default 25: wrk runs inside the lock with a second of margin on
each side). Meanwhile ``/healthz`` is timed every 0.2 s. The service's own counter
(``tailor_requests_total``) says how many answers of the locked run were marked degraded.

Prints the locked / normal throughput ratio and writes a table that starts with the exact
command to ``--out`` (the committed one is ``experiments/results/store-lock.md``). The service
works on a copy of the workspace, so nothing of the real one is touched::

    python -m serving.bench_store_lock --home /tmp/store-bench/ws \
        --out experiments/results/store-lock.md
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from features.workspace import Workspace
from serving import wrk
from serving.bench import GENERATED_BY
from serving.process import bearer, running_service, service_key

DEFAULT_OUT = Path("experiments") / "results" / "store-lock.md"
#: The issue's target: locked throughput at least this share of normal.
TARGET_RATIO = 0.5
#: Holds an exclusive lock on an SQLite file until killed or ``seconds`` pass.
_LOCK_SCRIPT = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""
_REQUESTS = re.compile(
    r"^tailor_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$", re.MULTILINE
)


@contextlib.contextmanager
def exclusive_lock(db_path: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """A separate process holding ``BEGIN EXCLUSIVE`` on ``db_path`` for at most ``seconds``
    (released at the block's end at the latest); yields once the lock is held."""
    process = subprocess.Popen(
        [sys.executable, "-c", _LOCK_SCRIPT, str(db_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if line.strip() != "locked":
            raise RuntimeError(f"the lock holder did not lock {db_path}: {line!r}")
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def recommend_counts(metrics_text: str) -> dict[bool, float]:
    """Answered ``/recommend`` requests so far, by degraded (from ``/metrics``)."""
    counts = {False: 0.0, True: 0.0}
    for match in _REQUESTS.finditer(metrics_text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        if labels.get("endpoint") == "/recommend":
            counts[labels.get("degraded") == "true"] += float(match.group("value"))
    return counts


@dataclass
class HealthProbe:
    """``/healthz`` timed every ``interval`` seconds on its own thread."""

    url: str
    interval: float = 0.2
    times: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self.interval):
                started = time.perf_counter()
                status = client.get(f"{self.url}/healthz").status_code
                self.times.append(time.perf_counter() - started)
                self.statuses.append(status)


@dataclass
class LockReport:
    command: str
    started: str
    machine: str
    model: str
    concurrency: int
    seconds: float
    lock_seconds: float
    normal: wrk.WrkResult | None = None
    locked: wrk.WrkResult | None = None
    locked_counts: dict[bool, float] = field(default_factory=dict)
    health_ms: list[float] = field(default_factory=list)
    health_statuses: list[int] = field(default_factory=list)
    readyz_locked: str = ""
    readyz_after: str = ""
    recovered_degraded: str | None = "not checked"

    @property
    def ratio(self) -> float:
        if not self.normal or not self.locked or self.normal.rps == 0:
            return float("nan")
        return self.locked.rps / self.normal.rps


def bench_store_lock(
    ws: Workspace,
    concurrency: int = 8,
    seconds: float = 10.0,
    lock_seconds: float = 25.0,
    users: int = 500,
    command: str = "",
    say=print,
) -> LockReport:
    """Normal vs locked ``/recommend`` throughput on one service (see the module docstring)."""
    from serving.bench import _bodies, _copy_workspace, machine_note
    from serving.loader import load_registered
    from serving.process import DEFAULT_ALIAS

    if lock_seconds < 5:
        raise ValueError(f"lock_seconds={lock_seconds}: at least 5 (wrk runs inside the lock)")
    binary = wrk.find_wrk()
    report = LockReport(
        command=command,
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine_note(),
        model="",
        concurrency=concurrency,
        seconds=seconds,
        lock_seconds=lock_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="tailor-lock-bench-") as tmp:
        tmp_path = Path(tmp)
        copy = _copy_workspace(ws, tmp_path / "ws")
        loaded = load_registered(copy, "tailor-recommender", DEFAULT_ALIAS)
        report.model = loaded.label
        known = [str(u) for u in loaded.scorer.bundle.users.ids[:users]]
        warm, _ = _bodies(known, len(known))
        key = bearer(service_key(copy, "app", "bench-store-lock"))
        script = wrk.rotating_script("/recommend", warm, key)
        path = tmp_path / "recommend.lua"
        db = copy.feast_dir / "online_store.db"
        with running_service(copy) as url:
            say(f"{loaded.label}: warm-up, then {seconds:g} s with the store free")
            wrk.run_wrk(url, script, path, concurrency, 2, 1, binary)
            report.normal = wrk.run_wrk(url, script, path, concurrency, seconds, 1, binary)
            say(f"normal: {report.normal.rps:.0f} requests/s; locking {db.name}")
            with exclusive_lock(db, lock_seconds) as holder:
                locked_at = time.monotonic()
                with HealthProbe(url) as probe:
                    time.sleep(1.0)
                    metrics = f"{url}/metrics"
                    before = recommend_counts(httpx.get(metrics, headers=key, timeout=30).text)
                    run_for = int(lock_seconds - 3)  # wrk's -d is whole seconds
                    report.locked = wrk.run_wrk(url, script, path, concurrency, run_for, 1, binary)
                    after = recommend_counts(httpx.get(metrics, headers=key, timeout=30).text)
                    report.readyz_locked = _readyz(url)
                if time.monotonic() - locked_at >= lock_seconds or holder.poll() is not None:
                    raise RuntimeError("the lock ended before the locked run did: rerun")
            report.locked_counts = {k: after[k] - before[k] for k in (False, True)}
            report.health_ms = [t * 1e3 for t in probe.times]
            report.health_statuses = probe.statuses
            time.sleep(1.5)  # past the retry interval: the next read tries the store again
            body = httpx.post(
                f"{url}/recommend", json={"user_id": known[0]}, headers=key, timeout=30
            ).json()
            report.recovered_degraded = body.get("degraded")
            report.readyz_after = _readyz(url)
        say(f"locked: {report.locked.rps:.0f} requests/s, ratio {report.ratio:.2f}")
    return report


def _readyz(url: str) -> str:
    response = httpx.get(f"{url}/readyz", timeout=30)
    return f"{response.status_code} {response.text.strip()!r}"


def render_markdown(report: LockReport) -> str:
    normal, locked = report.normal, report.locked
    assert normal is not None and locked is not None
    answered = sum(report.locked_counts.values())
    degraded = report.locked_counts.get(True, 0.0)
    health = sorted(report.health_ms)
    lines = [
        GENERATED_BY.format(command=report.command),
        "",
        "# `/recommend` while the online store is locked (issue #10 item 6)",
        "",
        f"- command: `{report.command}`",
        f"- when: {report.started}; model: `{report.model}`",
        f"- machine: {report.machine}",
        f"- load: wrk, {report.concurrency} connections, 1 thread, known users in turn; "
        f"`bentoml serve`, 1 worker; normal run {report.seconds:g} s; locked run "
        f"{int(report.lock_seconds - 3)} s inside a {report.lock_seconds:g} s `BEGIN EXCLUSIVE` "
        "held by a separate process on the online SQLite file",
        "",
        "| run | RPS | p50 ms | p95 ms | p99 ms | max ms | errors (non-2xx, timeouts) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in (("store free", normal), ("store locked", locked)):
        lines.append(
            f"| {label} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.max_ms:.1f} | {r.errors} |"
        )
    verdict = "met" if report.ratio >= TARGET_RATIO else "missed"
    lines += [
        "",
        f"- locked / normal throughput: **{report.ratio:.2f}** (target ≥ {TARGET_RATIO}: "
        f"{verdict})",
        f"- answers marked degraded during the locked run (service counter): {degraded:.0f} of "
        f"{answered:.0f}",
        f"- `/healthz` during the lock: {len(health)} probes, status "
        f"{sorted(set(report.health_statuses))}, max {max(health, default=float('nan')):.1f} ms, "
        f"median {health[len(health) // 2] if health else float('nan'):.1f} ms",
        f"- `/readyz` during the lock: {report.readyz_locked}; after it: {report.readyz_after}",
        f"- first answer after the lock: degraded = {report.recovered_degraded!r}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="trained workspace (copied)")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="normal run, seconds")
    parser.add_argument("--lock-seconds", type=float, default=25.0, help="lock held, seconds")
    parser.add_argument("--users", type=int, default=500, help="known users to rotate through")
    parser.add_argument(
        "--out", type=Path, required=True, help=f"markdown file to write (e.g. {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "serving.bench_store_lock", *sys.argv[1:]])
    ws = Workspace(home=args.home).ensure()
    report = bench_store_lock(
        ws, args.concurrency, args.seconds, args.lock_seconds, args.users, command
    )
    text = render_markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0 if report.ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
