"""Registry promotion on a real MLflow store: challenger always, champion only on a same-split win.

Issue #4: "the refit best model is registered; it gets the alias challenger, and becomes champion
only if it beats the current champion on the spec's metric on the same test split".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.app import app
from features.workspace import Workspace
from models.bundle import ModelBundle, popularity_order
from models.interactions import Interactions
from models.registry import build
from serving.loader import load_registered
from training import lineage, tracking
from training.promote import (
    LINEAGE_TAGS,
    PROMOTIONS_EXPERIMENT,
    PromotionError,
    promote,
    register_run,
)

pytestmark = pytest.mark.integration

SPLIT = "split-aaaa"


def _tiny_bundle() -> ModelBundle:
    """EASE fitted on a random 20 × 15 matrix: small, real and servable."""
    rng = np.random.default_rng(4)
    rows = [(f"u{u:02d}", f"i{i:02d}") for u in range(20) for i in range(15) if rng.random() < 0.3]
    interactions = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    model = build("ease", {"l2": 1.0}).fit(interactions)
    return ModelBundle(
        model_name="ease",
        model=model,
        users=interactions.users,
        items=interactions.items,
        history=interactions.matrix,
        popular=popularity_order(interactions.matrix),
        item_categories=np.array(["shoes"] * interactions.n_items, dtype=object),
    )


def _lineage(split: str, **changes: str) -> dict[str, str]:
    tags = {
        lineage.DATASET: "tiny",
        lineage.DATASET_FINGERPRINT: "data-1234",
        lineage.PROTOCOL: "temporal-global-cut-7d",
        lineage.SPLIT_FINGERPRINT: split,
        lineage.METRIC: "test_ndcg_at_10",
        lineage.DIRECTION: "maximize",
        lineage.FEATURE_SERVICE: "user_profile_v1",
        lineage.GIT_COMMIT: "abc123",
        lineage.MODEL: "ease",
    }
    return tags | changes


def _log_run(bundle: ModelBundle | None, ndcg: float, tags: dict[str, str]) -> str:
    with tracking.start_run(f"ndcg-{ndcg}") as run:
        tracking.set_tags(tags)
        tracking.log_metrics({"test_ndcg_at_10": ndcg, "test_recall_at_10": ndcg / 2})
        tracking.log_metrics({"train_seconds": 0.1})
        if bundle is not None:
            with tempfile.TemporaryDirectory() as tmp:
                saved = bundle.save(Path(tmp) / "bundle")
                tracking.log_bundle(saved, list(bundle.users.ids[:2]), 5, name="ease")
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store with five logged runs; each test registers into its own model name."""
    ws = Workspace(home=tmp_path_factory.mktemp("promote")).ensure()
    tracking.configure(ws)
    tracking.experiment(ws, "tests-promote")
    bundle = _tiny_bundle()
    runs = {
        "base": _log_run(bundle, 0.30, _lineage(SPLIT)),
        "better": _log_run(bundle, 0.40, _lineage(SPLIT)),
        "worse": _log_run(bundle, 0.35, _lineage(SPLIT)),
        "other_split": _log_run(bundle, 0.90, _lineage("split-bbbb")),
        "no_model": _log_run(None, 0.50, _lineage(SPLIT)),
        "no_tags": _log_run(None, 0.50, {lineage.MODEL: "ease", lineage.DATASET: "tiny"}),
    }
    return ws, runs


@pytest.fixture()
def client(store):
    ws, _ = store
    tracking.configure(ws)
    return MlflowClient(tracking_uri=ws.mlflow_uri, registry_uri=ws.mlflow_uri)


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_first_registration_becomes_champion_and_serving_loads_it(store, client):
    ws, runs = store
    version = register_run(ws, runs["base"], "m-first")
    assert _aliases(client, "m-first") == {"challenger": "1"}
    result = promote(ws, "m-first")
    assert result.promoted is True
    assert result.reason == "no champion yet: the challenger becomes champion"
    assert (result.challenger_version, result.champion_version) == ("1", None)
    assert result.challenger_value == pytest.approx(0.30)
    assert _aliases(client, "m-first") == {"challenger": "1", "champion": "1"}

    loaded = load_registered(ws, "m-first", "champion")
    assert (loaded.version, loaded.run_id) == (str(version.version), runs["base"])
    assert loaded.feature_service == "user_profile_v1"
    items, _ = loaded.scorer.bundle.model.recommend(
        np.array([0]), loaded.scorer.bundle.history[[0]]
    )
    assert items.shape == (1, 10)


def test_version_carries_lineage_tags_and_metric_values(store):
    ws, runs = store
    version = register_run(ws, runs["better"], "m-tags")
    for key, value in _lineage(SPLIT).items():
        assert version.tags[key] == value, key
    assert set(LINEAGE_TAGS) <= set(version.tags)
    assert float(version.tags["metric.test_ndcg_at_10"]) == pytest.approx(0.40)
    assert float(version.tags["metric.test_recall_at_10"]) == pytest.approx(0.20)
    assert "metric.train_seconds" not in version.tags  # timings are not evaluation values
    assert version.tags["tailor.run_id"] == runs["better"]
    assert version.run_id == runs["better"]


def test_better_challenger_on_the_same_split_takes_champion_worse_and_tie_do_not(store, client):
    ws, runs = store
    register_run(ws, runs["base"], "m-race")
    promote(ws, "m-race")

    register_run(ws, runs["better"], "m-race")
    won = promote(ws, "m-race")
    assert won.promoted is True
    assert (won.challenger_version, won.champion_version) == ("2", "1")
    assert (won.challenger_value, won.champion_value) == (pytest.approx(0.40), pytest.approx(0.30))
    assert "beats the champion's 0.300000 on the same split" in won.reason
    assert _aliases(client, "m-race") == {"challenger": "2", "champion": "2"}

    register_run(ws, runs["worse"], "m-race")
    lost = promote(ws, "m-race")
    assert lost.promoted is False
    assert "0.350000 does not beat the champion's 0.400000" in lost.reason
    assert _aliases(client, "m-race") == {"challenger": "3", "champion": "2"}

    register_run(ws, runs["better"], "m-race")  # the same value again: a tie keeps the champion
    tie = promote(ws, "m-race")
    assert tie.promoted is False and tie.champion_version == "2"
    assert _aliases(client, "m-race")["champion"] == "2"


def test_different_splits_are_refused_unless_forced(store, client):
    ws, runs = store
    register_run(ws, runs["base"], "m-split")
    promote(ws, "m-split")
    register_run(ws, runs["other_split"], "m-split")

    refused = promote(ws, "m-split")
    assert refused.promoted is False
    assert refused.reason.startswith("the splits differ (challenger split split-bbbb, champion")
    assert _aliases(client, "m-split")["champion"] == "1"

    forced = promote(ws, "m-split", force=True)
    assert forced.promoted is True
    assert forced.reason.startswith("forced: the splits differ")
    assert _aliases(client, "m-split")["champion"] == "2"


def test_each_decision_is_logged_as_a_run_and_tagged_on_the_challenger(store, client):
    ws, runs = store
    register_run(ws, runs["better"], "m-log")
    promote(ws, "m-log")
    register_run(ws, runs["worse"], "m-log")
    promote(ws, "m-log")

    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    logged = client.search_runs(
        [experiment.experiment_id],
        filter_string="params.registered_model = 'm-log'",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.data.tags["tailor.decision"] for r in logged] == ["promoted", "refused"]
    last = logged[-1].data
    assert last.params["challenger_version"] == "2" and last.params["champion_version"] == "1"
    assert last.metrics == {"challenger_value": pytest.approx(0.35), "champion_value": 0.40}
    assert last.tags["challenger.tailor.split_fingerprint"] == SPLIT
    assert last.tags["champion.run_id"] == runs["better"]
    assert "does not beat" in last.tags["tailor.reason"]

    challenger = client.get_model_version("m-log", "2")
    assert challenger.tags["tailor.promotion"] == "refused"
    assert challenger.tags["tailor.promotion_run_id"] == logged[-1].info.run_id
    assert "does not beat" in challenger.tags["tailor.promotion_reason"]


def test_clear_errors_for_unknown_runs_missing_models_tags_and_challenger(store, client):
    ws, runs = store
    with pytest.raises(PromotionError, match="no run 'feedbeef' in the tracking store"):
        register_run(ws, "feedbeef", "m-errors")
    with pytest.raises(PromotionError, match=r"logged 0 models \(none\); a registrable run"):
        register_run(ws, runs["no_model"], "m-errors")
    with pytest.raises(PromotionError) as missing:
        register_run(ws, runs["no_tags"], "m-errors")
    listed = str(missing.value).split("lacks the lineage tag(s) ")[1].split(";")[0]
    assert listed.split(", ") == [
        "tailor.dataset_fingerprint",
        "tailor.protocol",
        "tailor.split_fingerprint",
        "tailor.metric",
        "tailor.direction",
        "feast.feature_service",
        "git.commit",
    ]
    with pytest.raises(PromotionError, match="has no 'challenger' version"):
        promote(ws, "m-errors")
    # Nothing half-registered: the failed registrations created no model.
    assert client.search_registered_models(filter_string="name = 'm-errors'") == []


def test_register_and_promote_commands(store):
    ws, runs = store
    runner = CliRunner()
    home = ["--home", str(ws.home)]
    registered = runner.invoke(app, ["register", runs["base"], "--name", "m-cli", *home])
    assert registered.exit_code == 0, registered.output
    assert "m-cli@1" in registered.output and "tailor.split_fingerprint" in registered.output
    promoted = runner.invoke(app, ["promote", "m-cli", *home])
    assert promoted.exit_code == 0, promoted.output
    assert "promoted" in promoted.output and "no champion yet" in promoted.output

    unknown = runner.invoke(app, ["register", "feedbeef", *home])
    assert unknown.exit_code == 1 and "no run 'feedbeef'" in unknown.output


def test_the_shop_recommender_takes_only_workspace_models(store, client):
    """Issue #10 item 11: a run trained on another data set than the workspace's events is not
    registered as a version of ``tailor-recommender``; the error names the name to use."""
    ws, runs = store
    with pytest.raises(PromotionError, match=r"trained on 'tiny'.*register it as 'tiny-ease'"):
        register_run(ws, runs["base"], "tailor-recommender")
    assert client.search_registered_models(filter_string="name = 'tailor-recommender'") == []


def test_a_study_logged_before_the_metric_rename_still_races_a_new_one(store, client):
    """Issue #10 item 14: ``test_ndcg_at_10`` (tune studies before) and ``ndcg_at_10`` (now)
    are one metric: a new challenger is compared with an old champion, not refused."""
    ws, runs = store
    tracking.configure(ws)
    tracking.experiment(ws, "tests-promote")
    with tracking.start_run("new-style") as run:
        tracking.set_tags(_lineage(SPLIT, **{lineage.METRIC: "ndcg_at_10"}))
        tracking.log_metrics({"ndcg_at_10": 0.45})
        with tempfile.TemporaryDirectory() as tmp:
            bundle = _tiny_bundle()
            saved = bundle.save(Path(tmp) / "bundle")
            tracking.log_bundle(saved, list(bundle.users.ids[:2]), 5, name="ease")
    register_run(ws, runs["better"], "m-renamed")  # old style, 0.40: champion
    promote(ws, "m-renamed")
    register_run(ws, run.info.run_id, "m-renamed")
    decision = promote(ws, "m-renamed")
    assert decision.promoted is True, decision.reason
    assert decision.champion_value == pytest.approx(0.40)
    assert decision.challenger_value == pytest.approx(0.45)
