"""``tailor tune``: Optuna studies over an `ExperimentSpec`, tracked in MLflow (sole Optuna user).

Choosing never sees the test part (`training.tuning_data.tuning_splits`): trials
fit on an inner train part and are scored on a validation part carved from the outer train part:
the same protocol function with another seed for ``msr`` (as ``experiments/select_params.py``)
and the same time cut again for ``temporal``; the protocol's own validation part for ``recbole``
and ``leave-last-out``. With ``validation_splits: N`` (``msr``) a trial is scored by its mean over
N inner splits (seeds 7, 8, ...; the pruner sees the first one's epochs). The best parameters are
then refit on the whole outer train part (train +
validation) and scored once on the test part, beside the model's default parameters on the same
split.

Study: seeded TPE, RDB storage (SQLite in the workspace by default, any SQLAlchemy URL), study name
= spec name, resumed when it exists; ``--trials`` is the study's total, finished trials of earlier
runs included. ``workers`` processes share one study through the storage (each gets an exact
share of the remaining trials, and `optuna.study.MaxTrialsCallback` stops everyone once the study
is full, so machines joining by URL cannot overshoot by more than one trial each). A trial that
raises or gives a NaN loss or metric is recorded as failed with its error; the study goes on.

Pruning: neural models report their own per-epoch validation NDCG@10 (``val_ndcg_at_10``, on the
slice they hold out for early stopping) through the model callback; the trial reports it to the
pruner and asks the model to stop when the pruner says so. Other models report their final
validation value once.

MLflow: one parent run per study (its id is kept in the study's user attributes, so a resumed
study logs into the same parent), one child run per trial, tagged with ``mlflow.parentRunId`` so
nesting works across processes and machines.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from features.workspace import Workspace
from models.bundle import ModelBundle, popularity_order
from training import lineage, tracking
from training.spec import ExperimentSpec, load_experiment_spec
from training.tuning_data import TuneData, fit_and_score, prepare_data

logger = logging.getLogger(__name__)

#: The per-epoch validation value neural models report (`models.neural.fit_epochs`).
MONITOR = "val_ndcg_at_10"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PARENT_ATTR = "mlflow_parent_run_id"


# -- the study -------------------------------------------------------------------------------


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        # Five full curves before judging, and never on the first two epochs (too noisy).
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; allowed: none, median, hyperband")


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


def open_study(
    spec: ExperimentSpec,
    storage_url: str,
    *,
    seed: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create or load the study ``spec.name`` with a TPE sampler seeded ``seed``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are tracked in MLflow
    storage = _storage(storage_url)
    study = optuna.create_study(
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=spec.seed if seed is None else seed),
        pruner=pruner or make_pruner(spec.pruner),
        study_name=spec.name,
        direction=spec.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != spec.direction:
        raise ValueError(
            f"study {spec.name!r} in {mask_url(storage_url)} was created to "
            f"{study.direction.name.lower()}, the spec says {spec.direction}; use another "
            "storage or delete the study"
        )
    return study


def _storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def default_storage(ws: Workspace) -> str:
    return f"sqlite:///{ws.home / 'optuna.db'}"


def mask_url(url: str) -> str:
    """``url`` without a password, safe to log and tag."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def delete_study(name: str, storage_url: str) -> None:
    optuna.delete_study(study_name=name, storage=_storage(storage_url))


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # complete | pruned | failed | running
    value: float | None
    params: dict[str, Any]
    error: str = ""


def study_trials(name: str, storage_url: str) -> list[TrialRecord]:
    """Every trial of study ``name``, by number (for reports and tests)."""
    study = optuna.load_study(study_name=name, storage=_storage(storage_url))
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    states[TrialState.FAIL] = "failed"
    return [
        TrialRecord(
            number=t.number,
            state=states.get(t.state, t.state.name.lower()),
            value=t.value,
            params=dict(t.params),
            error=str(t.user_attrs.get("error", "")),
        )
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ]


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

        _, report = fit_and_score(spec.model, params, self.data.validation, spec.k, callback)
        if pruned_at:
            trial.set_user_attr("pruned_at_epoch", pruned_at[0])
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at[0]}")
        values = [report[spec.metric]]
        for evalset in self.data.more_validation:  # further inner splits: no pruning inside
            values.append(fit_and_score(spec.model, params, evalset, spec.k)[1][spec.metric])
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
        if error:
            tags["tailor.error"] = error[:5000]
        try:
            with tracking.start_child_run(self.parent_run_id, f"trial-{number}", tags):
                tracking.log_params({"model": self.spec.model, **self.spec.params, **params})
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


@dataclass(frozen=True)
class TuneProgress:
    done: int
    total: int
    best_value: float | None
    elapsed: float
    pruned: int = 0
    failed: int = 0


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


@dataclass(frozen=True)
class _WorkerJob:
    spec: ExperimentSpec
    ws: Workspace
    storage_url: str
    experiment_id: str
    parent_run_id: str
    n_trials: int
    total: int
    timeout: float | None
    seed: int


def _optimize(job: _WorkerJob, data: TuneData, callbacks: list | None = None) -> None:
    study = open_study(job.spec, job.storage_url, seed=job.seed)
    stop_when_full = MaxTrialsCallback(job.total, states=FINISHED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            Objective(job.spec, data, job.parent_run_id),
            n_trials=job.n_trials,
            timeout=job.timeout,
            catch=(Exception,),
            callbacks=[stop_when_full, *(callbacks or [])],
            gc_after_trial=True,
        )


@dataclass(frozen=True)
class StudySummary:
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any]
    seconds: float


def optimize_trials(
    spec: ExperimentSpec, data: TuneData, storage_url: str, n_trials: int
) -> StudySummary:
    """Run ``n_trials`` more trials of ``spec``'s study in this process, without MLflow (for
    measurements such as ``experiments/measure_pruning.py``)."""
    study = open_study(spec, storage_url)
    job = _WorkerJob(
        spec=spec,
        ws=Workspace(home=Path(".")),  # unused: no MLflow runs without a parent run id
        storage_url=storage_url,
        experiment_id="",
        parent_run_id="",
        n_trials=n_trials,
        total=len(study.get_trials()) + n_trials,
        timeout=None,
        seed=spec.seed,
    )
    started = time.perf_counter()
    _optimize(job, data)
    seconds = time.perf_counter() - started
    counts = _counts(study)
    best = _best(study)
    return StudySummary(
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        seconds=seconds,
    )


def _worker(job: _WorkerJob) -> None:
    """A worker process: its own data, its own sampler seed, the shared storage and store."""
    logging.basicConfig(level=logging.WARNING)
    try:
        tracking.configure(job.ws)
        tracking.use_experiment(job.experiment_id)
        _optimize(job, prepare_data(job.spec, job.ws))
    except KeyboardInterrupt:
        pass  # the running trial is recorded as failed; finished trials stay


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(FINISHED, 0)
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        counts[trial.state] += 1
    return counts


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _progress_of(study: optuna.Study, total: int, started: float) -> TuneProgress:
    counts = _counts(study)
    best = _best(study)
    return TuneProgress(
        done=sum(counts.values()),
        total=total,
        best_value=None if best is None else best.value,
        elapsed=time.perf_counter() - started,
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
    )


def run_tuning(
    ws: Workspace,
    spec: ExperimentSpec | str | Path,
    *,
    trials: int | None = None,
    storage: str | None = None,
    workers: int = 1,
    timeout: float | None = None,
    register: bool = True,
    progress: Callable[[TuneProgress], None] | None = None,
) -> TuneResult:
    """Run (or resume) the study of ``spec`` until it holds ``trials`` finished trials, then
    refit the best parameters on train + validation, score them and the defaults on the test
    part, log everything to the parent run and, with ``register``, register and promote.

    Ctrl-C stops the workers; finished trials are kept and the result says ``interrupted``.
    """
    if not isinstance(spec, ExperimentSpec):
        spec = load_experiment_spec(spec)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    total = spec.trials if trials is None else trials
    if total < 1:
        raise ValueError(f"trials must be >= 1, got {total}")
    timeout = spec.timeout if timeout is None else timeout
    storage_url = storage or default_storage(ws)
    started = time.perf_counter()

    tracking.configure(ws)
    experiment_id = tracking.experiment(ws, spec.name)
    study = open_study(spec, storage_url)
    parent_run_id = _parent_run(study, spec, experiment_id, storage_url)
    before = _counts(study)
    n_before = sum(before.values())
    remaining = max(0, total - n_before)
    data = prepare_data(spec, ws)
    logger.info("study %s: %d finished trials, %d to run", spec.name, n_before, remaining)

    interrupted = False
    tuning_started = time.perf_counter()
    if remaining:
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        jobs = [
            _WorkerJob(
                spec=spec,
                ws=ws,
                storage_url=storage_url,
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                n_trials=share,
                total=total,
                timeout=timeout,
                # Distinct per worker and per resumption, so no two samplers replay one sequence.
                seed=spec.seed + n_before + 1000 * i,
            )
            for i, share in enumerate(shares)
            if share
        ]
        try:
            if len(jobs) == 1:
                report = None
                if progress is not None:

                    def report(study_: optuna.Study, _trial: Any) -> None:
                        progress(_progress_of(study_, total, started))

                _optimize(jobs[0], data, [report] if report else None)
            else:
                _run_processes(jobs, study, total, started, progress)
        except KeyboardInterrupt:
            interrupted = True
    tuning_seconds = time.perf_counter() - tuning_started
    if progress is not None:
        progress(_progress_of(study, total, started))

    counts = _counts(study)
    best = _best(study)
    result = TuneResult(
        study_name=spec.name,
        storage=mask_url(storage_url),
        experiment=spec.name,
        parent_run_id=parent_run_id,
        n_trials=sum(counts.values()),
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        n_new=sum(counts.values()) - n_before,
        best_params={} if best is None else dict(best.params),
        best_value=None if best is None else best.value,
        best_trial=None if best is None else best.number,
        metric=spec.metric,
        interrupted=interrupted,
        tuning_seconds=tuning_seconds,
    )
    if interrupted or best is None:
        tracking.end_run(parent_run_id, "KILLED" if interrupted else "FAILED")
        return replace(result, seconds=time.perf_counter() - started)
    result = _finish(ws, spec, study, data, result, register)
    return replace(result, seconds=time.perf_counter() - started)


def _run_processes(
    jobs: list[_WorkerJob],
    study: optuna.Study,
    total: int,
    started: float,
    progress: Callable[[TuneProgress], None] | None,
) -> None:
    # spawn: a fresh interpreter per worker (no forked database connections or torch threads).
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(job,), daemon=False) for job in jobs]
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes):
            processes[0].join(timeout=1.0)
            if progress is not None:
                progress(_progress_of(study, total, started))
    except KeyboardInterrupt:
        for process in processes:  # they got the same SIGINT; let them record and leave
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        logger.warning("%d worker process(es) exited with codes %s", len(failed), failed)


def _parent_run(
    study: optuna.Study, spec: ExperimentSpec, experiment_id: str, storage_url: str
) -> str:
    """The study's parent run: the one recorded on the study when it still exists, else new."""
    known = study.user_attrs.get(PARENT_ATTR)
    if known and tracking.run_exists(known):
        return known
    run_id = tracking.create_run(
        experiment_id,
        f"study-{spec.name}",
        {
            "optuna.study_name": spec.name,
            "optuna.storage": mask_url(storage_url),
            "tailor.spec": str(spec.path or ""),
            lineage.MODEL: spec.model,
            lineage.DATASET: _dataset_label(spec),
            lineage.PROTOCOL: spec.protocol,
            lineage.FEATURE_SERVICE: spec.feature_service,
        },
    )
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _dataset_label(spec: ExperimentSpec) -> str:
    """The data set's name: a named one, else the interactions file's name."""
    return (
        spec.dataset if spec.dataset in ("movielens-100k", "generated") else Path(spec.dataset).name
    )


def _finish(
    ws: Workspace,
    spec: ExperimentSpec,
    study: optuna.Study,
    data: TuneData,
    result: TuneResult,
    register: bool,
) -> TuneResult:
    """Refit best and defaults on train + validation, score once on test, log, register."""
    best_params = {**spec.params, **result.best_params}
    model, test_report = fit_and_score(spec.model, best_params, data.test, spec.k)
    _, default_report = fit_and_score(spec.model, {}, data.test, spec.k)
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
        lineage.DATASET: _dataset_label(spec),
        lineage.DATASET_FINGERPRINT: lineage.frame_fingerprint(data.frame),
        lineage.PROTOCOL: spec.protocol,
        lineage.SPLIT_FINGERPRINT: lineage.split_fingerprint(
            data.outer_train, data.outer_test, ["user_id", "item_id"]
        ),
        lineage.METRIC: f"test_{metric}",
        lineage.DIRECTION: spec.direction,
        lineage.FEATURE_SERVICE: spec.feature_service,
        lineage.GIT_COMMIT: lineage.git_commit(),
        lineage.MODEL: spec.model,
        "optuna.best_trial": str(result.best_trial),
    }
    with tracking.resume_run(result.parent_run_id):
        tracking.set_tags(tags)
        tracking.log_params(
            {
                "model": spec.model,
                "dataset": _dataset_label(spec),
                "protocol": spec.protocol,
                "metric": metric,
                "direction": spec.direction,
            }
        )
        # Tags, not params: a resumed study may run with another pruner or sampler seed.
        tracking.set_tags({"tailor.pruner": spec.pruner, "tailor.sampler_seed": str(spec.seed)})
        # Tags, not params: a resumed study may find other best values for the same parent run.
        tracking.set_tags({f"best.{key}": str(v) for key, v in model.config.__dict__.items()})
        # Metrics, not params: a resumed study logs new values into the same parent run.
        test_metrics = {f"test_{key}": v for key, v in test_report.items()}
        tracking.log_metrics({key: v for key, v in test_metrics.items() if math.isfinite(v)})
        tracking.log_metrics(
            {
                f"default_test_{metric}": default_report[metric],
                f"best_val_{metric}": result.best_value,
                "n_trials": result.n_trials,
                "n_complete": result.n_complete,
                "n_pruned": result.n_pruned,
                "n_failed": result.n_failed,
                "tuning_seconds": result.tuning_seconds,
            }
        )
        figures = _figures(study)
        for name, figure in figures.items():
            tracking.log_figure(figure, f"plots/{name}.png")
        _close(figures)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            info = tracking.log_bundle(bundle_dir, list(bundle.users.ids[:2]), spec.k)
    result = replace(
        result,
        test_value=test_report[metric],
        default_test_value=default_report[metric],
        model_uri=info.model_uri,
    )
    if register:
        try:
            from training.promote import promote, register_run
        except ImportError as exc:  # promote.py is written alongside; say so, do not fail
            logger.warning("not registering: training.promote is not available (%s)", exc)
            return result
        version = register_run(ws, result.parent_run_id, spec.registered_model)
        promotion = promote(ws, spec.registered_model)
        result = replace(result, registered_version=str(version.version), promotion=promotion)
    return result


def _figures(study: optuna.Study) -> dict[str, Any]:
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


def _close(figures: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for figure in figures.values():
        plt.close(figure)
