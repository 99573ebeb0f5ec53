"""Clustering algorithms and the choice of the number of segments.

Every algorithm returns one segment index per user: DBSCAN and HDBSCAN noise points join the
nearest cluster centroid unless ``keep_noise`` keeps them at ``-1`` (unassigned). ``select_k``
fits each ``k`` of a range and records the inertia (within-segment sum of squares, the elbow
curve), silhouette, Davies–Bouldin and Calinski–Harabasz values, and for the algorithms that take
``k`` the gap statistic, a Gaussian mixture's BIC and the stability across seeds
(:mod:`models.segments.criteria`); the ``combined`` rule or one criterion picks ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

from models.segments.criteria import (
    combined_k,
    gap_statistic,
    gmm_bic,
    subsample_stability,
    votes,
)

ALGORITHMS = ("kmeans", "gmm", "agglomerative", "hdbscan", "dbscan")
#: Algorithms that take the number of segments; the density-based ones find it themselves.
K_ALGORITHMS = ("kmeans", "gmm", "agglomerative")
CRITERIA = (
    "combined", "silhouette", "elbow", "davies_bouldin", "calinski_harabasz", "gap", "bic",
)  # fmt: skip
#: Pairs of subsample fits per ``k`` for the stability criterion.
STABILITY_REPEATS = 3
#: Whether a higher value of a quality measure is better.
HIGHER_IS_BETTER = {"silhouette": True, "davies_bouldin": False, "calinski_harabasz": True}

Callback = Callable[[str, dict], None]


def centroids(z: np.ndarray, labels: np.ndarray, k: int | None = None) -> np.ndarray:
    """Mean of each segment ``0..k-1`` (k, d); an empty segment's row is NaN."""
    k = int(labels.max()) + 1 if k is None else k
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, labels, z)
    counts = np.bincount(labels, minlength=k)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def nearest(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``centers`` for each row of ``z`` (Euclidean)."""
    d2 = (z**2).sum(1)[:, None] - 2 * z @ centers.T + (centers**2).sum(1)[None, :]
    return np.argmin(d2, axis=1)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..k-1 in order of first appearance of each distinct value."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse]


def _with_noise_assigned(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Noise (-1) joins the nearest cluster centroid; all noise → one segment."""
    found = labels >= 0
    if not found.any():
        return np.zeros(len(z), dtype=np.int64)
    labels = labels.copy()
    labels[found] = _compact(labels[found])
    if (~found).any():
        labels[~found] = nearest(z[~found], centroids(z[found], labels[found]))
    return labels.astype(np.int64)


def _dbscan_eps(z: np.ndarray, min_samples: int) -> float:
    """The knee of the sorted distances to the ``min_samples``-th neighbour (Ester et al. 1996)."""
    distances, _ = NearestNeighbors(n_neighbors=min_samples).fit(z).kneighbors(z)
    curve = np.sort(distances[:, -1])
    return float(curve[knee_index(np.arange(len(curve)), curve, increasing=True)])


def cluster(
    algorithm: str,
    z: np.ndarray,
    k: int,
    seed: int,
    *,
    min_cluster_size: int = 10,
    max_fit_samples: int = 10_000,
    keep_noise: bool = False,
) -> np.ndarray:
    """Segment index per row of ``z`` (n, d), in ``0..k'-1``.

    ``k`` is ignored by ``hdbscan`` and ``dbscan``. Agglomerative clustering and the density
    methods need O(n²) work, so above ``max_fit_samples`` rows they fit on a seeded sample and
    the other rows join the nearest centroid. With ``keep_noise`` the density methods' noise
    stays ``-1`` (people who fit no segment) instead of joining the nearest centroid.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r} is not one of {ALGORITHMS}")
    if algorithm == "kmeans":
        return KMeans(k, n_init=10, random_state=seed).fit_predict(z).astype(np.int64)
    if algorithm == "gmm":
        gmm = GaussianMixture(k, covariance_type="full", n_init=2, random_state=seed)
        return _compact(gmm.fit(z).predict(z)).astype(np.int64)
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(len(z))
    if len(z) > max_fit_samples:
        fit_rows = np.sort(rng.choice(len(z), max_fit_samples, replace=False))
    sample = z[fit_rows]
    if algorithm == "agglomerative":
        found = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(sample)
    elif algorithm == "hdbscan":
        found = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(sample)
    else:
        min_samples = 2 * z.shape[1]
        found = DBSCAN(eps=_dbscan_eps(sample, min_samples), min_samples=min_samples)
        found = found.fit_predict(sample)
    noise = found < 0
    found = _with_noise_assigned(sample, found)
    if len(fit_rows) == len(z):
        return np.where(noise & keep_noise, -1, found).astype(np.int64)
    labels = nearest(z, centroids(sample, found)).astype(np.int64)
    if keep_noise:
        labels[fit_rows[noise]] = -1
    return labels


def quality(z: np.ndarray, labels: np.ndarray, seed: int, sample: int = 3000) -> dict[str, float]:
    """Inertia, silhouette (on a seeded sample of ``sample`` rows), Davies–Bouldin, C–H, over
    the rows with a segment (``labels >= 0``)."""
    assigned = labels >= 0
    z, labels = z[assigned], labels[assigned]
    k = int(labels.max()) + 1 if len(labels) else 0
    inertia = float(((z - centroids(z, labels, k)[labels]) ** 2).sum()) if k else np.nan
    if k < 2 or k >= len(z):
        return {"inertia": inertia, "silhouette": np.nan, "davies_bouldin": np.nan,
                "calinski_harabasz": np.nan}  # fmt: skip
    size = min(sample, len(z))
    silhouette = silhouette_score(z, labels, sample_size=size, random_state=seed)
    return {
        "inertia": inertia,
        "silhouette": float(silhouette),
        "davies_bouldin": float(davies_bouldin_score(z, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(z, labels)),
    }


def knee_index(x: np.ndarray, y: np.ndarray, increasing: bool = False) -> int:
    """Kneedle (Satopää et al. 2011): the point farthest from the chord of the normalised curve.

    ``increasing=False`` is for a falling convex curve (inertia over k); ``True`` for a rising
    convex one (sorted k-distances).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return 0
    xn = (x - x[0]) / (x[-1] - x[0] or 1.0)
    yn = (y - y.min()) / (np.ptp(y) or 1.0)
    # Falling curve: chord from (0, 1) to (1, 0); rising curve: chord from (0, 0) to (1, 1).
    gap = xn - yn if increasing else (1 - xn) - yn
    return int(np.argmax(gap))


@dataclass
class KCurve:
    """Quality over ``ks`` for one algorithm and the ``k`` chosen by ``criterion``."""

    algorithm: str
    criterion: str
    ks: list[int]
    values: dict[str, list[float]] = field(default_factory=dict)  # measure -> per k
    chosen_k: int = 0
    knee_k: int = 0
    votes: dict[str, int] = field(default_factory=dict)  # criterion -> its own k
    reason: str = ""  # why chosen_k (the combined rule's explanation)

    def value_at(self, measure: str, k: int) -> float:
        return self.values[measure][self.ks.index(k)]


def select_k(
    z: np.ndarray,
    algorithm: str,
    ks: Sequence[int],
    criterion: str,
    seed: int,
    *,
    sample: int = 3000,
    min_cluster_size: int = 10,
    max_fit_samples: int = 10_000,
    tolerance: float = 0.0,
    keep_noise: bool = False,
    callback: Callback | None = None,
) -> tuple[KCurve, np.ndarray]:
    """Fit ``algorithm`` for each ``k`` in ``ks``; return the curves and the chosen labels.

    For the algorithms that take ``k`` every criterion is recorded (inertia, silhouette,
    Davies–Bouldin, Calinski–Harabasz, gap and its spread, diagonal-GMM BIC, subsample
    stability) with each criterion's own ``k`` in ``curve.votes``. ``combined`` applies
    :func:`models.segments.criteria.combined_k`; ``gap`` and ``bic`` take that criterion's own
    ``k``; a single index takes the smallest ``k`` within ``tolerance`` (relative) of its best
    value (on a flat curve the simpler segmentation wins over a noise-level gain). Density
    algorithms fit once (their ``ks`` is the one ``k`` they found).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion!r} is not one of {CRITERIA}")
    ks = [k for k in ks if 2 <= k < len(z)]
    if algorithm not in K_ALGORITHMS:
        ks = [0]
    if not ks:
        raise ValueError(f"no k in the range fits {len(z)} users; need 2 <= k < n")
    curve = KCurve(algorithm, criterion, [], {m: [] for m in ("inertia", *HIGHER_IS_BETTER)})
    several = algorithm in K_ALGORITHMS and len(ks) > 1
    if several:
        curve.values |= {"gap": [], "gap_se": [], "bic": [], "stability": []}
        gap, gap_se = gap_statistic(z, ks, seed)
    fits: dict[int, np.ndarray] = {}
    for i, k in enumerate(ks):
        labels = cluster(
            algorithm, z, k, seed, min_cluster_size=min_cluster_size,
            max_fit_samples=max_fit_samples, keep_noise=keep_noise,
        )  # fmt: skip
        found = max(int(labels.max()) + 1, 1)
        fits[found] = labels
        curve.ks.append(found)
        for measure, value in quality(z, labels, seed, sample).items():
            curve.values[measure].append(value)
        if several:

            def fit_rows(rows: np.ndarray, fit_seed: int, k: int = k) -> np.ndarray:
                return cluster(
                    algorithm, rows, k, fit_seed, min_cluster_size=min_cluster_size,
                    max_fit_samples=max_fit_samples, keep_noise=keep_noise,
                )  # fmt: skip

            curve.values["gap"].append(float(gap[i]))
            curve.values["gap_se"].append(float(gap_se[i]))
            curve.values["bic"].append(gmm_bic(z, k, seed))
            curve.values["stability"].append(
                subsample_stability(z, fit_rows, seed, repeats=STABILITY_REPEATS)
            )
        if callback is not None:
            callback("k", {"algorithm": algorithm, "k": found, **quality_row(curve, found)})
    curve.knee_k = curve.ks[knee_index(np.array(curve.ks), np.array(curve.values["inertia"]))]
    if several:
        curve.votes = votes(curve.ks, curve.values) | {"elbow": curve.knee_k}
    if not several:
        curve.chosen_k, curve.reason = curve.ks[0], "found by the algorithm"
    elif criterion == "combined":
        curve.chosen_k, curve.reason = combined_k(curve.ks, curve.values)
    elif criterion in ("gap", "bic"):
        curve.chosen_k, curve.reason = curve.votes[criterion], criterion
    elif criterion == "elbow":
        curve.chosen_k = curve.knee_k
    else:
        sign = 1.0 if HIGHER_IS_BETTER[criterion] else -1.0
        scores = sign * np.array(curve.values[criterion], dtype=float)
        scores = np.where(np.isnan(scores), -np.inf, scores)
        best = scores.max()
        good = scores >= best - tolerance * abs(best)
        curve.chosen_k = min(k for k, ok in zip(curve.ks, good, strict=True) if ok)
    return curve, fits[curve.chosen_k]


def quality_row(curve: KCurve, k: int) -> dict[str, float]:
    return {measure: curve.value_at(measure, k) for measure in curve.values}
