"""The online store's health in the service (issue #10 item 6): after a failed read the store is
skipped for the retry interval (one caller gets the next try), and ``/readyz`` says degraded."""

from __future__ import annotations

import asyncio

import pytest

from features.settings import Settings
from models.errors import ConfigError
from serving.persona_updates import PendingPersonas
from serving.store_health import READYZ_DEGRADED, OnlineHealth, ReadinessNoteMiddleware


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failed_reads_skip_the_store_until_the_retry_time_then_one_caller_tries():
    clock = _Clock()
    health = OnlineHealth(retry=1.0, clock=clock)
    assert health.should_read() and not health.degraded
    health.failed()  # one failure (a slow commit?) is not yet an outage
    assert not health.degraded and health.should_read()
    health.succeeded()
    health.failed()  # the count starts again after a success
    assert not health.degraded
    health.failed()
    assert health.degraded
    assert [health.should_read() for _ in range(3)] == [False] * 3
    clock.now += 1.0
    assert [health.should_read() for _ in range(3)] == [True, False, False]  # one try
    health.failed()  # the try failed too: wait again
    clock.now += 0.5
    assert not health.should_read()
    clock.now += 0.5
    assert health.should_read()
    assert health.succeeded() is True and not health.degraded
    assert [health.should_read() for _ in range(3)] == [True] * 3
    assert health.succeeded() is False


def test_retry_seconds_from_the_environment():
    def retry(environ: dict[str, str]) -> float:
        return Settings.from_env(environ).online_retry_seconds

    assert retry({}) == retry({"TAILOR_ONLINE_RETRY_SECONDS": " "}) == 1.0
    assert retry({"TAILOR_ONLINE_RETRY_SECONDS": "0.25"}) == 0.25
    assert OnlineHealth().retry == 1.0
    for bad in ("0", "-1", "soon", "3601"):
        with pytest.raises(ConfigError, match=f"TAILOR_ONLINE_RETRY_SECONDS='{bad}' must be"):
            retry({"TAILOR_ONLINE_RETRY_SECONDS": bad})


def _get(app, path: str) -> tuple[int, bytes, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], body, dict(start["headers"])


def _app(status: int):
    async def app(scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": b"\n"})

    return app


def test_readyz_says_degraded_while_the_store_is_down_and_nothing_else_changes():
    health = OnlineHealth(failures_to_skip=1)
    ready = ReadinessNoteMiddleware(_app(200), health_of=lambda: health)
    assert _get(ready, "/readyz") == (
        200,
        b"\n",
        {b"content-type": b"text/plain", b"content-length": b"1"},
    )
    health.failed()
    status, body, headers = _get(ready, "/readyz")
    assert (status, body) == (200, READYZ_DEGRADED.encode())
    assert headers[b"content-length"] == str(len(READYZ_DEGRADED)).encode()
    assert _get(ready, "/healthz")[1] == b"\n"  # other paths untouched
    not_ready = ReadinessNoteMiddleware(_app(503), health_of=lambda: health)
    assert _get(not_ready, "/readyz")[:2] == (503, b"\n")  # not ready stays not ready
    health.succeeded()
    assert _get(ready, "/readyz")[1] == b"\n"


def test_pending_personas_keep_the_newest_people_up_to_the_limit():
    pending = PendingPersonas(limit=3)
    pending.add(["a", "b"])
    pending.add(["b", "c", "d"])
    assert len(pending) == 3
    assert pending.take() == ["b", "c", "d"]
    assert len(pending) == 0 and pending.take() == []
