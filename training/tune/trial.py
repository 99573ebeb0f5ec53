"""One ``tailor tune`` trial (:class:`Objective`): suggest the active search parameters, fit on
the inner train part(s) with pruning through the model callback, score on validation, and log a
child MLflow run (parameters, per-epoch curves, state) whatever happens. Used by
:mod:`training.tune.study`, which runs the study.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from typing import Any

import numpy as np
import optuna

from training import lineage, tracking
from training.evaluate import fit_and_score
from training.spec import ExperimentSpec
from training.tune.splits import TuneData

logger = logging.getLogger(__name__)

#: The per-epoch validation value neural models report (`models.neural.recommender.fit_epochs`).
MONITOR = "val_ndcg_at_10"


def suggest(trial: optuna.Trial, spec: ExperimentSpec) -> dict[str, Any]:
    """The trial's values for the active search parameters, in spec order."""
    chosen: dict[str, Any] = {}
    for param in spec.search_space:
        if not param.active(chosen):
            continue
        if param.type == "categorical":
            chosen[param.name] = trial.suggest_categorical(param.name, list(param.choices))
        elif param.type == "int":
            step = param.step or 1
            chosen[param.name] = trial.suggest_int(
                param.name, param.low, param.high, step=step, log=param.log
            )
        else:
            chosen[param.name] = trial.suggest_float(
                param.name, param.low, param.high, step=param.step, log=param.log
            )
    return chosen


class Objective:
    """One trial: suggest, fit on the inner train part with pruning through the model
    callback, score on validation, and log a child MLflow run whatever happens."""

    def __init__(
        self, spec: ExperimentSpec, data: TuneData, parent_run_id: str | None = None
    ) -> None:
        self.spec = spec
        self.data = data
        self.parent_run_id = parent_run_id

    def __call__(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        curve: list[tuple[int, dict[str, float]]] = []
        state, value, error, searched = "failed", None, "", {}
        try:
            searched = suggest(trial, self.spec)
            value = self._run(trial, {**self.spec.params, **searched}, curve)
            state = "complete"
            return value
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except BaseException as exc:  # KeyboardInterrupt too: the trial is recorded as failed
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", error[:2000])
            logger.warning("trial %d failed: %s", trial.number, error)
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.parent_run_id:
                self._log_child(trial.number, searched, curve, state, value, error, seconds)

    def _run(
        self, trial: optuna.Trial, params: dict[str, Any], curve: list[tuple[int, dict]]
    ) -> float:
        spec = self.spec
        # The model's own validation value is higher-is-better, so it only guides a maximizing
        # study's pruner.
        report_epochs = spec.direction == "maximize"
        pruned_at: list[int] = []

        def callback(epoch: int, metrics: dict[str, float]) -> bool | None:
            curve.append((epoch, dict(metrics)))
            loss = metrics.get("loss")
            if loss is not None and not math.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at epoch {epoch}")
            monitored = metrics.get(MONITOR)
            if report_epochs and monitored is not None and math.isfinite(monitored):
                trial.report(monitored, epoch)
                if trial.should_prune():
                    pruned_at.append(epoch)
                    return False  # the model stops after this epoch
            return None

        report = fit_and_score(
            spec.model, params, self.data.validation, spec.k, callback=callback
        ).metrics
        if pruned_at:
            trial.set_user_attr("pruned_at_epoch", pruned_at[0])
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at[0]}")
        values = [report[spec.metric]]
        for evalset in self.data.more_validation:  # further inner splits: no pruning inside
            values.append(fit_and_score(spec.model, params, evalset, spec.k).metrics[spec.metric])
        if len(values) > 1:
            trial.set_user_attr("validation_values", [float(v) for v in values])
        value = float(np.mean(values))
        if not math.isfinite(value):
            raise ValueError(f"validation {spec.metric} is {value} (per split: {values})")
        if not any(MONITOR in metrics for _, metrics in curve):
            trial.report(value, 0)  # models without per-epoch validation: the final value
        return value

    def _log_child(
        self,
        number: int,
        params: dict[str, Any],
        curve: list[tuple[int, dict[str, float]]],
        state: str,
        value: float | None,
        error: str,
        seconds: float,
    ) -> None:
        tags = {"tailor.trial_state": state, "optuna.trial_number": str(number)}
        tags["optuna.study_name"] = self.spec.name
        tags[lineage.MODEL] = self.spec.model
        if error:
            tags["tailor.error"] = error[:5000]
        try:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in params.items())  # fmt: skip
            name = f"trial {number} {self.spec.model} {shown}".strip()
            with tracking.start_child_run(self.parent_run_id, name, tags):
                tracking.log_params({**self.spec.params, **params})
                # Per-epoch values as steps, prefixed so the model's own ``val_ndcg_at_10``
                # curve is not mistaken for the trial's value on the validation part.
                tracking.log_metric_steps(
                    [(step, {f"epoch_{k}": v for k, v in values.items()}) for step, values in curve]
                )
                final = {"trial_seconds": seconds, "epochs_run": float(len(curve))}
                if value is not None:
                    final[f"val_{self.spec.metric}"] = value
                tracking.log_metrics(final)
        except Exception:  # tracking trouble must not turn a good trial into a failed one
            logger.warning("could not log trial %d to MLflow:\n%s", number, traceback.format_exc())


# -- running ---------------------------------------------------------------------------------
