"""Follow the registry alias: when ``champion`` moves, load the new model and swap it in.

Requests read :attr:`ModelHolder.current` once and use that object to the end, so a swap (one
reference assignment, atomic in CPython) never drops or mixes a request: in-flight requests finish
on the old model, the next ones get the new one. Loading happens on the watcher's thread, off the
request path; a version that fails to load (or whose feature service Feast lacks) is logged and
the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

M = TypeVar("M")


class ModelHolder(Generic[M]):
    """The one reference to the serving model, and the check that replaces it.

    ``version_of(model)`` gives a loaded model's version, ``alias_version()`` the version the
    alias points at now (cheap), ``load()`` loads what the alias points at (slow).
    ``on_swap(old, new)`` runs after each swap (metrics, logs).
    """

    def __init__(
        self,
        model: M,
        version_of: Callable[[M], str],
        alias_version: Callable[[], str | None],
        load: Callable[[], M],
        on_swap: Callable[[M, M], None] | None = None,
    ) -> None:
        self.current = model
        self._version_of = version_of
        self._alias_version = alias_version
        self._load = load
        self._on_swap = on_swap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Swap when the alias has moved; True when it did. Never raises (logs instead)."""
        try:
            target = self._alias_version()
            current = self._version_of(self.current)
            if target is None or target == current:
                return False
            logger.info("alias moved from version %s to %s: loading it", current, target)
            new = self._load()
        except Exception:
            logger.exception(
                "checking or loading the aliased model failed; keeping the current one"
            )
            return False
        old, self.current = self.current, new  # the swap: one reference assignment
        logger.info("now serving version %s (was %s)", self._version_of(new), current)
        if self._on_swap is not None:
            try:
                self._on_swap(old, new)
            except Exception:
                logger.exception("the swap hook failed")
        return True

    def start(self, interval: float) -> None:
        """Check every ``interval`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval):
                self.check()

        self._thread = threading.Thread(target=run, name="tailor-model-watcher", daemon=True)
        self._thread.start()
        logger.info("watching the model alias every %.1f s", interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
