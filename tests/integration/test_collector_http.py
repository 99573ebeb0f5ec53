"""The browser collector on a real ``bentoml serve`` process (issue #11): ``/collect`` with
cookies, their flags (Secure behind a TLS-terminating proxy on this machine), the pixel, a
forged cookie reissued, 413, CORS preflight, the events in the event log and the online store,
the refusals in ``/metrics``, and the service's other routes untouched by the mount.

One service runs for the module on a copy of the trained test workspace, with
``TAILOR_COLLECT_ORIGINS`` and a small ``TAILOR_MAX_EVENTS_BYTES``.
"""

from __future__ import annotations

import json
import socket
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from features.eventlog import EventLog
from features.settings import env_name
from features.workspace import Workspace
from serving.collector import PIXEL
from serving.cookies import AID_COOKIE, SECRET_FILE, SID_COOKIE
from serving.process import running_service
from tests.integration.test_serving_http import _queue_empty, _until, admin_headers
from tests.serving.test_devices import ANDROID_PHONE, IPHONE

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"
LIMIT = 20_000


@dataclass(frozen=True)
class Served:
    url: str
    ws: Workspace
    #: an admin key with the debug view, for what is not the public collector (issue #13)
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def served(trained_workspace, tmp_path_factory):
    home = tmp_path_factory.mktemp("collector")
    ws = trained_workspace.copy_to(home)
    extra = {env_name("collect_origins"): SHOP, env_name("max_events_bytes"): str(LIMIT)}
    with running_service(ws, extra_env=extra) as url:
        yield Served(url, ws, admin_headers(ws))


def _view(product: str = "p1", **fields) -> dict:
    return {
        "event_id": f"c-{uuid.uuid4().hex}",
        "event_type": "product_view",
        "product_id": product,
        "category": "grocery",
        "price": 4.5,
        **fields,
    }


def _stored(served: Served, *event_ids: str, timeout: float = 10.0) -> dict[str, dict]:
    """The stored rows of ``event_ids``, once all are in the log (the service queues what it
    collects and its consumer appends it a moment later, issue #11), or what is there after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        frame = EventLog(served.ws.event_log_dir).stored(event_ids)
        if len(frame) == len(set(event_ids)) or time.monotonic() > deadline:
            return {row["event_id"]: row for row in frame.to_dict("records")}
        time.sleep(0.05)


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def _flags(header: str) -> list[str]:
    return [part.strip() for part in header.split(";")[1:]]


def test_collect_sets_cookies_and_the_events_reach_the_log_and_the_online_store(served):
    categories = ("grocery",)
    with httpx.Client(base_url=served.url, timeout=30) as browser:
        first = _view()
        response = browser.post("/collect", json=first, headers={"user-agent": IPHONE})
        assert response.status_code == 202, response.text
        assert (response.json()["accepted"], response.json()["rejected"]) == (1, 0)
        cookies = _set_cookies(response)
        assert _flags(cookies[AID_COOKIE]) == [
            f"Max-Age={395 * 86400}",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
        ]  # plain HTTP: no Secure
        assert _flags(cookies[SID_COOKIE]) == ["Max-Age=1800", "Path=/", "HttpOnly", "SameSite=Lax"]

        second = _view(product="p2")  # the browser sends its cookies back
        assert browser.post("/collect", json=second, headers={"user-agent": IPHONE}).is_success
    stored = _stored(served, first["event_id"], second["event_id"])
    one, two = stored[first["event_id"]], stored[second["event_id"]]
    assert one["anonymous_id"] == two["anonymous_id"] and uuid.UUID(one["anonymous_id"])
    assert one["session_id"] == two["session_id"] and uuid.UUID(one["session_id"])
    assert one["device_type"] == "mobile"
    assert json.loads(one["properties"])["os"] == "iOS"

    # the same path as /events: the online store knows the anonymous visitor now
    answer = httpx.post(
        f"{served.url}/recommend",
        json={"anonymous_id": one["anonymous_id"], "k": 3},
        headers=served.headers,
        timeout=30,
    ).json()
    assert answer["features"]["last_product_id"] == "p2"
    assert answer["features"]["last_category"] in categories
    assert answer["rules_fired"][0] == "returning-visitor"


def test_the_generated_cookie_key_is_private(served):
    path = served.ws.secrets_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secure_behind_a_tls_terminating_proxy_on_this_machine(served):
    response = httpx.post(
        f"{served.url}/collect",
        json=_view(),
        headers={"x-forwarded-proto": "https"},
        timeout=30,
    )
    assert response.status_code == 202
    assert all(_flags(h)[-1] == "Secure" for h in response.headers.get_list("set-cookie"))


def test_beacon_text_plain_and_cors_for_the_allow_list(served):
    event = _view()
    response = httpx.post(
        f"{served.url}/collect",
        content=json.dumps([event]).encode(),
        headers={"content-type": "text/plain;charset=UTF-8", "origin": SHOP},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert event["event_id"] in _stored(served, event["event_id"])

    preflight = {"origin": SHOP, "access-control-request-method": "POST"}
    granted = httpx.options(f"{served.url}/collect", headers=preflight, timeout=30)
    assert granted.status_code == 204
    assert granted.headers["access-control-allow-origin"] == SHOP
    assert granted.headers["access-control-allow-credentials"] == "true"
    evil = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    refused = httpx.options(f"{served.url}/collect", headers=evil, timeout=30)
    assert refused.status_code == 403
    assert not [name for name in refused.headers if name.startswith("access-control-")]


def test_pixel_answers_a_gif_with_cookies_and_stores_the_event(served):
    event = {"event_id": f"px-{uuid.uuid4().hex}", "event_type": "page_view", "page": "/no-js"}
    response = httpx.get(
        f"{served.url}/collect.gif",
        params={"e": json.dumps(event)},
        headers={"user-agent": ANDROID_PHONE},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif" and response.content == PIXEL
    assert "no-store" in response.headers["cache-control"]
    assert set(_set_cookies(response)) == {AID_COOKIE, SID_COOKIE}
    stored = _stored(served, event["event_id"])[event["event_id"]]
    assert (stored["page"], stored["device_type"]) == ("/no-js", "mobile")


def test_a_forged_cookie_is_reissued_never_a_5xx(served):
    event = _view()
    response = httpx.post(
        f"{served.url}/collect",
        json=event,
        headers={"cookie": f"{AID_COOKIE}=eyJhIjoiYWRtaW4iLCJ0IjoxfQ.Zm9yZ2Vk; {SID_COOKIE}=junk"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert set(_set_cookies(response)) == {AID_COOKIE, SID_COOKIE}
    stored = _stored(served, event["event_id"])[event["event_id"]]
    assert stored["anonymous_id"] != "admin" and uuid.UUID(stored["anonymous_id"])


def _raw_post(served: Served, path: str, headers: list[str]) -> tuple[int, dict]:
    """A request head only (httpx always sends the declared body)."""
    host, port = served.url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", *headers]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.partition(b"\r\n\r\n")[2])


def test_oversized_beacons_are_413_and_bad_json_400(served):
    assert _until(lambda: _queue_empty(served))  # what earlier tests collected is in the log
    before = len(EventLog(served.ws.event_log_dir))
    status, body = _raw_post(
        served, "/collect", ["Content-Type: text/plain", "Content-Length: 104857600"]
    )
    assert (status, body["detail"]) == (413, {"limit_bytes": LIMIT})
    big = json.dumps([_view(page="x" * 1000) for _ in range(30)])
    response = httpx.post(
        f"{served.url}/collect", content=big, headers={"content-type": "text/plain"}, timeout=30
    )
    assert response.status_code == 413
    bad = httpx.post(
        f"{served.url}/collect", content=b"{oops", headers={"content-type": "text/plain"}
    )
    assert bad.status_code == 400 and bad.json()["error"].startswith("Invalid JSON")
    assert _queue_empty(served)  # nothing was queued either
    assert len(EventLog(served.ws.event_log_dir)) == before


def test_refusals_and_rejections_are_counted_by_reason(served):
    httpx.post(f"{served.url}/collect", json=[{"event_type": "nope"}], timeout=30)
    text = httpx.get(f"{served.url}/metrics", headers=served.headers, timeout=30).text
    for reason in ("cookie_forged", "too_large", "bad_json", "origin_not_allowed"):
        assert f'tailor_rejections_total{{endpoint="/collect",reason="{reason}"}}' in text, reason
    assert 'tailor_rejections_total{endpoint="/collect",reason="invalid_event"} 1.0' in text
    assert 'tailor_requests_total{degraded="false",endpoint="/collect",strategy="queued"}' in text


def test_the_service_routes_are_untouched_by_the_mount(served):
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    assert httpx.get(f"{served.url}/").status_code == 200  # BentoML's index page
    # issue #13: a path without a rule needs a key (nothing to learn about what exists)
    assert httpx.get(f"{served.url}/collect/else").status_code == 401
    assert httpx.get(f"{served.url}/collect/else", headers=served.headers).status_code == 404
    assert httpx.get(f"{served.url}/collect").status_code == 405
    # /events keeps its JSON-only checks (the collector's own checks are for its paths only)
    plain = httpx.post(
        f"{served.url}/events",
        content=b"{}",
        headers={**served.headers, "content-type": "text/plain"},
    )
    assert plain.status_code == 415
    event = {**_view(), "timestamp": datetime.now(UTC).isoformat(), "anonymous_id": "x"}
    queued = httpx.post(f"{served.url}/events", json=event, headers=served.headers, timeout=30)
    assert queued.status_code == 202
