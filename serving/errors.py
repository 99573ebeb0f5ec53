"""Error bodies in the shape the OpenAPI schema documents: ``{"error": text, "detail": text}``.

BentoML answers a pydantic validation error with ``detail`` as a list and its own 4xx exceptions
as a one-element list, while its OpenAPI document declares an object whose ``detail`` is text;
clients (and schemathesis) rely on the document. :class:`ErrorShapeMiddleware` rewrites 4xx JSON
bodies into that shape, and puts the fields at fault into ``error`` so the message names them.
"""

from __future__ import annotations

import json
from typing import Any


def _where(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if str(part) != "root"]
    return ".".join(loc)


def error_body(raw: bytes) -> bytes:
    """A 4xx JSON body as ``{"error": message naming the fields, "detail": text}``."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return json.dumps({"error": raw.decode("utf-8", "replace") or "bad request"}).encode()
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return json.dumps({"error": "bad request", "detail": json.dumps(data)}).encode()
    error = str(data.get("error", "bad request"))
    detail = data.get("detail")
    if isinstance(detail, list):  # pydantic errors: name each field and say why
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = _where(item)
                message = str(item.get("msg", ""))
                parts.append(f"{where}: {message}" if where else message)
        if parts:
            error = "; ".join(parts)
    out: dict[str, str] = {"error": error}
    if detail is not None:
        out["detail"] = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return json.dumps(out).encode()


def unsupported_media_type(method: str, content_type: str) -> bytes | None:
    """The 415 body for a POST whose body is not JSON (BentoML would answer some with a 500),
    else None. A missing Content-Type is read as JSON."""
    if method != "POST" or not content_type:
        return None
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return None
    error = f"Content-Type must be application/json, got {media!r}"
    return json.dumps({"error": error}).encode()


def invalid_json(body: bytes) -> bytes | None:
    """The 400 body for a POST body that is not JSON (BentoML answers some with a 500), else
    None. An empty body is left to BentoML (it reads it as ``{}``)."""
    if not body:
        return None
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return json.dumps({"error": f"Invalid JSON: {exc}"}).encode()
    return None


async def _reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ErrorShapeMiddleware:
    """ASGI middleware: 415 for non-JSON bodies, 400 for malformed JSON, and
    :func:`error_body` for every 4xx JSON response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            content_type = _header(scope.get("headers", ()), b"content-type").decode("latin-1")
            refused = unsupported_media_type("POST", content_type)
            if refused is not None:
                await _reply(send, 415, refused)
                return
            body = await _read_body(receive)
            bad = invalid_json(body)
            if bad is not None:
                await _reply(send, 400, bad)
                return
            receive = _replay(body)
        await self.app(scope, receive, _reshaping(send))


def _header(headers: Any, name: bytes) -> bytes:
    """The last value of header ``name`` (lower case, as ASGI gives names), else ``b""``."""
    found = b""
    for key, value in headers:
        if key == name:
            found = value
    return found


async def _read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
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
