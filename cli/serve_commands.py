"""Serving commands: ``tailor serve``, ``demo``, ``build`` and ``bench serve``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    HomeOption,
    app,
    bench_app,
    console,
    fail,
    progress_bar,
    say,
    summary_table,
    workspace,
)

PANEL = "Serving"


@app.command("serve", rich_help_panel=PANEL)
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 1,
    home: HomeOption = None,
) -> None:
    """Serve the champion model with `bentoml serve` (POST /recommend, GET /healthz)."""
    import os

    from serving.loader import preflight
    from serving.process import serve_command, serve_env

    ws = workspace(home)
    label = preflight(ws, ws.settings.model_name, ws.settings.model_alias)
    console.print(f"model {label}")
    command = serve_command(port, host)
    console.print(f"serving {ws.home} on http://{host}:{port}")
    os.execvpe(command[0], command, serve_env(ws, workers))


@app.command("demo", rich_help_panel=PANEL)
def demo(
    users: Annotated[int, typer.Option(min=50, help="Users to generate.")] = 1500,
    days: Annotated[int, typer.Option(min=14, help="Days to generate.")] = 35,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    home: HomeOption = None,
) -> None:
    """The whole path end to end: generate → import → features → Feast → train → serve → ask."""
    from cli.demo import run_demo

    ws = workspace(home)
    answer = run_demo(ws, users=users, days=days, seed=seed, say=say)
    console.rule("POST /recommend")
    console.print_json(json.dumps(answer["response"]))
    console.print(summary_table("demo", answer["summary"]))


@app.command("build", rich_help_panel=PANEL)
def build_command(
    home: HomeOption = None,
) -> None:
    """Build a self-contained Bento (`bentoml build`): the champion, code, feature_repo, rules."""
    from serving.bento import build_bento
    from serving.loader import ServingStartupError
    from serving.process import DEFAULT_ALIAS, PROJECT_ROOT, serve_env

    ws = workspace(home)
    name = ws.settings.model_name
    console.print(f"importing {name}@{DEFAULT_ALIAS} and running bentoml build (a minute or so)")
    try:
        built = build_bento(ws, name, DEFAULT_ALIAS, PROJECT_ROOT, serve_env(ws))
    except (ServingStartupError, RuntimeError) as exc:
        fail(str(exc))
    console.print(
        summary_table(
            "tailor build",
            {
                "model": built.label,
                "BentoML model": built.model_tag,
                "Bento": built.bento_tag,
                "path": str(built.path),
                "BENTOML_HOME": str(built.bentoml_home),
            },
        )
    )
    console.print(
        f"next: [bold]BENTOML_HOME={built.bentoml_home} bentoml containerize {built.bento_tag}[/]"
    )


@bench_app.command("serve")
def bench_serve_command(
    concurrency: Annotated[int, typer.Option(min=1, help="Open connections (wrk -c).")] = 8,
    duration: Annotated[float, typer.Option(min=1, help="Seconds per measured run.")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of warm-up before each run.")] = 2.0,
    workers: Annotated[int, typer.Option(min=1, help="API workers of both services.")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="wrk threads.")] = 1,
    users: Annotated[int, typer.Option(min=1, help="Known users to rotate through.")] = 500,
    out: Annotated[
        Path | None,
        typer.Option(help="Markdown file to write (default <home>/results/serving.md)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Load-test /recommend (known, cold) and /events with wrk against a trivial BentoML api."""
    import shlex
    import sys

    from serving.bench import BenchSettings, bench_serve, target_lines, write_report
    from serving.loader import ServingStartupError
    from serving.wrk import find_wrk
    from training.result_files import workspace_results

    find_wrk()
    ws = workspace(home)
    settings = BenchSettings(
        concurrency=concurrency,
        seconds=duration,
        warmup_seconds=warmup,
        workers=workers,
        threads=threads,
        users=users,
    )
    command = shlex.join(["tailor", *sys.argv[1:]])
    try:
        report = bench_serve(ws, settings, say=say, command=command)
    except (ServingStartupError, RuntimeError) as exc:
        fail(str(exc))
    table = Table(title=f"{report.model}: {concurrency} connections, {duration:g} s")
    for column in ("run", "RPS", "p50 ms", "p95 ms", "p99 ms", "errors", "RPS / baseline"):
        table.add_column(column, justify="left" if column == "run" else "right")
    base = report.baseline
    for label, r in report.runs.items():
        table.add_row(
            label,
            f"{r.rps:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.errors),
            f"{r.rps / base.rps:.2f}" if base.rps else "-",
        )
    console.print(table)
    for line in target_lines(report):
        console.print(line)
    console.print(f"written: {write_report(report, out or workspace_results(ws) / 'serving.md')}")


@bench_app.command("consent")
def bench_consent_command(
    concurrency: Annotated[int, typer.Option(min=1, help="Open connections (wrk -c).")] = 8,
    duration: Annotated[float, typer.Option(min=1, help="Seconds per measured run.")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of warm-up before each run.")] = 2.0,
    workers: Annotated[int, typer.Option(min=1, help="API workers of both services.")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="wrk threads.")] = 1,
    users: Annotated[int, typer.Option(min=1, help="Known users to rotate through.")] = 500,
    withdrawals: Annotated[
        int, typer.Option(min=1, help="People who withdraw personalization under load.")
    ] = 200,
    rounds: Annotated[
        int, typer.Option(min=1, help="Rounds of baseline, checks off, checks on runs.")
    ] = 3,
    out: Annotated[
        Path | None,
        typer.Option(help="Markdown file to write (default <home>/results/consent.md)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Consent check cost in /recommend (checks on vs off, against a trivial BentoML api) and
    withdrawal -> first non-personalized answer under load (issue #12)."""
    import shlex
    import sys

    from serving.bench_consent import (
        ConsentBenchSettings,
        bench_consent,
        target_lines,
        write_report,
    )
    from serving.loader import ServingStartupError
    from serving.wrk import find_wrk
    from training.result_files import workspace_results

    find_wrk()
    ws = workspace(home)
    settings = ConsentBenchSettings(
        concurrency=concurrency,
        seconds=duration,
        warmup_seconds=warmup,
        workers=workers,
        threads=threads,
        users=users,
        withdrawals=withdrawals,
        rounds=rounds,
    )
    command = shlex.join(["tailor", *sys.argv[1:]])
    try:
        report = bench_consent(ws, settings, say=say, command=command)
    except (ServingStartupError, RuntimeError) as exc:
        fail(str(exc))
    for line in target_lines(report):
        console.print(line)
    console.print(f"written: {write_report(report, out or workspace_results(ws) / 'consent.md')}")


#: Seeds `tailor bench session` reports the chosen session variant on (not the selection seed).
REPORT_SEEDS = (8, 9, 10, 11, 12, 13)


@bench_app.command("session")
def bench_session_command(
    users: Annotated[int, typer.Option(min=50, help="Registered users to generate.")] = 5000,
    days: Annotated[int, typer.Option(min=14, help="Days to generate.")] = 35,
    seed: Annotated[
        int,
        typer.Option(min=0, help="Selection seed: the data set the session variant is chosen on."),
    ] = 7,
    report_seed: Annotated[
        list[int] | None,
        typer.Option(
            "--report-seed",
            min=0,
            help="Seed of a data set the chosen variant is reported on (repeatable; default 8-13).",
        ),
    ] = None,
    test_days: Annotated[
        int, typer.Option(min=1, help="Days after the training cut (as `tailor train`).")
    ] = 7,
    model: Annotated[
        str | None, typer.Option(help="Registered model to fit (default: `tailor train`'s).")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=200, help="List length of NDCG@k and HR@k.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option(help="Markdown file to write (default <home>/results/session_strategy.md)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Session strategy variants vs popularity: NDCG@k of the next product viewed by
    first-session visitors of generated data, replayed through /recommend's logic; the variant is
    chosen on --seed and reported on the --report-seed data sets."""
    from features.synthetic.generate import generate_clickstream
    from models.scoring import Scorer
    from serving.session_bench import (
        SeedRun,
        bench_session_strategy,
        choose,
        table_rows,
        write_session_report,
    )
    from training.config import TrainConfig
    from training.result_files import generated_by, shown, workspace_results
    from training.session_holdout import first_session_holdout

    report_seeds = list(dict.fromkeys(report_seed or REPORT_SEEDS))
    if seed in report_seeds:
        fail(
            f"--report-seed {seed} is the selection seed (--seed): report on other seeds, "
            "so the reported figures are not the ones the choice was made on"
        )
    ws = workspace(home)
    config = TrainConfig()
    model = model or config.model
    out = out or workspace_results(ws) / "session_strategy.md"
    command = ["tailor", "bench", "session", "--users", str(users), "--days", str(days)]
    command += ["--seed", str(seed)]
    command += [part for s in report_seeds for part in ("--report-seed", str(s))]
    command += ["--test-days", str(test_days), "--model", model]
    command += ["--k", str(k), "--out", shown(out)]
    runs = []
    for data_seed in [seed, *report_seeds]:
        say(f"generating {users} users over {days} days (seed {data_seed})")
        events = generate_clickstream(users, days, data_seed).events
        say(f"fitting {model} on the events before the last {test_days} days")
        try:
            holdout = first_session_holdout(events, test_days, model, config.params)
        except ValueError as exc:
            fail(str(exc))
        scorer = Scorer.from_bundle(holdout.bundle, f"{model}@cut")
        with progress_bar() as progress:
            task = progress.add_task(f"replaying first sessions (seed {data_seed})", total=None)
            result = bench_session_strategy(
                scorer,
                holdout.sessions,
                k,
                progress=lambda done, total, task=task: progress.update(
                    task, completed=done, total=total
                ),
            )
        data = {
            "data": f"`tailor data generate --users {users} --days {days} --seed {data_seed}` "
            f"({len(events)} events)",
            "cut": f"{holdout.cut} (the last {test_days} days held out, as `tailor train`)",
            "training": f"{holdout.n_train_events} events before the cut, {model} fitted in "
            f"{holdout.fit_seconds:.1f} s",
        }
        runs.append(SeedRun(data_seed, data, result))
    selection, reports = runs[0], runs[1:]
    chosen = choose(selection.result)
    table = Table(title=f"first-session visitors: next product viewed, {model}")
    for column in ("data", "next views", "steps", "strategy", f"NDCG@{k}", f"HR@{k}"):
        left = column in ("data", "next views", "strategy")
        table.add_column(column, justify="left" if left else "right")
    rows = table_rows(selection.result, f"selection, seed {seed}", selection.result.variants)
    for run in reports:
        rows += table_rows(run.result, f"report, seed {run.seed}", (chosen,))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"chosen on seed {seed}: {chosen}")
    written = write_session_report(selection, reports, out, generated_by(command))
    console.print(f"written: {written}")


@bench_app.command("realtime")
def bench_realtime_command(
    events: Annotated[int, typer.Option(min=100, help="Events per run.")] = 20_000,
    batch: Annotated[int, typer.Option(min=1, help="Events per /collect post and publish.")] = 100,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent HTTP clients.")] = 4,
    broker_url: Annotated[
        str, typer.Option(help="RabbitMQ to measure (scratch queues, deleted afterwards).")
    ] = "amqp://guest:guest@127.0.0.1:5672/",
    out: Annotated[
        Path | None,
        typer.Option(help="Markdown file to write (default <home>/results/realtime.md)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Events/s from /collect through RabbitMQ and `tailor consume` into the log and online
    store, as a ratio to the raw publish rate, and event → visible in /recommend under load."""
    import shlex
    import sys

    from models.errors import TailorError
    from serving.bench_realtime import RealtimeSettings, bench_realtime, write_report
    from serving.loader import ServingStartupError
    from training.result_files import workspace_results

    ws = workspace(home)
    settings = RealtimeSettings(events=events, batch=batch, clients=clients)
    command = shlex.join(["tailor", *sys.argv[1:]])
    try:
        report = bench_realtime(ws, settings, broker_url=broker_url, say=say, command=command)
    except (ServingStartupError, RuntimeError, TailorError) as exc:
        fail(str(exc))
    table = Table(title=f"real-time path: {events} events, {clients} clients")
    for column in ("run", "seconds", "events/s", "ratio"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row("raw publish", f"{report.raw_seconds:.2f}", f"{report.raw_rate:,.0f}", "1.00")
    table.add_row(
        "end to end",
        f"{report.end_to_end_seconds:.2f}",
        f"{report.end_to_end_rate:,.0f}",
        f"{report.ratio:.2f}",
    )
    console.print(table)
    console.print(
        f"event → visible in /recommend: p50 {report.latency(0.5) * 1000:.0f} ms, "
        f"p99 {report.latency(0.99) * 1000:.0f} ms ({len(report.probes)} probes, "
        f"{report.probes_missed} missed); /collect answered after p50 "
        f"{report.accepted_latency(0.5) * 1000:.0f} ms, "
        f"p99 {report.accepted_latency(0.99) * 1000:.0f} ms"
    )
    console.print(f"written: {write_report(report, out or workspace_results(ws) / 'realtime.md')}")
