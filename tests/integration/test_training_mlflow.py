"""Train on a generated workspace, log to a real MLflow store, reload from the registry."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from models.bundle import ModelBundle
from serving.loader import load_registered
from serving.logic import recommend
from serving.schemas import RecommendRequest
from training import lineage
from training.pipeline import train_and_evaluate
from training.promote import LINEAGE_TAGS, promote, register_run

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(trained_workspace):
    # Both URIs are process-wide in MLflow, and earlier tests point them at other workspaces.
    uri = trained_workspace.ws.mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_run_holds_params_metrics_dataset_plot_and_contract_tag(trained_workspace, client):
    run = client.get_run(trained_workspace.result.run_id)
    k = trained_workspace.config.k
    assert run.data.tags["feast.feature_service"] == "user_profile_v1"
    assert run.data.tags["model"] == "ease"
    assert run.data.params["model.l2"] == "500.0"
    for name in (f"ndcg_at_{k}", f"baseline_ndcg_at_{k}", "train_seconds", "feature_coverage"):
        assert name in run.data.metrics
    assert 0.0 < run.data.metrics[f"ndcg_at_{k}"] <= 1.0
    assert run.data.metrics["feature_coverage"] > 0.9  # Feast knew nearly every training user
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [
        "user_profile_v1@" + str(pd.Timestamp(trained_workspace.result.cut).date())
    ]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert artifacts == ["plots/model_vs_baseline.png"]


def test_the_model_beats_popularity_on_the_hold_out(trained_workspace):
    k = trained_workspace.config.k
    result = trained_workspace.result
    assert result.metrics[f"ndcg_at_{k}"] > result.baseline_metrics[f"ndcg_at_{k}"]


def test_champion_alias_points_at_the_registered_version(trained_workspace, client):
    version = client.get_model_version_by_alias("tailor-recommender", "champion")
    assert str(version.version) == trained_workspace.result.registered_version
    assert version.tags["feast.feature_service"] == "user_profile_v1"
    assert version.run_id == trained_workspace.result.run_id
    # Issue #4: registered as challenger first, champion because there was none.
    assert trained_workspace.result.promotion.promoted is True
    assert "no champion yet" in trained_workspace.result.promotion.reason


def test_run_and_version_carry_the_lineage_tags(trained_workspace, client):
    result, k = trained_workspace.result, trained_workspace.config.k
    run_tags = client.get_run(result.run_id).data.tags
    version = client.get_model_version("tailor-recommender", result.registered_version)
    for key in LINEAGE_TAGS:
        assert run_tags[key] == version.tags[key] == result.lineage_tags[key], key
    assert run_tags[lineage.METRIC] == f"ndcg_at_{k}"  # the key the pipeline logs
    assert run_tags[lineage.DIRECTION] == "maximize"
    assert run_tags[lineage.DATASET] == "workspace-events"
    assert run_tags[lineage.PROTOCOL] == "temporal-global-cut-5d"
    assert len(run_tags[lineage.SPLIT_FINGERPRINT]) == 16
    assert float(version.tags[f"metric.ndcg_at_{k}"]) == pytest.approx(
        result.metrics[f"ndcg_at_{k}"]
    )


def test_a_better_train_on_the_same_split_takes_champion_a_worse_one_does_not(
    trained_workspace, client
):
    ws, config = trained_workspace.ws, trained_workspace.config
    race = dataclasses.replace(config, registered_model="tailor-race", model="popularity")
    first = train_and_evaluate(ws, race)
    assert first.promotion.promoted and first.registered_version == "1"
    better = train_and_evaluate(ws, dataclasses.replace(race, model="ease"))
    assert better.promotion.promoted is True, better.promotion.reason
    assert (
        better.promotion.champion_version == "1" and "on the same split" in better.promotion.reason
    )
    assert client.get_registered_model("tailor-race").aliases == {"challenger": 2, "champion": 2}

    register_run(ws, first.run_id, "tailor-race")  # popularity again: worse than ease
    worse = promote(ws, "tailor-race")
    assert worse.promoted is False and "does not beat" in worse.reason
    assert client.get_registered_model("tailor-race").aliases == {"challenger": 3, "champion": 2}


def test_pyfunc_reload_answers_like_the_bundle(trained_workspace, client):
    model = mlflow.pyfunc.load_model("models:/tailor-recommender@champion")
    loaded = load_registered(trained_workspace.ws, "tailor-recommender", "champion")
    users = list(loaded.scorer.bundle.users.ids[:3]) + ["someone-new"]
    predicted = model.predict(pd.DataFrame({"user_id": users, "k": [5] * len(users)}))
    assert list(predicted.columns) == ["user_id", "item_id", "rank", "score", "strategy"]
    for user in users:
        direct = recommend(loaded.scorer, RecommendRequest(user_id=user, k=5))
        rows = predicted[predicted["user_id"] == user].sort_values("rank")
        assert rows["item_id"].tolist() == [item.item_id for item in direct.items]
        np.testing.assert_allclose(rows["score"], [item.score for item in direct.items], rtol=1e-6)
    assert (predicted[predicted["user_id"] == "someone-new"]["strategy"] == "popular").all()


def test_bundle_round_trip_through_the_registry_keeps_scores(trained_workspace, tmp_path):
    loaded = load_registered(trained_workspace.ws, "tailor-recommender", "champion")
    bundle = loaded.scorer.bundle
    copy = ModelBundle.load(bundle.save(tmp_path / "b"))
    users = np.arange(min(5, len(bundle.users)))
    np.testing.assert_array_equal(
        bundle.model.recommend(users, bundle.history[users], k=10)[0],
        copy.model.recommend(users, copy.history[users], k=10)[0],
    )


def test_the_run_reads_well_in_the_mlflow_ui(trained_workspace, client):
    """Issue #10 item 13: the experiment opens MLflow 3's training view and says what it holds;
    the run name says model, data set and time (not ``ease-vs-popularity``); each value is logged
    once, as a tag or a param; the logged model is named after the model."""
    result = trained_workspace.result
    run = client.get_run(result.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "workspace's events" in experiment.tags["mlflow.note.content"]
    assert run.info.run_name.startswith("ease · workspace-events · 20")
    assert run.info.run_name.endswith("(vs popularity)")
    params, tags = run.data.params, run.data.tags
    assert not {"model", "feature_service", "experiment", "params"} & set(params)
    assert params["baseline"] == "popularity" and "baseline" not in tags
    assert "protocol" not in tags and tags["tailor.protocol"] == "temporal-global-cut-5d"
    models = client.search_logged_models([experiment.experiment_id])
    assert {m.name for m in models if m.source_run_id == result.run_id} == {"ease"}
    version = client.get_model_version("tailor-recommender", result.registered_version)
    assert version.source.startswith("models:/")  # registered from the logged model "ease"
