"""Registry and comparison commands: ``tailor register``, ``promote``, ``compare``, ``ui``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    HomeOption,
    app,
    console,
    fail,
    summary_table,
    workspace,
)

# -- registry, comparison and the MLflow UI ------------------------------------------------
ModelNameArgument = Annotated[
    str, typer.Argument(help="Registered model name in the MLflow registry.")
]


PANEL = "Registry and comparison"


@app.command("register", rich_help_panel=PANEL)
def register_command(
    run_id: Annotated[str, typer.Argument(help="MLflow run id whose logged model to register.")],
    name: Annotated[
        str, typer.Option("--name", help="Registered model name in the MLflow registry.")
    ] = "tailor-recommender",
    home: HomeOption = None,
) -> None:
    """Register a run's model as a new version with the alias `challenger` (lineage tags copied)."""
    from training.promote import register_run

    ws = workspace(home)
    version = register_run(ws, run_id, name)
    rows: dict[str, object] = {"version": f"{name}@{version.version}", "alias": "challenger"}
    rows.update({f"tag: {key}": value for key, value in sorted(version.tags.items())})
    console.print(summary_table(f"registered run {run_id}", rows))
    console.print(f"next: [bold]tailor promote {name}[/]")


@app.command("promote", rich_help_panel=PANEL)
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
    from training.promote import promote

    ws = workspace(home)
    result = promote(ws, model, force=force)

    def _value(value: float | None) -> str:
        return "-" if value is None else f"{value:.6f}"

    verdict = "[green]promoted[/]" if result.promoted else "[yellow]kept as challenger[/]"
    table = summary_table(
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


@app.command("compare", rich_help_panel=PANEL)
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
            help="Markdown file to write (default <home>/results/compare-<names>.md); "
            "the bar chart goes beside it as .png."
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Leaderboard of the best run(s) of each experiment on one metric; table and plot to files."""
    from training.compare import compare

    ws = workspace(home)
    try:
        board = compare(ws, experiments, metric, top=top, direction=direction, out=out)
    except ValueError as exc:
        fail(str(exc))
    goal = "higher" if board.direction == "maximize" else "lower"
    table = Table(title=f"{board.metric} ({goal} is better)")
    for column in ("rank", "experiment", "run", "model", "value", "split group"):
        table.add_column(column, justify="right" if column in ("rank", "value") else "left")
    table.add_column("run id", overflow="fold")  # whole, to paste into `tailor register`
    for row in board.table.to_dict(orient="records"):
        table.add_row(
            str(row["rank"]),
            row["experiment"],
            row["run_name"],
            row["model"],
            f"{row['value']:.4f}",
            row["split_group"],
            row["run_id"],
        )
    console.print(table)
    if not board.same_split:
        console.print("[yellow]runs measured on different or unrecorded splits[/]")
    console.print(f"written: {board.files['md']} and {board.files['png']}")


@app.command("ui", rich_help_panel=PANEL)
def ui_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the MLflow UI.")] = 5000,
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

    ws = workspace(home)
    command = mlflow_ui_command(ws.mlflow_uri, port, host)
    console.print(shlex.join(command), soft_wrap=True)
    if dry_run:
        return
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl+C stops it)")
    os.execvp(command[0], command)
