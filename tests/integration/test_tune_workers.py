"""Two worker processes on one study (issue #4): SQLite file and PostgreSQL (scale profile).

Each test tunes the tiny planted data set with ``workers=2`` and checks that the study holds
exactly the asked number of trials with unique numbers, and that MLflow holds one parent run with
one child per trial, nested across processes by the ``mlflow.parentRunId`` tag.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from features.workspace import Workspace
from tests.services import require_postgres
from tests.training.test_tune import planted_frame
from training.tune.study import delete_study, run_tuning, study_trials

pytestmark = pytest.mark.integration

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _spec_file(folder: Path, name: str) -> Path:
    data = folder / "planted.csv"
    planted_frame().to_csv(data, index=False)
    spec = {
        "model": "item_knn",
        "dataset": str(data),
        "search_space": {
            "similarity": {"type": "categorical", "choices": ["cosine", "pearson"]},
            "k_neighbours": {"type": "int", "low": 2, "high": 30},
            "shrinkage": {"type": "float", "low": 0.0, "high": 20.0},
        },
        "pruner": "median",
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _children(ws: Workspace, parent_run_id: str) -> list:
    client = MlflowClient(ws.mlflow_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


def _check_study(ws: Workspace, name: str, storage: str, result, n_trials: int) -> None:
    trials = study_trials(name, storage)
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert result.n_trials == n_trials and result.n_new == n_trials
    children = _children(ws, result.parent_run_id)
    assert len(children) == n_trials
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(
        range(n_trials)
    )
    client = MlflowClient(ws.mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["optuna.study_name"] == name
    assert parent.data.metrics["ndcg_at_10"] == pytest.approx(result.test_value)


def test_two_workers_share_one_sqlite_study_and_register(tmp_path):
    ws = Workspace(home=tmp_path / "ws").ensure()
    spec = _spec_file(tmp_path, "workers_sqlite")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_tuning(ws, spec, trials=6, storage=storage, workers=2, register=True)
    _check_study(ws, "workers_sqlite", storage, result, 6)

    client = MlflowClient(ws.mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["tailor.split_fingerprint"] and parent.data.tags["tailor.dataset"]
    assert "default_ndcg_at_10" in parent.data.metrics
    assert parent.data.metrics["n_trials"] == 6
    plots = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert "plots/parallel_coordinate.png" in plots
    # The refit model is registered and, with no champion yet, promoted.
    assert result.registered_version == "1"
    assert result.promotion.promoted


@pytest.mark.scale
def test_two_workers_share_one_postgres_study(tmp_path):
    require_postgres("scale-profile study storage")
    ws = Workspace(home=tmp_path / "ws").ensure()
    name = f"workers_pg_{uuid.uuid4().hex[:8]}"
    spec = _spec_file(tmp_path, name)
    try:
        result = run_tuning(ws, spec, trials=6, storage=POSTGRES_URL, workers=2, register=False)
        _check_study(ws, name, POSTGRES_URL, result, 6)
    finally:
        delete_study(name, POSTGRES_URL)
