"""Error bodies in the documented shape ``{"error": text, "detail": object}``, and the checks
every POST body passes before anything parses it (issue #10 items 4, 5, 8 and 16).

BentoML answers a pydantic validation error with ``detail`` as a list and its own 4xx exceptions
as a one-element list; :class:`ErrorShapeMiddleware` rewrites 4xx JSON bodies into the documented
object, and puts the fields at fault into ``error`` so the message names them. Before a POST
body reaches BentoML the middleware refuses, each with one WARNING log line and no request
content: a body larger than its route's limit (413, from ``Content-Length`` before reading, or
while a streamed body arrives), a Content-Type other than JSON (415), JSON nested deeper than
:data:`MAX_JSON_DEPTH` (400, found by a scan of the brackets, so no parser recurses that deep)
and malformed JSON (400). :class:`ClientErrorLogFilter` turns BentoML's ERROR-with-traceback for
a client error into one WARNING line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from features.settings import DEFAULTS, Settings

logger = logging.getLogger(__name__)

#: Deepest nesting of arrays and objects a request body may have: every documented body is at
#: most 3 deep (``/recommend``'s ``context``, an ``/events`` batch of objects).
MAX_JSON_DEPTH = 32
EVENTS_ROUTE = "/events"


@dataclass(frozen=True)
class BodyLimits:
    """The largest request body accepted, in bytes: ``events`` for ``/events`` batches (1000
    events of ~1 KiB), ``other`` for every other POST (a ``/recommend`` is ~200 bytes)."""

    events: int = DEFAULTS.max_events_bytes
    other: int = DEFAULTS.max_request_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        """The limits of ``settings`` (``TAILOR_MAX_EVENTS_BYTES``, ``TAILOR_MAX_REQUEST_BYTES``,
        checked there); the service constructor passes its settings."""
        return cls(events=settings.max_events_bytes, other=settings.max_request_bytes)

    def for_path(self, path: str) -> int:
        return self.events if path.rstrip("/") == EVENTS_ROUTE else self.other


def error_json(message: str, detail: dict[str, Any] | None = None) -> bytes:
    """The documented error body: ``error`` a text, ``detail`` (when given) an object."""
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return json.dumps(body, default=str).encode()


def _where(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if str(part) != "root"]
    return ".".join(loc)


def error_body(raw: bytes) -> bytes:
    """A 4xx JSON body as ``{"error": message naming the fields, "detail": object}``; a
    validation error's detail is ``{"errors": [{"field", "message", "type"}, ...]}``."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return error_json(raw.decode("utf-8", "replace") or "bad request")
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return error_json("bad request", {"body": data})
    error = str(data.get("error", "bad request"))
    detail = data.get("detail")
    if isinstance(detail, list):  # pydantic errors: name each field and say why
        errors = [
            {"field": _where(item), "message": str(item.get("msg", "")), "type": item.get("type")}
            for item in detail
            if isinstance(item, dict)
        ]
        parts = [f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors]
        if parts:
            error = "; ".join(parts)
        detail = {"errors": errors}
    elif detail is not None and not isinstance(detail, dict):
        detail = {"message": str(detail)}
    return error_json(error, detail)


def unsupported_media_type(method: str, content_type: str) -> bytes | None:
    """The 415 body for a POST whose body is not JSON (BentoML would answer some with a 500),
    else None. A missing Content-Type is read as JSON."""
    if method != "POST" or not content_type:
        return None
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return None
    return error_json(f"Content-Type must be application/json, got {media!r}")


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")


def nesting_depth_over(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays or objects deeper than ``max_depth``: brackets inside
    strings are dropped, the rest counted, in C-speed passes but for the bracket walk (which
    stops at the first bracket too deep)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # too few brackets to be that deep
    depth = 0
    for byte in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if byte in _OPENING:
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def invalid_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bytes | None:
    """The 400 body for a POST body that is not JSON or nests deeper than ``max_depth`` (BentoML
    answers some with a 500, and a ~1,000-deep one after a 30 s hang), else None. An empty body
    is refused too: every API documents its body as required (BentoML would read it as ``{}``)."""
    if not body.strip():
        return error_json("a JSON request body is required")
    if nesting_depth_over(body, max_depth):
        return error_json(
            f"Invalid JSON: nested deeper than {max_depth} levels", {"max_depth": max_depth}
        )
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return error_json(f"Invalid JSON: {exc}")
    return None


def too_large(path: str, limit: int) -> bytes:
    """The 413 body for a request body over ``limit`` bytes."""
    advice = "; split the batch" if path.rstrip("/") == EVENTS_ROUTE else ""
    return error_json(
        f"request body larger than {limit} bytes, the limit for {path}{advice}",
        {"limit_bytes": limit},
    )


async def _reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ErrorShapeMiddleware:
    """ASGI middleware: 413 for bodies over the route's limit, 415 for non-JSON bodies, 400 for
    malformed or too deeply nested JSON, and :func:`error_body` for every 4xx JSON response.

    ``limits`` is called per request (the service constructor reads the settings, after this
    middleware is built); without it the :class:`BodyLimits` defaults apply. Requests to
    ``own_checks`` paths pass untouched: their app checks its bodies itself (the browser
    collector takes ``text/plain`` beacons and answers in this shape already).
    """

    def __init__(
        self,
        app: Any,
        limits: Callable[[], BodyLimits] | None = None,
        own_checks: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limits = limits or BodyLimits
        self.own_checks = own_checks

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") in self.own_checks:
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            path = scope.get("path", "")
            headers = scope.get("headers", ())
            refused = unsupported_media_type(
                "POST", _header(headers, b"content-type").decode("latin-1")
            )
            if refused is not None:
                await _refuse(send, 415, refused, path, "a body that is not JSON")
                return
            limit = self.limits().for_path(path)
            declared = _header(headers, b"content-length")
            if declared.isdigit() and int(declared) > limit:  # refused before reading
                await _refuse(send, 413, too_large(path, limit), path, f"over {limit} bytes")
                return
            body = await _read_body(receive, limit)
            if body is None:  # a streamed body that went past the limit
                await _refuse(send, 413, too_large(path, limit), path, f"over {limit} bytes")
                return
            bad = invalid_json(body)
            if bad is not None:
                await _refuse(send, 400, bad, path, "malformed or too deeply nested JSON")
                return
            receive = _replay(body)
        await self.app(scope, receive, _reshaping(send))


async def _refuse(send: Any, status: int, body: bytes, path: str, why: str) -> None:
    logger.warning("client error %d on %s [POST]: %s", status, path, why)
    await _reply(send, status, body)


def _header(headers: Any, name: bytes) -> bytes:
    """The last value of header ``name`` (lower case, as ASGI gives names), else ``b""``."""
    found = b""
    for key, value in headers:
        if key == name:
            found = value
    return found


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than ``limit`` bytes arrived (the rest is never
    read)."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes) -> Any:
    """A ``receive`` that hands the already-read body on, once."""
    done = False

    async def receive() -> dict:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _reshaping(send: Any) -> Any:
    """A ``send`` that holds a 4xx JSON response until complete and rewrites its body."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if 400 <= message["status"] < 500 and _header(
                message.get("headers", ()), b"content-type"
            ).startswith(b"application/json"):
                start = message  # held until the body is complete
                return
            await send(message)
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = error_body(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status a request failure answers, or None for a server fault: pydantic's
    validation errors are 400, an exception carrying an ``error_code`` below 500 (BentoML's
    ``NotFound``, ``InvalidArgument``, ...) that code."""
    if isinstance(exc, ValidationError):
        return 400
    code = getattr(exc, "error_code", None)
    value = getattr(code, "value", code)
    if isinstance(value, int) and 400 <= value < 500:
        return value
    return None


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every failed request as ERROR with a traceback, whose last line echoes the
    input (user ids, item ids). A client error becomes one WARNING line with the route, the
    status and the kind of error (for validation errors the pydantic error types, never the
    fields' names or values, which come from the request); server faults pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None:
            return True
        where = record.getMessage().removeprefix("Exception on ")
        kind = type(exc).__name__
        if isinstance(exc, ValidationError):
            types = sorted({str(e.get("type")) for e in exc.errors(include_input=False)})
            kind = f"{kind}, {exc.error_count()} error(s): {', '.join(types)}"
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.msg, record.args = "client error %d on %s: %s", (status, where, kind)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
