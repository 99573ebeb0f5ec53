"""Device type, browser and OS from real User-Agents, and the weak fingerprint (issue #11)."""

from __future__ import annotations

import pytest

from features.schema import DEVICE_TYPES
from serving.devices import (
    MAX_CONFIDENCE,
    UNKNOWN,
    Device,
    fingerprint,
    fingerprint_hint,
    fingerprint_key,
    languages,
    parse_user_agent,
    screen_class,
    timezone,
)

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
LENOVO_TABLET = (  # no "Tablet" in ua-parser's brand: the missing "Mobile" says it
    "Mozilla/5.0 (Linux; Android 12; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
KINDLE = (
    "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120 "
    "like Chrome/120 Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15"
)
LINUX_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROMEBOOK = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (IPHONE, Device("mobile", "Mobile Safari", "17", "iOS", "17")),
        (IPAD, Device("tablet", "Mobile Safari", "16", "iOS", "16")),
        (ANDROID_PHONE, Device("mobile", "Chrome Mobile", "120", "Android", "14")),
        (ANDROID_TABLET, Device("tablet", "Chrome", "120", "Android", "13")),
        (LENOVO_TABLET, Device("tablet", "Chrome", "120", "Android", "12")),
        (WINDOWS_CHROME, Device("desktop", "Chrome", "120", "Windows", "10")),
        (MAC_SAFARI, Device("desktop", "Safari", "17", "Mac OS X", "10")),
        (LINUX_FIREFOX, Device("desktop", "Firefox", "121", "Linux", None)),
        (CHROMEBOOK, Device("desktop", "Chrome", "120", "Chrome OS", "14541")),
        (GOOGLEBOT, Device("other", "Googlebot", "2", None, None)),
        ("curl/8.4.0", Device("other", "curl", "8", None, None)),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_user_agents_give_device_type_browser_and_os(user_agent, expected) -> None:
    device = parse_user_agent(user_agent)
    assert device == expected
    assert device.device_type in DEVICE_TYPES  # the schema's allowed values


def test_kindle_is_a_tablet_and_properties_leave_out_the_unknown() -> None:
    assert parse_user_agent(KINDLE).device_type == "tablet"
    assert parse_user_agent(LINUX_FIREFOX).properties() == {
        "browser": "Firefox",
        "browser_version": "121",
        "os": "Linux",
    }


def test_a_huge_user_agent_is_cut_before_parsing() -> None:
    device = parse_user_agent(WINDOWS_CHROME + " x" * 50_000)
    assert device.device_type == "desktop" and device.browser == "Chrome"


def test_coarse_hints() -> None:
    assert languages("en-GB,en;q=0.9,de;q=0.8") == "en-gb,en"
    assert languages("*") is None and languages(None) is None
    assert languages("fr-CH, fr;q=0.9, <script>;q=0.1") == "fr-ch,fr"
    assert [screen_class(s) for s in ("390x844", "1024x768", "1440x900", "2560x1440")] == [
        "m",
        "m",
        "l",
        "xl",
    ]
    assert screen_class("360x640") == "s"
    assert screen_class("big") is None and screen_class(1920) is None
    assert timezone("Europe/Paris") == "Europe/Paris"
    assert timezone("'; drop table") is None and timezone(3) is None


def test_fingerprint_is_a_keyed_weak_hint() -> None:
    key = fingerprint_key("k" * 40)
    device = parse_user_agent(IPHONE)
    props = {"timezone": "Europe/Paris", "screen": "390x844"}
    hint = fingerprint(key, device, "fr-FR,fr;q=0.9", props)
    assert hint["confidence"] == MAX_CONFIDENCE == 0.3
    assert hint["hints"] == ["lang", "screen", "tz", "ua"]
    assert hint["hash"].startswith("fp1:") and len(hint["hash"]) == 36
    # the same coarse hints on another iPhone 17 give the same hash: it is a weak hint
    other_iphone = parse_user_agent(IPHONE.replace("17_0", "17_1"))
    assert fingerprint(key, other_iphone, "fr-FR,fr;q=0.9", props) == hint
    # another language, or another key, changes it
    assert fingerprint(key, device, "de-DE", props)["hash"] != hint["hash"]
    assert (
        fingerprint(fingerprint_key("o" * 40), device, "fr-FR,fr;q=0.9", props)["hash"]
        != hint["hash"]
    )
    fewer = fingerprint(key, device, "fr-FR", {})
    assert fewer["confidence"] == 0.1 and fewer["hints"] == ["lang", "ua"]
    assert fingerprint(key, UNKNOWN, "fr-FR", {}) is None  # one hint alone: no fingerprint


def test_the_hint_is_read_back_from_an_event_capped_at_the_weak_confidence() -> None:
    import json

    hint = fingerprint(fingerprint_key("k" * 40), parse_user_agent(IPHONE), "fr", {})
    stored = json.dumps({"browser": "Mobile Safari", "fingerprint": hint})  # the log's text
    assert fingerprint_hint(stored) == (hint["hash"], 0.1)
    assert fingerprint_hint({"fingerprint": {**hint, "confidence": 0.99}})[1] == MAX_CONFIDENCE
    for properties in (None, "not json", {}, {"fingerprint": "x"}, {"fingerprint": {"hash": 1}}):
        assert fingerprint_hint(properties) is None
    assert fingerprint_hint({"fingerprint": {"hash": "md5:abc", "confidence": 0.1}}) is None
