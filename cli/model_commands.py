"""Model commands: ``tailor train``, ``benchmark``, ``tune`` and ``fit-predict``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TextColumn
from rich.table import Table

from cli.common import (
    HomeOption,
    app,
    console,
    fail,
    format_value,
    progress_bar,
    say,
    summary_table,
    workspace,
)

# -- train and serve -----------------------------------------------------------------------
PANEL = "Models"


@app.command("train", rich_help_panel=PANEL)
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
    from training.config import load_train_config

    sets = list(set_ or [])
    if model:
        sets.insert(0, f"model={model}")
    config = load_train_config(spec, sets)  # checked before the heavy imports below
    from training.pipeline import train_and_evaluate

    ws = workspace(home)
    try:
        result = train_and_evaluate(ws, config, progress=say)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_train(result, config.k, config.model, config.baseline)


def _print_train(result, k: int, model: str, baseline: str) -> None:
    table = Table(title=f"temporal hold-out (cut {result.cut}, {result.n_test_users} users)")
    table.add_column("metric")
    table.add_column(baseline, justify="right")
    table.add_column(model, justify="right")
    for name, value in result.metrics.items():
        baseline_value = result.baseline_metrics.get(name, float("nan"))
        cells = [baseline_value, value]
        if name.startswith("n_"):  # counts (n_users) as integers
            table.add_row(name, *(format_value(v) for v in cells))
        else:
            table.add_row(name, *(f"{v:.4f}" for v in cells))
    console.print(table)
    if result.registered_version is None:
        what = f"model {result.model_label}, not registered (register=false)"
    else:
        what = f"registered [bold]{result.model_label}[/]"
    console.print(
        f"run [bold]{result.run_id}[/], {what} ({result.n_users} users, {result.n_items} items)",
        soft_wrap=True,
    )
    if result.promotion is not None:
        role = "champion" if result.promotion.promoted else "challenger"
        console.print(f"{result.model_label} is the {role}: {result.promotion.reason}")


@app.command("benchmark", rich_help_panel=PANEL)
def benchmark(
    dataset: Annotated[str, typer.Argument(help="Data set: movielens-100k.")] = "movielens-100k",
    protocol: Annotated[
        str, typer.Option(help="msr, recbole, temporal or leave-last-out.")
    ] = "msr",
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Model(s) to run; default: all.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Cut-off of the ranking metrics.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the result tables, or the .md file (the .csv goes beside it); "
            "default <home>/results. The committed tables: experiments/results/<name>.md."
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(help="YAML with data set, protocol, k and per-model parameters (wins)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Train every model on one data set and protocol; print and write the comparison table."""
    from training.benchmark import benchmark_command, load_spec, run_benchmark
    from training.result_files import workspace_results

    ws = workspace(home)
    out = out or workspace_results(ws)
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
            say=say,
            selection=selection,
            command=benchmark_command(dataset, protocol, model, k, out, spec, ws.home),
        )
    except ValueError as exc:
        fail(str(exc))
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


@app.command("tune", rich_help_panel=PANEL)
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

    from training.spec import load_experiment_spec

    loaded = load_experiment_spec(spec)  # checked before the heavy imports (Optuna, MLflow)
    from training.tune.study import run_tuning

    ws = workspace(home)
    bar = progress_bar(TaskProgressColumn(), TextColumn("best {task.fields[best]}"))
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
        except ValueError as exc:
            fail(str(exc))
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
    console.print(
        summary_table(f"tune {loaded.name}", {k: v for k, v in rows.items() if v is not None})
    )
    if result.interrupted:
        console.print("[yellow]interrupted:[/] finished trials are kept; run again to resume")
        raise typer.Exit(code=130)


@app.command("fit-predict", rich_help_panel=PANEL)
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
    from training.config import parse_sets, yaml_value
    from training.fit_predict import fit_predict

    params = {key: yaml_value(key, value) for key, value in parse_sets(set_ or []).items()}
    try:
        with console.status(f"fitting {model}"):
            result = fit_predict(train, users, model, params, k, out)
    except (ValueError, KeyError) as exc:
        fail(str(exc))
    except OSError as exc:  # a missing file, or a folder or an unreadable file given as one
        if exc.filename is None:
            fail(str(exc))
        fail(f"{exc.filename}: {exc.strerror}; pass a CSV or Parquet file")
    console.print(
        summary_table(
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
