"""The browser collector: ``POST /collect`` and the ``GET /collect.gif`` pixel (issue #11).

A page sends one event or a list in the event schema (:class:`features.schema.Event`), as
``fetch`` JSON, as a ``navigator.sendBeacon`` string (a ``text/plain`` body holding JSON), or,
without JavaScript, as a 1×1 GIF pixel ``<img src="/collect.gif?e=<url-encoded JSON>">``. What a
browser cannot know is filled in here:

- ``anonymous_id`` and ``session_id`` from the first-party cookies ``tailor_aid`` and
  ``tailor_sid`` (:mod:`serving.cookies`: signed, issued when missing or bad, renewed on use);
- ``event_id`` (a new UUID; send your own to make a retried beacon a duplicate, not a second
  event) and ``timestamp`` (the time received);
- ``country`` from the request header named by ``TAILOR_COUNTRY_HEADER`` (the consent regime
  of the event, issue #12);
- ``device_type`` and the ``browser``/``browser_version``/``os``/``os_version`` properties from
  the User-Agent (:mod:`serving.devices`);
- with ``TAILOR_FINGERPRINT=1``, the weak ``fingerprint`` property (:func:`serving.devices.
  fingerprint`) for the identity graph, never used alone to merge people.

Values the event gives are kept. The events then go to the *sink* the service injects (the same
validation and storage as ``/events``); its :class:`Delivery` is the answer, its per-row
rejections included. A sink that is full raises an error with a ``retry_after`` (seconds, e.g.
:class:`SinkFullError`): the answer is 503 with ``Retry-After``.

Browsers on other origins may call ``/collect`` when their origin is in
``TAILOR_COLLECT_ORIGINS``: they get CORS headers with credentials; any other origin gets none,
and its POSTs are refused (403). Bodies over ``TAILOR_MAX_EVENTS_BYTES`` are 413, bodies that are
not JSON 400, other content types 415; every refusal, bad cookie and rejected event is counted
by reason through ``on_rejection`` (``tailor_rejections_total`` in ``/metrics``).

This module knows Starlette (BentoML mounts the app, see :func:`collector_app`), never BentoML.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from features.settings import Settings, env_name
from models.errors import ConfigError, TailorError
from serving import devices
from serving.consent_gate import header_country
from serving.cookies import VisitorCookies, cookie_key
from serving.error_bodies import error_json, invalid_json
from serving.schemas import MAX_EVENTS

logger = logging.getLogger(__name__)

COLLECT_PATH, PIXEL_PATH = "/collect", "/collect.gif"
#: The paths the collector answers itself (body limits, content types, error bodies).
COLLECT_PATHS = frozenset({COLLECT_PATH, PIXEL_PATH})
#: The pixel's query parameter holding the url-encoded JSON event (or list).
PIXEL_PARAM = "e"
#: A transparent 1×1 GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
#: Media types a collector POST may declare (none at all is read as JSON).
BODY_TYPES = frozenset({"application/json", "text/plain"})
NO_CACHE = {
    "cache-control": "no-cache, no-store, must-revalidate, max-age=0",
    "pragma": "no-cache",
    "expires": "0",
}
PREFLIGHT_MAX_AGE = 600

# Rejection reasons, the bounded ``reason`` label of tailor_rejections_total.
TOO_LARGE = "too_large"
TOO_MANY_EVENTS = "too_many_events"
BAD_CONTENT_TYPE = "bad_content_type"
BAD_JSON = "bad_json"
BAD_BATCH = "bad_batch"
MISSING_EVENT = "missing_event"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
INVALID_EVENT = "invalid_event"
SINK_FULL = "sink_full"
SINK_FAILED = "sink_failed"


class SinkFullError(TailorError):
    """The sink cannot take events now (e.g. the broker's spool is full); try again later."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Delivery:
    """What the sink did with the events: the HTTP ``status`` (200 stored, 202 accepted and
    queued), the JSON ``body`` (counts and per-row rejections, as ``/events`` answers), and
    how many events it ``rejected`` (counted as ``invalid_event``)."""

    body: dict[str, Any]
    status: int = 200
    rejected: int = 0


#: ``events -> Delivery``, sync (run in a worker thread) or async.
Sink = Callable[[list[Any]], Delivery | Awaitable[Delivery]]
#: ``(reason, count)``: one refusal or rejection kind, counted in /metrics.
OnRejection = Callable[[str, int], None]


def parse_origins(text: str) -> frozenset[str]:
    """``TAILOR_COLLECT_ORIGINS`` as a set of ``scheme://host[:port]`` (lower case, no path);
    a malformed entry or ``*`` (not allowed with credentials) is a ConfigError naming it."""
    origins = set()
    for entry in text.split(","):
        entry = entry.strip().rstrip("/")
        if not entry:
            continue
        parts = urlsplit(entry)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ConfigError(
                f"{env_name('collect_origins')}: {entry!r} is not an origin; give "
                "scheme://host[:port] (http or https, no path, no *), comma-separated"
            )
        origins.add(entry.lower())
    return frozenset(origins)


@dataclass(frozen=True)
class CollectorConfig:
    """The collector's settings: CORS origins, the body limit, whether to fingerprint."""

    origins: frozenset[str] = frozenset()
    max_bytes: int = 1 << 20
    fingerprint: bool = False
    #: the request header holding the visitor's country (``TAILOR_COUNTRY_HEADER``)
    country_header: str = "CF-IPCountry"

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectorConfig:
        return cls(
            origins=parse_origins(settings.collect_origins),
            max_bytes=settings.max_events_bytes,
            fingerprint=settings.fingerprint,
            country_header=settings.country_header,
        )


@dataclass
class _Refusal(Exception):
    """A request the collector refuses: its status, error body and counted reason."""

    status: int
    body: bytes
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


class Collector:
    """The collector's logic; :func:`collector_app` puts it on HTTP."""

    def __init__(
        self,
        config: CollectorConfig,
        cookies: VisitorCookies,
        sink: Sink,
        *,
        fingerprint_key: bytes | None = None,
        on_rejection: OnRejection | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.fingerprint and fingerprint_key is None:
            raise ConfigError("fingerprinting is on but no fingerprint key was given")
        self.config = config
        self.cookies = cookies
        self.sink = sink
        self.fingerprint_key = fingerprint_key if config.fingerprint else None
        self.on_rejection = on_rejection or (lambda reason, count: None)
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        secrets_dir: Path,
        sink: Sink,
        on_rejection: OnRejection | None = None,
    ) -> Collector:
        """The collector of the service's settings; the cookie key is ``TAILOR_COOKIE_SECRET``
        or the workspace's generated one (created now if missing)."""
        key = cookie_key(settings.cookie_secret, secrets_dir)
        cookies = VisitorCookies(
            key,
            cookie_days=settings.cookie_days,
            session_timeout_minutes=settings.session_timeout_minutes,
        )
        devices.parse_user_agent("Mozilla/5.0 (Windows NT 10.0)")  # loads ua-parser's rules now
        return cls(
            CollectorConfig.from_settings(settings),
            cookies,
            sink,
            fingerprint_key=devices.fingerprint_key(key),
            on_rejection=on_rejection,
        )

    # -- filling in what a browser cannot know ---------------------------------------------------
    def enrich(
        self,
        rows: list[Any],
        anonymous_id: str,
        session_id: str,
        user_agent: str | None,
        accept_language: str | None,
        country: str | None = None,
    ) -> list[Any]:
        """Copies of the event objects with the missing ids, time, device, ``country`` (the
        request's country header: the consent regime of the event, issue #12) and properties
        filled in (see the module docstring); anything else passes unchanged, for the sink's
        validation to reject with its row number."""
        device = devices.parse_user_agent(user_agent)
        received = datetime.fromtimestamp(self._clock(), UTC).isoformat()
        filled = []
        for row in rows:
            if not isinstance(row, dict):
                filled.append(row)
                continue
            event = dict(row)
            for name, value in (
                ("event_id", None),
                ("timestamp", received),
                ("anonymous_id", anonymous_id),
                ("session_id", session_id),
                ("device_type", device.device_type),
                ("country", country),
            ):
                if name == "country" and country is None:
                    continue
                if _missing(event.get(name)):
                    event[name] = str(uuid.uuid4()) if value is None else value
            properties = _properties(event.get("properties"))
            if properties is not None:
                for name, value in device.properties().items():
                    properties.setdefault(name, value)
                if self.fingerprint_key is not None and devices.FINGERPRINT not in properties:
                    hint = devices.fingerprint(
                        self.fingerprint_key, device, accept_language, properties
                    )
                    if hint is not None:
                        properties[devices.FINGERPRINT] = hint
                event["properties"] = properties or None
            filled.append(event)
        return filled

    # -- CORS ----------------------------------------------------------------------------------
    def allowed(self, origin: str | None, own_origin: str) -> bool:
        """Whether a request from ``origin`` may send events: no Origin (not a browser, or a
        same-origin GET), the collector's own origin, or one in the allow-list."""
        if not origin:
            return True
        origin = origin.strip().lower()
        return origin == own_origin.lower() or origin in self.config.origins

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """CORS headers for an allow-listed ``origin`` (credentials allowed), else none."""
        headers = {"vary": "Origin"} if self.config.origins else {}
        if origin and origin.strip().lower() in self.config.origins:
            headers["access-control-allow-origin"] = origin.strip()
            headers["access-control-allow-credentials"] = "true"
        return headers

    def preflight(self, request: Request) -> Response:
        """``OPTIONS /collect``: 204 with the CORS grant for an allow-listed origin, 403 without
        any CORS header for another."""
        origin = request.headers.get("origin")
        if not origin:
            return Response(status_code=204, headers={"allow": "POST, OPTIONS"})
        if origin.strip().lower() not in self.config.origins:
            self.on_rejection(ORIGIN_NOT_ALLOWED, 1)
            logger.warning("client error 403 on %s [OPTIONS]: origin not allowed", COLLECT_PATH)
            return Response(status_code=403, headers={"vary": "Origin"})
        headers = self.cors_headers(origin)
        headers["access-control-allow-methods"] = "POST, GET, OPTIONS"
        headers["access-control-allow-headers"] = "Content-Type"
        headers["access-control-max-age"] = str(PREFLIGHT_MAX_AGE)
        return Response(status_code=204, headers=headers)

    # -- the two forms -------------------------------------------------------------------------
    async def post(self, request: Request) -> Response:
        """``POST /collect``: JSON or a sendBeacon text body, one event or a list."""
        origin = request.headers.get("origin")
        cors = self.cors_headers(origin)
        try:
            if not self.allowed(origin, _own_origin(request)):
                raise _Refusal(
                    403,
                    error_json(
                        f"origin {origin.strip()[:100]!r} may not send events; allowed origins "
                        f"are set by {env_name('collect_origins')}"
                    ),
                    ORIGIN_NOT_ALLOWED,
                )
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media and media not in BODY_TYPES:
                raise _Refusal(
                    415,
                    error_json(
                        f"Content-Type must be application/json or text/plain (a sendBeacon "
                        f"string), got {media!r}"
                    ),
                    BAD_CONTENT_TYPE,
                )
            payload = self._decode(await self._read_body(request))
            rows = self._rows(payload)
        except _Refusal as refusal:
            return self._refuse(refusal, request, cors)
        return await self._deliver(rows, request, cors, pixel=False)

    async def pixel(self, request: Request) -> Response:
        """``GET /collect.gif?e=<url-encoded JSON>``: the event(s), answered with a 1×1 GIF
        (an error still answers its 4xx status with a JSON body saying why)."""
        if request.method == "HEAD":  # a prefetch or a link checker: no event
            return Response(PIXEL, media_type="image/gif", headers=dict(NO_CACHE))
        cors = self.cors_headers(request.headers.get("origin"))
        try:
            values = request.query_params.getlist(PIXEL_PARAM)
            if not values:
                raise _Refusal(
                    400,
                    error_json(
                        f"{PIXEL_PARAM}: query parameter required, holding the url-encoded JSON "
                        "event (or list of events)"
                    ),
                    MISSING_EVENT,
                )
            text = values[-1]
            if len(text.encode()) > self.config.max_bytes:
                raise _Refusal(413, _too_large(self.config.max_bytes), TOO_LARGE)
            rows = self._rows(self._decode(text.encode()))
        except _Refusal as refusal:
            return self._refuse(refusal, request, cors)
        return await self._deliver(rows, request, cors, pixel=True)

    # -- steps ---------------------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # refused before reading
            raise _Refusal(413, _too_large(limit), TOO_LARGE)
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a streamed body past the limit: the rest is never read
                raise _Refusal(413, _too_large(limit), TOO_LARGE)
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    def _decode(body: bytes) -> Any:
        bad = invalid_json(body)  # empty, too deeply nested, or not JSON: 400 naming why
        if bad is not None:
            raise _Refusal(400, bad, BAD_JSON)
        return json.loads(body)

    @staticmethod
    def _rows(payload: Any) -> list[Any]:
        if isinstance(payload, dict):
            return [payload]
        if not isinstance(payload, list):
            raise _Refusal(
                400,
                error_json(
                    f"body: expected one event (a JSON object) or a list of events, got "
                    f"{type(payload).__name__ if payload is not None else 'null'}"
                ),
                BAD_BATCH,
            )
        if len(payload) > MAX_EVENTS:
            raise _Refusal(
                413,
                error_json(
                    f"events: a batch holds at most {MAX_EVENTS} events, got {len(payload)}; "
                    "split it",
                    {"max_events": MAX_EVENTS},
                ),
                TOO_MANY_EVENTS,
            )
        return payload

    async def _deliver(
        self, rows: list[Any], request: Request, cors: dict[str, str], *, pixel: bool
    ) -> Response:
        visitor = self.cookies.visitor(dict(request.cookies))
        for problem in visitor.problems:
            self.on_rejection(problem, 1)
        events = self.enrich(
            rows,
            visitor.anonymous_id,
            visitor.session_id,
            request.headers.get("user-agent"),
            request.headers.get("accept-language"),
            header_country(request.headers, self.config.country_header),
        )
        headers = {**cors, **NO_CACHE}
        try:
            delivery = await _call(self.sink, events)
        except Exception as exc:
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
                self.on_rejection(SINK_FULL, 1)
                logger.warning("collector: the sink is full (%s); answered 503", type(exc).__name__)
                seconds = str(max(1, math.ceil(retry_after)))
                body = error_json(
                    f"events not accepted now, try again in {seconds} s",
                    {"retry_after_s": int(seconds)},
                )
                return _json(503, body, {**headers, "retry-after": seconds})
            self.on_rejection(SINK_FAILED, 1)
            logger.exception("collector: the sink failed on %d events", len(events))
            return _json(500, error_json("events could not be stored; try again"), headers)
        if delivery.rejected:
            self.on_rejection(INVALID_EVENT, delivery.rejected)
        response = (
            Response(PIXEL, media_type="image/gif", headers=headers)
            if pixel
            else _json(delivery.status, json.dumps(delivery.body).encode(), headers)
        )
        if pixel and delivery.rejected:
            response.headers["x-tailor-rejected"] = str(delivery.rejected)
        for cookie in self.cookies.set_cookies(visitor, secure=is_tls(request.scope)):
            response.headers.append("set-cookie", cookie.header())
        return response

    def _refuse(self, refusal: _Refusal, request: Request, cors: dict[str, str]) -> Response:
        self.on_rejection(refusal.reason, 1)
        logger.warning(
            "client error %d on %s [%s]: %s",
            refusal.status,
            request.url.path,
            request.method,
            refusal.reason,
        )
        return _json(refusal.status, refusal.body, {**cors, **refusal.headers})


def is_tls(scope: Mapping[str, Any]) -> bool:
    """Whether the request came over TLS: its scheme is https (uvicorn, under BentoML, already
    sets it from ``X-Forwarded-Proto`` for the proxies in ``FORWARDED_ALLOW_IPS``, loopback by
    default), or a proxy on this machine (a loopback peer) says ``X-Forwarded-Proto: https``."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    client = scope.get("client") or ("", 0)
    try:
        loopback = ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
    if not loopback:
        return False
    for key, value in scope.get("headers", ()):
        if key == b"x-forwarded-proto":
            first = value.decode("latin-1").split(",")[0].strip().lower()
            return first == "https"
    return False


def collector_app(current: Callable[[], Collector | None]) -> Starlette:
    """The ASGI app of ``/collect`` and ``/collect.gif``; ``current()`` gives the collector
    (the service makes it in its constructor, after this app is mounted), None until then."""

    def unavailable() -> Response:
        return _json(503, error_json("the service is starting; try again"), {"retry-after": "1"})

    async def collect(request: Request) -> Response:
        collector = current()
        if collector is None:
            return unavailable()
        if request.method == "OPTIONS":
            return collector.preflight(request)
        return await collector.post(request)

    async def pixel(request: Request) -> Response:
        collector = current()
        if collector is None:
            return unavailable()
        return await collector.pixel(request)

    return Starlette(
        routes=[
            Route(COLLECT_PATH, collect, methods=["POST", "OPTIONS"], name="collect"),
            Route(PIXEL_PATH, pixel, methods=["GET"], name="collect_pixel"),
        ]
    )


async def _call(sink: Sink, events: list[Any]) -> Delivery:
    if inspect.iscoroutinefunction(sink):
        return await sink(events)
    result = await anyio.to_thread.run_sync(sink, events)
    if inspect.isawaitable(result):
        result = await result
    return result


def _json(status: int, body: bytes, headers: dict[str, str]) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _too_large(limit: int) -> bytes:
    return error_json(
        f"request body larger than {limit} bytes, the limit for {COLLECT_PATH}; split the batch",
        {"limit_bytes": limit},
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _properties(value: Any) -> dict[str, Any] | None:
    """The event's properties as a new dict to fill in (``{}`` when absent; a JSON-object
    string is decoded, as the schema does), or None when it is not an object: left as it is for
    validation to name."""
    if _missing(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, dict) else None


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"
