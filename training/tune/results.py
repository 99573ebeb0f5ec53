"""The end of a ``tailor tune`` study: refit the best parameters on train + validation, score
them and the model's defaults once on the test part, log figures, metrics, lineage tags and the
model on the study's parent MLflow run, and register + promote it (`training.promote`).

Kept apart from :mod:`training.tune.study` (trials, storage, workers); both are the project's only
Optuna importers.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from features.workspace import Workspace
from models.bundle import ModelBundle, popularity_order
from training import lineage, tracking
from training.evaluate import fit_and_score
from training.promote import promote, register_run
from training.spec import ExperimentSpec
from training.tune.splits import TuneData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str  # password masked
    experiment: str
    parent_run_id: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_new: int
    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    test_value: float | None = None
    default_test_value: float | None = None
    metric: str = "ndcg_at_10"
    model_uri: str = ""
    registered_version: str | None = None
    promotion: Any = None
    interrupted: bool = False
    seconds: float = 0.0
    tuning_seconds: float = 0.0


def dataset_label(spec: ExperimentSpec) -> str:
    """The data set's name: a named one, else the interactions file's name."""
    return (
        spec.dataset if spec.dataset in ("movielens-100k", "generated") else Path(spec.dataset).name
    )


def finish_study(
    ws: Workspace,
    spec: ExperimentSpec,
    study: optuna.Study,
    data: TuneData,
    result: TuneResult,
    register: bool,
) -> TuneResult:
    """Refit best and defaults on train + validation, score once on test, log, register."""
    best_params = {**spec.params, **result.best_params}
    best = fit_and_score(spec.model, best_params, data.test, spec.k)
    model, test_report = best.model, {**best.metrics, "fit_seconds": best.fit_seconds}
    default_report = fit_and_score(spec.model, {}, data.test, spec.k).metrics
    metric = spec.metric
    bundle = ModelBundle(
        model_name=spec.model,
        model=model,
        users=data.test.train.users,
        items=data.test.train.items,
        history=data.test.train.matrix,
        popular=popularity_order(data.test.train.matrix),
        item_categories=data.item_categories,
    )
    tags = {
        lineage.DATASET: dataset_label(spec),
        lineage.DATASET_FINGERPRINT: lineage.frame_fingerprint(data.frame),
        lineage.PROTOCOL: spec.protocol,
        lineage.SPLIT_FINGERPRINT: lineage.split_fingerprint(
            data.outer_train, data.outer_test, ["user_id", "item_id"]
        ),
        lineage.METRIC: metric,  # the test value, under the name training and benchmarks use
        lineage.DIRECTION: spec.direction,
        lineage.FEATURE_SERVICE: spec.feature_service,
        lineage.GIT_COMMIT: lineage.git_commit(),
        lineage.MODEL: spec.model,
        "optuna.best_trial": str(result.best_trial),
    }
    with tracking.resume_run(result.parent_run_id):
        tracking.set_tags(tags)
        # Tags, not params: a resumed study may run with another pruner or sampler seed.
        tracking.set_tags({"tailor.pruner": spec.pruner, "tailor.sampler_seed": str(spec.seed)})
        # Tags, not params: a resumed study may find other best values for the same parent run.
        tracking.set_tags({f"best.{key}": str(v) for key, v in model.config.__dict__.items()})
        # Metrics, not params: a resumed study logs new values into the same parent run.
        # The test values under the names `tailor train` and `tailor benchmark` use, so
        # `tailor compare` ranks studies and training runs on one metric (issue #10 item 14).
        tracking.log_metrics({key: v for key, v in test_report.items() if math.isfinite(v)})
        tracking.log_metrics(
            {
                f"default_{metric}": default_report[metric],
                f"best_val_{metric}": result.best_value,
                "n_trials": result.n_trials,
                "n_complete": result.n_complete,
                "n_pruned": result.n_pruned,
                "n_failed": result.n_failed,
                "tuning_seconds": result.tuning_seconds,
            }
        )
        figures = study_figures(study)
        for name, figure in figures.items():
            tracking.log_figure(figure, f"plots/{name}.png")
        close_figures(figures)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            info = tracking.log_bundle(
                bundle_dir, list(bundle.users.ids[:2]), spec.k, name=spec.model
            )
    result = replace(
        result,
        test_value=test_report[metric],
        default_test_value=default_report[metric],
        model_uri=info.model_uri,
    )
    if register:
        version = register_run(ws, result.parent_run_id, spec.registered_model)
        promotion = promote(ws, spec.registered_model)
        result = replace(result, registered_version=str(version.version), promotion=promotion)
    return result


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optimization history, parameter importances, parallel coordinates (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    figures = {}
    makers = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            try:
                axes = make(study)
            except Exception as exc:  # e.g. importances need two complete trials
                logger.info("no %s plot: %s", name, exc)
                continue
            first = np.asarray(axes).ravel()[0]
            figure = first.figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figures[name] = figure
    return figures


def close_figures(figures: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for figure in figures.values():
        plt.close(figure)
