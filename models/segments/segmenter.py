"""The segmenter: scale → choose algorithm and k → consolidate → name → (match previous ids).

Data comes in as arrays: ``x`` (n, d) numeric features with their names, optional categorical
codes (n, c) used only by the significance tests, feature blocks, heavy-tailed columns and a
label vocabulary. Progress goes through ``callback(event, info)``; nothing is logged to a
tracker here (see ``training/segments/run.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.errors import DataError
from models.segments.labels import Profile, Vocabulary, describe, name_segments, profiles
from models.segments.matching import match_centroids
from models.segments.outliers import UNASSIGNED, OutlierModel, fit_outlier_model
from models.segments.preprocess import SCALINGS, Preprocessor, fit_preprocessor
from models.segments.selection import (
    ALGORITHMS,
    CRITERIA,
    HIGHER_IS_BETTER,
    K_ALGORITHMS,
    Callback,
    KCurve,
    centroids,
    nearest,
    quality,
    select_k,
)
from models.segments.significance import FeatureTest, Merge, consolidate, feature_tests

#: ``outliers`` values: keep everyone in a segment, or leave people who fit none unassigned.
OUTLIER_METHODS = ("none", "gmm")

#: ``algorithm="auto"`` compares these and keeps the best by the criterion (silhouette for the
#: rules that are not one index); DBSCAN is available by name but its single eps rarely suits
#: mixed densities.
AUTO_ALGORITHMS = ("kmeans", "gmm", "agglomerative", "hdbscan")


@dataclass(frozen=True)
class SegmenterConfig:
    """How to segment. ``min_size`` < 1 is a share of users, else a count."""

    algorithm: str = "kmeans"  # one of ALGORITHMS, or "auto"
    scaling: str = "zscore"  # zscore | minmax
    pca: float = 0  # 0 off; int >= 1 components; float in (0, 1) variance kept
    k_min: int = 2
    k_max: int = 10
    # combined (the documented rule of models.segments.criteria) | silhouette | elbow |
    # davies_bouldin | calinski_harabasz | gap | bic
    criterion: str = "combined"
    tolerance: float = 0.03  # single index criteria: smallest k within this share of the best
    block_power: float = 0.0  # share-block weight size**-block_power (0: each share like a rate)
    pooled_blocks: bool = True  # one scale per share block, so shares stay comparable
    # none | gmm (posterior cut, below); with hdbscan/dbscan any value but none keeps their noise
    outliers: str = "none"
    outlier_posterior: float = 0.9  # gmm: a person needs this posterior for their best segment
    min_size: float = 0.02
    alpha: float = 0.01
    z_min: float = 0.5  # |z| a feature needs to name a segment
    seed: int = 0
    silhouette_sample: int = 3000
    max_fit_samples: int = 10_000

    def __post_init__(self) -> None:
        allowed = {"algorithm": (*ALGORITHMS, "auto"), "scaling": SCALINGS, "criterion": CRITERIA,
                   "outliers": OUTLIER_METHODS}  # fmt: skip
        for key, choices in allowed.items():
            if getattr(self, key) not in choices:
                raise ValueError(f"{key}={getattr(self, key)!r}; allowed: {', '.join(choices)}")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got k_min={self.k_min} k_max={self.k_max}")
        if not 0 < self.alpha < 1 or self.min_size < 0 or self.pca < 0:
            raise ValueError(f"need 0 < alpha < 1, min_size >= 0, pca >= 0; got {self}")
        if not 0 < self.outlier_posterior < 1 or self.block_power < 0:
            raise ValueError(
                f"need 0 < outlier_posterior < 1 and block_power >= 0; got "
                f"outlier_posterior={self.outlier_posterior}, block_power={self.block_power}"
            )


def _single_segment(algorithm: str, n: int, d: int) -> str:
    """Why a fit found one segment, and what to use instead."""
    found = f"algorithm={algorithm!r} found a single segment in {n} users"
    if algorithm == "dbscan":
        found += (
            f" (min_samples={2 * d} for {d} dimensions, eps at the knee of the k-distance "
            "curve: one density-connected region)"
        )
    if algorithm == "hdbscan":
        return (
            f"{found} (the rest is noise): the people are not density-separated; use kmeans, "
            "gmm or agglomerative (k between k_min and k_max), with outliers=gmm to leave "
            "people who fit no segment Unclassified"
        )
    return (
        f"{found}: nothing to segment; use algorithm=hdbscan (clusters of different "
        "densities) or kmeans, gmm or agglomerative (k between k_min and k_max)"
    )


@dataclass
class Report:
    """What the fit measured: curves per algorithm, the choice, merges and the final tests."""

    curves: list[KCurve] = field(default_factory=list)
    algorithm: str = ""
    k_selected: int = 0
    merges: list[Merge] = field(default_factory=list)
    tests: list[FeatureTest] = field(default_factory=list)
    quality: dict[str, float] = field(default_factory=dict)
    fresh_labels: list[str] = field(default_factory=list)  # before matching the previous run
    unassigned: int = 0  # people of the fit left without a segment ("Unclassified")


class Segmenter:
    """Fitted state: the preprocessor, segment centroids in the clustering space, ids, names."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self.feature_names: list[str] = []
        self.preprocessor: Preprocessor | None = None
        self.centers = np.empty((0, 0))  # (k, d') clustering-space centroids
        self.profile_centers = np.empty((0, 0))  # (k, d) means after log1p, for matching
        self.profile_scale = np.empty(0)  # (d,) population sd after log1p
        self.ids = np.empty(0, dtype=np.int64)  # (k,) stable segment ids
        self.labels: list[str] = []
        self.descriptions: list[str] = []
        self.profiles: list[Profile] = []
        self.report = Report()
        self.outlier_model: OutlierModel | None = None

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        feature_names: Sequence[str],
        *,
        categorical: np.ndarray | None = None,
        categorical_names: Sequence[str] = (),
        groups: Mapping[str, str] | None = None,
        log_features: Sequence[str] = (),
        vocabulary: Vocabulary | None = None,
        default_noun: str = "Users",
        callback: Callback | None = None,
    ) -> Segmenter:
        """Segment the rows of ``x`` (n, d); ``self.assignments`` holds segment indices."""
        cfg, x = self.config, np.asarray(x, dtype=float)
        if x.ndim != 2 or len(x) < 3 or x.shape[1] != len(feature_names):
            raise ValueError(f"x must be (n >= 3, {len(feature_names)}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("x has NaN or infinite values; fill them before segmenting")
        self.feature_names = list(feature_names)
        self.preprocessor = fit_preprocessor(
            x, feature_names, scaling=cfg.scaling, log_features=log_features, groups=groups,
            pca=cfg.pca, seed=cfg.seed, pooled_blocks=cfg.pooled_blocks,
            block_power=cfg.block_power,
        )  # fmt: skip
        z = self.preprocessor.transform(x)
        keep_noise = cfg.outliers != "none"
        min_size = int(np.ceil(cfg.min_size * len(x))) if cfg.min_size < 1 else int(cfg.min_size)
        algorithms = AUTO_ALGORITHMS if cfg.algorithm == "auto" else (cfg.algorithm,)
        ks = range(cfg.k_min, cfg.k_max + 1)
        best, best_score = None, -np.inf
        for algorithm in algorithms:
            curve, labels = select_k(
                z, algorithm, ks, cfg.criterion, cfg.seed, sample=cfg.silhouette_sample,
                min_cluster_size=max(min_size, 5), max_fit_samples=cfg.max_fit_samples,
                tolerance=cfg.tolerance, keep_noise=keep_noise, callback=callback,
            )  # fmt: skip
            self.report.curves.append(curve)
            measure = cfg.criterion if cfg.criterion in HIGHER_IS_BETTER else "silhouette"
            score = curve.value_at(measure, curve.chosen_k)
            score = score if HIGHER_IS_BETTER[measure] else -score
            if best is None or (np.isfinite(score) and score > best_score):
                best, best_score = (algorithm, curve.chosen_k, labels), score
        self.report.algorithm, self.report.k_selected, labels = best
        if self.report.k_selected < 2:
            raise DataError(_single_segment(cfg.algorithm, len(x), z.shape[1]))
        logged = self.preprocessor.logged(x)
        assigned = labels >= 0
        cats = None if categorical is None else categorical[assigned]
        merged, self.report.merges = consolidate(
            z[assigned], logged[assigned], feature_names, labels[assigned], min_size=min_size,
            alpha=cfg.alpha, categorical=cats, categorical_names=categorical_names,
        )  # fmt: skip
        labels = np.full(len(x), UNASSIGNED, dtype=np.int64)
        labels[assigned] = merged
        if callback is not None:
            callback("consolidated", {"k": int(labels.max()) + 1, "merges": self.report.merges})
        self.outlier_model = None
        density = self.report.algorithm not in K_ALGORITHMS  # its own noise is the answer
        if cfg.outliers == "gmm" and not density and labels.max() >= 1:
            self.outlier_model = fit_outlier_model(z, labels, cfg.outlier_posterior, cfg.seed)
            labels[self.outlier_model.unassigned(z)] = UNASSIGNED
        assigned = labels >= 0
        self.report.unassigned = int((~assigned).sum())
        cats = None if categorical is None else categorical[assigned]
        self.report.tests = feature_tests(
            logged[assigned], feature_names, labels[assigned], cats, categorical_names
        )
        self.report.quality = quality(z, labels, cfg.seed, cfg.silhouette_sample)
        self._set_segments(z, x, logged, labels, vocabulary or {}, default_noun)
        self.assignments = labels
        return self

    def _set_segments(self, z, x, logged, labels, vocabulary, default_noun) -> None:
        k = int(labels.max()) + 1
        assigned = labels >= 0
        z, x, logged, labels = z[assigned], x[assigned], logged[assigned], labels[assigned]
        self.centers = centroids(z, labels, k)
        self.profile_centers = centroids(logged, labels, k)
        self.profile_scale = logged.std(0)
        self.profiles = profiles(x, self.feature_names, labels, z_space=logged)
        self.labels = name_segments(self.profiles, vocabulary, default_noun, self.config.z_min)
        self.report.fresh_labels = list(self.labels)
        self.descriptions = [describe(p) for p in self.profiles]
        self.ids = np.arange(k, dtype=np.int64)

    def match_previous(self, previous: Segmenter) -> np.ndarray:
        """Take ``previous``'s ids (and names) for the segments matched to its centroids.

        Matching is Hungarian on profile centroids scaled by the previous population's sd, so
        both runs are compared in the same units. Returns the new ``ids``.
        """
        if previous.feature_names != self.feature_names:
            raise ValueError("the previous segmenter used other features; cannot match ids")
        self.ids = match_centroids(
            previous.profile_centers, previous.ids, self.profile_centers, previous.profile_scale
        )
        old = dict(zip(previous.ids.tolist(), previous.labels, strict=True))
        labels = [old.get(int(i), label) for i, label in zip(self.ids, self.labels, strict=True)]
        self.labels = [
            f"{label} (new)" if label in labels[:i] else label for i, label in enumerate(labels)
        ]
        return self.ids

    # -- using ---------------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Segment index (into ``ids`` / ``labels``) of each row: the nearest centroid, or
        ``-1`` (unassigned) where the outlier model finds no segment likely enough."""
        if self.preprocessor is None:
            raise ValueError("the segmenter is not fitted")
        z = self.preprocessor.transform(np.asarray(x, dtype=float))
        index = nearest(z, self.centers)
        if self.outlier_model is not None:
            index[self.outlier_model.unassigned(z)] = UNASSIGNED
        return index

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "config": asdict(self.config),
            "feature_names": self.feature_names,
            "labels": self.labels,
            "descriptions": self.descriptions,
        }
        (directory / "segmenter.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        arrays = {f"pre_{k}": v for k, v in self.preprocessor.arrays().items()}
        if self.outlier_model is not None:
            arrays |= {f"out_{k}": v for k, v in self.outlier_model.arrays().items()}
        np.savez(
            directory / "segmenter.npz", centers=self.centers, ids=self.ids,
            profile_centers=self.profile_centers, profile_scale=self.profile_scale, **arrays,
        )  # fmt: skip
        return directory

    @classmethod
    def load(cls, directory: Path) -> Segmenter:
        directory = Path(directory)
        meta = json.loads((directory / "segmenter.json").read_text(encoding="utf-8"))
        model = cls(SegmenterConfig(**meta["config"]))
        model.feature_names, model.labels = meta["feature_names"], meta["labels"]
        model.descriptions = meta["descriptions"]
        with np.load(directory / "segmenter.npz") as data:
            model.centers, model.ids = data["centers"], data["ids"]
            model.profile_centers, model.profile_scale = (
                data["profile_centers"],
                data["profile_scale"],
            )
            model.preprocessor = Preprocessor.from_arrays(
                {k[4:]: data[k] for k in data.files if k.startswith("pre_")}
            )
            outlier = {k[4:]: data[k] for k in data.files if k.startswith("out_")}
            model.outlier_model = OutlierModel.from_arrays(outlier) if outlier else None
        return model
