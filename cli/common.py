"""What every ``tailor`` command shares: the Typer apps, the console, ``--home`` and small helpers.

The commands live in ``cli/*_commands.py``; :mod:`cli.app` imports them all.

Errors are handled once, here: a `TailorError` escaping any command becomes one ``error:`` line
on stderr and exit code 1 (see `TailorGroup`); so does any other exception, named as a bug,
unless ``--verbose`` asks for its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from features.workspace import Workspace
from models.errors import DataError, TailorError


class _Console(Console):
    """The commands' console: ``log`` is progress (hidden by ``--quiet``, without the caller's
    ``file:line``), ``status`` spinners hide with it; ``print`` (results) always shows."""

    quiet_progress = False

    def log(self, *objects: Any, **kwargs: Any) -> None:
        if not self.quiet_progress:
            super().log(*objects, **kwargs)

    def status(self, *args: Any, **kwargs: Any):
        if self.quiet_progress:
            return contextlib.nullcontext()
        return super().status(*args, **kwargs)


console = _Console(log_path=False)
#: Errors and log records go to stderr, so a command's output can be piped.
err_console = Console(stderr=True, log_path=False)
_verbose = False


def report_error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr (no wrapping, markup escaped)."""
    text = " ".join(str(message).split()) or "failed"
    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True, highlight=False)


class TailorGroup(TyperGroup):
    """The root command group: every command runs inside `invoke`, so this is the one place
    that turns a `TailorError` into an ``error:`` line (and an unexpected exception into one
    that says it is a bug) instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # Typer's own exits and usage
            raise
        except TailorError as exc:
            report_error(str(exc))
            raise typer.Exit(code=1) from None
        except Exception as exc:
            if _verbose:
                raise
            report_error(
                f"unexpected {type(exc).__name__}: {exc} (this is a bug in tailor; rerun with "
                "--verbose for the traceback and report it)"
            )
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=TailorGroup,
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
        help="Workspace folder for data, feature store, runs and models (default "
        "$TAILOR_HOME, else ./data; read through features.settings).",
    ),
]


@app.callback()
def _main(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only results and errors: no progress or info.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log at INFO (DEBUG for tailor) and show tracebacks of bugs."
        ),
    ] = False,
) -> None:
    """Set the output level; quiet the known, harmless warnings of the libraries underneath."""
    global _verbose
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    _verbose = verbose
    console.quiet_progress = quiet
    if not verbose:  # MLflow's INFO lines and artifact download bars are its own progress
        # (set before MLflow is imported, which reads them; a value the user set is kept)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    configure_logging(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    hide_known_library_warnings(show=verbose)


#: Warnings the libraries underneath give on every normal run (category, start of the message):
#: they say nothing the user can act on. Any other warning still shows.
KNOWN_LIBRARY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (RuntimeWarning, "On demand feature view is an experimental feature"),  # Feast apply
    (UserWarning, "The specified dataset source can be interpreted"),  # mlflow.data
    (UserWarning, "Hint: Inferred schema contains integer"),  # MLflow signature of `k`
    (Warning, "The ``noload`` loader strategy is deprecated"),  # SQLAlchemy, in MLflow's store
)
_shown_warning = warnings.showwarning


def hide_known_library_warnings(*, show: bool = False) -> None:
    """Drop :data:`KNOWN_LIBRARY_WARNINGS` at display time (``show``: display them too).

    Filters are not enough: Feast calls ``warnings.simplefilter("once", ...)`` when it is
    imported, ahead of any filter set before, so the known ones are dropped where warnings are
    shown instead."""

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        text = str(message)
        known = any(
            issubclass(category, kind) and text.startswith(start)
            for kind, start in KNOWN_LIBRARY_WARNINGS
        )
        if show or not known:
            _shown_warning(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def configure_logging(level: int) -> None:
    """Root logging at ``level`` through one Rich handler on stderr (no ``file:line``);
    ``--verbose`` also shows tailor's own DEBUG records."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tailor", False):
            root.removeHandler(handler)
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    handler._tailor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    own = logging.DEBUG if level <= logging.INFO else logging.NOTSET  # NOTSET: follow the root
    for package in ("features", "models", "training", "serving"):
        logging.getLogger(package).setLevel(own)


def say(message: str) -> None:
    """A progress line (hidden by ``--quiet``)."""
    console.log(message)


def workspace(home: Path | None) -> Workspace:
    """The workspace at ``--home`` (or ``TAILOR_HOME``, or ./data), its folders created."""
    ws = Workspace.from_env(home)
    try:
        return ws.ensure()
    except OSError as exc:
        raise DataError(
            f"--home {ws.home}: cannot create the workspace folders there "
            f"({exc.strerror or exc}: {exc.filename}); pass --home a writable folder "
            "(or set TAILOR_HOME)"
        ) from None


def fail(message: str) -> None:
    """Stop the command with one ``error:`` line (exit code 1)."""
    report_error(message)
    raise typer.Exit(code=1)


def format_value(value: object) -> str:
    """A summary cell: counts as integers (``1234``, also when they arrive as ``1234.0`` or a
    numpy number), other numbers with four decimals, anything else as text."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return f"{value:.4f}"
    return str(value)


def summary_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, format_value(value))
    return table


def progress_bar(*columns: Any) -> Progress:
    """A transient progress bar on the console (hidden by ``--quiet``); ``columns`` go between
    the count and the elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *columns,
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console.quiet_progress,
    )
