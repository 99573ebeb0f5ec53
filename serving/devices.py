"""What the collector derives from a browser's request: device type, browser and OS from the
User-Agent (with ``ua-parser``, the maintained port of the uap-core rules), and the optional
coarse device fingerprint.

The fingerprint is a keyed hash (HMAC-SHA256 with a key derived from the cookie-signing key, so
the few possible hint combinations cannot be looked up in a table made elsewhere) of coarse hints
only: browser and OS family (no versions), the first languages of ``Accept-Language``, the
page's time zone and a screen class. Many people share one, so it is a *weak* hint: it carries a
confidence of at most :data:`MAX_CONFIDENCE`, and must never be used alone to merge two people.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import ua_parser

#: Longest User-Agent parsed (real ones are < 300 characters; the rest is cut off first).
MAX_USER_AGENT = 512
#: Property names the collector fills when the event does not give them.
BROWSER, BROWSER_VERSION, OS, OS_VERSION = "browser", "browser_version", "os", "os_version"
#: The property holding the fingerprint hint: ``{"hash", "confidence", "hints"}``.
FINGERPRINT = "fingerprint"
#: Properties a page may send for the fingerprint: IANA time zone, screen size ``"WxH"``.
TIMEZONE, SCREEN = "timezone", "screen"
#: A fingerprint's confidence by the number of hints in it; never more than MAX_CONFIDENCE.
CONFIDENCE = {2: 0.1, 3: 0.2, 4: 0.3}
MAX_CONFIDENCE = max(CONFIDENCE.values())
FINGERPRINT_VERSION = "fp1"

_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Debian", "Chrome OS", "FreeBSD"}
    | {"OpenBSD", "NetBSD", "Solaris", "Red Hat", "SUSE", "Mint", "Arch Linux", "macOS"}
)
_MOBILE_OS = frozenset(
    {"iOS", "Windows Phone", "BlackBerry OS", "Symbian OS", "Firefox OS", "KaiOS", "Tizen"}
    | {"HarmonyOS", "Sailfish", "webOS", "Bada", "MeeGo", "Maemo"}
)
_TABLET = re.compile(r"ipad|tablet|kindle|silk|playbook|\bnexus (7|9|10)\b", re.IGNORECASE)
_TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_SCREEN = re.compile(r"^\s*(\d{2,5})\s*[x×]\s*(\d{2,5})\s*$")
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Device:
    """What one User-Agent says: ``device_type`` is one of ``features.schema.DEVICE_TYPES``."""

    device_type: str
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None

    def properties(self) -> dict[str, str]:
        """The browser and OS as event properties (only those known)."""
        values = {
            BROWSER: self.browser,
            BROWSER_VERSION: self.browser_version,
            OS: self.os,
            OS_VERSION: self.os_version,
        }
        return {key: value for key, value in values.items() if value}


UNKNOWN = Device("other")


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> Device:
    """The device type, browser and OS of a User-Agent (``UNKNOWN`` when it says nothing).

    ua-parser gives families, not a device class, so the class follows the families: a known
    tablet (iPad, Android tablets, Kindle) is ``tablet``; iOS, an Android phone (Android puts
    "Mobile" in a phone's User-Agent, not a tablet's) and the other phone systems are
    ``mobile``; the desktop systems ``desktop``; crawlers and anything else ``other``."""
    if not user_agent or not user_agent.strip():
        return UNKNOWN
    text = user_agent[:MAX_USER_AGENT]
    parsed = ua_parser.parse(text)
    agent, system, device = parsed.user_agent, parsed.os, parsed.device
    browser = agent.family if agent is not None and agent.family != "Other" else None
    os_family = system.family if system is not None and system.family != "Other" else None
    device_type = _device_type(text, os_family, device)
    return Device(
        device_type=device_type,
        browser=browser,
        browser_version=agent.major if browser and agent is not None else None,
        os=os_family,
        os_version=system.major if os_family and system is not None else None,
    )


def _device_type(text: str, os_family: str | None, device: Any) -> str:
    family = device.family if device is not None else ""
    brand = (device.brand or "") if device is not None else ""
    if family == "Spider" or brand == "Spider":
        return "other"
    if _TABLET.search(text) or "Tablet" in brand or family == "iPad":
        return "tablet"
    if os_family == "Android":
        return "mobile" if "Mobile" in text else "tablet"
    if os_family in _MOBILE_OS or family == "iPhone":
        return "mobile"
    if os_family in _DESKTOP_OS or family == "Mac":
        return "desktop"
    return "other"


def languages(accept_language: str | None, keep: int = 2) -> str | None:
    """The first ``keep`` language tags of an ``Accept-Language`` header, lower case, without
    weights (``"en-GB,en;q=0.9,de;q=0.8"`` → ``"en-gb,en"``); None when there is none."""
    if not accept_language:
        return None
    tags = []
    for part in accept_language[:256].split(","):
        tag = part.split(";")[0].strip().lower()
        if tag and tag != "*" and _LANGUAGE.match(tag):
            tags.append(tag)
        if len(tags) == keep:
            break
    return ",".join(tags) or None


def screen_class(screen: Any) -> str | None:
    """A screen size ``"WxH"`` as a coarse class of its longer side: ``s`` (< 800 px),
    ``m`` (< 1280), ``l`` (< 1920), ``xl``; None for anything else."""
    if not isinstance(screen, str):
        return None
    match = _SCREEN.match(screen)
    if not match:
        return None
    longer = max(int(match.group(1)), int(match.group(2)))
    for limit, name in ((800, "s"), (1280, "m"), (1920, "l")):
        if longer < limit:
            return name
    return "xl"


def timezone(value: Any) -> str | None:
    """An IANA time-zone name as sent by the page (``Europe/Paris``), else None."""
    if isinstance(value, str) and _TIMEZONE.match(value.strip()):
        return value.strip()
    return None


def fingerprint_key(cookie_key: str) -> bytes:
    """The fingerprint's hash key, derived from (never equal to) the cookie-signing key."""
    return hmac.new(cookie_key.encode(), b"tailor.collector.fingerprint", hashlib.sha256).digest()


def fingerprint(
    key: bytes,
    device: Device,
    accept_language: str | None,
    properties: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The weak fingerprint hint ``{"hash", "confidence", "hints"}`` of one event, or None
    when fewer than two coarse hints are known (one alone says next to nothing)."""
    properties = properties or {}
    hints = {
        "ua": "/".join(v for v in (device.browser, device.os) if v) or None,
        "lang": languages(accept_language),
        "tz": timezone(properties.get(TIMEZONE)),
        "screen": screen_class(properties.get(SCREEN)),
    }
    known = {name: value for name, value in hints.items() if value}
    if len(known) < 2:
        return None
    message = "\x1f".join(f"{name}={value}" for name, value in sorted(known.items()))
    digest = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:32]
    return {
        "hash": f"{FINGERPRINT_VERSION}:{digest}",
        "confidence": CONFIDENCE[len(known)],
        "hints": sorted(known),
    }


def fingerprint_hint(properties: Any) -> tuple[str, float] | None:
    """``(hash, confidence)`` of the fingerprint an event carries (its ``properties``, as a
    dict or the event log's JSON text), else None: what the identity graph may record as a weak
    hint, never as a reason to merge on its own."""
    if isinstance(properties, str):
        try:
            properties = json.loads(properties)
        except ValueError:
            return None
    hint = properties.get(FINGERPRINT) if isinstance(properties, dict) else None
    if not isinstance(hint, dict):
        return None
    digest, confidence = hint.get("hash"), hint.get("confidence")
    if not isinstance(digest, str) or not digest.startswith(f"{FINGERPRINT_VERSION}:"):
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return None
    return digest, min(float(confidence), MAX_CONFIDENCE)
