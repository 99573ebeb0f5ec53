"""The ``tailor`` command line: parse → call a library function → print a summary.

The Typer app and what the commands share are in :mod:`cli.common`; each group of
commands is a module that registers itself on import.
"""

from __future__ import annotations

from cli import (  # noqa: F401 - imported for the commands they register
    consent_commands,
    consume_commands,
    data_commands,
    model_commands,
    privacy_commands,
    registry_commands,
    segment_commands,
    serve_commands,
)
from cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    """The ``tailor`` console script; logging and errors are set up by the app itself."""
    app()


if __name__ == "__main__":  # `python -m cli.app` (subprocesses of benchmarks and tests)
    main()
