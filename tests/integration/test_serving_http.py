"""A real ``bentoml serve`` process over HTTP (issue #5): every endpoint, the event → push →
recommendation round trip, context cold start, metrics, a schemathesis run, the model hot swap and
degraded mode; body limits, nesting depth, client-error logging and the OpenAPI page (issue #10).

One service runs for the whole module on a copy of the trained test workspace (its event log,
registry and online store are changed here; the session's workspace is not). Tests run in file
order: the hot swap and the locked online store come last.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.eventlog import EventLog
from features.workspace import Workspace
from models.bundle import ModelBundle, context_popularity
from serving.loader import ServingStartupError
from serving.process import bearer, running_service, service_key
from serving.schemas import STORE_UNAVAILABLE

pytestmark = pytest.mark.integration

MODEL = "tailor-recommender"


@dataclass(frozen=True)
class Served:
    url: str
    ws: Workspace
    version: str  # the champion's version when the service started
    #: an admin key asking for the debug view (issue #13: tests read the features served);
    #: every request of these tests carries it, through _post or headers=served.headers
    headers: dict[str, str]


def admin_headers(ws: Workspace) -> dict[str, str]:
    """The headers of these tests' requests (issue #13): a new admin key of ``ws`` asking for
    the debug view, so answers carry the features read (the tests about keys and roles are
    tests/integration/test_security_http.py)."""
    return {**bearer(service_key(ws, "admin", "tests")), "X-Tailor-Debug": "1"}


@pytest.fixture(scope="module")
def served(trained_workspace, tmp_path_factory):
    home = tmp_path_factory.mktemp("served")
    ws = trained_workspace.copy_to(home)
    saved = os.environ.get("TAILOR_MODEL_POLL_SECONDS")
    os.environ["TAILOR_MODEL_POLL_SECONDS"] = "1"
    try:
        with running_service(ws) as url:
            version = str(trained_workspace.result.registered_version)
            yield Served(url, ws, version, admin_headers(ws))
    finally:
        os.environ.pop("TAILOR_MODEL_POLL_SECONDS", None)
        if saved is not None:
            os.environ["TAILOR_MODEL_POLL_SECONDS"] = saved


def _post(served: Served, route: str, body, headers=None, **kwargs) -> httpx.Response:
    """POST ``body`` with the admin key (and the debug view), ``headers`` added."""
    headers = {**served.headers, **(headers or {})}
    return httpx.post(f"{served.url}{route}", json=body, timeout=30, headers=headers, **kwargs)


def _consent(served: Served, **ids: str) -> None:
    """Every purpose given for the person of ``ids`` (``user_id=`` or ``anonymous_id=``): person
    features are read only with personalization consent (issue #12)."""
    purposes = {"analytics": True, "personalization": True, "marketing": True}
    response = _post(served, "/consent", {**ids, "purposes": purposes, "source": "api"})
    assert response.status_code == 201, response.text


def _until(check, timeout: float = 10.0) -> bool:
    """Whether ``check()`` held within ``timeout`` seconds (the events path is asynchronous
    since issue #11: /events answers once the queue has the events, the consumer follows)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _queue_empty(served: Served) -> bool:
    """Whether the service's embedded queue holds nothing waiting or in flight."""
    from features.broker.embedded import EmbeddedBroker

    broker = EmbeddedBroker(served.ws.queue_dir / "events.db")
    try:
        return broker.depth() == 0
    finally:
        broker.close()


def _known_user(trained_workspace) -> tuple[str, set[str]]:
    events = trained_workspace.generated.events
    busiest = events[events["user_id"].notna()]["user_id"].value_counts().index[0]
    mine = events[
        (events["user_id"] == busiest)
        & events["event_type"].isin(["product_view", "add_to_cart", "purchase"])
    ]
    return str(busiest), set(mine["product_id"].astype(str))


def _categories(trained_workspace) -> dict[str, str]:
    events = trained_workspace.generated.events
    products = events[events["product_id"].notna()]
    return dict(zip(products["product_id"].astype(str), products["category"], strict=True))


# ----------------------------------------------------------------------------- basics


def test_health_endpoints(served):
    for route in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{served.url}{route}").status_code == 200, route


def test_known_user_gets_k_unseen_model_items_with_online_features(served, trained_workspace):
    user_id, history = _known_user(trained_workspace)
    response = _post(served, "/recommend", {"user_id": user_id, "k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user_id
    assert body["personalized"] is True
    assert "degraded" not in body
    assert body["model"] == f"{MODEL}@{served.version}"
    assert len(body["items"]) == 7
    assert {item["strategy"] for item in body["items"]} == {"model:ease"}
    assert {item["rule"] for item in body["items"]} == {"known-user"}
    assert {"known-user", "exclude-purchased-and-given", "diversity-cap"} <= set(
        body["rules_fired"]
    )
    assert not {item["item_id"] for item in body["items"]} & history
    assert body["features"]["sessions_30d"] >= 1  # read from the Feast online store
    assert body["features"]["main_device"] in {"desktop", "mobile", "tablet", "other"}
    assert len(body["request_id"]) == 32


def test_unknown_user_gets_popular_items(served):
    response = _post(served, "/recommend", {"user_id": "never-seen", "k": 3})
    body = response.json()
    assert response.status_code == 200
    assert body["personalized"] is False
    assert body["rules_fired"][0] == "first-time-visitor"
    assert [item["strategy"] for item in body["items"]] == ["popular"] * 3
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_cold_start_with_context_category_country_and_device(served, trained_workspace):
    categories = _categories(trained_workspace)
    body = {
        "anonymous_id": f"visitor-{uuid.uuid4().hex[:8]}",
        "k": 5,
        "context": {"country": "us", "device_type": "mobile", "category": "beauty"},
    }
    response = _post(served, "/recommend", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["user_id"] == f"anon:{body['anonymous_id']}"
    assert answer["strategy"] == "popular_in_category:beauty"
    assert answer["personalized"] is False  # the request's context, not the person
    assert [categories[item["item_id"]] for item in answer["items"]] == ["beauty"] * 5
    assert {"first-time-visitor", "hero-us", "hero-mobile"} <= set(answer["rules_fired"])
    assert answer["variant"] == {"hero_banner": "us-free-shipping"}  # the first firing rule wins


def test_first_time_visitor_gets_popular_items_of_their_country(served):
    body = {
        "anonymous_id": "visitor-de",
        "k": 3,
        "context": {"country": "DE", "device_type": "tablet"},
    }
    answer = _post(served, "/recommend", body).json()
    # the champion's bundle carries per-country popularity (training/pipeline.py)
    assert answer["strategy"] == "popular_in_country:DE"
    assert {item["strategy"] for item in answer["items"]} == {"popular_in_country:DE"}
    assert answer["personalized"] is False
    assert answer["variant"] == {"hero_banner": "default"}


def test_segment_appears_once_a_segmentation_is_in_the_online_store(served, trained_workspace):
    from features import store

    user_id, _ = _known_user(trained_workspace)
    before = _post(served, "/segment", {"user_id": user_id}).json()
    assert before["source"] == "no segmentation run yet"
    assert "segment_label" not in before

    now = datetime.now(UTC).replace(microsecond=0)
    assignments = pd.DataFrame(
        {
            "user_id": [user_id],
            "event_timestamp": [pd.Timestamp(now)],
            "created": [pd.Timestamp(now)],
            "segment_id": [3],
            "segment_label": ["Electronics Window Shoppers"],
        }
    )
    store.write_segments(served.ws, assignments)
    store.materialize_segments(served.ws, store.apply_segments(served.ws))

    deadline = time.monotonic() + 20
    answer = before
    while time.monotonic() < deadline and answer.get("segment_id") != 3:
        time.sleep(0.5)
        answer = _post(served, "/segment", {"user_id": user_id}).json()
    assert answer["segment_id"] == 3
    assert answer["segment_label"] == "Electronics Window Shoppers"
    assert answer["source"] == "user_segment_v1"
    recommended = _post(served, "/recommend", {"user_id": user_id, "k": 3}).json()
    assert recommended["segment"] == "Electronics Window Shoppers"
    unknown = _post(served, "/segment", {"user_id": "never-segmented"}).json()
    assert "segment_id" not in unknown


def test_context_values_never_seen_fall_back_to_global_popularity(served):
    body = {
        "anonymous_id": "visitor-zz",
        "k": 3,
        "context": {"country": "ZZ", "category": "no-such-aisle"},
    }
    response = _post(served, "/recommend", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["strategy"] == "popular"
    assert len(answer["items"]) == 3


def test_exclude_removes_the_given_ids(served, trained_workspace):
    user_id, _ = _known_user(trained_workspace)
    first = _post(served, "/recommend", {"user_id": user_id, "k": 5}).json()
    dropped = [item["item_id"] for item in first["items"][:2]]
    again = _post(served, "/recommend", {"user_id": user_id, "k": 5, "exclude": dropped}).json()
    assert not {item["item_id"] for item in again["items"]} & set(dropped)
    assert len(again["items"]) == 5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 201}, "k"),
        ({"user_id": "u1", "k": "ten"}, "k"),
        ({"k": 3}, "user_id"),
        ({"user_id": "u1", "context": {"country": "USA"}}, "context.country"),
        ({"user_id": "u1", "context": {"device_type": "fridge"}}, "context.device_type"),
        ({"user_id": "u1", "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(served, payload, field):
    response = _post(served, "/recommend", payload)
    assert 400 <= response.status_code < 500
    body = response.json()
    assert field in body["error"], body
    # the documented error shape; issue #10 item 16: an object, not JSON text inside JSON
    assert body["detail"]["errors"][0]["message"] in body["error"], body


def test_malformed_json_is_a_400(served):
    response = httpx.post(
        f"{served.url}/recommend",
        content=b'{"user_id": "u1", "k": ',
        headers={**served.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def _raw_post(served: Served, route: str, headers: list[str], chunks: list[bytes]) -> tuple:
    """POST over a plain socket (httpx always sends a whole, declared body): the request head,
    then ``chunks`` as they are; returns (status, JSON body, seconds to the answer)."""
    host, port = served.url.removeprefix("http://").split(":")
    key = f"Authorization: {served.headers['Authorization']}"
    head = [f"POST {route} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", key]
    head += headers
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"content-length: (\d+)", answer.lower()).group(1)
        ):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.partition(b"\r\n\r\n")[2]), time.monotonic() - started


def _stored(served: Served) -> tuple[int, int]:
    """(events in the log, bytes in the quarantine folder)."""
    quarantined = sum(f.stat().st_size for f in served.ws.quarantine_dir.rglob("*") if f.is_file())
    return len(EventLog(served.ws.event_log_dir)), quarantined


def test_oversize_bodies_are_refused_before_they_are_read_or_stored(served):
    """issue #10 item 4: five 10 MB events and one 100 MB event were accepted with 200 and grew
    the quarantine by 150 MB. A declared Content-Length over the limit is refused before the
    body is sent; a streamed (chunked) body as soon as it passes the limit."""
    before = _stored(served)
    status, body, seconds = _raw_post(served, "/events", ["Content-Length: 104857600"], [])
    assert status == 413 and seconds < 5
    assert body == {
        "error": "request body larger than 1048576 bytes, the limit for /events; split the batch",
        "detail": {"limit_bytes": 1048576},
    }
    status, body, _ = _raw_post(served, "/recommend", ["Content-Length: 65537"], [])
    assert (status, body["detail"]) == (413, {"limit_bytes": 65536})

    event = json.dumps(_event("too-big", "grocery", "p1", page="x" * 60_000)).encode()
    data = b"[" + b",".join([event] * 18) + b"]"  # ~1.1 MB, under no Content-Length
    assert len(data) > 1 << 20
    chunks = [b"%x\r\n%s\r\n" % (len(part), part) for part in _pieces(data, 65536)]
    status, body, _ = _raw_post(served, "/events", ["Transfer-Encoding: chunked"], chunks)
    assert (status, body["detail"]) == (413, {"limit_bytes": 1048576})
    assert _stored(served) == before  # nothing appended, nothing quarantined

    # a streamed body under the limit is read whole and stored
    small = json.dumps([_event("streamed", "grocery", "p1") for _ in range(2)]).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(part), part) for part in _pieces(small, 100)]
    chunked = ["Transfer-Encoding: chunked"]
    status, body, _ = _raw_post(served, "/events", chunked, [*chunks, b"0\r\n\r\n"])
    assert (status, body["accepted"]) == (202, 2), body
    assert _until(lambda: _stored(served) == (before[0] + 2, before[1]))


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("route", ["/recommend", "/segment", "/similar_items", "/events"])
def test_deeply_nested_json_is_a_400_at_once(served, route):
    """issue #10 item 5: ~1,000 levels hung 30 s and answered a plain-text 500."""
    started = time.monotonic()
    response = httpx.post(
        f"{served.url}{route}",
        content=b'{"user_id": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        headers={**served.headers, "content-type": "application/json"},
        timeout=30,
    )
    assert time.monotonic() - started < 2
    assert response.status_code == 400
    assert response.json() == {
        "error": "Invalid JSON: nested deeper than 32 levels",
        "detail": {"max_depth": 32},
    }


def _service_log(served: Served) -> Path:
    (log,) = (served.ws.home / "logs").glob("serve-*.log")
    return log


def test_client_errors_are_one_warning_line_without_traceback_or_request_content(served):
    """issue #10 item 8: ~6,000 bad requests wrote 2,402 tracebacks (31.6 MB) echoing user ids."""
    log = _service_log(served)
    offset = log.stat().st_size
    marker = f"secret-{uuid.uuid4().hex[:8]}"
    bad = [
        ("/recommend", {"user_id": marker, "k": 0}),
        ("/recommend", {"user_id": marker, marker: 1}),
        ("/recommend", {"anonymous_id": marker, "context": {"country": marker}}),
        ("/segment", {"user_id": marker, "extra": marker}),
        ("/similar_items", {"item_id": marker}),  # 404: unknown item
    ]
    for route, body in bad:
        response = _post(served, route, body)
        assert 400 <= response.status_code < 500, response.text
    raw = httpx.post(
        f"{served.url}/recommend",
        content=f'{{"user_id": "{marker}"'.encode(),
        headers=served.headers,
    )
    assert raw.status_code == 400
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        written = log.read_bytes()[offset:].decode(errors="replace")
        warnings = [line for line in written.splitlines() if "client error" in line]
        if len(warnings) >= len(bad) + 1:
            break
        time.sleep(0.2)
    assert len(warnings) == len(bad) + 1, written
    assert all("[WARNING]" in line for line in warnings), warnings
    assert "Traceback" not in written and "[ERROR]" not in written, written
    assert marker not in written, written
    assert "client error 404 on /similar_items [POST]: NotFound" in written


def test_openapi_page_names_tailor_and_its_example_succeeds(served):
    """issue #10 item 16: the page at / reads the document at /docs.json."""
    assert "text/html" in httpx.get(f"{served.url}/").headers["content-type"]
    spec = httpx.get(f"{served.url}/docs.json").json()
    assert spec["info"]["title"] == "Tailor"
    assert spec["info"]["version"] == importlib.metadata.version("tailor")
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    response = _post(served, "/recommend", body["schema"]["example"])
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == body["schema"]["example"]["k"]


def test_similar_items(served):
    user_items = _post(served, "/recommend", {"user_id": "never-seen", "k": 1}).json()
    item_id = user_items["items"][0]["item_id"]
    response = _post(served, "/similar_items", {"item_id": item_id, "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["item_id"] == item_id
    assert len(body["items"]) == 4
    assert item_id not in {item["item_id"] for item in body["items"]}
    assert {item["strategy"] for item in body["items"]} == {"similar:ease"}
    missing = _post(served, "/similar_items", {"item_id": "no-such-item", "k": 4})
    assert missing.status_code == 404
    assert "no-such-item" in missing.json()["error"]


# ----------------------------------------------------------------------------- events


def _event(person: str, category: str, product: str, **overrides) -> dict:
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "event_type": "product_view",
        "timestamp": datetime.now(UTC).isoformat(),
        "anonymous_id": person,
        "session_id": f"s-{person}",
        "device_type": "mobile",
        "country": "US",  # opt-out: collected without a consent record (issue #12)
        "product_id": product,
        "category": category,
        "price": 12.5,
        **overrides,
    }


def test_events_round_trip_changes_the_next_recommendation(served, trained_workspace):
    person = f"rt-{uuid.uuid4().hex[:8]}"
    _consent(served, anonymous_id=person)
    categories = _categories(trained_workspace)
    product = next(p for p, c in categories.items() if c == "grocery")
    before = _post(served, "/recommend", {"anonymous_id": person, "k": 4}).json()
    assert before["rules_fired"][0] == "first-time-visitor"
    assert before["strategy"] == "popular"

    first = _event(person, "grocery", product)
    bad = _event(person, "grocery", product)
    del bad["session_id"]
    batch = [first, _event(person, "grocery", product), bad, dict(first)]
    log_size = len(EventLog(served.ws.event_log_dir))
    response = _post(served, "/events", batch)
    assert response.status_code == 202, response.text  # queued: the consumer appends
    report = response.json()
    assert (report["accepted"], report["rejected"]) == (3, 1)  # the repeat is queued too
    assert report["rejections"] == [
        {"row": 3, "field": "session_id", "reason": "session_id: Field required"}
    ]
    assert _until(lambda: _queue_empty(served))
    assert len(EventLog(served.ws.event_log_dir)) == log_size + 2  # the repeat appended once

    def pushed() -> dict:
        return _post(served, "/recommend", {"anonymous_id": person, "k": 4}).json()

    assert _until(lambda: pushed()["features"].get("last_category") == "grocery", 5)
    after = pushed()
    assert after["features"]["last_category"] == "grocery"  # pushed to the online store
    assert after["features"]["last_product_id"] == product
    assert after["rules_fired"][0] == "returning-visitor"
    # issue #11: the views are in the visitor's live session, answered item-to-item from them
    # (tests/integration/test_sessions_http.py); without one it is popular_in_category:grocery
    assert after["strategy"] == "session:ease"
    assert after["personalized"] is True
    assert product not in {item["item_id"] for item in after["items"]}

    again = _post(served, "/events", first)  # one event, not a list; already logged
    assert (again.status_code, again.json()["accepted"], again.json()["rejected"]) == (202, 1, 0)
    assert _until(lambda: _queue_empty(served))
    assert len(EventLog(served.ws.event_log_dir)) == log_size + 2  # a duplicate: no change


def test_an_event_is_visible_in_the_next_recommendation_within_a_second(served, trained_workspace):
    """issue #11: /events only queues; the service's in-process consumer, woken by the publish,
    appends and pushes at once, so event → visible in /recommend stays well under a second
    (goal p99 < 1 s; here one event at a time, polled every 10 ms)."""
    product = next(p for p, c in _categories(trained_workspace).items() if c == "toys")
    seconds = []
    with httpx.Client(timeout=30, headers=served.headers) as client:
        for _ in range(20):
            person = f"seen-{uuid.uuid4().hex[:8]}"
            _consent(served, anonymous_id=person)
            started = time.perf_counter()
            event = _event(person, "toys", product)
            assert client.post(f"{served.url}/events", json=event).status_code == 202
            while time.perf_counter() - started < 5:
                body = client.post(
                    f"{served.url}/recommend", json={"anonymous_id": person, "k": 1}
                ).json()
                if body["features"].get("last_product_id") == product:
                    break
                time.sleep(0.01)
            seconds.append(time.perf_counter() - started)
    seconds.sort()
    print(f"event -> visible in /recommend: p50 {seconds[10]:.3f} s, max {seconds[-1]:.3f} s")
    assert seconds[10] < 0.5 and seconds[-1] < 1.0, seconds


def test_events_the_queue_refuses_are_a_503_with_retry_after(served):
    """issue #11: /events answers only after the broker confirmed; a queue that refuses the
    publish (here a trigger on the embedded queue's table, as a full disk would) is a 503 with
    Retry-After and nothing accepted, logged or quarantined; the same batch later is a 202."""
    batch = [_event("refused", "grocery", "p1"), {"event_id": "bad"}]
    before = _stored(served)
    queue = sqlite3.connect(served.ws.queue_dir / "events.db", timeout=30)
    queue.execute(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON queue "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    queue.commit()
    try:
        response = _post(served, "/events", batch)
    finally:
        queue.execute("DROP TRIGGER refuse_events")
        queue.commit()
        queue.close()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": "events not accepted: the event queue cannot take them now; "
        "send them again after 5 s",
        "detail": {"retry_after_seconds": 5},
    }
    assert "disk full" not in response.text
    assert _stored(served) == before  # nothing quarantined either: the client sends it again
    again = _post(served, "/events", batch)
    assert (again.status_code, again.json()["accepted"], again.json()["rejected"]) == (202, 1, 1)
    assert _until(lambda: _stored(served)[0] == before[0] + 1)


def test_oversize_event_batch_is_refused_naming_the_limit(served):
    response = _post(served, "/events", [{"event_id": str(i)} for i in range(1001)])
    assert response.status_code == 413
    assert "1000" in response.json()["error"]


def test_metrics_show_strategies_latency_and_model_version(served):
    text = httpx.get(f"{served.url}/metrics", headers=served.headers).text
    assert 'tailor_requests_total{degraded="false",endpoint="/recommend",strategy="model"}' in text
    assert 'strategy="popular_in_category"' in text
    assert "tailor_request_latency_seconds_bucket" in text
    assert f'tailor_model_info{{model="{MODEL}@{served.version}"' in text
    assert 'tailor_events_total{outcome="accepted"}' in text
    assert 'tailor_events_total{outcome="stored"}' in text  # counted by the in-process consumer
    assert 'tailor_events_total{outcome="duplicate"}' in text
    assert "bentoml_service_request_total" in text  # BentoML's own request counts stay


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(served, tmp_path):
    # /identify refuses the same id as anonymous_id and user_id (400), a rule between two
    # fields that JSON Schema cannot state: its schema-valid-but-refused cases are no finding
    config = tmp_path / "schemathesis.toml"
    # issue #10 item 10: documented-valid requests are accepted, documented-invalid ones
    # refused (bodies documented optional but required, country "00", stripped whitespace,
    # device_type null were found by these two); the checks are in the file, not in --checks,
    # which would override the file's per-operation setting
    config.write_text(
        "[checks]\nenabled = false\n"
        + "".join(
            f"{check}.enabled = true\n"
            for check in (
                "not_a_server_error",
                "response_schema_conformance",
                "positive_data_acceptance",
                "negative_data_rejection",
            )
        )
        + '[[operations]]\ninclude-path = "/identify"\n'
        + "checks.positive_data_acceptance.enabled = false\n"
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{served.url}/docs.json",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "50",
        "--seed",
        "5",
        "--workers",
        "1",
        "--include-method",
        "POST",
        "--report-dir",
        str(tmp_path),
        "--header",
        f"Authorization: {served.headers['Authorization']}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    assert time.monotonic() - started < 60, output


# ----------------------------------------------------------------------------- hot swap


def test_moving_champion_swaps_the_model_without_a_restart(served, tmp_path):
    uri = served.ws.mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    current = client.get_model_version_by_alias(MODEL, "champion")
    # The next version carries a context popularity table, as bundles trained from now on will.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}@champion"))
    bundle = ModelBundle.load(next(local.rglob("bundle.json")).parent)
    events = EventLog(served.ws.event_log_dir).read()
    table = context_popularity(events, bundle.items, item_column="product_id")
    target = served.ws.home / "swap" / "bundle"
    replace(bundle, context_popular=table).save(target)
    new = client.create_model_version(
        MODEL, source=target.parent.as_uri(), run_id=current.run_id, tags=current.tags
    )
    client.set_registered_model_alias(MODEL, "champion", new.version)

    request = {"anonymous_id": "swap-visitor", "k": 3, "context": {"country": "DE"}}
    deadline = time.monotonic() + 60
    answers = []
    while time.monotonic() < deadline:  # requests keep being answered during the swap
        response = _post(served, "/recommend", request)
        assert response.status_code == 200, response.text
        answers.append(response.json())
        if answers[-1]["model"] == f"{MODEL}@{new.version}":
            break
        time.sleep(0.5)
    assert answers[-1]["model"] == f"{MODEL}@{new.version}", answers[-1]
    assert answers[-1]["strategy"] == "popular_in_country:DE"
    text = httpx.get(f"{served.url}/metrics", headers=served.headers).text
    for version, value in ((new.version, "1.0"), (current.version, "0.0")):
        labels = f'model="{MODEL}@{version}",model_name="{MODEL}",version="{version}"'
        assert f"tailor_model_info{{{labels}}} {value}" in text


# ----------------------------------------------------------------------------- degraded mode


def test_locked_online_store_degrades_to_popularity_then_recovers(served, trained_workspace):
    user_id, _ = _known_user(trained_workspace)
    lock = sqlite3.connect(served.ws.feast_dir / "online_store.db", timeout=1)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the service's reads now fail with "database is locked"
        response = _post(served, "/recommend", {"user_id": user_id, "k": 5})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["personalized"] is False
        assert body["degraded"] == STORE_UNAVAILABLE  # issue #10 item 8: no exception text
        assert len(body["items"]) == 5
        assert not any(item["strategy"].startswith("model:") for item in body["items"])
    finally:
        lock.rollback()
        lock.close()
    recovered = _post(served, "/recommend", {"user_id": user_id, "k": 5}).json()
    assert "degraded" not in recovered
    assert recovered["personalized"] is True


def test_service_without_a_champion_refuses_to_start_with_a_clear_message(tmp_path):
    ws = Workspace(home=tmp_path).ensure()
    with pytest.raises(ServingStartupError, match="run `tailor train` first"):
        with running_service(ws, timeout=120):
            pass
