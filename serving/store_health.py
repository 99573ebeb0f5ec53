"""The online store's health as the service sees it, and what ``/readyz`` says about it.

A read of a locked or stalled online store is bounded by the read timeout
(``TAILOR_ONLINE_READ_TIMEOUT_MS``, see :mod:`features.online_read`); that request is answered with
popularity, ``degraded`` saying so. After :data:`FAILURES_TO_SKIP` failed reads in a row (one could
be a commit that held the lock a moment too long on a busy machine) the store counts as unavailable
for the retry interval (``TAILOR_ONLINE_RETRY_SECONDS``): requests meanwhile skip the read and are
answered with popularity at once, and the first request after that tries the store again. So a store
locked for minutes costs one bounded read per retry interval, not one per request, and the event
loop (which also answers ``/healthz``) is never held for long.

``/readyz`` stays 200 while the store is unavailable: every request is still answered (degraded),
and all replicas share the store, so taking them out of a load balancer would turn degraded
answers into no answers. BentoML's ``__is_ready__`` hook can only answer yes or no, so
:class:`ReadinessNoteMiddleware` puts the state in the 200 body instead: ``degraded: online store
unavailable``. A service that is not ready (no model loaded) still answers 503.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from features.settings import DEFAULTS
from serving.schemas import STORE_UNAVAILABLE

#: Failed reads in a row that mark the store unavailable.
FAILURES_TO_SKIP = 2
#: The ``/readyz`` body while the store is unavailable.
READYZ_DEGRADED = f"degraded: {STORE_UNAVAILABLE}\n"


class OnlineHealth:
    """Whether the online store is worth reading now (see the module docstring)."""

    def __init__(
        self,
        retry: float = DEFAULTS.online_retry_seconds,
        clock: Callable[[], float] = time.monotonic,
        failures_to_skip: int = FAILURES_TO_SKIP,
    ) -> None:
        self.retry = retry
        self.failures_to_skip = failures_to_skip
        self._clock = clock
        self._lock = threading.Lock()
        self._next_try = -math.inf
        self.down_since: float | None = None  # when the store was marked unavailable
        self.failures = 0  # failed reads in a row

    @property
    def degraded(self) -> bool:
        """The store is marked unavailable (until a read succeeds again)."""
        return self.down_since is not None

    def should_read(self) -> bool:
        """True when the store is up, or when its retry time has come (one caller gets the try:
        the next try is pushed back at once, so concurrent callers do not all wait on it)."""
        now = self._clock()
        if self.down_since is None:
            return True
        with self._lock:
            if now < self._next_try:
                return False
            self._next_try = now + self.retry
            return True

    def failed(self) -> None:
        with self._lock:
            now = self._clock()
            self.failures += 1
            if self.failures < self.failures_to_skip:
                return
            if self.down_since is None:
                self.down_since = now
            self._next_try = now + self.retry

    def succeeded(self) -> bool:
        """Mark the store up; True when it was down (a recovery)."""
        if self.down_since is None:
            self.failures = 0
            return False
        with self._lock:
            recovered = self.down_since is not None
            self.down_since, self.failures, self._next_try = None, 0, -math.inf
            return recovered


class ReadinessNoteMiddleware:
    """ASGI middleware: a 200 ``/readyz`` says ``degraded: online store unavailable`` in its
    body while ``health_of()`` reports the store down (status unchanged; see the module
    docstring). Every other path passes through untouched."""

    def __init__(self, app: Any, health_of: Callable[[], OnlineHealth | None]) -> None:
        self.app = app
        self.health_of = health_of

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("path") != "/readyz":
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        replaced = False

        async def note(message: dict) -> None:
            nonlocal start, replaced
            if replaced:  # the rest of a body already replaced
                return
            if message["type"] == "http.response.start":
                start = message  # held until the body: its content-length may change
                return
            if message["type"] == "http.response.body" and start is not None:
                health = self.health_of()
                if start["status"] == 200 and health is not None and health.degraded:
                    body = READYZ_DEGRADED.encode()
                    headers = [
                        (k, v)
                        for k, v in start.get("headers", [])
                        if k.lower() != b"content-length"
                    ]
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    replaced = True
                    return
                await send(start)
                start = None
            await send(message)

        await self.app(scope, receive, send=note)
