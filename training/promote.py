"""Registry promotion: register a run's model as the ``challenger``, crown it ``champion`` on a win.

A new model version always takes the alias ``challenger``. It takes ``champion`` only when it
beats the current champion on the metric both runs name (``tailor.metric``), measured on the
same test split (equal ``tailor.split_fingerprint``): numbers from different splits are not
comparable, so a version from another split is refused unless the caller forces it. Every
decision is logged as a run in the ``tailor-promotions`` experiment and tagged on the challenger.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from features.workspace import Workspace
from models.errors import TailorError
from training import lineage, tracking

logger = logging.getLogger(__name__)

DEFAULT_MODEL = lineage.SHOP_MODEL
CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTIONS_EXPERIMENT = "tailor-promotions"
DIRECTIONS = ("maximize", "minimize")

#: Run tags a registrable run must carry; copied onto the model version.
LINEAGE_TAGS = (
    lineage.DATASET,
    lineage.DATASET_FINGERPRINT,
    lineage.PROTOCOL,
    lineage.SPLIT_FINGERPRINT,
    lineage.METRIC,
    lineage.DIRECTION,
    lineage.FEATURE_SERVICE,
    lineage.GIT_COMMIT,
    lineage.MODEL,
)
#: Model-version tag prefix for copied metric values: ``metric.test_ndcg_at_10``.
METRIC_TAG_PREFIX = "metric."
#: Tags the promotion decision leaves on the challenger version.
PROMOTION_TAG = "tailor.promotion"
PROMOTION_REASON_TAG = "tailor.promotion_reason"
PROMOTION_RUN_TAG = "tailor.promotion_run_id"


class PromotionError(TailorError, ValueError):
    """A run or registry state that cannot be registered or promoted; the message says why."""


@dataclass(frozen=True)
class Promotion:
    """The outcome of one :func:`promote` call."""

    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_value: float | None
    champion_value: float | None


def _is_evaluation_metric(name: str) -> bool:
    """Test-set values worth carrying on a version: ``test_*`` and ranking metrics ``*_at_k``."""
    return name.startswith("test_") or "_at_" in name


def register_run(
    ws: Workspace, run_id: str, registered_model: str = DEFAULT_MODEL
) -> tracking.ModelVersion:
    """Register the run's logged model (named after the model, ``model`` in older runs) as a new
    version with alias ``challenger``.

    The version carries the run's lineage tags (:data:`LINEAGE_TAGS`) and its evaluation
    metric values as ``metric.<name>`` tags (the one named by ``tailor.metric`` at least).
    Raises :class:`PromotionError` for an unknown run, a run without a logged model, or a run
    missing lineage tags (naming them), and a model trained on another data set than the
    workspace's for :data:`DEFAULT_MODEL` (the shop's recommender). Returns the ``ModelVersion``.
    """
    tracking.configure(ws)
    run = tracking.find_run(run_id)
    if run is None:
        raise PromotionError(f"no run {run_id!r} in the tracking store at {ws.mlflow_uri}")
    tags = run.data.tags
    missing = [key for key in LINEAGE_TAGS if not tags.get(key)]
    if missing:
        raise PromotionError(
            f"run {run_id} lacks the lineage tag(s) {', '.join(missing)}; a registrable run sets "
            f"all of {', '.join(LINEAGE_TAGS)} (see training/lineage.py)"
        )
    dataset = tags[lineage.DATASET]
    if registered_model == DEFAULT_MODEL and dataset not in lineage.WORKSPACE_DATASETS:
        raise PromotionError(
            f"run {run_id} was trained on {dataset!r}; {DEFAULT_MODEL} holds only models trained "
            f"on the workspace ({lineage.DATASET} {' or '.join(lineage.WORKSPACE_DATASETS)}): "
            f"register it as {lineage.registered_model_name(dataset, tags[lineage.MODEL])!r}"
        )
    metric, direction = tags[lineage.METRIC], tags[lineage.DIRECTION]
    if direction not in DIRECTIONS:
        raise PromotionError(
            f"run {run_id}: {lineage.DIRECTION}={direction!r}; allowed: {', '.join(DIRECTIONS)}"
        )
    metrics = run.data.metrics
    if metric not in metrics:
        raise PromotionError(
            f"run {run_id} names {lineage.METRIC}={metric!r} but logged no such metric; "
            f"it has: {', '.join(sorted(metrics)) or 'none'}"
        )
    logged = tracking.logged_model_names(run)
    if len(logged) != 1:
        raise PromotionError(
            f"run {run_id} logged {len(logged)} models ({', '.join(logged) or 'none'}); "
            "a registrable run logs exactly one"
        )
    version_tags = {key: tags[key] for key in LINEAGE_TAGS}
    version_tags["tailor.run_id"] = run_id
    for name, value in metrics.items():
        if name == metric or _is_evaluation_metric(name):
            version_tags[f"{METRIC_TAG_PREFIX}{name}"] = repr(float(value))
    version = tracking.register_run_model(run_id, logged[0], registered_model, version_tags)
    tracking.set_alias(registered_model, CHALLENGER, version.version)
    logger.info(
        "registered %s version %s from run %s as %s",
        registered_model,
        version.version,
        run_id,
        CHALLENGER,
    )
    return tracking.model_version(registered_model, version.version)


def _value(version: tracking.ModelVersion, metric: str) -> float | None:
    """The version's value of ``metric``: its tag, else its run's logged metric (under the
    metric's one name or the ``test_`` name tune studies used before issue #10)."""
    names = dict.fromkeys((metric, lineage.canonical_metric(metric), f"test_{metric}"))
    for name in names:
        tagged = version.tags.get(f"{METRIC_TAG_PREFIX}{name}")
        if tagged is not None:
            return float(tagged)
    run = tracking.find_run(version.run_id) if version.run_id else None
    for name in names:
        if run is not None and name in run.data.metrics:
            return float(run.data.metrics[name])
    return None


def _beats(challenger: float, champion: float, direction: str) -> bool:
    """A strict win: a tie keeps the champion."""
    return challenger > champion if direction == "maximize" else challenger < champion


def _decide(challenger, champion, force: bool) -> tuple[bool, str, str, float | None, float | None]:
    """(promoted, reason, metric, challenger value, champion value) for two versions."""
    metric = challenger.tags.get(lineage.METRIC, "")
    direction = challenger.tags.get(lineage.DIRECTION, "maximize")
    new_value = _value(challenger, metric) if metric else None
    if champion is None:
        return True, "no champion yet: the challenger becomes champion", metric, new_value, None
    if champion.version == challenger.version:
        reason = f"version {challenger.version} is already the champion"
        return False, reason, metric, new_value, new_value
    old_metric = champion.tags.get(lineage.METRIC, "")
    old_value = _value(champion, metric) if metric else None
    new_split = challenger.tags.get(lineage.SPLIT_FINGERPRINT)
    old_split = champion.tags.get(lineage.SPLIT_FINGERPRINT)
    if not metric or new_value is None:
        refusal = f"the challenger has no value of its metric {metric or '(none named)'!r}"
    elif new_split != old_split:
        refusal = (
            f"the splits differ (challenger split {new_split}, champion split "
            f"{old_split or 'unknown'}): values on different test splits are not comparable"
        )
    elif lineage.canonical_metric(old_metric) != lineage.canonical_metric(metric):
        refusal = f"the metrics differ (challenger {metric!r}, champion {old_metric!r})"
    elif champion.tags.get(lineage.DIRECTION, direction) != direction:
        refusal = f"the directions differ for {metric!r}"
    elif old_value is None or not math.isfinite(old_value):
        refusal = f"the champion has no value of {metric!r}"
    else:
        won = _beats(new_value, old_value, direction)
        relation = "beats" if won else "does not beat"
        goal = "higher" if direction == "maximize" else "lower"
        reason = (
            f"{metric} {new_value:.6f} {relation} the champion's {old_value:.6f} "
            f"on the same split ({goal} is better)"
        )
        if won or not force:
            return won, reason, metric, new_value, old_value
        return True, f"forced: {reason}", metric, new_value, old_value
    if force:
        return True, f"forced: {refusal}", metric, new_value, old_value
    return False, refusal, metric, new_value, old_value


def promote(
    ws: Workspace, registered_model: str = DEFAULT_MODEL, *, force: bool = False
) -> Promotion:
    """Move ``champion`` to the ``challenger`` version when it wins on the same split.

    No champion yet: the challenger becomes champion. Otherwise both versions must carry the same
    ``tailor.split_fingerprint`` and metric, and the challenger must strictly beat the champion
    in ``tailor.direction``. ``force=True`` promotes whatever the comparison says and the reason
    says so. The decision is logged as a run in ``tailor-promotions`` and tagged on the
    challenger version.
    """
    tracking.configure(ws)
    challenger = tracking.alias_version(registered_model, CHALLENGER)
    if challenger is None:
        raise PromotionError(
            f"{registered_model!r} has no {CHALLENGER!r} version in the registry at "
            f"{ws.mlflow_uri}: run `tailor register RUN_ID` first"
        )
    champion = tracking.alias_version(registered_model, CHAMPION)
    promoted, reason, metric, new_value, old_value = _decide(challenger, champion, force)
    if promoted:
        tracking.set_alias(registered_model, CHAMPION, challenger.version)
    result = Promotion(
        promoted=promoted,
        reason=reason,
        challenger_version=str(challenger.version),
        champion_version=None if champion is None else str(champion.version),
        metric=metric,
        challenger_value=new_value,
        champion_value=old_value,
    )
    run_id = _log_decision(ws, registered_model, result, challenger, champion, force)
    tracking.set_version_tags(
        registered_model,
        challenger.version,
        {
            PROMOTION_TAG: "promoted" if promoted else "refused",
            PROMOTION_REASON_TAG: reason,
            PROMOTION_RUN_TAG: run_id,
        },
    )
    logger.info("%s version %s: %s", registered_model, challenger.version, reason)
    return result


def _log_decision(ws: Workspace, name: str, result: Promotion, challenger, champion, force) -> str:
    """One run per decision: both versions' tags and values, the outcome and its reason."""
    params = {
        "registered_model": name,
        "metric": result.metric,
        "challenger_version": result.challenger_version,
        "champion_version": result.champion_version or "none",
        "force": force,
    }
    metrics = {}
    if result.challenger_value is not None:
        metrics["challenger_value"] = result.challenger_value
    if result.champion_value is not None and champion is not None:
        metrics["champion_value"] = result.champion_value
    tags = {
        "tailor.decision": "promoted" if result.promoted else "refused",
        "tailor.reason": result.reason,
    }
    for role, version in (("challenger", challenger), ("champion", champion)):
        if version is None:
            continue
        tags[f"{role}.run_id"] = version.run_id or ""
        for key in (*LINEAGE_TAGS, "tailor.run_id"):
            if key in version.tags:
                tags[f"{role}.{key}"] = version.tags[key]
    experiment_id = tracking.ensure_experiment(ws, PROMOTIONS_EXPERIMENT)
    verb = "promote" if result.promoted else "keep"
    run_name = f"{name}-v{result.challenger_version}-{verb}"
    return tracking.log_detached_run(experiment_id, run_name, params, metrics, tags)
