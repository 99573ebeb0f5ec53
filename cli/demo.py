"""The end-to-end demo behind ``make demo``: every stage on the embedded default."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from features import store
from features.build import build_feature_tables, feature_time_range
from features.consent.check import ConsentCheck
from features.consent.files import import_csv
from features.consent.ledger import ConsentLedger
from features.eventlog import EventLog
from features.ingest import ingest_file
from features.synthetic.generate import generate_clickstream, write_generated
from features.workspace import Workspace
from serving.process import running_service
from training.config import TrainConfig
from training.pipeline import train_and_evaluate


def run_demo(
    ws: Workspace,
    users: int = 1500,
    days: int = 35,
    seed: int = 7,
    say: Callable[[str], None] = print,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Generate → import → features → Feast apply + materialize → train → serve → one call."""
    started = time.perf_counter()
    say(f"generating {users} users × {days} days (seed {seed})")
    generated = generate_clickstream(users, days, seed)
    paths = write_generated(generated, ws.raw_dir / f"generated-seed{seed}")

    say(f"importing {paths['events']}")
    report = ingest_file(paths["events"], EventLog(ws.event_log_dir), ws.quarantine_dir)
    say(f"accepted {report.accepted}, duplicate {report.duplicate}, rejected {report.rejected}")
    consent = import_csv(ConsentLedger.for_workspace(ws), paths["consent"])
    say(
        f"consent: {consent.rows} records of {consent.people} people imported "
        f"({consent.accepted} purposes accepted, {consent.refused} refused)"
    )

    say("computing feature tables")
    built = build_feature_tables(ws)
    say(f"feast apply + materialize ({', '.join(f'{k}={v}' for k, v in built.rows.items())})")
    fs = store.apply(ws)
    start, end = feature_time_range(ws)
    store.materialize(ws, start.to_pydatetime(), end.to_pydatetime(), store=fs)

    result = train_and_evaluate(ws, config or TrainConfig(), progress=say)
    k = (config or TrainConfig()).k

    # Ask for the most active known user who allows personalization (issue #12: the others get
    # a non-personalized answer): the answer shows the model at work.
    events = generated.events
    known = events[events["user_id"].notna()]
    busiest = [str(user) for user in known["user_id"].value_counts().index[:50]]
    allowed = ConsentCheck.for_workspace(ws).decide_many(busiest, "personalization")
    user_id = next((user for user in busiest if allowed[user].allowed), busiest[0])
    say("starting bentoml serve")
    with running_service(ws) as base_url:
        health = httpx.get(f"{base_url}/healthz", timeout=10).status_code
        response = httpx.post(
            f"{base_url}/recommend", json={"user_id": user_id, "k": k}, timeout=30
        )
        response.raise_for_status()
        answer = response.json()
    say("service stopped")
    summary = demo_summary(
        report.accepted, built.rows["user_features"], result, k, health, user_id, answer
    )
    summary["consent records (accepted / refused purposes)"] = (
        f"{consent.rows} ({consent.accepted} / {consent.refused})"
    )
    summary["seconds"] = f"{time.perf_counter() - started:.1f}"
    return {"response": answer, "summary": summary, "train": result}


def demo_summary(
    accepted: int,
    feature_rows: int,
    result: Any,
    k: int,
    health: int,
    user_id: str,
    answer: dict[str, Any],
) -> dict[str, Any]:
    """The demo's summary rows. The model that answered is the one the answer names (the
    service serves the champion; a freshly trained model that did not win stays challenger),
    so the table shows both the trained version and the answering one."""
    ndcg = f"ndcg_at_{k}"
    trained = result.model_label
    if result.promotion is not None and not result.promotion.promoted:
        trained += " (challenger, not promoted)"
    return {
        "events accepted": accepted,
        "feature rows (user)": feature_rows,
        "model trained": trained,
        f"{ndcg} model": result.metrics[ndcg],
        f"{ndcg} popularity": result.baseline_metrics[ndcg],
        "GET /healthz": health,
        "asked for": user_id,
        "answered by": answer.get("model", "unknown"),
    }
