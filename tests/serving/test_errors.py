"""Error bodies in the documented shape, naming the field (issue #5)."""

import asyncio
import json

from serving.errors import ErrorShapeMiddleware, error_body, invalid_json, unsupported_media_type


def _parse(raw: bytes) -> dict:
    return json.loads(error_body(raw))


def test_validation_errors_name_each_field_and_detail_is_text() -> None:
    raw = json.dumps(
        {
            "error": "2 validation errors for RecommendRequestIODescriptor",
            "detail": [
                {"loc": ["k"], "msg": "Input should be less than or equal to 200"},
                {"loc": ["context", "country"], "msg": "Value error, bad"},
            ],
        }
    ).encode()
    body = _parse(raw)
    assert (
        body["error"]
        == "k: Input should be less than or equal to 200; context.country: Value error, bad"
    )
    assert isinstance(body["detail"], str)


def test_bentoml_exception_list_becomes_an_object() -> None:
    assert _parse(b'[{"error": "unknown item_id \'x\'"}]') == {"error": "unknown item_id 'x'"}


def test_non_json_error_bodies_are_wrapped() -> None:
    assert _parse(b"plain text") == {"error": "plain text"}


def test_request_checks() -> None:
    assert unsupported_media_type("POST", "application/json; charset=utf-8") is None
    assert unsupported_media_type("POST", "") is None
    assert unsupported_media_type("GET", "text/plain") is None
    assert b"application/json" in unsupported_media_type("POST", "multipart/form-data")
    assert invalid_json(b'{"k": 1}') is None and invalid_json(b"") is None
    assert json.loads(invalid_json(b"\x00"))["error"].startswith("Invalid JSON")


def _call(app, method: str, body: bytes, content_type: bytes = b"application/json") -> tuple:
    sent: list[dict] = []
    scope = {"type": "http", "method": method, "headers": [(b"content-type", content_type)]}
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(ErrorShapeMiddleware(app)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _echo_400(scope, receive, send) -> None:
    request = await receive()
    body = json.dumps([{"error": f"bad: {request['body'].decode()}"}]).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_middleware_replays_the_body_and_reshapes_4xx() -> None:
    status, body = _call(_echo_400, "POST", b'{"k": 1}')
    assert status == 400
    assert json.loads(body) == {"error": 'bad: {"k": 1}'}


def test_middleware_refuses_malformed_json_and_other_media_types() -> None:
    assert _call(_echo_400, "POST", b"{oops")[0] == 400
    assert _call(_echo_400, "POST", b"a=1", b"application/x-www-form-urlencoded")[0] == 415
