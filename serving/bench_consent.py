"""``tailor bench consent``: what the consent check costs ``/recommend``, and how fast a
withdrawal counts (issue #12).

One run, same machine, same ``bentoml serve`` and wrk settings, the three services up at once:

1. the trivial BentoML endpoint (:mod:`serving.baseline_service`);
2. ``/recommend`` for warm known users with consent checks **on** (the default) and **off**
   (``TAILOR_CONSENT_CHECKS=0``, the only use of that setting);

measured in ``rounds`` (baseline, off, on in each), so drift from other load on the machine
touches the three alike; each ratio (on / baseline, the issue #12 bar ≥ 0.8×; off / baseline;
on / off) is the median of its per-round ratios. Then:

3.
 withdrawal under load: while wrk keeps ``/recommend`` busy on the checks-on service, people
   who gave consent withdraw ``personalization`` one after the other; for each, the time from
   sending ``POST /consent`` until the first non-personalized ``/recommend`` answer arrives
   (asked at once after the 201, again until it comes), its p50 / p99 / max, and how many
   answers after a 201 were still personalized (none may be: nothing caches consent).

The bench's users get a consent record (everything given, country ``FR``: the opt-in regime,
so every check reads the ledger) in a throw-away copy of the workspace. Results go to
``experiments/results/consent.md``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from features.consent.ledger import ConsentLedger
from features.settings import env_name
from features.workspace import Workspace
from serving import wrk
from serving.bench import (
    BASELINE_SERVICE,
    GENERATED_BY,
    _bodies,
    _copy_workspace,
    command_with_out,
    machine_note,
)
from serving.process import PROJECT_ROOT, free_port, running, running_service, workers_env

DEFAULT_OUT = PROJECT_ROOT / "experiments" / "results" / "consent.md"
#: issue #12: /recommend's RPS with consent checks on, as a share of the baseline's.
RPS_TARGET = 0.8
CHECKS_ENV = env_name("consent_checks")
BASELINE = "baseline"
ON, OFF = "recommend: known users, consent checks on", "recommend: known users, checks off"
EVERYTHING = {"analytics": True, "personalization": True, "marketing": True}


@dataclass(frozen=True)
class ConsentBenchSettings:
    concurrency: int = 8
    seconds: float = 10.0
    warmup_seconds: float = 2.0
    workers: int = 1
    threads: int = 1
    users: int = 500
    withdrawals: int = 200
    rounds: int = 3


@dataclass
class ConsentBenchReport:
    settings: ConsentBenchSettings
    #: ``"round N: label"`` -> its run (labels BASELINE, OFF, ON)
    runs: dict[str, wrk.WrkResult] = field(default_factory=dict)
    #: seconds from sending the withdrawal to the first non-personalized answer, per person
    withdrawal_seconds: list[float] = field(default_factory=list)
    #: answers still personalized after a withdrawal's 201 (must be 0)
    stale_answers: int = 0
    #: /recommend requests of the load run beside the withdrawals
    load: wrk.WrkResult | None = None
    model: str = ""
    machine: str = ""
    command: str = ""
    started: str = ""

    def ratio(self, label: str, over: str = "baseline") -> float:
        """The median over rounds of ``label``'s RPS / ``over``'s RPS in the same round."""
        ratios = []
        for n in range(1, self.settings.rounds + 1):
            top, bottom = self.runs.get(f"round {n}: {label}"), self.runs.get(f"round {n}: {over}")
            if top is not None and bottom is not None and bottom.rps:
                ratios.append(top.rps / bottom.rps)
        return statistics.median(ratios) if ratios else float("nan")

    def withdrawal_ms(self) -> dict[str, float]:
        ms = np.asarray(self.withdrawal_seconds) * 1e3
        if not len(ms):
            return {}
        return {
            "n": float(len(ms)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }


def give_consent(ws: Workspace, users: list[str]) -> None:
    """Everything given by each of ``users`` (country FR), in one transaction."""
    ledger = ConsentLedger.for_workspace(ws)
    rows = [
        ledger.row(user_id=user, purposes=EVERYTHING, source="api", country="FR") for user in users
    ]
    ledger.append_many(rows)


def withdraw_under_load(url: str, users: list[str], report: ConsentBenchReport) -> None:
    """Each of ``users`` withdraws ``personalization``; time until the first answer that says
    so (see the module docstring)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for user in users:
            body = {"user_id": user, "k": 10}
            if client.post("/recommend", json=body).json().get("personalized") is not True:
                continue  # not a person the model personalizes: nothing to withdraw from
            started = time.perf_counter()
            answer = client.post(
                "/consent", json={"user_id": user, "purposes": {"personalization": False}}
            )
            answer.raise_for_status()
            while True:
                got = client.post("/recommend", json=body).json()
                if got.get("consent") == "personalization not given":
                    break
                report.stale_answers += 1
            report.withdrawal_seconds.append(time.perf_counter() - started)


def bench_consent(
    ws: Workspace,
    settings: ConsentBenchSettings,
    say: Callable[[str], None] = lambda _: None,
    command: str = "tailor bench consent",
) -> ConsentBenchReport:
    """Run every scenario on a throw-away copy of ``ws``."""
    from serving.loader import load_registered
    from serving.process import DEFAULT_ALIAS

    binary = wrk.find_wrk()
    report = ConsentBenchReport(
        settings=settings,
        machine=machine_note(),
        command=command,
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    with tempfile.TemporaryDirectory(prefix="tailor-bench-consent-") as tmp:
        tmp_path = Path(tmp)
        copy = _copy_workspace(ws, tmp_path / "ws")
        loaded = load_registered(copy, ws.settings.model_name, DEFAULT_ALIAS)
        report.model = loaded.label
        ids = [str(u) for u in loaded.scorer.bundle.users.ids if not str(u).startswith("anon:")]
        known, leaving = ids[: settings.users], ids[settings.users :] or ids[: settings.users]
        leaving = leaving[: settings.withdrawals]
        give_consent(copy, list(dict.fromkeys(known + leaving)))
        warm, _ = _bodies(known, len(known))
        script = wrk.rotating_script("/recommend", warm)
        say(f"{loaded.label}: {len(known)} known users with consent, {len(leaving)} to withdraw")

        def measure(label: str, url: str) -> wrk.WrkResult:
            path = tmp_path / "recommend.lua"
            load = (settings.concurrency, settings.threads)
            if settings.warmup_seconds > 0:
                wrk.run_wrk(url, script, path, load[0], settings.warmup_seconds, load[1], binary)
            say(f"{label}: {settings.concurrency} connections, {settings.seconds:g} s")
            return wrk.run_wrk(url, script, path, load[0], settings.seconds, load[1], binary)

        env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
        env = workers_env({**env, "BENTOML_DO_NOT_TRACK": "True"}, "baseline", settings.workers)
        log = copy.home / "logs" / "baseline.log"
        say("starting the baseline service and the Tailor service with checks off and on")
        with (
            running(BASELINE_SERVICE, env, free_port(), log) as base_url,
            running_service(copy, workers=settings.workers, extra_env={CHECKS_ENV: "0"}) as off,
            running_service(copy, workers=settings.workers) as on,
        ):
            for n in range(1, settings.rounds + 1):
                for label, url in ((BASELINE, base_url), (OFF, off), (ON, on)):
                    report.runs[f"round {n}: {label}"] = measure(f"round {n}: {label}", url)
            say(f"withdrawals under load: {len(leaving)} people")
            stop = threading.Event()

            def load() -> None:  # wrk runs back to back until the withdrawals are done
                path = tmp_path / "load.lua"
                while not stop.is_set():
                    result = wrk.run_wrk(
                        on, script, path, settings.concurrency, 5.0, settings.threads, binary
                    )
                    report.load = report.load or result

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            time.sleep(1.0)  # wrk connected and busy
            try:
                withdraw_under_load(on, leaving, report)
            finally:
                stop.set()
                loader.join()
    return report


def target_lines(report: ConsentBenchReport) -> list[str]:
    on, off, cost = report.ratio(ON), report.ratio(OFF), report.ratio(ON, OFF)
    out = [
        f"known-user RPS with consent checks on ≥ {RPS_TARGET}× baseline: {on:.2f}× — "
        + ("met" if on >= RPS_TARGET else "missed")
        + f" (checks off: {off:.2f}×; on / off: {cost:.2f}; medians of "
        + f"{report.settings.rounds} rounds)"
    ]
    w = report.withdrawal_ms()
    if w:
        out.append(
            f"withdrawal → first non-personalized answer under load: p99 {w['p99_ms']:.1f} ms "
            f"over {w['n']:.0f} withdrawals; answers still personalized after the 201: "
            f"{report.stale_answers}"
        )
    return out


def render_markdown(report: ConsentBenchReport) -> str:
    s = report.settings
    lines = [
        GENERATED_BY.format(command=report.command),
        "",
        "# Consent check cost and withdrawal latency (`tailor bench consent`)",
        "",
        f"- command: `{report.command}`",
        f"- when: {report.started}; model: `{report.model}`",
        f"- machine: {report.machine}",
        f"- load: wrk, {s.concurrency} connections, {s.threads} thread(s), {s.seconds:g} s per "
        f"run after a {s.warmup_seconds:g} s warm-up, {s.rounds} rounds of baseline, checks "
        f"off, checks on (the three services up at once); `bentoml serve` with {s.workers} "
        "worker(s); the bench's known users all gave consent (country FR: opt-in, so every "
        "check reads the ledger)",
        f"- checks off: `{CHECKS_ENV}=0` (used for this comparison only)",
        "",
        "| run | RPS | p50 ms | p95 ms | p99 ms | errors | RPS / round's baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in report.runs.items():
        base = report.runs.get(label.split(": ")[0] + f": {BASELINE}")
        ratio = f"{r.rps / base.rps:.2f}×" if base is not None and base.rps else "-"
        lines.append(
            f"| {label} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.errors} | {ratio} |"
        )
    w = report.withdrawal_ms()
    lines += ["", "## Withdrawal → first non-personalized answer, under load", ""]
    if w:
        load = report.load
        beside = (
            f" beside wrk's `/recommend` load ({load.rps:.0f} RPS, p99 {load.p99_ms:.1f} ms)"
            if load is not None
            else ""  # the first 5 s of the load
        )
        lines += [
            f"{w['n']:.0f} people withdrew `personalization` one after the other{beside}; "
            "time from sending `POST /consent` until the first `/recommend` answer with "
            '`consent: "personalization not given"` arrived:',
            "",
            "| withdrawals | p50 ms | p99 ms | max ms | answers still personalized after the 201 |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {w['n']:.0f} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} | {w['max_ms']:.1f} | "
            f"{report.stale_answers} |",
        ]
    lines += ["", "## Targets", ""]
    lines += [f"- {line}" for line in target_lines(report)]
    return "\n".join(lines) + "\n"


def write_report(report: ConsentBenchReport, out: Path = DEFAULT_OUT) -> Path:
    if report.command:
        report = replace(report, command=command_with_out(report.command, out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report), encoding="utf-8")
    return out
