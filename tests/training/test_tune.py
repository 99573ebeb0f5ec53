"""``tailor tune`` on a tiny planted data set (issue #4): budget, failures, pruning, resume, seeds.

Real Optuna studies in real SQLite files and a real MLflow store in a temp dir; no mocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.workspace import Workspace
from models.errors import ConfigError
from training.promote import PromotionError, register_run
from training.spec import ExperimentSpec, load_experiment_spec, parse_experiment_spec
from training.tune.splits import prepare_data, tuning_splits
from training.tune.study import open_study, run_tuning, study_trials
from training.tune.trial import Objective


def planted_frame(n_users: int = 90, n_items: int = 36, seed: int = 0) -> pd.DataFrame:
    """Three user groups, each mostly meeting its own twelve items (plus two random ones)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        group = user % 3
        own = rng.choice(np.arange(group * 12, group * 12 + 12), size=9, replace=False)
        items = [*own.tolist(), *rng.choice(n_items, size=2, replace=False).tolist()]
        for position, item in enumerate(dict.fromkeys(items)):
            stamp = 1_600_000_000 + 3600 * (user + 100 * position)
            rows.append((f"u{user:03d}", f"i{item:02d}", 1.0, stamp))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def tiny_spec(data_file: Path, name: str = "tiny", **changes) -> ExperimentSpec:
    values = {
        "model": "ease",
        "dataset": str(data_file),
        "search_space": {"l2": {"type": "float", "low": 1.0, "high": 300.0, "log": True}},
        "pruner": "none",
        **changes,
    }
    return parse_experiment_spec(values, name)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune-data") / "planted.csv"
    planted_frame().to_csv(path, index=False)
    return path


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace(home=tmp_path / "ws").ensure()


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_inner_validation_never_touches_the_outer_test_rows(data_file):
    frame = planted_frame()
    for protocol in ("msr", "temporal", "recbole", "leave-last-out"):
        inner, outer = tuning_splits(frame, protocol)
        inner_rows = inner.train.index.union(inner.test.index)
        assert inner_rows.equals(outer.train.index.sort_values()), protocol
        assert not inner_rows.intersection(outer.test.index).size, protocol


def test_budget_resume_and_one_parent_run(data_file, ws):
    spec = tiny_spec(data_file)
    first = run_tuning(ws, spec, trials=3, register=False)
    assert (first.n_trials, first.n_new, first.n_complete) == (3, 3, 3)
    assert first.test_value is not None and first.default_test_value is not None
    assert first.best_value == max(t.value for t in study_trials("tiny", first_storage(ws)))

    # Re-running resumes: finished trials count toward --trials, numbers continue.
    again = run_tuning(ws, spec, trials=5, register=False)
    assert (again.n_trials, again.n_new) == (5, 2)
    assert [t.number for t in study_trials("tiny", first_storage(ws))] == [0, 1, 2, 3, 4]
    assert again.parent_run_id == first.parent_run_id

    client = MlflowClient(ws.mlflow_uri)
    parent = client.get_run(first.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'",
    )
    assert len(children) == 5
    assert {c.data.tags["tailor.trial_state"] for c in children} == {"complete"}
    # Issue #10 item 14: the test value under the one name training and benchmarks use.
    assert parent.data.metrics["ndcg_at_10"] == pytest.approx(again.test_value)
    assert "test_ndcg_at_10" not in parent.data.metrics
    assert parent.data.tags["tailor.metric"] == "ndcg_at_10"


def first_storage(ws: Workspace) -> str:
    return f"sqlite:///{ws.home / 'optuna.db'}"


def test_failed_trials_are_recorded_and_the_study_goes_on(data_file, ws, tmp_path):
    # A learning rate of 1e30 makes NCF's loss NaN in the first epoch: a genuine failure.
    spec = tiny_spec(
        data_file,
        name="failing",
        model="ncf",
        params={"epochs": 2, "learning_rate": 1e30},
        search_space={"factors": {"type": "categorical", "choices": [4, 8]}},
    )
    result = run_tuning(ws, spec, trials=2, storage=_sqlite(tmp_path), register=False)
    assert (result.n_trials, result.n_failed, result.best_value) == (2, 2, None)
    trials = study_trials("failing", _sqlite(tmp_path))
    assert [t.state for t in trials] == ["failed", "failed"]
    assert all("FloatingPointError" in t.error and "nan" in t.error for t in trials)
    client = MlflowClient(ws.mlflow_uri)
    children = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert sorted(c.data.tags["tailor.trial_state"] for c in children) == ["failed", "failed"]
    assert all("FloatingPointError" in c.data.tags["tailor.error"] for c in children)


def test_neural_trials_are_pruned_through_the_model_callback(data_file, ws, tmp_path):
    spec = tiny_spec(
        data_file,
        name="pruned",
        model="ncf",
        params={"epochs": 4, "factors": 4, "mlp_layers": "8,4"},
        search_space={"learning_rate": {"type": "float", "low": 0.001, "high": 0.01}},
    )
    data = prepare_data(spec, ws)
    # NDCG never exceeds 1, so this pruner stops every trial at its first report.
    study = open_study(spec, _sqlite(tmp_path), pruner=optuna.pruners.ThresholdPruner(lower=1.5))
    study.optimize(Objective(spec, data), n_trials=2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert [t.user_attrs["pruned_at_epoch"] for t in trials] == [0, 0]
    assert all(list(t.intermediate_values) == [0] for t in trials)  # the model stopped at once


def test_the_seeded_sampler_repeats_its_parameters(data_file, ws, tmp_path):
    spec = tiny_spec(
        data_file,
        name="seeded",
        model="item_knn",
        search_space={
            "similarity": {"type": "categorical", "choices": ["cosine", "pearson"]},
            "k_neighbours": {"type": "int", "low": 2, "high": 30},
            "shrinkage": {"type": "float", "low": 0.0, "high": 20.0},
        },
    )
    data = prepare_data(spec, ws)
    runs = []
    for name in ("a", "b"):
        study = open_study(spec, f"sqlite:///{tmp_path / name}.db")
        study.optimize(Objective(spec, data), n_trials=4)
        runs.append([(t.params, t.value) for t in study.get_trials()])
    assert runs[0] == runs[1]
    other = open_study(spec, f"sqlite:///{tmp_path / 'c'}.db", seed=spec.seed + 1)
    other.optimize(Objective(spec, data), n_trials=1)
    assert other.get_trials()[0].params != runs[0][0][0]


def test_conditional_parameters_are_sampled_only_when_their_condition_holds(
    data_file, ws, tmp_path
):
    spec = tiny_spec(
        data_file,
        name="conditional",
        model="item_knn",
        search_space={
            "similarity": {"type": "categorical", "choices": ["cosine", "pearson"]},
            "min_support": {"type": "int", "low": 1, "high": 3, "when": {"similarity": "pearson"}},
        },
    )
    study = open_study(spec, _sqlite(tmp_path))
    study.optimize(Objective(spec, prepare_data(spec, ws)), n_trials=6)
    for trial in study.get_trials():
        assert ("min_support" in trial.params) == (trial.params["similarity"] == "pearson")


def test_several_validation_splits_score_a_trial_by_their_mean(data_file, ws, tmp_path):
    """``validation_splits: 3`` draws inner splits with seeds 7, 8, 9 of the same outer train
    part; the trial's value is the mean of its three validation figures, each computed anew."""
    from training.evaluate import fit_and_score

    spec = tiny_spec(data_file, name="folds", validation_splits=3)
    data = prepare_data(spec, ws)
    assert len(data.more_validation) == 2
    outer_train = set(map(tuple, data.outer_train[["user_id", "item_id"]].to_numpy()))
    parts = []
    for evalset in (data.validation, *data.more_validation):
        assert evalset.train.matrix.nnz < len(outer_train)  # an inner train part, not the outer
        parts.append(evalset.train.matrix.nnz)
    study = open_study(spec, _sqlite(tmp_path))
    study.optimize(Objective(spec, data), n_trials=1)
    trial = study.get_trials()[0]
    values = trial.user_attrs["validation_values"]
    assert len(values) == 3 and trial.value == pytest.approx(np.mean(values))
    params = trial.params
    expected = [
        fit_and_score("ease", params, evalset, spec.k).metrics[spec.metric]
        for evalset in (data.validation, *data.more_validation)
    ]
    assert values == pytest.approx(expected)
    assert len(set(values)) > 1  # three different splits, not one scored three times


# -- issue #10: registry names, the MLflow UI and a pyfunc that loads anywhere ------------------
ROOT = Path(__file__).resolve().parents[2]

#: Runs in a fresh interpreter whose cwd is a temp dir and whose PYTHONPATH lacks the repo; the
#: venv's editable install of this checkout is taken off the import system too, so only the code
#: logged with the model can answer.
ISOLATED_LOAD = """
import importlib.util, json, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path_hooks = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
root = sys.argv[3]  # the checkout; a virtualenv inside it (.venv) still provides the libraries
sys.path = [p for p in sys.path if p not in ("", ".", root)
            and not (p.startswith(root + "/") and "site-packages" not in p)]
sys.path_importer_cache.clear()
hidden = {n: importlib.util.find_spec(n) is None for n in ("models", "serving", "training")}
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(pd.DataFrame({"user_id": ["u001", "nobody"], "k": [3, 3]}))
import models
print(json.dumps({"hidden": hidden, "models_file": models.__file__,
                  "rows": out.to_dict(orient="records")}))
"""


@pytest.fixture(scope="module")
def registered(data_file, tmp_path_factory):
    """A two-trial study on the planted file, registered, with MLflow's pyfunc warnings kept."""
    import logging

    ws = Workspace(home=tmp_path_factory.mktemp("registered")).ensure()
    spec = tiny_spec(data_file, name="tiny-registered", description="EASE on the planted file")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    pyfunc_logger.addHandler(handler)
    try:
        result = run_tuning(ws, spec, trials=2, register=True)
    finally:
        pyfunc_logger.removeHandler(handler)
    return ws, spec, result, [r.getMessage() for r in records]


def test_a_public_data_set_model_is_registered_under_its_own_name(registered):
    """Issue #10 item 11: a model tuned on another data set than the workspace's goes to
    ``<data set>-<model>``; the shop's ``tailor-recommender`` is never created or moved."""
    ws, spec, result, _ = registered
    assert spec.registered_model == "planted-ease"
    client = MlflowClient(ws.mlflow_uri, ws.mlflow_uri)
    names = [m.name for m in client.search_registered_models()]
    assert names == ["planted-ease"]
    assert result.registered_version == "1"
    assert client.get_registered_model("planted-ease").aliases == {
        "challenger": 1,
        "champion": 1,
    }
    # Registering that run into the shop's recommender by hand is refused, naming the way out.
    with pytest.raises(PromotionError, match=r"trained on 'planted.csv'.*'planted-ease'"):
        register_run(ws, result.parent_run_id, "tailor-recommender")
    assert [m.name for m in client.search_registered_models()] == ["planted-ease"]


def test_the_movielens_spec_and_the_shop_name_are_kept_apart(data_file):
    """Issue #10 item 11: ``experiments/ease.yaml`` (the MLproject ``tune`` default) registers
    ``movielens-100k-ease``; naming the shop's recommender for it is a spec error."""
    assert load_experiment_spec(ROOT / "experiments/ease.yaml").registered_model == (
        "movielens-100k-ease"
    )
    assert tiny_spec("generated", dataset="generated").registered_model == "tailor-recommender"
    with pytest.raises(
        ConfigError, match=r"key 'registered_model', value 'tailor-recommender'.*'planted.csv'"
    ):
        tiny_spec(data_file, registered_model="tailor-recommender")


def test_experiment_and_runs_read_well_in_the_mlflow_ui(registered):
    """Issue #10 item 13: the experiment carries the spec's description and MLflow 3's kind tag
    for the training view; run names say model, data set and time; the logged model is named
    after the model; a value is a tag or a param, never both."""
    ws, spec, result, messages = registered
    client = MlflowClient(ws.mlflow_uri, ws.mlflow_uri)
    experiment = client.get_experiment_by_name("tiny-registered")
    assert experiment.tags["mlflow.note.content"] == "EASE on the planted file"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.get_run(result.parent_run_id)
    assert parent.info.run_name.startswith("ease study · planted.csv · 20")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert sorted(c.info.run_name.split(" l2=")[0] for c in children) == [
        "trial 0 ease",
        "trial 1 ease",
    ]
    for run in (parent, *children):
        assert not {"model", "dataset", "protocol", "metric", "direction"} & set(run.data.params)
        assert run.data.tags["model"] == "ease"
    assert set(children[0].data.params) == {"l2"}
    models = client.search_logged_models([experiment.experiment_id])
    assert [m.name for m in models] == ["ease"]
    assert not [m for m in messages if "CloudPickle" in m], messages


def test_the_registered_pyfunc_loads_outside_this_checkout(registered, tmp_path):
    """Issue #10 item 13: logged as models-from-code with the packages it imports, the model
    loads and answers in an interpreter that cannot import this repository."""
    import json
    import os
    import subprocess
    import sys

    ws, _, _, _ = registered
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", ISOLATED_LOAD, ws.mlflow_uri, "models:/planted-ease@champion",
         str(ROOT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["hidden"] == {"models": True, "serving": True, "training": True}
    assert answer["models_file"].startswith(str(ws.home / "mlflow" / "artifacts"))
    assert "/code/models/" in answer["models_file"]
    rows = answer["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 1, 2, 3]
    assert {r["strategy"] for r in rows if r["user_id"] == "u001"} == {"model:ease"}
    assert {r["strategy"] for r in rows if r["user_id"] == "nobody"} == {"popular"}
