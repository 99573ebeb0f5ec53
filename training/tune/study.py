"""``tailor tune``: Optuna studies over an `ExperimentSpec`, tracked in MLflow. One trial is
:class:`training.tune.trial.Objective`; the refit, test score, logging and registration after the
study are :mod:`training.tune.results`. These three are the only Optuna importers.

Choosing never sees the test part (`training.tune.splits.tuning_splits`): trials
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
import multiprocessing
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from features.workspace import Workspace
from training import lineage, tracking
from training.spec import ExperimentSpec, load_experiment_spec
from training.tune.results import TuneResult, dataset_label, finish_study
from training.tune.splits import TuneData, prepare_data
from training.tune.trial import Objective

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class TuneProgress:
    done: int
    total: int
    best_value: float | None
    elapsed: float
    pruned: int = 0
    failed: int = 0


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
    experiment_id = tracking.experiment(ws, spec.name, spec.description or None)
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
    result = finish_study(ws, spec, study, data, result, register)
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
        lineage.run_name(f"{spec.model} study", spec.params, dataset_label(spec)),
        {
            "optuna.study_name": spec.name,
            "optuna.storage": mask_url(storage_url),
            "tailor.spec": str(spec.path or ""),
            lineage.MODEL: spec.model,
            lineage.DATASET: dataset_label(spec),
            lineage.PROTOCOL: spec.protocol,
            lineage.FEATURE_SERVICE: spec.feature_service,
        },
    )
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id
