"""``tailor segment``: user features as of a date (from Feast) → segments → MLflow, Feast, CSV.

The job reads each person's point-in-time user features through the ``user_profile_v1`` feature
service, fits :class:`models.segments.Segmenter` on people with at least ``min_sessions``
sessions in 30 days (fewer sessions give noisy rates) and assigns everyone else with features to
the nearest segment; people without a feature row at the as-of time (no event in the feature
TTL) get segment ``-1``, ``Dormant``. Segment ids are matched to the workspace's previous run
(Hungarian matching on centroids) and a migration matrix says who moved where. The run logs
curves, plots, tables and the segmenter to MLflow, registers it as ``tailor-segmenter``
(challenger → champion through ``training.promote``), and writes ``user_segments`` to Feast
(offline table, registry, online store). MovieLens-100K and CDNOW are not event-schema data:
:func:`segment_dataset` segments them from their own files, without Feast or the registry.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features import store
from features.consent.check import ConsentCheck
from features.consent.feature_reads import PERSONALIZATION, ConsentDrops
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.segment_inputs import cdnow_inputs, event_inputs, movielens_inputs
from features.workspace import Workspace
from models.segments.matching import contingency
from models.segments.segmenter import Segmenter
from training import lineage, tracking
from training.promote import promote, register_run
from training.segments.job import (
    SegmentJob,
    SegmentResult,
    adjusted_rand,
    run_segmentation,
    segment_names,
    truth_coverage,
)
from training.segments.report import segment_figures

logger = logging.getLogger(__name__)
Say = Callable[[str], None]

DORMANT_ID, DORMANT_LABEL = -1, "Dormant"


# -- the workspace path: Feast in, Feast / MLflow / CSV out ------------------------------------
def user_features_as_of(ws: Workspace, as_of: pd.Timestamp | None):
    """(as-of, persons seen before it, their point-in-time user features from Feast, what
    consent left out). People without ``personalization`` (issue #12) are left out of the run:
    at the as-of time (the consent view's point-in-time join) and now (a withdrawal since then
    counts too), so they are neither clustered nor given a segment, not even ``Dormant``."""
    events = EventLog(ws.event_log_dir).read()
    if events.empty:
        raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
    if as_of is None:
        as_of = events["timestamp"].max().floor("D") + pd.Timedelta(days=1)
    before = events[events["timestamp"] < as_of]
    persons = pd.unique(IdentityGraph.for_workspace(ws).canonical_keys(before))
    if len(persons) == 0:
        raise ValueError(f"no event before as-of {as_of}; the log starts {events.timestamp.min()}")
    entity_df = pd.DataFrame({"user_id": persons, "event_timestamp": as_of, "device_type": "other"})
    features, _ = store.consented_historical_features(ws, entity_df, store.USER_SERVICE)
    now = ConsentCheck.for_workspace(ws).decide_many(features["user_id"], PERSONALIZATION)
    features = features.loc[np.array([now[p].allowed for p in features["user_id"]], dtype=bool)]
    kept = persons[np.isin(persons, features["user_id"].to_numpy())]
    if len(kept) == 0:
        raise ValueError(
            f"none of the {len(persons)} people seen before {as_of} has given {PERSONALIZATION} "
            "consent: there is no one to segment (import consent with `tailor consent import`)"
        )
    drops = ConsentDrops.of(PERSONALIZATION, persons, np.isin(persons, kept))
    features = features.drop_duplicates("user_id").set_index("user_id").reindex(kept)
    return as_of, kept, features.reset_index(), drops


def _previous(ws: Workspace) -> tuple[Segmenter | None, pd.DataFrame | None]:
    folder = ws.models_dir / "segmenter"
    if not (folder / "segmenter.json").exists():
        return None, None
    return Segmenter.load(folder), pd.read_parquet(folder / "assignments.parquet")


def migration_matrix(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Users per (previous segment, current segment) among users in both runs."""
    both = previous.merge(current, on="user_id", suffixes=("_before", "_now"))
    rows, cols, counts = contingency(
        both["segment_label_before"].to_numpy(), both["segment_label_now"].to_numpy()
    )
    return pd.DataFrame(counts, index=pd.Index(rows, name="before"), columns=cols)


def segment_workspace(
    ws: Workspace,
    job: SegmentJob,
    as_of: pd.Timestamp | None = None,
    truth: pd.DataFrame | None = None,
    out: Path | None = None,
    say: Say | None = None,
    one_off: bool = False,
) -> SegmentResult:
    """Segment every person of the workspace as of ``as_of`` (default: the end of the log).

    ``one_off`` (``tailor segment --events F``): log the run and write the CSV only; the
    workspace's own segmentation (registered model, champion, ``user_segments`` in Feast, the
    segmenter the next run matches ids to) is left as it was.
    """
    say = say or logger.info
    with _threads(job.threads):
        return _segment_workspace(ws, job, as_of, truth, out, say, one_off)


def _threads(n: int):
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n) if n > 0 else nullcontext()


def _segment_workspace(ws, job, as_of, truth, out, say, one_off=False) -> SegmentResult:
    as_of, persons, features, drops = user_features_as_of(ws, as_of)
    say(
        f"{len(persons)} people as of {as_of}; user features read from Feast; "
        f"{drops.people_dropped} left out without {PERSONALIZATION} consent"
    )
    active = features["sessions_30d"].notna().to_numpy()
    inputs = event_inputs(features[active])
    fit_mask = inputs.numeric["sessions_30d"].to_numpy() >= job.min_sessions
    result = run_segmentation(inputs, job, fit_mask, say)
    previous, previous_assignments = (None, None) if one_off else _previous(ws)
    if previous is not None and previous.feature_names == result.segmenter.feature_names:
        ids = result.segmenter.match_previous(previous)
        result = _relabel(result, ids)
        result.migration = migration_matrix(previous_assignments, result.assignments)
        say(f"matched {len(ids)} segments to the previous run")
    dormant = pd.DataFrame({"user_id": persons[~active], "segment_id": DORMANT_ID,
                            "segment_label": DORMANT_LABEL})  # fmt: skip
    result.assignments = pd.concat(
        [result.assignments.drop(columns="segment_index"), dormant], ignore_index=True
    )
    result.as_of = as_of
    result.consent = drops
    if truth is not None:
        result.ari = adjusted_rand(result.assignments, truth)
        result.coverage = truth_coverage(result.assignments, truth)
        shares = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in result.coverage.items())
        say(f"adjusted Rand index against the ground truth (non-noise): {result.ari:.3f}; {shares}")
    if one_off:
        _log(ws, replace(job, register=False), result, inputs, features, say)
        say("one-off run on a file: the workspace's segmenter and Feast segments are unchanged")
    else:
        _write_feast(ws, result, say)
        _log(ws, job, result, inputs, features, say)
        _keep_for_next_run(ws, result)
    if out is not None:
        write_csv(result.assignments, out)
    return result


def segment_events(
    ws: Workspace, events_file: Path, job: SegmentJob, out: Path, truth=None, say: Say | None = None
) -> SegmentResult:
    """The whole path for an events file: import → features → Feast → segments → CSV."""
    from features.build import build_feature_tables, feature_time_range
    from features.ingest import ingest_file

    say = say or logger.info
    report = ingest_file(Path(events_file), EventLog(ws.event_log_dir), ws.quarantine_dir)
    counts = f"{report.accepted} accepted, {report.duplicate} duplicate, {report.rejected} rejected"
    say(f"imported {events_file}: {counts}")
    built = build_feature_tables(ws)
    fs = store.apply(ws)
    start, end = feature_time_range(ws)
    store.materialize(ws, start.to_pydatetime(), end.to_pydatetime(), store=fs)
    say(f"features: {built.rows['user_features']} user rows, {len(built.snapshots)} snapshots")
    return segment_workspace(ws, job, built.end, truth=truth, out=out, say=say, one_off=True)


def _relabel(result: SegmentResult, ids: np.ndarray) -> SegmentResult:
    index = result.assignments["segment_index"].to_numpy()
    segment_ids, labels = segment_names(ids, result.segmenter.labels, index)
    result.assignments["segment_id"] = segment_ids
    result.assignments["segment_label"] = labels
    result.table["segment_id"] = ids
    nearest = result.table["nearest_segment"].to_numpy()  # indices until now
    result.table["nearest_segment"] = np.where(nearest >= 0, ids[np.maximum(nearest, 0)], -1)
    result.table.insert(2, "fresh_label", result.segmenter.report.fresh_labels)
    result.table["label"] = result.segmenter.labels
    return result


def write_csv(assignments: pd.DataFrame, out: Path) -> Path:
    """``user_id,segment_id,segment_label``, one row per person, sorted by user id."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = assignments[["user_id", "segment_id", "segment_label"]].sort_values("user_id")
    frame.to_csv(out, index=False)
    return out


def _write_feast(ws: Workspace, result: SegmentResult, say: Say) -> None:
    frame = result.assignments.assign(event_timestamp=result.as_of, created=result.as_of)
    store.write_segments(ws, frame)
    fs = store.apply_segments(ws)
    store.materialize_segments(ws, fs)
    say(f"wrote {len(frame)} assignments to Feast ({store.SEGMENT_SERVICE}, online and offline)")


def _keep_for_next_run(ws: Workspace, result: SegmentResult) -> None:
    folder = ws.models_dir / "segmenter"
    if folder.exists():
        shutil.rmtree(folder)
    result.segmenter.save(folder)
    result.assignments[["user_id", "segment_id", "segment_label"]].to_parquet(
        folder / "assignments.parquet", index=False
    )


def _log(ws, job, result, inputs, features, say) -> None:
    segmenter = result.segmenter
    # Same people with the same features as of the same time → the same prints, so a rerun's
    # silhouette is compared with the champion's on equal terms.
    people = features[["user_id"]].assign(as_of=str(result.as_of))
    numeric = features[["user_id", *inputs.numeric.columns.intersection(features.columns)]]
    tags = {
        lineage.DATASET: "workspace-events",
        lineage.DATASET_FINGERPRINT: lineage.frame_fingerprint(numeric.fillna(0)),
        lineage.PROTOCOL: f"segment-as-of-{result.as_of.date()}",
        lineage.SPLIT_FINGERPRINT: lineage.frame_fingerprint(people),
        lineage.METRIC: "silhouette",
        lineage.DIRECTION: "maximize",
        lineage.FEATURE_SERVICE: store.USER_SERVICE,
        lineage.GIT_COMMIT: lineage.git_commit(),
        lineage.MODEL: f"segmenter-{segmenter.report.algorithm}",
        "tailor.output_feature_service": store.SEGMENT_SERVICE,
        "tailor.as_of": str(result.as_of),
        "tailor.workspace": str(ws.home),
    }
    log_run(ws, job, result, inputs, tags, dataset=(features, str(ws.feature_data_dir)), say=say)
    if job.register:
        version = register_run(ws, result.run_id, job.registered_model)
        result.version = str(version.version)
        result.promotion = promote(ws, job.registered_model, force=job.force_promote)
        say(f"{job.registered_model}@{result.version}: {result.promotion.reason}")


def log_run(ws, job, result, inputs, tags, dataset=None, say: Say | None = None) -> str:
    """One MLflow run: parameters, curves, quality, tables, figures and the segmenter model."""
    segmenter = result.segmenter
    tracking.configure(ws)
    tracking.experiment(ws, job.experiment)
    with (
        tracking.start_run(f"segment-{inputs.source}") as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        tracking.set_tags(tags)
        tracking.log_params(asdict(job.segmenter))
        tracking.log_params({"min_sessions": job.min_sessions, "n_users": len(result.assignments),
                             "n_fit": len(result.fit_rows), "source": inputs.source})  # fmt: skip
        blocks = sorted(set(inputs.groups.values()))
        tracking.log_params({
            "n_inputs": len(segmenter.feature_names),
            "inputs": ",".join(c for c in segmenter.feature_names if c not in inputs.groups),
            "input_blocks": ",".join(blocks),
            "log_inputs": ",".join(inputs.log_features),
        })  # fmt: skip
        metrics = {f"final_{k}": v for k, v in segmenter.report.quality.items()}
        metrics |= {
            "n_unclassified": segmenter.report.unassigned,
            "silhouette": segmenter.report.quality["silhouette"],
            "k_selected": segmenter.report.k_selected,
            "k_final": len(segmenter.labels),
            "n_merges": len(segmenter.report.merges),
        }
        if result.stability:
            metrics["stability_min"] = min(a for _, a in result.stability)
        if result.consent is not None:  # people left out for consent (issue #12)
            metrics |= result.consent.metrics()
        if result.ari is not None:
            metrics["ari_ground_truth"] = result.ari
            metrics |= result.coverage
        tracking.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for curve in segmenter.report.curves:
            tracking.log_metric_steps([
                (k, {f"{curve.algorithm}_{m}": curve.value_at(m, k) for m in curve.values})
                for k in curve.ks
            ])  # fmt: skip
        if dataset is not None:
            tracking.log_dataset(dataset[0], f"user-features@{result.as_of}", "training",
                                 dataset[1])  # fmt: skip
        for name, table in (("segments", result.table), ("tests", result.tests),
                            ("merges", result.merges), ("inputs", input_table(segmenter)),
                            ("k_selection", k_table(segmenter))):  # fmt: skip
            tracking.log_table(table, f"tables/{name}.csv")
        if result.migration is not None:
            tracking.log_table(result.migration.reset_index(), "tables/migration.csv")
        plots = Path(job.plots_dir or ws.models_dir / "segment-plots" / inputs.source)
        result.figures = segment_figures(result, inputs, job, plots)
        tracking.log_artifacts(plots, "plots")
        model_dir = segmenter.save(Path(tmp) / "segmenter")
        example = inputs.numeric.head(2).reset_index(drop=True)
        tracking.log_segmenter(model_dir, example, name=tags.get(lineage.MODEL, "segmenter"))
    result.run_id = run.info.run_id
    if say is not None:
        say(f"MLflow run {result.run_id} ({len(result.figures)} plots in {plots})")
    return result.run_id


def input_table(segmenter) -> pd.DataFrame:
    """The inputs a run used: name, block, log1p or not, centre, scale and weight."""
    pre = segmenter.preprocessor
    return pd.DataFrame(
        {
            "input": segmenter.feature_names,
            "logged": pre.log_mask,
            "center": pre.center,
            "scale": pre.scale,
            "weight": pre.weights,
        }
    )


def k_table(segmenter) -> pd.DataFrame:
    """Every k-selection criterion per algorithm and k, each criterion's own k and the rule's."""
    frames = []
    for curve in segmenter.report.curves:
        frame = pd.DataFrame({"algorithm": curve.algorithm, "k": curve.ks, **curve.values})
        frame["chosen"] = frame["k"] == curve.chosen_k
        frame["voted_by"] = [
            ",".join(c for c, v in curve.votes.items() if v == k) for k in curve.ks
        ]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# -- real data sets without the event schema (no Feast, no registry) ----------------------------
def segment_dataset(ws: Workspace, name: str, job: SegmentJob, say: Say | None = None):
    """Segment MovieLens-100K users or CDNOW customers straight from the data set files."""
    from features.datasets.load import load

    say = say or logger.info
    data = load(name, ws.raw_dir)
    if name == "movielens-100k":
        inputs = movielens_inputs(data.users, data.interactions, data.items)
    elif name == "cdnow":
        inputs = cdnow_inputs(data.interactions)
    else:
        raise ValueError(f"unknown data set {name!r}; allowed: movielens-100k, cdnow")
    say(f"{name}: {len(inputs.user_ids)} users, features {list(inputs.numeric.columns)[:6]}…")
    with _threads(job.threads):
        result = run_segmentation(inputs, job, np.ones(len(inputs.user_ids), dtype=bool), say)
        result.assignments = result.assignments.drop(columns="segment_index")
        algorithm = result.segmenter.report.algorithm
        tags = {lineage.DATASET: name, lineage.MODEL: f"segmenter-{algorithm}",
                lineage.GIT_COMMIT: lineage.git_commit(), "tailor.feast": "bypassed"}  # fmt: skip
        log_run(ws, job, result, inputs, tags, say=say)
    return result
