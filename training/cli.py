"""The ``tailor`` command line: parse → call a library function → print a summary.

The Typer app and what the commands share are in :mod:`training.cli_base`; each group of
commands is a module that registers itself on import.
"""

from __future__ import annotations

from training import (  # noqa: F401 - imported for the commands they register
    cli_data,
    cli_models,
    cli_registry,
    cli_segments,
    cli_serve,
)
from training.cli_base import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    """The ``tailor`` console script; logging and errors are set up by the app itself."""
    app()
