"""A real ``bentoml serve`` process over HTTP (issue #5): every endpoint, the event → push →
recommendation round trip, context cold start, metrics, a schemathesis run, the model hot swap and
degraded mode.

One service runs for the whole module on a copy of the trained test workspace (its event log,
registry and online store are changed here; the session's workspace is not). Tests run in file
order: the hot swap and the locked online store come last.
"""

from __future__ import annotations

import os
import shutil
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
from serving.process import running_service

pytestmark = pytest.mark.integration

MODEL = "tailor-recommender"


@dataclass(frozen=True)
class Served:
    url: str
    ws: Workspace
    version: str  # the champion's version when the service started


@pytest.fixture(scope="module")
def served(trained_workspace, tmp_path_factory):
    home = tmp_path_factory.mktemp("served")
    shutil.copytree(
        trained_workspace.ws.home,
        home,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("logs", "bentoml"),
    )
    ws = Workspace(home=home).ensure()
    saved = os.environ.get("TAILOR_MODEL_POLL_SECONDS")
    os.environ["TAILOR_MODEL_POLL_SECONDS"] = "1"
    try:
        with running_service(ws) as url:
            yield Served(url, ws, str(trained_workspace.result.registered_version))
    finally:
        os.environ.pop("TAILOR_MODEL_POLL_SECONDS", None)
        if saved is not None:
            os.environ["TAILOR_MODEL_POLL_SECONDS"] = saved


def _post(served: Served, route: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{served.url}{route}", json=body, timeout=30, **kwargs)


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
    assert isinstance(body.get("detail", ""), str)  # the documented error shape


def test_malformed_json_is_a_400(served):
    response = httpx.post(
        f"{served.url}/recommend",
        content=b'{"user_id": "u1", "k": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


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
        "country": "GB",
        "product_id": product,
        "category": category,
        "price": 12.5,
        **overrides,
    }


def test_events_round_trip_changes_the_next_recommendation(served, trained_workspace):
    person = f"rt-{uuid.uuid4().hex[:8]}"
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
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["accepted"], report["duplicate"], report["rejected"]) == (2, 1, 1)
    assert report["pushed"] == 2 and "degraded" not in report
    assert report["rejections"] == [
        {"row": 3, "field": "session_id", "reason": "session_id: Field required"}
    ]
    assert len(EventLog(served.ws.event_log_dir)) == log_size + 2

    after = _post(served, "/recommend", {"anonymous_id": person, "k": 4}).json()
    assert after["features"]["last_category"] == "grocery"  # pushed to the online store
    assert after["features"]["last_product_id"] == product
    assert after["rules_fired"][0] == "returning-visitor"
    assert after["strategy"] == "popular_in_category:grocery"
    assert after["personalized"] is True
    assert [categories[item["item_id"]] for item in after["items"]] == ["grocery"] * 4

    again = _post(served, "/events", first).json()  # one event, not a list; already logged
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 1, 0)


def test_oversize_event_batch_is_refused_naming_the_limit(served):
    response = _post(served, "/events", [{"event_id": str(i)} for i in range(1001)])
    assert response.status_code == 413
    assert "1000" in response.json()["error"]


def test_metrics_show_strategies_latency_and_model_version(served):
    text = httpx.get(f"{served.url}/metrics").text
    assert 'tailor_requests_total{degraded="false",endpoint="/recommend",strategy="model"}' in text
    assert 'strategy="popular_in_category"' in text
    assert "tailor_request_latency_seconds_bucket" in text
    assert f'tailor_model_info{{model="{MODEL}@{served.version}"' in text
    assert 'tailor_events_total{outcome="accepted"}' in text
    assert "bentoml_service_request_total" in text  # BentoML's own request counts stay


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(served, tmp_path):
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{served.url}/docs.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
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
    text = httpx.get(f"{served.url}/metrics").text
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
        assert body["degraded"].startswith("online store unavailable")
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
