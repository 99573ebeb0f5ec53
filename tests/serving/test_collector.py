"""The browser collector over HTTP (issue #11), with Starlette's TestClient on its ASGI app and
the real ``/events`` validation and event log behind it: cookies issued, kept and reissued,
Secure only over TLS, CORS for the allow-list, the sendBeacon and pixel forms, User-Agent
enrichment, the fingerprint switch, and every refusal answered and counted by reason."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from features.broker.embedded import EmbeddedBroker
from features.broker.logsink import log_writer
from features.eventlog import EventLog
from serving.collector import (
    PIXEL,
    Collector,
    CollectorConfig,
    Delivery,
    SinkFullError,
    collector_app,
    parse_origins,
)
from serving.cookies import AID_COOKIE, SID_COOKIE, VisitorCookies
from serving.devices import fingerprint_key
from serving.publish import publish_events
from tests.serving.test_devices import IPHONE, WINDOWS_CHROME

SHOP = "https://shop.example"
KEY = "s" * 40


class LogSink:
    """The service's sink without the online store: ``/events``' validation and publish into a
    real embedded queue, drained into a real event log after each call."""

    def __init__(self, tmp_path) -> None:
        self.log = EventLog(tmp_path / "events")
        self.quarantine = tmp_path / "quarantine"
        self.broker = EmbeddedBroker(tmp_path / "queue" / "events.db")
        self.calls: list[list] = []

    def __call__(self, events: list) -> Delivery:
        self.calls.append(events)
        answer = publish_events(events, self.broker, self.quarantine, source="api:/collect")
        stop = threading.Event()
        write = log_writer(self.log, self.quarantine)

        def handle(batch):
            failures = write(batch)
            if not self.broker.depth() - len(batch):
                stop.set()
            return failures

        if self.broker.depth():
            self.broker.consume(handle, stop=stop, max_wait_seconds=0.01)
        return Delivery(answer.model_dump(), status=202, rejected=answer.rejected)

    def stored(self) -> list[dict]:
        frame = self.log.read()
        return [] if frame is None else frame.to_dict("records")


@pytest.fixture
def sink(tmp_path) -> LogSink:
    return LogSink(tmp_path)


@pytest.fixture
def counted() -> Counter:
    return Counter()


def _collector(sink, counted, *, fingerprint: bool = False, max_bytes: int = 4096, **kw):
    config = CollectorConfig(
        origins=frozenset({SHOP}), max_bytes=max_bytes, fingerprint=fingerprint
    )
    return Collector(
        config,
        VisitorCookies(KEY, **kw),
        sink,
        fingerprint_key=fingerprint_key(KEY),
        on_rejection=lambda reason, count: counted.update({reason: count}),
    )


def _client(collector, base_url: str = "https://shop.example", **kw) -> TestClient:
    return TestClient(collector_app(lambda: collector), base_url=base_url, **kw)


def _view(**fields) -> dict:
    return {
        "event_type": "product_view",
        "product_id": "p1",
        "category": "hats",
        "price": 9.5,
        **fields,
    }


def _set_cookies(response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the whole header text)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


def test_a_first_visit_gets_both_cookies_and_its_event_is_stored_with_them(sink, counted):
    client = _client(_collector(sink, counted))
    response = client.post("/collect", json=_view(), headers={"user-agent": IPHONE})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    cookies = _set_cookies(response)
    for name, max_age in ((AID_COOKIE, 395 * 86400), (SID_COOKIE, 1800)):
        flags = [part.strip() for part in cookies[name].split(";")[1:]]
        assert flags == [f"Max-Age={max_age}", "Path=/", "HttpOnly", "SameSite=Lax", "Secure"]
    assert response.headers["cache-control"].startswith("no-cache, no-store")
    (event,) = sink.stored()
    assert uuid.UUID(event["anonymous_id"]) and uuid.UUID(event["session_id"])
    assert uuid.UUID(event["event_id"])
    assert event["device_type"] == "mobile"
    assert json.loads(event["properties"]) == {
        "browser": "Mobile Safari",
        "browser_version": "17",
        "os": "iOS",
        "os_version": "17",
    }
    assert datetime.now(UTC) - event["timestamp"].to_pydatetime() < timedelta(seconds=30)
    assert counted == Counter()

    # the next call carries the cookies: same visitor, same session; cookies renewed
    again = client.post("/collect", json=_view(product_id="p2"), headers={"user-agent": IPHONE})
    assert again.status_code == 202 and set(_set_cookies(again)) == {AID_COOKIE, SID_COOKIE}
    first, second = sink.stored()
    assert (first["anonymous_id"], first["session_id"]) == (
        second["anonymous_id"],
        second["session_id"],
    )


def test_what_the_event_says_is_kept(sink, counted):
    client = _client(_collector(sink, counted))
    given = _view(
        event_id="mine-1",
        timestamp="2026-03-01T12:00:00Z",
        anonymous_id="page-anon",
        session_id="page-session",
        user_id="u-7",
        device_type="tablet",
        properties={"browser": "MyApp", "campaign": "spring"},
    )
    assert client.post("/collect", json=given, headers={"user-agent": IPHONE}).status_code == 202
    (event,) = sink.stored()
    assert (event["event_id"], event["anonymous_id"], event["session_id"]) == (
        "mine-1",
        "page-anon",
        "page-session",
    )
    assert (event["user_id"], event["device_type"]) == ("u-7", "tablet")
    properties = json.loads(event["properties"])
    assert properties["browser"] == "MyApp" and properties["campaign"] == "spring"
    assert properties["os"] == "iOS"  # only what was missing is filled in


def test_secure_only_over_tls_or_a_loopback_proxy_saying_https(sink, counted):
    collector = _collector(sink, counted)
    plain = _client(collector, base_url="http://shop.example")
    response = plain.post("/collect", json=_view())
    assert not any("Secure" in h for h in response.headers.get_list("set-cookie"))
    # a client on the internet cannot claim TLS...
    remote = _client(collector, base_url="http://shop.example", client=("203.0.113.5", 40000))
    spoofed = remote.post("/collect", json=_view(), headers={"x-forwarded-proto": "https"})
    assert not any("Secure" in h for h in spoofed.headers.get_list("set-cookie"))
    # ...a proxy on this machine that terminated TLS can
    proxied = _client(collector, base_url="http://shop.example", client=("127.0.0.1", 40000))
    response = proxied.post("/collect", json=_view(), headers={"x-forwarded-proto": "https"})
    assert all(h.endswith("; Secure") for h in response.headers.get_list("set-cookie"))
    response = proxied.post("/collect", json=_view(), headers={"x-forwarded-proto": "http"})
    assert not any("Secure" in h for h in response.headers.get_list("set-cookie"))


@pytest.mark.parametrize(
    "value",
    ["forged", "eyJhIjoiZXZpbCIsInQiOjF9.c2lnbmF0dXJl", "x" * 3000, '"quoted;value"', "a b\\c"],
)
def test_a_forged_or_malformed_cookie_is_ignored_reissued_and_counted(sink, counted, value):
    client = _client(_collector(sink, counted))
    client.cookies.set(AID_COOKIE, value)
    response = client.post("/collect", json=_view())
    assert response.status_code == 202, response.text
    assert AID_COOKIE in _set_cookies(response)
    (event,) = sink.stored()
    assert event["anonymous_id"] != value and uuid.UUID(event["anonymous_id"])
    assert counted["cookie_forged"] == 1


def test_a_cookie_from_another_key_is_a_new_visitor(sink, counted, tmp_path):
    other = _collector(LogSink(tmp_path / "other"), Counter())
    other.cookies = VisitorCookies("o" * 40)
    stranger = _client(other)
    stranger.post("/collect", json=_view())
    client = _client(_collector(sink, counted))
    for name, value in stranger.cookies.items():
        client.cookies.set(name, value)
    client.post("/collect", json=_view())
    (event,) = sink.stored()
    (theirs,) = other.sink.stored()
    assert event["anonymous_id"] != theirs["anonymous_id"]
    assert event["session_id"] != theirs["session_id"]
    assert counted["cookie_forged"] == 2


def test_session_rotates_after_the_timeout(sink, counted):
    now = [1_800_000_000.0]
    collector = _collector(sink, counted, session_timeout_minutes=30, clock=lambda: now[0])
    client = _client(collector)
    client.post("/collect", json=_view(timestamp="2026-03-01T12:00:00Z"))
    now[0] += 29 * 60
    client.post("/collect", json=_view(timestamp="2026-03-01T12:29:00Z"))
    now[0] += 31 * 60
    client.post("/collect", json=_view(timestamp="2026-03-01T13:00:00Z"))
    first, second, third = sink.stored()
    assert first["session_id"] == second["session_id"] != third["session_id"]
    assert first["anonymous_id"] == second["anonymous_id"] == third["anonymous_id"]


def test_send_beacon_text_plain_body_with_a_list(sink, counted):
    client = _client(_collector(sink, counted))
    body = json.dumps([_view(), {"event_type": "page_view", "page": "/home"}])
    response = client.post(
        "/collect",
        content=body.encode(),
        headers={"content-type": "text/plain;charset=UTF-8", "origin": SHOP},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert {e["event_type"] for e in sink.stored()} == {"product_view", "page_view"}


def test_pixel_stores_the_event_and_answers_a_gif_that_is_never_cached(sink, counted):
    client = _client(_collector(sink, counted))
    event = json.dumps({"event_type": "page_view", "page": "/no-js"})
    response = client.get("/collect.gif", params={"e": event}, headers={"user-agent": IPHONE})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content == PIXEL and response.content.startswith(b"GIF89a")
    assert response.headers["cache-control"] == "no-cache, no-store, must-revalidate, max-age=0"
    assert response.headers["pragma"] == "no-cache" and response.headers["expires"] == "0"
    assert set(_set_cookies(response)) == {AID_COOKIE, SID_COOKIE}
    (stored,) = sink.stored()
    assert (stored["page"], stored["device_type"]) == ("/no-js", "mobile")

    assert client.head("/collect.gif", params={"e": event}).status_code == 200
    assert len(sink.stored()) == 1  # a HEAD records nothing

    missing = client.get("/collect.gif")
    assert missing.status_code == 400 and missing.json()["error"].startswith("e: query parameter")
    bad = client.get("/collect.gif", params={"e": "{not json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("Invalid JSON")
    rejected = client.get("/collect.gif", params={"e": json.dumps({"event_type": "nope"})})
    assert rejected.status_code == 200 and rejected.headers["x-tailor-rejected"] == "1"
    assert counted == Counter(missing_event=1, bad_json=1, invalid_event=1)


def test_cors_for_the_allow_list_only(sink, counted):
    client = _client(_collector(sink, counted))
    preflight = {"origin": SHOP, "access-control-request-method": "POST"}
    granted = client.options("/collect", headers=preflight)
    assert granted.status_code == 204
    assert granted.headers["access-control-allow-origin"] == SHOP
    assert granted.headers["access-control-allow-credentials"] == "true"
    assert "POST" in granted.headers["access-control-allow-methods"]
    assert granted.headers["access-control-allow-headers"] == "Content-Type"

    evil = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    refused = client.options("/collect", headers=evil)
    assert refused.status_code == 403
    assert not [h for h in refused.headers if h.startswith("access-control-")]

    post = client.post("/collect", json=_view(), headers={"origin": "https://evil.example"})
    assert post.status_code == 403 and "TAILOR_COLLECT_ORIGINS" in post.json()["error"]
    assert not [h for h in post.headers if h.startswith("access-control-")]
    assert "set-cookie" not in post.headers and sink.stored() == []

    # no Origin (a server, curl) or the collector's own origin: accepted, no CORS grant needed
    assert client.post("/collect", json=_view()).status_code == 202
    own = client.post("/collect", json=_view(), headers={"origin": "https://shop.example:443"})
    assert own.status_code == 403  # not the same origin string as the Host
    same = client.post(
        "/collect",
        json=_view(),
        headers={"origin": "https://other.example", "host": "other.example"},
    )
    assert same.status_code == 202
    assert "access-control-allow-origin" not in same.headers
    assert counted == Counter(origin_not_allowed=3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://a.example,*", "'*' is not an origin"),
        ("shop.example", "'shop.example' is not an origin"),
        ("https://a.example/path", "'https://a.example/path' is not an origin"),
    ],
)
def test_origin_list_errors_name_the_entry(text, message):
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        parse_origins(text)


def test_origin_list_is_normalized():
    assert parse_origins(" https://Shop.Example/ , http://localhost:8080,") == {
        "https://shop.example",
        "http://localhost:8080",
    }


def test_oversized_bodies_are_413_before_and_while_reading(sink, counted):
    client = _client(_collector(sink, counted, max_bytes=1000))
    big = json.dumps(_view(page="x" * 2000))
    declared = client.post("/collect", content=big, headers={"content-type": "text/plain"})
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "request body larger than 1000 bytes, the limit for /collect; split the batch",
        "detail": {"limit_bytes": 1000},
    }

    def streamed():
        for start in range(0, len(big), 100):
            yield big[start : start + 100].encode()

    chunked = client.post("/collect", content=streamed(), headers={"content-type": "text/plain"})
    assert chunked.status_code == 413
    pixel = client.get("/collect.gif", params={"e": big})
    assert pixel.status_code == 413
    assert sink.calls == [] and counted == Counter(too_large=3)


def test_bad_bodies_are_4xx_naming_the_problem(sink, counted):
    client = _client(_collector(sink, counted))
    cases = [
        (b"{oops", "text/plain", 400, "Invalid JSON: Expecting property name"),
        (b"", "application/json", 400, "a JSON request body is required"),
        (b"42", "application/json", 400, "body: expected one event"),
        (b"null", "application/json", 400, "got null"),
        (b"[" * 100 + b"]" * 100, "application/json", 400, "nested deeper than 32"),
        (b"e=1", "application/x-www-form-urlencoded", 415, "Content-Type must be"),
    ]
    for body, media, status, message in cases:
        response = client.post("/collect", content=body, headers={"content-type": media})
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"].startswith(message) or message in response.json()["error"]
    large = _client(_collector(sink, counted, max_bytes=1 << 20))
    many = large.post("/collect", json=[_view()] * 1001)
    assert many.status_code == 413 and "at most 1000 events" in many.json()["error"]
    assert sink.calls == []
    assert counted == Counter(bad_json=3, bad_batch=2, bad_content_type=1, too_many_events=1)


def test_bad_events_are_rejected_row_by_row_like_events(sink, counted):
    client = _client(_collector(sink, counted))
    batch = [_view(), _view(price=None), "not an event", {"event_type": "search"}]
    response = client.post("/collect", json=batch)
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 3)
    assert [(r["row"], r["field"]) for r in answer["rejections"]] == [
        (2, "price"),
        (3, "<row>"),
        (4, "query"),
    ]
    assert len(sink.stored()) == 1
    assert counted == Counter(invalid_event=3)


def test_a_full_sink_is_503_with_retry_after_and_a_broken_one_500_without_detail(counted):
    def full(events):
        raise SinkFullError("spool full: 268435456 bytes", retry_after=2.5)

    def broken(events):
        raise OSError("disk I/O error at /secret/path")

    client = _client(_collector(full, counted))
    response = client.post("/collect", json=_view())
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert response.json()["detail"] == {"retry_after_s": 3}
    client = _client(_collector(broken, counted))
    response = client.post("/collect", json=_view())
    assert response.status_code == 500 and "/secret" not in response.text
    assert counted == Counter(sink_full=1, sink_failed=1)


def test_a_queued_delivery_answers_its_status_and_an_async_sink_works(counted):
    async def queued(events):
        return Delivery({"queued": len(events)}, status=202)

    response = _client(_collector(queued, counted)).post("/collect", json=[_view(), _view()])
    assert (response.status_code, response.json()) == (202, {"queued": 2})


def test_fingerprint_only_when_switched_on(sink, counted, tmp_path):
    headers = {"user-agent": WINDOWS_CHROME, "accept-language": "de-DE,de;q=0.9"}
    page = {"timezone": "Europe/Berlin", "screen": "1920x1080"}
    _client(_collector(sink, counted)).post(
        "/collect", json=_view(properties=page), headers=headers
    )
    (plain,) = sink.stored()
    assert "fingerprint" not in json.loads(plain["properties"])

    other = LogSink(tmp_path / "fp")
    client = _client(_collector(other, counted, fingerprint=True))
    client.post("/collect", json=_view(properties=page), headers=headers)
    (hinted,) = other.stored()
    hint = json.loads(hinted["properties"])["fingerprint"]
    assert hint["confidence"] == 0.3 and hint["hints"] == ["lang", "screen", "tz", "ua"]
    assert hint["hash"].startswith("fp1:")


def test_before_the_service_is_constructed_the_answer_is_503(sink):
    client = TestClient(collector_app(lambda: None))
    response = client.post("/collect", json=_view())
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert client.get("/collect.gif", params={"e": "{}"}).status_code == 503


def test_from_settings_makes_the_key_and_refuses_a_bad_origin_list(tmp_path):
    from features.settings import Settings
    from models.errors import ConfigError

    settings = Settings(collect_origins=SHOP, cookie_days=30, session_timeout_minutes=10)
    collector = Collector.from_settings(settings, tmp_path / "secrets", lambda events: None)
    assert (tmp_path / "secrets" / "cookie_secret").exists()
    assert collector.config.origins == {SHOP} and collector.config.fingerprint is False
    assert collector.cookies.aid_max_age == 30 * 86400
    assert collector.cookies.session_timeout == 600
    with pytest.raises(ConfigError, match="TAILOR_COLLECT_ORIGINS: '\\*' is not an origin"):
        Collector.from_settings(Settings(collect_origins="*"), tmp_path, lambda events: None)
