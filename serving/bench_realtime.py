"""``tailor bench realtime``: the real-time path end to end (issue #11), in one run.

What is measured, on a copy of the workspace (its events never reach the real log or store):

1. **raw publish**: the broker client library alone (:class:`features.broker.rabbit.RabbitBroker`,
   FastStream with publisher confirms) publishing ``events`` events from one thread in batches of
   ``batch`` to a scratch queue: the ceiling of what collection could hand to the broker;
2. **end to end**: ``clients`` HTTP clients post the same number of new events, ``batch`` per
   request, to the service's browser collector (``POST /collect``) → RabbitMQ → a real
   ``tailor consume`` process → event log + online store (activity and personas) + live sessions;
   the rate is events over the time from the first post until the log holds every event. The
   ratio end to end / raw is the issue's figure (goal ≥ 0.5);
3. **event → visible**: while that load runs, a probe starts every ``probe_every`` seconds (each
   in its own thread): it posts one product view for a new visitor and polls ``/recommend``
   every ``POLL_SECONDS`` until the answer's features show that product; p50 / p99 / max of those
   delays (goal p99 < 1 s).

Everything runs on this machine, so the service, the consumer, RabbitMQ and the load generator
share its cores: the figures are a floor for a deployment that gives each its own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from features.broker.rabbit import RabbitBroker
from features.eventlog import EventLog
from features.settings import env_name
from features.workspace import Workspace
from models.errors import TailorError
from serving.bench import machine_note
from serving.process import (
    PROJECT_ROOT,
    bearer,
    running_service,
    serve_env,
    service_key,
    stop,
)

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_OUT = PROJECT_ROOT / "experiments" / "results" / "realtime.md"
#: The country of the benchmark's visitors: the packaged policy's opt-out regime (issue #12).
VISITOR_COUNTRY = "US"
#: How often a probe asks /recommend whether its event shows (the resolution of the latency;
#: probes overlap, so a shorter poll would itself load the service under test).
POLL_SECONDS = 0.05
#: Goals of issue #11.
RATIO_GOAL, P99_GOAL_SECONDS = 0.5, 1.0


@dataclass(frozen=True)
class RealtimeSettings:
    events: int = 20_000
    batch: int = 100
    clients: int = 4
    probe_every: float = 0.25
    timeout: float = 600.0


@dataclass
class RealtimeReport:
    settings: RealtimeSettings
    broker: str
    raw_seconds: float = 0.0
    end_to_end_seconds: float = 0.0
    probes: list[float] = field(default_factory=list)
    #: each probe's seconds until ``/collect`` answered 202 (queued): the rest of its delay is
    #: the queue, the consumer and the polls
    accepted: list[float] = field(default_factory=list)
    probes_missed: int = 0
    stored: int = 0
    command: str = ""

    @property
    def raw_rate(self) -> float:
        return self.settings.events / self.raw_seconds

    @property
    def end_to_end_rate(self) -> float:
        return self.settings.events / self.end_to_end_seconds

    @property
    def ratio(self) -> float:
        return self.end_to_end_rate / self.raw_rate

    def latency(self, q: float) -> float:
        return float(np.quantile(self.probes, q)) if self.probes else float("nan")

    def accepted_latency(self, q: float) -> float:
        return float(np.quantile(self.accepted, q)) if self.accepted else float("nan")


def _products(ws: Workspace, n: int = 200) -> list[str]:
    frame = EventLog(ws.event_log_dir).read(columns=["product_id"])
    if frame.empty:
        raise TailorError("the workspace has no events: run `tailor demo` or `tailor data import`")
    products = frame["product_id"].dropna().astype(str).unique().tolist()
    return products[:n]


def _event(event_id: str, visitor: str, product: str) -> dict:
    return {
        "event_id": event_id,
        "event_type": "product_view",
        "timestamp": datetime.now(UTC).isoformat(),
        "anonymous_id": visitor,
        "session_id": f"s-{visitor}",
        "product_id": product,
        "price": 10.0,
        # visitors of an opt-out country (issue #12): collected until they refuse, so every batch
        # still pays the consent check, and no consent records are needed in the workspace
        "country": VISITOR_COUNTRY,
    }


def _messages(run: str, events: int, products: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for i in range(events):
        event = _event(f"rt-{run}-raw-{i:07d}", f"rt-{run}-v{i % 997}", products[i % len(products)])
        out.append((event["event_id"], json.dumps(event).encode()))
    return out


def measure_raw_publish(
    url: str, queue: str, messages: list[tuple[str, bytes]], batch: int
) -> float:
    """Seconds to publish ``messages`` (batches of ``batch``, each confirmed) to ``queue``; the
    queue is deleted afterwards."""
    broker = RabbitBroker(url, queue)
    try:
        started = time.perf_counter()
        for start in range(0, len(messages), batch):
            broker.publish(messages[start : start + batch])
        return time.perf_counter() - started
    finally:
        with contextlib.suppress(Exception):
            broker.delete_queues()
        broker.close()


def _copy(ws: Workspace, target: Path) -> Workspace:
    shutil.copytree(
        ws.home,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(
            "logs", "bentoml", "raw", "quarantine", "queue", "spool", "bench"
        ),
    )
    return replace(ws, home=target).ensure()


@contextlib.contextmanager
def _consumer(ws: Workspace, env: dict[str, str], log_path: Path):
    """A real ``tailor consume`` process on ``ws`` until the block exits."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.app", "consume", "--home", str(ws.home)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def _load(url: str, payloads: list[list[dict]], clients: int, failures: list[str]) -> None:
    """Post every payload to ``/collect`` from ``clients`` threads (each takes the next one)."""
    lock = threading.Lock()
    pending = list(reversed(payloads))

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.pop()
                answer = http.post(f"{url}/collect", json=body)
                if answer.status_code != 202:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _probe(
    url: str,
    product: str,
    run: str,
    n: int,
    timeout: float = 5.0,
    posted=None,
    accepted=None,
    headers: dict[str, str] | None = None,
) -> float | None:
    """Post one view for a new visitor, poll ``/recommend`` until it shows; seconds or None.
    ``posted`` (a one-item count and its lock) counts the probe events the service accepted;
    ``accepted`` (a list) gets the seconds until ``/collect`` answered; ``headers`` carry an
    admin key asking for the debug view (the features read)."""
    visitor = f"rt-{run}-probe-{n}"
    with httpx.Client(timeout=30, headers=headers) as http:
        started = time.perf_counter()
        event = _event(f"rt-{run}-probe-{n}", visitor, product)
        if http.post(f"{url}/collect", json=event).status_code != 202:
            return None
        if posted is not None:
            with posted[1]:
                posted[0][0] += 1
                if accepted is not None:
                    accepted.append(time.perf_counter() - started)
        while time.perf_counter() - started < timeout:
            request = {"anonymous_id": visitor, "k": 1, "context": {"country": VISITOR_COUNTRY}}
            body = http.post(f"{url}/recommend", json=request).json()
            if body.get("features", {}).get("last_product_id") == product:
                return time.perf_counter() - started
            time.sleep(POLL_SECONDS)
    return None


def bench_realtime(
    ws: Workspace,
    settings: RealtimeSettings = RealtimeSettings(),
    *,
    broker_url: str = DEFAULT_BROKER,
    say: Callable[[str], None] = lambda _: None,
    command: str = "",
) -> RealtimeReport:
    """Run the three measurements (module doc) on a copy of ``ws``; RabbitMQ at
    ``broker_url``."""
    run = uuid.uuid4().hex[:8]
    queue = f"tailor.bench.{run}"
    report = RealtimeReport(settings, broker=broker_url.split("@")[-1], command=command)
    products = _products(ws)
    say(f"raw publish: {settings.events} events, batches of {settings.batch}")
    report.raw_seconds = measure_raw_publish(
        broker_url, f"{queue}.raw", _messages(run, settings.events, products), settings.batch
    )
    with tempfile.TemporaryDirectory(prefix="tailor-bench-rt-") as scratch:
        copy = _copy(ws, Path(scratch) / "home")
        extra = {env_name("broker_url"): broker_url, env_name("broker_queue"): queue}
        # the load comes from one address, far over a browser's rate: not limited here
        extra[env_name("rate_limit_address")] = "0"
        debug = {**bearer(service_key(copy, "admin", "bench-realtime")), "X-Tailor-Debug": "1"}
        env = {**serve_env(copy), **extra, "PYTHONPATH": str(PROJECT_ROOT)}
        log = EventLog(copy.event_log_dir)
        before = len(log)
        payloads = [
            [
                _event(f"rt-{run}-e2e-{i:07d}", f"rt-{run}-v{i % 997}", products[i % len(products)])
                for i in range(start, min(start + settings.batch, settings.events))
            ]
            for start in range(0, settings.events, settings.batch)
        ]
        logs = copy.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        say("starting the service and `tailor consume` (RabbitMQ)")
        with (
            running_service(copy, extra_env=extra) as url,
            _consumer(copy, env, logs / "consume.log"),
        ):
            _probe(url, products[0], run, -1, timeout=60, headers=debug)  # warm: the consumer is up
            before = len(log)
            failures: list[str] = []
            done = threading.Event()
            say(
                f"end to end: {settings.events} events through /collect, {settings.clients} clients"
            )
            started = time.perf_counter()
            loader = threading.Thread(
                target=lambda: (_load(url, payloads, settings.clients, failures), done.set()),
                daemon=True,
            )
            loader.start()
            # probes start every probe_every seconds while the load runs, each in its own
            # thread (a probe waits for its own event, never for the previous probe)
            lock = threading.Lock()
            posted = [0]
            probes: list[threading.Thread] = []

            def probe(n: int) -> None:
                seconds = _probe(
                    url,
                    products[n % len(products)],
                    run,
                    n,
                    posted=(posted, lock),
                    accepted=report.accepted,
                    headers=debug,
                )
                with lock:
                    if seconds is None:
                        report.probes_missed += 1
                    else:
                        report.probes.append(seconds)

            next_probe = started
            stored = 0
            while stored < settings.events:
                now = time.perf_counter()
                if now - started > settings.timeout:
                    break
                if not done.is_set() and now >= next_probe:
                    thread = threading.Thread(target=probe, args=(len(probes),), daemon=True)
                    thread.start()
                    probes.append(thread)
                    next_probe += settings.probe_every
                time.sleep(0.01)
                with lock:
                    stored = len(log) - before - posted[0]  # probes' events are logged too
            report.end_to_end_seconds = time.perf_counter() - started
            loader.join(timeout=60)
            for thread in probes:
                thread.join(timeout=30)
            report.stored = len(log) - before - posted[0]
            if failures:
                raise TailorError(f"{len(failures)} posts were refused, first: {failures[0]}")
        with contextlib.suppress(Exception):
            RabbitBroker(broker_url, queue).delete_queues()
    if report.stored < settings.events:
        raise TailorError(
            f"only {report.stored} of {settings.events} events reached the log within "
            f"{settings.timeout:g} s"
        )
    return report


def render_markdown(report: RealtimeReport) -> str:
    s = report.settings
    rows = [
        ("raw publish (RabbitBroker, confirms)", report.raw_seconds, report.raw_rate, "1.00"),
        (
            "/collect → RabbitMQ → tailor consume → log + online store",
            report.end_to_end_seconds,
            report.end_to_end_rate,
            f"{report.ratio:.2f}",
        ),
    ]
    lines = [
        f"<!-- generated by: {report.command} -->",
        "",
        "# The real-time path end to end (`tailor bench realtime`, issue #11)",
        "",
        f"{s.events} events, {s.batch} per request / publish, {s.clients} HTTP clients; "
        f"RabbitMQ at `{report.broker}`; service, consumer, broker and load on one machine.",
        "",
        "| run | seconds | events/s | ratio to raw |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {sec:.2f} | {rate:,.0f} | {ratio} |" for name, sec, rate, ratio in rows],
        "",
        f"Event → visible in `/recommend` under that load ({len(report.probes)} probes, one "
        f"every {s.probe_every:g} s; {report.probes_missed} not visible within 5 s):",
        "",
        "| p50 ms | p99 ms | max ms |",
        "| ---: | ---: | ---: |",
        f"| {report.latency(0.5) * 1000:.0f} | {report.latency(0.99) * 1000:.0f} | "
        f"{max(report.probes, default=float('nan')) * 1000:.0f} |",
        "",
        f"Of that, until `/collect` answered 202 (the event queued): p50 "
        f"{report.accepted_latency(0.5) * 1000:.0f} ms, p99 "
        f"{report.accepted_latency(0.99) * 1000:.0f} ms; the rest is the queue, the consumer and "
        f"the polls (one every {POLL_SECONDS * 1000:.0f} ms).",
        "",
        f"Goals: ratio ≥ {RATIO_GOAL} ({'met' if report.ratio >= RATIO_GOAL else 'missed'}), "
        f"p99 < {P99_GOAL_SECONDS:g} s "
        f"({'met' if report.latency(0.99) < P99_GOAL_SECONDS else 'missed'}).",
        "",
        machine_note(),
        "",
    ]
    return "\n".join(lines)


def write_report(report: RealtimeReport, out: Path = DEFAULT_OUT) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report), encoding="utf-8")
    return out
