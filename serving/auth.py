"""Who may call what: API keys, roles, public paths and rate limits (issue #13).

:func:`rule_for` maps each route to the roles that may call it; :func:`decide` turns a request's
key into 401 (no valid key), 403 (a key of another role) or a pass, without a word about the
person the request names. :class:`AuthMiddleware` runs first on every request, before a body is
read: a refused request costs a dict look-up and, for a key not seen in the last few seconds,
one indexed database read (:class:`features.security.api_keys.KeyStore`).

Routes (``admin`` may call every one):

- public: the health probes, the OpenAPI page, ``/collect`` and ``/collect.gif`` (the browser
  collector), ``/privacy``; rate-limited per client address;
- ``POST /consent``: public for the visitor's own signed ``tailor_aid`` cookie (the body names
  that ``anonymous_id`` and no ``user_id``); any other id needs an admin key;
- ``app``: ``/recommend``, ``/similar_items``, ``/segment``;
- ``collector``: ``/events``, ``/identify``;
- any key: ``/metrics`` (operational counters, no personal data: a scraper needs no admin key);
- ``admin``: ``GET /consent`` (consent administration) and every route not listed here, so a
  new endpoint is closed until a rule opens it.

An admin asking ``/recommend`` with ``X-Tailor-Debug: 1`` gets the debug view (the online
features read, ``persona_state`` included); every admin-only request is appended to the audit
log (:mod:`features.security.audit`) with the key id as actor.

Rate limits (the :mod:`limits` library, fixed windows): a valid key gets ``TAILOR_RATE_LIMIT_KEY``
requests, every request without a valid key (public paths, failed attempts) counts against its
client address's ``TAILOR_RATE_LIMIT_ADDRESS``; over either: 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from limits import parse, storage, strategies

from features.security.api_keys import ApiKey, KeyStore
from features.security.audit import AuditLog
from features.settings import Settings
from features.workspace import Workspace
from serving.cookies import AID_COOKIE, VisitorCookies
from serving.error_bodies import _header, _read_body, _replay, _reply, error_json

logger = logging.getLogger(__name__)

DEBUG_HEADER = b"x-tailor-debug"
#: Where the middleware leaves the caller for the service: ``scope["state"][STATE_KEY]``.
STATE_KEY = "tailor_caller"


class Access(Enum):
    PUBLIC = "public"
    VISITOR = "visitor"  # public for the visitor's own cookie, else admin
    ANY_KEY = "any key"
    APP = "app"
    COLLECTOR = "collector"
    ADMIN = "admin"


PUBLIC_PATHS = frozenset(
    {"/healthz", "/livez", "/readyz", "/docs.json", "/docs", "/", "/collect", "/collect.gif",
     "/privacy"}
)  # fmt: skip
PUBLIC_PREFIXES = ("/static_content/", "/privacy/")
RULES: dict[tuple[str, str], Access] = {
    ("POST", "/recommend"): Access.APP,
    ("POST", "/similar_items"): Access.APP,
    ("POST", "/segment"): Access.APP,
    ("POST", "/events"): Access.COLLECTOR,
    ("POST", "/identify"): Access.COLLECTOR,
    ("GET", "/metrics"): Access.ANY_KEY,
    ("POST", "/consent"): Access.VISITOR,
    ("GET", "/consent"): Access.ADMIN,
}


def rule_for(method: str, path: str) -> Access:
    """Who may call ``method path``; a route without a rule is admin-only."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return Access.PUBLIC
    if method == "OPTIONS":  # CORS preflights carry no key and get no data
        return Access.PUBLIC
    if method == "HEAD":
        method = "GET"
    return RULES.get((method, path.rstrip("/") or "/"), Access.ADMIN)


@dataclass(frozen=True)
class Decision:
    """``status`` 0: pass; else 401, 403 or 429 with ``message`` (and ``retry_after``)."""

    status: int = 0
    message: str = ""
    retry_after: int | None = None


PASS = Decision()


def allowed(access: Access, key: ApiKey | None) -> bool:
    """Whether ``key`` (None: no valid key) may call a route of ``access``."""
    if access is Access.PUBLIC:
        return True
    if key is None:
        return False
    if key.role == "admin" or access is Access.ANY_KEY:
        return True
    return access.value == key.role


def decide(method: str, path: str, key: ApiKey | None, key_sent: bool) -> Decision:
    """401 without a valid key, 403 for a key of another role, else :data:`PASS`. A
    ``VISITOR`` route without a key passes here: the middleware checks the cookie."""
    access = rule_for(method, path)
    if allowed(access, key) or (access is Access.VISITOR and not key_sent):
        return PASS
    if key is None:
        if key_sent:
            return Decision(401, "this API key is not valid (unknown or revoked)")
        return Decision(401, "an API key is required: send Authorization: Bearer <key>")
    need = "admin" if access in (Access.ADMIN, Access.VISITOR) else f"{access.value} or admin"
    return Decision(403, f"a key of role {key.role!r} may not call {method} {path}; needs {need}")


def bearer(headers: Any) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, else None."""
    value = _header(headers, b"authorization").decode("latin-1").strip()
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


class RateLimits:
    """Per-key and per-address fixed-window limits; ``"0"`` switches one off."""

    def __init__(self, per_key: str, per_address: str, storage_uri: str = "memory://") -> None:
        self._limiter = strategies.FixedWindowRateLimiter(storage.storage_from_string(storage_uri))
        self._per_key = None if per_key == "0" else parse(per_key)
        self._per_address = None if per_address == "0" else parse(per_address)

    def key(self, key_id: str) -> int | None:
        """None when the key may go on, else the seconds until it may (Retry-After)."""
        return self._hit(self._per_key, "key", key_id)

    def address(self, address: str) -> int | None:
        return self._hit(self._per_address, "addr", address)

    def _hit(self, item, kind: str, who: str) -> int | None:
        if item is None or self._limiter.hit(item, kind, who):
            return None
        reset = self._limiter.get_window_stats(item, kind, who).reset_time
        return max(1, math.ceil(reset - time.time()))


@dataclass
class Guard:
    """What the middleware needs from the running service (built by its constructor)."""

    enabled: bool
    keys: KeyStore | None
    limits: RateLimits
    audit: AuditLog | None
    cookies: Callable[[], VisitorCookies | None]
    max_body: int


def visitor_owns(body: bytes, anonymous_id: str) -> bool:
    """Whether a ``POST /consent`` body is about the cookie's visitor only: it names no
    ``user_id``, and no ``anonymous_id`` (the consent page's form: the cookie's visitor is
    meant) or the cookie's."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(data, dict)
        and "user_id" not in data
        and data.get("anonymous_id", anonymous_id) == anonymous_id
    )


def route_shape(path: str) -> str:
    """``path`` as the audit log names it: its first segment, the rest as ``*`` (a path may
    carry a person id, e.g. ``/persons/u00784``, which the audit log never holds)."""
    head, _, rest = path.lstrip("/").partition("/")
    return f"/{head}/*" if rest else f"/{head}"


class AuthMiddleware:
    """ASGI middleware: the checks of the module docstring, first on every HTTP request.

    ``guard_of()`` gives the running service's :class:`Guard` (None before its constructor ran:
    public paths pass, others are 503)."""

    def __init__(self, app: Any, guard_of: Callable[[], Guard | None]) -> None:
        self.app = app
        self.guard_of = guard_of

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        access = rule_for(method, path)
        guard = self.guard_of()
        if guard is None:
            if access is Access.PUBLIC:
                await self.app(scope, receive, send)
            else:
                await _reply(send, 503, error_json("the service is starting"))
            return
        headers = scope.get("headers", ())
        if not guard.enabled:  # local experiments: the debug view for the asking
            if _header(headers, DEBUG_HEADER) == b"1":
                state = {**(scope.get("state") or {}), STATE_KEY: {"debug": True}}
                scope = {**scope, "state": state}
            await self.app(scope, receive, send)
            return
        sent = bearer(headers)
        key = guard.keys.verify(sent) if sent and guard.keys is not None else None
        if key is not None:
            wait = guard.limits.key(key.key_id)
        else:
            wait = guard.limits.address((scope.get("client") or ("unknown", 0))[0])
        if wait is not None:
            await _refuse(send, Decision(429, "too many requests", wait), method, path)
            return
        decision = decide(method, path, key, sent is not None)
        if decision.status:
            await _refuse(send, decision, method, path)
            return
        if access is Access.VISITOR and key is None:
            receive = await self._visitor(guard, scope, receive, send, method, path)
            if receive is None:
                return
        debug = key is not None and key.role == "admin" and _header(headers, DEBUG_HEADER) == b"1"
        if key is not None:
            state = dict(scope.get("state") or {})
            state[STATE_KEY] = {"key_id": key.key_id, "role": key.role, "debug": debug}
            scope = {**scope, "state": state}
            if guard.audit is not None and (debug or access in (Access.ADMIN, Access.VISITOR)):
                guard.audit.append(
                    actor=f"key:{key.key_id}",
                    action=f"{method} {route_shape(path)}",
                    details={"debug": debug} if debug else {},
                )
        await self.app(scope, receive, send)

    async def _visitor(self, guard: Guard, scope, receive, send, method: str, path: str):
        """The replayable body of a keyless ``POST /consent`` about the cookie's own visitor,
        else None once a 401 (or 413) was sent."""
        cookies = guard.cookies()
        visitor = None
        if cookies is not None:
            raw = _cookie(_header(scope.get("headers", ()), b"cookie").decode("latin-1"))
            if AID_COOKIE in raw:
                found = cookies.visitor(raw)
                visitor = None if found.new_visitor or found.problems else found.anonymous_id
        if visitor is None:
            message = "an admin API key, or the visitor's own tailor_aid cookie, is required"
            await _refuse(send, Decision(401, message), method, path)
            return None
        body = await _read_body(receive, guard.max_body)
        if body is None:
            await _reply(send, 413, error_json(f"request body larger than {guard.max_body} bytes"))
            return None
        if not visitor_owns(body, visitor):
            message = "without an admin key, only the cookie's own anonymous_id may be given"
            await _refuse(send, Decision(403, message), method, path)
            return None
        return _replay(body)


def caller(scope: dict) -> dict[str, Any]:
    """What the middleware found out about the caller (``key_id``, ``role``, ``debug``);
    empty when the request carried no key or auth is off."""
    return (scope.get("state") or {}).get(STATE_KEY) or {}


def _cookie(text: str) -> dict[str, str]:
    found = {}
    for part in text.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found


async def _refuse(send: Any, decision: Decision, method: str, path: str) -> None:
    logger.warning("refused %d on %s [%s]", decision.status, path, method)
    body = error_json(decision.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if decision.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="tailor"'))
    if decision.retry_after is not None:
        headers.append((b"retry-after", str(decision.retry_after).encode()))
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guard_for(
    settings: Settings,
    ws: Workspace,
    cookies: Callable[[], VisitorCookies | None],
    max_body: int,
) -> Guard:
    """The running service's :class:`Guard`: keys from the workspace database, limits and the
    audit log from the settings (``TAILOR_AUTH=0`` logs a warning: every endpoint is open)."""
    limits = RateLimits(
        settings.rate_limit_key, settings.rate_limit_address, settings.rate_limit_storage
    )
    if not settings.auth:
        logger.warning(
            "TAILOR_AUTH=0: every endpoint is open to anyone who can reach this service "
            "(local experiments only)"
        )
        return Guard(False, None, limits, None, cookies, max_body)
    return Guard(True, KeyStore.for_workspace(ws), limits, AuditLog.for_workspace(ws), cookies,
                 max_body)  # fmt: skip


def debug_view(scope: dict) -> bool:
    """Whether the request asked for, and may see, the debug view (see the module docstring)."""
    return bool(caller(scope).get("debug"))


def for_caller(answer: Any, debug: bool) -> Any:
    """``/recommend``'s answer as the caller may see it: the online features read (raw
    internal state such as ``persona_state``) only in the admin debug view."""
    if debug or not answer.features:
        return answer
    return answer.model_copy(update={"features": {}})
