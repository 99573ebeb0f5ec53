"""What a library prints on its own (Feast's materialize report, MLflow's "Successfully registered
model" lines) goes to the debug log instead of the user's terminal: Tailor prints its own summary
of the same step, and `tailor --verbose` shows the library's lines again."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def library_output(logger: logging.Logger, what: str) -> Iterator[None]:
    """Capture stdout and stderr written inside the block; log them at DEBUG under ``what``.
    Exceptions pass through unchanged (their text is never captured)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    finally:
        text = captured.getvalue().strip()
        if text:
            logger.debug("%s said:\n%s", what, text)
