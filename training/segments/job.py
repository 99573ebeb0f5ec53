"""One segmentation without Feast or MLflow: settings, fit, profile table, tests, stability.

``training/segments/run.py`` wraps this in the Feast → MLflow → Feast job; data sets without
the event schema (MovieLens-100K, CDNOW) use it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from features.feature_specs import UNCLASSIFIED_ID, UNCLASSIFIED_LABEL
from features.segment_inputs import SegmentInputs
from features.yaml_files import FILE_CONFIG, Invalid, reject_bool_numbers
from models.segments.matching import agreement
from models.segments.segmenter import Segmenter, SegmenterConfig
from models.segments.significance import pair_difference

logger = logging.getLogger(__name__)
Say = Callable[[str], None]

MODEL_NAME = "tailor-segmenter"
EXPERIMENT = "tailor-segment"
#: Truth labels left out of the adjusted Rand index (the generator's random users).
NOISE_TRUTH = ("noise",)


@pydantic_dataclass(frozen=True, config=FILE_CONFIG)
class SegmentJob:
    """The segmenter's settings plus what the job around it does. A spec file (and ``--set``)
    writes the segmenter's keys at the top level, beside the job's."""

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # event data: people with fewer sessions are assigned, not fitted (a handful of sessions gives
    # shares of 0 and 1, not a taste)
    min_sessions: int = 5
    stability_seeds: int = 2  # refits with seeds seed+1.. to measure label stability
    tsne_sample: int = 3000
    plots_dir: str = ""  # default: <home>/models/segment-plots/<source>
    # BLAS/OpenMP threads for the fits; on a busy shared machine OpenMP's spinning threads made
    # k-means and t-SNE 20-50x slower than one thread, so one is the default (0: library default).
    threads: int = 1
    experiment: str = EXPERIMENT
    registered_model: str = MODEL_NAME
    register: bool = True
    force_promote: bool = False

    _no_bool_numbers = field_validator("*", mode="before")(reject_bool_numbers)

    @field_validator("segmenter", mode="before")
    @classmethod
    def _no_bool_segmenter_numbers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            hints = {f.name: f.type for f in fields(SegmenterConfig)}
            for key, given in value.items():
                if isinstance(given, bool) and hints.get(key) in (int, float, "int", "float"):
                    raise Invalid("expected a number", (key,), given)
        return value


def load_segment_job(spec: Path | None = None, sets: list[str] | None = None) -> SegmentJob:
    """Defaults → a YAML spec → ``--set key=value``; keys are :class:`SegmenterConfig` or
    :class:`SegmentJob` fields (flat). Unknown keys and wrong types raise ``ConfigError`` naming
    the file (or ``--set``), the key, the value and the allowed keys."""
    from training.config import load_layers

    return load_layers(SegmentJob, spec, sets, what="segment job spec", flat=("segmenter",))


@dataclass
class SegmentResult:
    segmenter: Segmenter
    assignments: pd.DataFrame  # user_id, segment_id, segment_label (every person)
    table: pd.DataFrame  # one row per segment: id, label, size, share, defining features, p
    tests: pd.DataFrame  # per feature across segments
    merges: pd.DataFrame
    as_of: pd.Timestamp | None
    fit_rows: np.ndarray  # rows of the inputs the segmenter was fitted on
    stability: list[tuple[int, float]]
    run_id: str = ""
    ari: float | None = None
    coverage: dict[str, float] = field(default_factory=dict)  # against the truth, see below
    migration: pd.DataFrame | None = None
    version: str | None = None
    promotion: Any = None  # training.promote.Promotion once registered
    figures: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    consent: Any = None  # features.consent.feature_reads.ConsentDrops of a workspace run


def fit_segmenter(
    inputs: SegmentInputs, config: SegmenterConfig, fit_rows: np.ndarray, say: Say
) -> Segmenter:
    codes, names = inputs.categorical_codes()
    x = inputs.numeric.to_numpy(dtype=float)

    def progress(event: str, info: dict) -> None:
        if event == "k":
            say(f"{info['algorithm']} k={info['k']}: silhouette {info['silhouette']:.3f}")

    return Segmenter(config).fit(
        x[fit_rows], list(inputs.numeric.columns), categorical=codes[fit_rows],
        categorical_names=names, groups=inputs.groups, log_features=inputs.log_features,
        vocabulary=inputs.vocabulary, default_noun=inputs.default_noun, callback=progress,
    )  # fmt: skip


def segment_table(segmenter: Segmenter, inputs: SegmentInputs, fit_rows: np.ndarray):
    """Per segment: id, label, size, share, top features with z, and the smallest corrected
    p-value against its nearest neighbour (the pair test of the consolidation)."""
    labels = segmenter.assignments
    x = segmenter.preprocessor.logged(inputs.numeric.to_numpy(dtype=float)[fit_rows])
    codes, names = inputs.categorical_codes()
    dist = np.linalg.norm(segmenter.centers[:, None] - segmenter.centers[None, :], axis=2)
    np.fill_diagonal(dist, np.inf)
    rows = []
    for s, profile in enumerate(segmenter.profiles):
        p_value, feature, neighbour = np.nan, "", -1
        if len(segmenter.profiles) > 1:
            neighbour = int(np.argmin(dist[s]))
            p_value, feature = pair_difference(
                x, segmenter.feature_names, labels, s, neighbour, codes[fit_rows], names
            )
        rows.append(
            {
                "segment_id": int(segmenter.ids[s]),
                "label": segmenter.labels[s],
                "size": profile.size,
                "share": round(profile.share, 4),
                "defining_features": ", ".join(
                    f"{f} {profile.z[f]:+.2f}" for f in profile.top_features
                ),
                "nearest_segment": int(segmenter.ids[neighbour]) if neighbour >= 0 else -1,
                "neighbour_p_bonferroni": p_value,
                "neighbour_feature": feature,
                "description": segmenter.descriptions[s],
            }
        )
    return pd.DataFrame(rows)


def stability(
    inputs: SegmentInputs, job: SegmentJob, fit_rows: np.ndarray, reference: np.ndarray
) -> list[tuple[int, float]]:
    """Share of fitted users under the same segment when refitting with other seeds."""
    out = []
    for offset in range(1, job.stability_seeds + 1):
        seed = job.segmenter.seed + offset
        config = SegmenterConfig(**{**asdict(job.segmenter), "seed": seed})
        other = fit_segmenter(inputs, config, fit_rows, lambda m: None)
        out.append((seed, agreement(reference, other.assignments)))
    return out


def _frames(segmenter: Segmenter) -> tuple[pd.DataFrame, pd.DataFrame]:
    tests = pd.DataFrame([asdict(t) for t in segmenter.report.tests])
    merges = pd.DataFrame(
        [asdict(m) for m in segmenter.report.merges],
        columns=["absorbed", "into", "reason", "absorbed_size", "p_value", "feature"],
    )
    return tests, merges


def run_segmentation(
    inputs: SegmentInputs, job: SegmentJob, fit_mask: np.ndarray, say: Say
) -> SegmentResult:
    """Fit on ``fit_mask`` rows, assign every row, profile, test and measure stability."""
    fit_rows = np.flatnonzero(fit_mask)
    if len(fit_rows) < max(3, job.segmenter.k_min + 1):
        raise ValueError(f"only {len(fit_rows)} users qualify for fitting; need more data")
    say(f"fitting on {len(fit_rows)} of {len(fit_mask)} users")
    segmenter = fit_segmenter(inputs, job.segmenter, fit_rows, say)
    index = segmenter.predict(inputs.numeric.to_numpy(dtype=float))
    index[fit_rows] = segmenter.assignments
    table = segment_table(segmenter, inputs, fit_rows)
    say(f"stability over {job.stability_seeds} other seed(s)")
    stable = stability(inputs, job, fit_rows, segmenter.assignments)
    tests, merges = _frames(segmenter)
    ids, labels = segment_names(segmenter.ids, segmenter.labels, index)
    assignments = pd.DataFrame(
        {"user_id": inputs.user_ids, "segment_index": index, "segment_id": ids,
         "segment_label": labels}
    )  # fmt: skip
    if (index < 0).any():
        say(f"{int((index < 0).sum())} people fit no segment: {UNCLASSIFIED_LABEL}")
    return SegmentResult(segmenter, assignments, table, tests, merges, None, fit_rows, stable)


def segment_names(
    ids: np.ndarray, labels: list[str], index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(segment_id, segment_label)`` per person from segment indices; index ``-1`` (no
    segment fits) becomes :data:`UNCLASSIFIED_ID`, :data:`UNCLASSIFIED_LABEL`."""
    index = np.asarray(index)
    known = index >= 0
    out_ids = np.where(known, np.asarray(ids)[np.where(known, index, 0)], UNCLASSIFIED_ID)
    names = np.asarray(labels, dtype=object)[np.where(known, index, 0)]
    return out_ids.astype(np.int64), np.where(known, names, UNCLASSIFIED_LABEL).astype(object)


def adjusted_rand(assignments: pd.DataFrame, truth: pd.DataFrame) -> float:
    """ARI of ``segment_id`` against ``truth`` (``user_id`` + one label column) on shared users,
    leaving out the truth's noise users (:data:`NOISE_TRUTH`, who follow no persona); people
    left ``Unclassified`` count as one more label, so leaving persona users out costs ARI."""
    from sklearn.metrics import adjusted_rand_score

    label = [c for c in truth.columns if c != "user_id"][0]
    truth = truth[~truth[label].isin(NOISE_TRUTH)]
    joined = assignments.merge(truth[["user_id", label]], on="user_id")
    if joined.empty:
        raise ValueError("no user of the ground truth file was segmented")
    return float(adjusted_rand_score(joined[label], joined["segment_id"]))


def truth_coverage(assignments: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Shares of the truth's noise users left ``Unclassified`` and of its persona users given a
    segment (the outlier option's two targets); empty without noise users in the truth."""
    label = [c for c in truth.columns if c != "user_id"][0]
    joined = assignments.merge(truth[["user_id", label]], on="user_id")
    noise = joined[label].isin(NOISE_TRUTH)
    unclassified = joined["segment_label"] == UNCLASSIFIED_LABEL
    out = {"persona_assigned": float((~unclassified[~noise]).mean())}
    if noise.any():
        out["noise_unassigned"] = float(unclassified[noise].mean())
    return out
