"""Error bodies in the documented shape, naming the field (issue #5); body limits, nesting depth
and client-error logging (issue #10 items 4, 5, 8, 16)."""

import asyncio
import json
import logging
import sys
import time

import pytest
from pydantic import ValidationError

from features.settings import Settings
from models.errors import ConfigError
from serving.error_bodies import (
    MAX_JSON_DEPTH,
    BodyLimits,
    ClientErrorLogFilter,
    ErrorShapeMiddleware,
    error_body,
    invalid_json,
    nesting_depth_over,
    unsupported_media_type,
)
from serving.schemas import RecommendRequest


def _parse(raw: bytes) -> dict:
    return json.loads(error_body(raw))


def test_validation_errors_name_each_field_and_detail_is_an_object() -> None:
    """issue #10 item 16: ``detail`` is a JSON object, not JSON text inside JSON."""
    raw = json.dumps(
        {
            "error": "2 validation errors for RecommendRequestIODescriptor",
            "detail": [
                {"loc": ["k"], "msg": "Input should be less than or equal to 200", "type": "le"},
                {"loc": ["context", "country"], "msg": "Value error, bad", "type": "value_error"},
            ],
        }
    ).encode()
    body = _parse(raw)
    assert (
        body["error"]
        == "k: Input should be less than or equal to 200; context.country: Value error, bad"
    )
    assert body["detail"] == {
        "errors": [
            {"field": "k", "message": "Input should be less than or equal to 200", "type": "le"},
            {"field": "context.country", "message": "Value error, bad", "type": "value_error"},
        ]
    }


def test_text_detail_becomes_an_object() -> None:
    assert _parse(b'{"error": "bad", "detail": "why"}') == {
        "error": "bad",
        "detail": {"message": "why"},
    }


def test_bentoml_exception_list_becomes_an_object() -> None:
    assert _parse(b'[{"error": "unknown item_id \'x\'"}]') == {"error": "unknown item_id 'x'"}


def test_non_json_error_bodies_are_wrapped() -> None:
    assert _parse(b"plain text") == {"error": "plain text"}


def test_request_checks() -> None:
    assert unsupported_media_type("POST", "application/json; charset=utf-8") is None
    assert unsupported_media_type("POST", "") is None
    assert unsupported_media_type("GET", "text/plain") is None
    assert b"application/json" in unsupported_media_type("POST", "multipart/form-data")
    assert invalid_json(b'{"k": 1}') is None
    assert json.loads(invalid_json(b"\x00"))["error"].startswith("Invalid JSON")


def test_an_empty_body_is_refused_as_every_body_is_documented_required() -> None:
    """issue #10 item 10: BentoML read an empty body as ``{}`` (one rejected event, 200)."""
    assert json.loads(invalid_json(b""))["error"] == "a JSON request body is required"
    assert json.loads(invalid_json(b"  \n"))["error"] == "a JSON request body is required"


def test_nesting_depth_is_bounded_before_parsing() -> None:
    """issue #10 item 5: JSON ~1,000 levels deep is a 400 at once, not a RecursionError."""
    assert not nesting_depth_over(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert nesting_depth_over(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    # brackets inside strings, escaped quotes included, are text, not nesting
    text = json.dumps({"q": '[{"\\' + "[" * 500, "list": [[1], [2]] * 300}).encode()
    assert not nesting_depth_over(text)
    for deep in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        started = time.perf_counter()
        body = json.loads(invalid_json(deep))
        assert time.perf_counter() - started < 0.5
        assert body == {
            "error": f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
            "detail": {"max_depth": MAX_JSON_DEPTH},
        }


def test_body_limits_from_the_environment() -> None:
    """issue #10 item 4: the limits are settings, read when the service is constructed."""
    assert BodyLimits.from_settings(Settings.from_env({})) == BodyLimits(
        events=1 << 20, other=64 << 10
    )
    settings = Settings.from_env(
        {"TAILOR_MAX_EVENTS_BYTES": "2048", "TAILOR_MAX_REQUEST_BYTES": " 512 "}
    )
    limits = BodyLimits.from_settings(settings)
    assert (limits.for_path("/events"), limits.for_path("/recommend")) == (2048, 512)
    for bad in ("0", "-1", "1MiB"):
        with pytest.raises(ConfigError, match=f"TAILOR_MAX_EVENTS_BYTES='{bad}' must be a pos"):
            Settings.from_env({"TAILOR_MAX_EVENTS_BYTES": bad})


def _call(
    app,
    method: str,
    body: bytes | list[bytes],
    content_type: bytes = b"application/json",
    path: str = "/recommend",
    headers: list[tuple[bytes, bytes]] | None = None,
    limits: BodyLimits | None = None,
) -> tuple:
    """Run the middleware over one request; returns (status, body, chunks the app read)."""
    sent: list[dict] = []
    chunks = [body] if isinstance(body, bytes) else body
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", content_type), *(headers or [])],
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    read = []

    async def receive() -> dict:
        read.append(messages[len(read)])
        return read[-1]

    async def send(message: dict) -> None:
        sent.append(message)

    middleware = ErrorShapeMiddleware(app, limits=(lambda: limits) if limits else None)
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), len(read)


async def _echo_400(scope, receive, send) -> None:
    request = await receive()
    body = json.dumps([{"error": f"bad: {request['body'].decode()}"}]).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _never(scope, receive, send) -> None:
    raise AssertionError("the request reached the service")


def test_middleware_replays_the_body_and_reshapes_4xx() -> None:
    status, body, _ = _call(_echo_400, "POST", b'{"k": 1}')
    assert status == 400
    assert json.loads(body) == {"error": 'bad: {"k": 1}'}


def test_middleware_refuses_malformed_json_and_other_media_types() -> None:
    assert _call(_never, "POST", b"{oops")[0] == 400
    assert _call(_never, "POST", b"a=1", b"application/x-www-form-urlencoded")[0] == 415
    assert _call(_never, "POST", b"[" * 1000 + b"]" * 1000)[0] == 400


def test_declared_oversize_body_is_413_before_a_byte_is_read() -> None:
    """issue #10 item 4: a 100 MB Content-Length is refused without reading the body."""
    length = [(b"content-length", b"104857600")]
    status, body, read = _call(_never, "POST", b"", path="/events", headers=length)
    assert (status, read) == (413, 0)
    assert json.loads(body) == {
        "error": "request body larger than 1048576 bytes, the limit for /events; split the batch",
        "detail": {"limit_bytes": 1048576},
    }
    # other routes have the smaller limit
    length = [(b"content-length", str(64 * 1024 + 1).encode())]
    assert _call(_never, "POST", b"", path="/recommend", headers=length)[:2][0] == 413


def test_streamed_oversize_body_is_413_once_past_the_limit() -> None:
    """issue #10 item 4: a chunked body without Content-Length stops being read at the limit."""
    limits = BodyLimits(events=1000, other=100)
    chunks = [b"[" + b" " * 399] + [b" " * 400] * 9 + [b"]"]
    status, body, read = _call(_never, "POST", chunks, path="/events", limits=limits)
    assert (status, read) == (413, 3)  # 1,200 bytes read of 4,001, then refused
    assert json.loads(body)["detail"] == {"limit_bytes": 1000}
    # under the limit, the streamed body reaches the service whole
    status, body, read = _call(_echo_400, "POST", [b'{"k":', b" 1}"], limits=limits)
    assert (status, read) == (400, 2)
    assert json.loads(body) == {"error": 'bad: {"k": 1}'}


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "bentoml._internal.server.http_app",
        logging.ERROR,
        __file__,
        1,
        "Exception on %s [%s]",
        ("/recommend", "POST"),
        exc_info,
    )


class _NotFound(Exception):
    error_code = 404


def test_client_errors_are_one_warning_line_without_the_input() -> None:
    """issue #10 item 8: no traceback, no request content (user ids) for a client error."""
    try:
        RecommendRequest.model_validate({"user_id": "secret-user-42", "k": 0, "secret-key": 1})
    except ValidationError as exc:
        validation = exc
    record = _record(validation)
    assert ClientErrorLogFilter().filter(record)
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "WARNING client error 400 on /recommend [POST]: "
        "ValidationError, 2 error(s): extra_forbidden, greater_than_equal"
    )
    assert record.exc_info is None

    record = _record(_NotFound("unknown item_id 'secret-item-9'"))
    assert ClientErrorLogFilter().filter(record)
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING client error 404 on /recommend [POST]: _NotFound"

    fault = _record(RuntimeError("boom"))  # a server fault keeps its level and traceback
    assert ClientErrorLogFilter().filter(fault)
    assert fault.levelno == logging.ERROR and fault.exc_info is not None
