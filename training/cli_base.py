"""What every ``tailor`` command shares: the Typer apps, the console, ``--home`` and small helpers.

The commands live in ``training/cli_*.py``; :mod:`training.cli` imports them all.
"""

from __future__ import annotations

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
app.add_typer(data_app, name="data", rich_help_panel="Data")
app.add_typer(features_app, name="features", rich_help_panel="Data")
bench_app = typer.Typer(help="Performance benchmarks.")
app.add_typer(bench_app, name="bench", rich_help_panel="Serving")

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


def workspace(home: Path | None) -> Workspace:
    return Workspace.from_env(home).ensure()


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def summary_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
