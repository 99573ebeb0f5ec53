"""The collector's first-party cookies: a signed anonymous id and a signed, rotating session id.

``tailor_aid`` carries the visitor's anonymous id, ``tailor_sid`` the session id and the time the
visitor was last seen. Both values are signed with :mod:`itsdangerous` (HMAC-SHA1 over a JSON
payload, a different salt per cookie, so one cookie's value is no good as the other's): a value
that was altered, forged with another key, cut short or is not ours at all fails its signature
and is ignored, and a new id is issued in its place. Nothing in a cookie is trusted unless its
signature holds; nothing about a bad cookie ever raises.

The anonymous id lives ``cookie_days`` (at most 395 days, 13 months) and is renewed on every use;
the session id rotates after ``session_timeout_minutes`` without events (the last-seen time sits
inside the signed value, so a client cannot keep a session alive by editing it) and whenever the
anonymous id is new (a new visitor starts a new session).

The signing key is ``TAILOR_COOKIE_SECRET`` or, unset, a random key created once in the
workspace's ``secrets/cookie_secret`` (mode 0600, folder 0700) and shared by every worker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadData, BadPayload, URLSafeSerializer

from features.security.secret_files import workspace_secret
from models.errors import ConfigError

logger = logging.getLogger(__name__)

AID_COOKIE = "tailor_aid"
SID_COOKIE = "tailor_sid"
SECRET_FILE = "cookie_secret"
#: Longest cookie value read (a signed value of ours is ~120 characters).
MAX_COOKIE_LENGTH = 512
#: Why a cookie was not used: a value that fails its signature, or a signed value whose
#: content is not what we write (only a key leak or a bug can make one). Counted in /metrics.
FORGED, MALFORMED = "cookie_forged", "cookie_malformed"


def cookie_key(secret: str | None, secrets_dir: Path) -> str:
    """The signing key: ``secret`` when configured, else the workspace's generated key, created
    on first use (:func:`features.security.secret_files.workspace_secret`)."""
    if secret:
        return secret
    return workspace_secret(secrets_dir, SECRET_FILE, "TAILOR_COOKIE_SECRET")


@dataclass(frozen=True)
class Visitor:
    """The ids one request is attributed to, and what happened to the cookies that came in."""

    anonymous_id: str
    session_id: str
    new_visitor: bool  # no usable tailor_aid came in: a new anonymous id was issued
    new_session: bool  # the session id was issued now (none, expired, bad, or a new visitor)
    problems: tuple[str, ...] = ()  # FORGED / MALFORMED, one per bad cookie


@dataclass(frozen=True)
class SetCookie:
    """One ``Set-Cookie`` header's parts (rendered by :meth:`header`)."""

    name: str
    value: str
    max_age: int
    secure: bool

    def header(self) -> str:
        parts = [f"{self.name}={self.value}", f"Max-Age={self.max_age}", "Path=/", "HttpOnly"]
        parts.append("SameSite=Lax")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


class VisitorCookies:
    """Reads and issues ``tailor_aid`` and ``tailor_sid`` (see the module docstring).

    ``clock`` gives epoch seconds (tests move it); ``new_id`` makes new ids."""

    def __init__(
        self,
        key: str,
        *,
        cookie_days: int = 395,
        session_timeout_minutes: float = 30.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        if not 1 <= cookie_days <= 395:
            raise ConfigError(f"cookie_days {cookie_days} is not in 1..395 (13 months at most)")
        self.aid_max_age = int(cookie_days * 86400)
        self.session_timeout = float(session_timeout_minutes) * 60.0
        self._aid = URLSafeSerializer(key, salt="tailor.collector.aid")
        self._sid = URLSafeSerializer(key, salt="tailor.collector.sid")
        self._clock = clock
        self._new_id = new_id

    def visitor(self, cookies: dict[str, str]) -> Visitor:
        """The visitor of a request with these cookies: their ids, kept or newly issued."""
        now = self._clock()
        problems: list[str] = []
        anonymous_id = None
        payload, problem = self._load(self._aid, cookies.get(AID_COOKIE))
        if problem:
            problems.append(problem)
        elif payload is not None:
            anonymous_id, issued = _text(payload, "a"), _number(payload, "t")
            if anonymous_id is None or issued is None:
                problems.append(MALFORMED)
                anonymous_id = None
            elif now - issued > self.aid_max_age:  # kept past its lifetime by the client
                anonymous_id = None
        new_visitor = anonymous_id is None
        if new_visitor:
            anonymous_id = self._new_id()

        session_id = None
        payload, problem = self._load(self._sid, cookies.get(SID_COOKIE))
        if problem:
            problems.append(problem)
        elif payload is not None:
            session_id, owner = _text(payload, "s"), _text(payload, "a")
            last_seen = _number(payload, "t")
            if session_id is None or owner is None or last_seen is None:
                problems.append(MALFORMED)
                session_id = None
            elif owner != anonymous_id or not 0 <= now - last_seen <= self.session_timeout:
                session_id = None  # another visitor's session, or one that timed out
        new_session = session_id is None
        if new_session:
            session_id = self._new_id()
        return Visitor(anonymous_id, session_id, new_visitor, new_session, tuple(problems))

    def set_cookies(self, visitor: Visitor, *, secure: bool) -> list[SetCookie]:
        """Both cookies, re-signed now: the anonymous id's lifetime renewed, the session's
        last-seen time moved to now."""
        now = int(self._clock())
        aid = self._aid.dumps({"a": visitor.anonymous_id, "t": now})
        sid = self._sid.dumps({"s": visitor.session_id, "a": visitor.anonymous_id, "t": now})
        return [
            SetCookie(AID_COOKIE, aid, self.aid_max_age, secure),
            SetCookie(SID_COOKIE, sid, max(1, int(self.session_timeout)), secure),
        ]

    @staticmethod
    def _load(serializer: URLSafeSerializer, raw: str | None) -> tuple[Any, str | None]:
        """(payload, None) for a good value, (None, None) for no cookie, (None, problem) for a
        value that must be ignored."""
        if not raw:
            return None, None
        if len(raw) > MAX_COOKIE_LENGTH:
            return None, FORGED  # nothing we sign is this long
        try:
            payload = serializer.loads(raw)
        except BadPayload:  # signed by us, yet not our JSON
            return None, MALFORMED
        except BadData:  # bad or missing signature, bad base64, JSON that does not decode
            return None, FORGED
        except Exception:  # whatever else a hostile value can provoke: ignored all the same
            return None, MALFORMED
        if not isinstance(payload, dict):
            return None, MALFORMED
        return payload, None


def _text(payload: dict, key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _number(payload: dict, key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
