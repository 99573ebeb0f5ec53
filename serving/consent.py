"""``POST /consent`` and ``GET /consent``: a person's choices in, their consent state out
(issue #12). Plain logic beside the service (:mod:`serving.service` mounts :func:`consent_app`).

``POST /consent`` ``{"user_id" | "anonymous_id", "purposes": {"analytics": true, ...},
"policy_version": "...", "source": "banner|api|import", "timestamp": "<ISO 8601, client
clock>", "country": "FR"}`` appends one record to the ledger and answers 201 with the record
and the person's state. ``GET /consent?user_id=...`` (or ``anonymous_id=``) answers the state:
per purpose allowed or not and why, the regime, the ``policy_version``, ``needs_banner`` and the
history. The country is the body's (or the query's) ``country``, else the request header named
by ``TAILOR_COUNTRY_HEADER``; ``Sec-GPC: 1`` refuses ``marketing`` under the opt-out regime.

A body with neither ``user_id`` nor ``anonymous_id`` from a request with a valid signed
``tailor_aid`` cookie (:mod:`serving.cookies`; ``GET /privacy`` issues it) records the choice of
that visitor, and renews the cookie: the form the consent page uses, since its script cannot
read the ``HttpOnly`` cookie. That answer carries no id. Without such a cookie, a body without
an id is a 400 as above.

Unknown purposes, unknown keys or a missing id: 400 naming the field. A ledger that cannot be
written or read: 503, and nothing is stored (callers fail closed). Answers never carry another
id of the person (a history record made on another of their ids says ``"same_id": false``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from features.consent.check import ConsentCheck, ConsentState
from features.consent.ledger import ConsentError, LedgerUnavailable, person_key_of
from serving.cookies import AID_COOKIE, VisitorCookies
from serving.error_bodies import error_json

logger = logging.getLogger(__name__)

CONSENT_PATH = "/consent"
#: The keys a ``POST /consent`` body may have.
BODY_KEYS = ("user_id", "anonymous_id", "purposes", "policy_version", "source", "timestamp",
             "country")  # fmt: skip
QUERY_KEYS = ("user_id", "anonymous_id", "country")
#: ``(outcome, purpose or "", count)``: counted in ``/metrics`` by the service.
Count = Callable[[str, str], None]


def gpc(headers: Mapping[str, str]) -> bool:
    """Whether the request carries ``Sec-GPC: 1`` (Global Privacy Control)."""
    return headers.get("sec-gpc", "").strip() == "1"


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConsentError("timestamp", "must be an ISO 8601 date and time, as text")
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConsentError(
            "timestamp", f"{value[:40]!r} is not an ISO 8601 date and time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def state_json(state: ConsentState, key: str) -> dict:
    """The answer of ``GET /consent`` for ``state``, asked about the person key ``key``."""
    purposes = {}
    for purpose, decision in state.decisions.items():
        choice = decision.choice
        purposes[purpose] = {
            "allowed": decision.allowed,
            "reason": decision.reason,
            "choice": None if choice is None else choice.value,
            "chosen_at": None if choice is None else choice.recorded_at.isoformat(),
            "policy_version": None if choice is None else choice.policy_version,
        }
    history = []
    for record in state.history:
        item = record.as_dict()
        item.pop("user_id", None)
        item.pop("anonymous_id", None)
        item["same_id"] = record.key == key
        history.append(item)
    return {
        "regime": state.regime,
        "policy_version": state.policy_version,
        "needs_banner": state.needs_banner,
        "purposes": purposes,
        "history": history,
    }


@dataclass
class ConsentEndpoint:
    """``/consent``'s logic: ``check`` (the ledger and the one check), the name of the country
    header, and ``count(outcome, purpose)`` for the metrics (``accepted``/``refused`` per purpose
    of a stored record; ``rejected``/``unavailable`` per refused request, purpose ``""``), and
    the visitor ``cookies`` a body without an id is recorded for (None: such a body is a 400)."""

    check: ConsentCheck
    country_header: str = "CF-IPCountry"
    count: Count | None = None
    cookies: VisitorCookies | None = None

    def _count(self, outcome: str, purpose: str = "") -> None:
        if self.count is not None:
            self.count(outcome, purpose)

    def _country(self, given: Any, headers: Mapping[str, str]) -> str | None:
        if given is not None:
            if not isinstance(given, str) or len(given.strip()) != 2 or not given.isalpha():
                raise ConsentError("country", f"{str(given)[:20]!r} is not an ISO alpha-2 code")
            return given.strip().upper()
        header = headers.get(self.country_header.lower(), "").strip().upper()
        return header if len(header) == 2 and header.isalpha() else None

    def post(self, body: Any, headers: Mapping[str, str]) -> tuple[int, dict]:
        """``(status, JSON body)`` of ``POST /consent``; ``headers`` with lower-case names."""
        try:
            if not isinstance(body, dict):
                raise ConsentError("body", "must be a JSON object")
            unknown = [k for k in body if k not in BODY_KEYS]
            if unknown:
                raise ConsentError(str(unknown[0]), f"unknown key; allowed: {', '.join(BODY_KEYS)}")
            country = self._country(body.get("country"), headers)
            record = self.check.ledger.append(
                user_id=body.get("user_id"),
                anonymous_id=body.get("anonymous_id"),
                purposes=body.get("purposes"),
                policy_version=body.get("policy_version"),
                source=body.get("source", "api"),
                client_ts=_timestamp(body.get("timestamp")),
                country=country,
            )
            state = self.check.state(record.key, country=country, gpc=gpc(headers))
        except ConsentError as exc:
            self._count("rejected")
            return 400, {"error": str(exc), "detail": {"field": exc.field}}
        except LedgerUnavailable:
            self._count("unavailable")
            return 503, {"error": "the consent ledger is unavailable; nothing was stored"}
        for purpose, value in record.purposes.items():
            self._count("accepted" if value else "refused", purpose)
        return 201, {"record": {**record.as_dict()}, "state": state_json(state, record.key)}

    def get(self, query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, dict]:
        """``(status, JSON body)`` of ``GET /consent?user_id=...|anonymous_id=...``."""
        try:
            unknown = [k for k in query if k not in QUERY_KEYS]
            if unknown:
                raise ConsentError(
                    str(unknown[0]), f"unknown key; allowed: {', '.join(QUERY_KEYS)}"
                )
            key = person_key_of(query.get("user_id"), query.get("anonymous_id"))
            country = self._country(query.get("country"), headers)
            state = self.check.state(key, country=country, gpc=gpc(headers))
        except ConsentError as exc:
            self._count("rejected")
            return 400, {"error": str(exc), "detail": {"field": exc.field}}
        except LedgerUnavailable:
            self._count("unavailable")
            return 503, {"error": "the consent ledger is unavailable"}
        return 200, state_json(state, key)


def _json(status: int, body: dict) -> Response:
    headers = {"cache-control": "no-store"}
    if status == 503:
        headers["retry-after"] = "1"
    if "error" in body:
        payload = error_json(body["error"], body.get("detail"))
    else:
        payload = json.dumps(body).encode()
    return Response(payload, status_code=status, media_type="application/json", headers=headers)


def consent_app(current: Callable[[], ConsentEndpoint | None]) -> Starlette:
    """The ASGI app of ``/consent`` (GET and POST); ``current()`` gives the endpoint the
    service made in its constructor, None until then (503)."""
    import anyio.to_thread

    from serving.collector import is_tls  # here: the collector may consult consent itself

    async def consent(request: Request) -> Response:
        endpoint = current()
        if endpoint is None:
            return _json(503, {"error": "the service is starting; try again"})
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.method == "GET":
            query = dict(request.query_params)
            status, body = await anyio.to_thread.run_sync(endpoint.get, query, headers)
            return _json(status, body)
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _json(400, {"error": "body: not valid JSON", "detail": {"field": "body"}})
        visitor = None
        own = isinstance(body, dict) and "user_id" not in body and "anonymous_id" not in body
        if own and endpoint.cookies is not None:  # the visitor's own choice (the consent page)
            visitor = endpoint.cookies.visitor(dict(request.cookies))
            if visitor.new_visitor:  # no valid cookie: no one to record it for (400 below)
                visitor = None
            else:
                body = {**body, "anonymous_id": visitor.anonymous_id}
        status, answer = await anyio.to_thread.run_sync(endpoint.post, body, headers)
        if visitor is None:
            return _json(status, answer)
        if "record" in answer:
            answer["record"].pop("anonymous_id", None)
            answer["record"].pop("user_id", None)
        response = _json(status, answer)
        for cookie in endpoint.cookies.set_cookies(visitor, secure=is_tls(request.scope)):
            if cookie.name == AID_COOKIE:
                response.headers.append("set-cookie", cookie.header())
        return response

    return Starlette(routes=[Route(CONSENT_PATH, consent, methods=["GET", "POST"], name="consent")])
