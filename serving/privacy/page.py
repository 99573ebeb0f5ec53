"""``GET /privacy`` (the consent page), ``/privacy/privacy.js`` (its script) and
``/privacy/banner.js`` (the banner a site includes), served by the service (issue #12).

The page lists every purpose of the policy with its explanation in the visitor's language, a
toggle each (``necessary`` shown as always on), "Accept all" and "Reject all" with the same
look, and a link to the policy (``policy_url``). Its script records the choice with
``POST /consent`` without an id in the body: the service takes the visitor's anonymous id from
the signed ``tailor_aid`` cookie (:mod:`serving.cookies`), which this page issues when it is
missing. The toggles show the current state; when the visitor has no choice on the current
``policy_version`` (``needs_banner``) the banner text shows above them.

Nothing comes from another origin (no CDN, no font, no image): the Content-Security-Policy of
every answer allows this service's own scripts and ``fetch`` only.

``/privacy/banner.js``: a site includes ``<script src="https://<service>/privacy/banner.js"
async></script>``; the script adds the page in embedded form (``?embed=1``) as an ``<iframe>``
that stays hidden unless the visitor must choose, and removes it once they have. The iframe
sends the service's cookie only when the site and the service are on the same site (the cookie
is ``SameSite=Lax``), as the collector already requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from features.consent.policy import NECESSARY, ConsentPolicy
from serving.collector import is_tls
from serving.consent import ConsentEndpoint
from serving.cookies import AID_COOKIE, VisitorCookies
from serving.privacy.translations import LANGUAGES, choose_language, load_translations

logger = logging.getLogger(__name__)

PAGE_PATH = "/privacy"
SCRIPT_PATH = "/privacy/privacy.js"
BANNER_PATH = "/privacy/banner.js"
#: What every answer of this app may load: its own scripts and its own endpoints, nothing else.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'"
)


@cache
def environment(language: str) -> Environment:
    """A Jinja2 environment with ``language``'s translations installed (one per language, so
    concurrent requests in different languages never share a gettext)."""
    env = Environment(
        loader=PackageLoader("serving.privacy", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(load_translations(language), newstyle=True)
    return env


@dataclass(frozen=True)
class PurposeView:
    """One purpose as the page shows it."""

    name: str
    description: str  # the policy's English text: the template translates it
    always_on: bool
    allowed: bool | None  # None: the state could not be read


def purpose_views(policy: ConsentPolicy, state: dict | None) -> list[PurposeView]:
    """The policy's purposes in order, each with its current state from ``GET /consent``'s
    answer ``state`` (None when the ledger could not be read)."""
    views = []
    for name, purpose in policy.purposes.items():
        allowed = None if state is None else bool(state["purposes"][name]["allowed"])
        views.append(PurposeView(name, purpose.description, name == NECESSARY, allowed))
    return views


def banner_reason(state: dict | None) -> str | None:
    """Why the banner shows: ``"changed"`` (the visitor chose on an older policy version),
    ``"opt-in"`` / ``"opt-out"`` (no choice yet, by the regime), None (no banner)."""
    if state is None or not state["needs_banner"]:
        return None
    if state["history"]:
        return "changed"
    return state["regime"]


def render_page(
    policy: ConsentPolicy, language: str, state: dict | None, *, embed: bool = False
) -> str:
    """The consent page's HTML in ``language`` for a visitor whose ``GET /consent`` answer is
    ``state`` (None: the ledger is unavailable, the page says so and offers no toggle)."""
    template = environment(language).get_template("privacy.html")
    return template.render(
        language=language,
        languages=LANGUAGES,
        policy=policy,
        purposes=purpose_views(policy, state),
        banner=banner_reason(state),
        available=state is not None,
        embed=embed,
        page_path=PAGE_PATH,
        script_path=SCRIPT_PATH,
    )


def _static(name: str) -> bytes:
    return (files("serving.privacy") / "templates" / name).read_bytes()


def _headers(language: str | None = None) -> dict[str, str]:
    headers = {
        "cache-control": "no-store",
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
    }
    if language is not None:
        headers["content-language"] = language
        headers["vary"] = "Accept-Language, Cookie"
    return headers


def privacy_app(current: Callable[[], ConsentEndpoint | None]) -> Starlette:
    """The ASGI app of ``/privacy`` and its scripts; ``current()`` gives the service's
    ``/consent`` logic (its ledger, its policy and the visitor cookies), None while starting."""
    page_script, banner_script = _static("privacy.js"), _static("banner.js")

    async def page(request: Request) -> Response:
        endpoint = current()
        if endpoint is None or endpoint.cookies is None:
            return Response("starting; try again", 503, headers={"retry-after": "1"})
        language = choose_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        cookies: VisitorCookies = endpoint.cookies
        visitor = cookies.visitor(dict(request.cookies))
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, state = await anyio.to_thread.run_sync(
            endpoint.get, {"anonymous_id": visitor.anonymous_id}, headers
        )
        if status != 200:  # the ledger is unavailable: say so, offer nothing to record
            logger.warning("/privacy: the consent state could not be read (%d)", status)
        html = render_page(
            endpoint.check.policy,
            language,
            state if status == 200 else None,
            embed=request.query_params.get("embed") == "1",
        )
        response = Response(
            html,
            200 if status == 200 else 503,
            media_type="text/html; charset=utf-8",
            headers=_headers(language),
        )
        for cookie in cookies.set_cookies(visitor, secure=is_tls(request.scope)):
            if cookie.name == AID_COOKIE:  # the id the choice is recorded on, issued or renewed
                response.headers.append("set-cookie", cookie.header())
        return response

    def script(body: bytes) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            return Response(body, media_type="text/javascript; charset=utf-8", headers=_headers())

        return serve

    return Starlette(
        routes=[
            Route(PAGE_PATH, page, methods=["GET"], name="privacy"),
            Route(SCRIPT_PATH, script(page_script), methods=["GET"], name="privacy_script"),
            Route(BANNER_PATH, script(banner_script), methods=["GET"], name="privacy_banner"),
        ]
    )
