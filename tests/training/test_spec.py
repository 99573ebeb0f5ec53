"""Tuning specs (issue #4): every shipped spec loads; every mistake names key, value and allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.errors import ConfigError
from models.registry import MODELS
from training.spec import ExperimentSpec, load_experiment_spec, parse_experiment_spec

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

BASE = {
    "model": "ease",
    "search_space": {"l2": {"type": "float", "low": 10.0, "high": 1000.0, "log": True}},
}


def _spec(**changes) -> dict:
    return {**BASE, **changes}


def _error(values: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_experiment_spec(values, "t")
    return str(caught.value)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_in_the_zoo_has_a_spec_that_loads(model):
    spec = load_experiment_spec(EXPERIMENTS / f"{model}.yaml")
    assert isinstance(spec, ExperimentSpec)
    assert spec.model == model and spec.name == model  # file stem = experiment / study name
    assert spec.search_space and spec.trials >= 1
    assert spec.metric == f"ndcg_at_{spec.k}"


def test_the_train_spec_moved_beside_the_tuning_specs():
    from training.config import load_train_config

    assert load_train_config(EXPERIMENTS / "train-ease.yaml").model == "ease"


def test_defaults_and_conditional_parameters():
    spec = parse_experiment_spec(
        {
            "model": "item_knn",
            "search_space": {
                "similarity": {"type": "categorical", "choices": ["cosine", "pearson"]},
                "min_support": {
                    "type": "int",
                    "low": 1,
                    "high": 4,
                    "when": {"similarity": "pearson"},
                },
            },
        },
        "knn",
    )
    assert (spec.dataset, spec.protocol, spec.pruner) == ("movielens-100k", "msr", "median")
    assert spec.feature_service == "user_profile_v1"
    support = spec.search_space[1]
    assert support.when == {"similarity": ("pearson",)}
    assert support.active({"similarity": "pearson"}) and not support.active(
        {"similarity": "cosine"}
    )


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        (_spec(trails=20), ["'trails'", "20", "trials: int"]),
        (_spec(trials="many"), ["key 'trials', value 'many'", "integer"]),
        (_spec(direction="up"), ["key 'direction', value 'up'", "'maximize'", "'minimize'"]),
        (_spec(pruner="asha"), ["key 'pruner', value 'asha'", "'median'", "'hyperband'"]),
        (_spec(protocol="random"), ["key 'protocol', value 'random'", "msr", "leave-last-out"]),
        (_spec(model="svd"), ["key 'model', value 'svd'", "ease", "sasrec"]),
        (_spec(metric="auc"), ["key 'metric', value 'auc'", "ndcg_at_10", "recall_at_10"]),
        (_spec(metric="ndcg_at_5"), ["key 'metric', value 'ndcg_at_5'", "ndcg_at_10"]),
        (_spec(search_space={}), ["key 'search_space', value {}", "empty", "l2"]),
        (_spec(search_space=None), ["key 'search_space', value None", "mapping"]),
        (_spec(params={"l3": 1.0}), ["l3", "allowed parameters", "l2: float"]),
        (_spec(search_space={"alpha": {"type": "float", "low": 1, "high": 2}}),
         ["search_space.alpha", "alpha", "allowed: l2, implicit"]),
        (_spec(search_space={"l2": {"type": "real", "low": 1, "high": 2}}),
         ["key 'search_space.l2.type', value 'real'", "'float'", "'categorical'"]),
        (_spec(search_space={"l2": {"type": "float", "low": 1, "high": 2, "lo": 0}}),
         ["search_space.l2.lo", "value 0", "low:", "choices:"]),
        (_spec(search_space={"l2": {"type": "float", "high": 2.0}}),
         ["search_space.l2.low", "required"]),
        (_spec(search_space={"l2": {"type": "float", "low": 5.0, "high": 2.0}}),
         ["low=5.0", "high=2.0", "low < high"]),
        (_spec(search_space={"l2": {"type": "float", "low": 0.0, "high": 2.0, "log": True}}),
         ["key 'search_space.l2.low', value 0.0", "log scale needs low > 0"]),
        (_spec(search_space={"implicit": {"type": "categorical", "choices": []}}),
         ["key 'search_space.implicit.choices', value []", "non-empty list"]),
        (_spec(search_space={"implicit": {"type": "categorical", "choices": ["yes"]}}),
         ["key 'search_space.implicit.choices[0]', value 'yes'", "bool"]),
        (_spec(params={"l2": 100.0}), ["search_space.l2", "also fixed", "l2=100.0"]),
        (_spec(search_space={
            "l2": {"type": "float", "low": 1, "high": 2, "when": {"implicit": True}}}),
         ["search_space.l2.when.implicit", "categorical parameter listed before"]),
        (_spec(validation_splits=0), ["key 'validation_splits', value 0", "integer >= 1"]),
        (_spec(protocol="temporal", validation_splits=3),
         ["key 'validation_splits', value 3", "'temporal'", "only 'msr'"]),
        (_spec(dataset="cdnow"),
         ["key 'dataset', value 'cdnow'", "nothing to recommend", "movielens-100k"]),
        (_spec(dataset="nowhere.csv"),
         ["key 'dataset', value 'nowhere.csv'", "movielens-100k", "file"]),
    ],
)  # fmt: skip
def test_every_error_names_key_value_and_what_is_allowed(values, fragments):
    message = _error(values)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_int_parameters_need_integer_bounds():
    values = {
        "model": "bpr",
        "search_space": {"factors": {"type": "int", "low": 8.5, "high": 64}},
    }
    message = _error(values)
    assert "key 'search_space.factors.low', value 8.5: expected an integer" in message


def test_a_float_range_on_an_int_parameter_is_rejected():
    values = {"model": "bpr", "search_space": {"factors": {"type": "float", "low": 8, "high": 64}}}
    assert "factors" in _error(values) and "must be int" in _error(values)


def test_load_prefixes_the_file_and_reads_relative_data_files(tmp_path):
    (tmp_path / "data.csv").write_text("user_id,item_id\nu1,i1\n")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(_spec(dataset="data.csv")))
    spec = load_experiment_spec(path)
    assert spec.name == "mine" and spec.dataset == str((tmp_path / "data.csv").resolve())
    path.write_text(yaml.safe_dump(_spec(k=0)))
    with pytest.raises(
        ConfigError, match=r"mine\.yaml: key 'k', value 0: expected an integer >= 1"
    ):
        load_experiment_spec(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: the top level, value \['a list'\]"):
        load_experiment_spec(path)


def test_spec_errors_have_the_shape_of_every_spec_file(tmp_path):
    """issue #10 (one shape): the tuning spec is a pydantic model with unknown keys forbidden;
    its errors have the shape of every other spec and rule file's: file, key path, value,
    what is allowed."""
    path = tmp_path / "mine.yaml"
    search = {"l2": {"type": "float", "low": 1.0, "high": 2.0, "lo": 0}}
    path.write_text(yaml.safe_dump(_spec(search_space=search)))
    with pytest.raises(ConfigError) as caught:
        load_experiment_spec(path)
    assert str(caught.value).startswith(
        f"{path}: key 'search_space.l2.lo', value 0: unknown key; allowed: "
        "type: 'float' | 'int' | 'categorical', low: float | None, high: float | None"
    )
