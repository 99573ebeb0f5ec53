"""Criteria for the number of segments beyond the internal indices, and the rule combining them.

:mod:`models.segments.selection` fits each ``k`` and records inertia, silhouette,
Davies–Bouldin and Calinski–Harabasz. This module adds three criteria that look at the data
differently and the documented rule (:func:`combined_k`) that turns all of them into one ``k``:

* **gap statistic** (Tibshirani, Walther & Hastie 2001): ``log W_k`` of uniform reference data in
  the box of the data's principal axes minus ``log W_k`` of the data; ``k`` is the first with
  ``gap(k) >= gap(k+1) - s(k+1)``, or the knee of the gap curve when none does.
* **BIC** of a diagonal Gaussian mixture with ``k`` components (lower is better).
* **stability**: mean adjusted Rand index between fits on two random 80% subsamples; a ``k``
  whose segments change with the people drawn is not a structure of the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture


def gap_statistic(
    z: np.ndarray, ks: Sequence[int], seed: int, references: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """``(gap, s)`` per ``k`` of ``ks`` for K-Means on ``z`` (n, d).

    References are uniform in the bounding box of ``z`` rotated to its principal axes
    (Tibshirani et al.'s second reference, which follows the data's shape); ``s`` is the
    standard deviation of the references' ``log W_k`` times ``sqrt(1 + 1/references)``.
    """
    rng = np.random.default_rng(seed)
    centred = z - z.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    rotated = centred @ axes.T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    draws = [rng.uniform(low, high, rotated.shape) for _ in range(references)]
    gap, spread = [], []
    for k in ks:
        observed = np.log(KMeans(k, n_init=3, random_state=seed).fit(rotated).inertia_)
        fits = [KMeans(k, n_init=1, random_state=seed + b).fit(d) for b, d in enumerate(draws)]
        reference = np.log([f.inertia_ for f in fits])
        gap.append(reference.mean() - observed)
        spread.append(reference.std() * np.sqrt(1 + 1 / references))
    return np.array(gap), np.array(spread)


def gap_k(ks: Sequence[int], gap: np.ndarray, spread: np.ndarray) -> int:
    """Tibshirani's rule: the smallest ``k`` with ``gap(k) >= gap(k+1) - s(k+1)``.

    When no ``k`` qualifies (the curve still rises at ``k_max``: shares live on a simplex, far
    from the uniform box of the reference, so every extra cluster keeps "beating" it a little),
    the knee of the gap curve (Kneedle): the ``k`` after which extra clusters gain clearly less.
    """
    for i in range(len(ks) - 1):
        if gap[i] >= gap[i + 1] - spread[i + 1]:
            return int(ks[i])
    return int(ks[knee_of_rising(np.asarray(ks, dtype=float), np.asarray(gap, dtype=float))])


def knee_of_rising(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the point of a rising concave curve farthest above its chord (Kneedle)."""
    if len(x) < 3 or np.ptp(y) == 0:
        return int(np.argmax(y))
    xn = (x - x[0]) / (x[-1] - x[0])
    yn = (y - y.min()) / np.ptp(y)
    return int(np.argmax(yn - xn))


def gmm_bic(z: np.ndarray, k: int, seed: int) -> float:
    """BIC of a diagonal-covariance Gaussian mixture with ``k`` components on ``z``."""
    gmm = GaussianMixture(k, covariance_type="diag", n_init=1, random_state=seed, reg_covar=1e-4)
    return float(gmm.fit(z).bic(z))


def subsample_stability(
    z: np.ndarray,
    fit: Callable[[np.ndarray, int], np.ndarray],
    seed: int,
    repeats: int = 3,
    share: float = 0.8,
) -> float:
    """Mean adjusted Rand index between two fits on random ``share`` subsamples of ``z``
    (Ben-Hur, Elisseeff & Guyon 2002; Lange et al. 2004), every row labelled by the nearest
    centroid of each fit. ``fit(rows_of_z, seed)`` returns the labels of those rows.

    Splitting a true segment in two (k too large) or merging two (too small) depends on which
    people are drawn, so the labels disagree; the planted k reproduces.
    """
    rng = np.random.default_rng(seed)
    scores = []
    for r in range(repeats):
        runs = []
        for half in range(2):
            rows = np.flatnonzero(rng.random(len(z)) < share)
            labels = fit(z[rows], seed + 2 * r + half)
            found = labels >= 0
            k = int(labels[found].max()) + 1 if found.any() else 0
            if k < 1:
                return float("nan")
            sums = np.zeros((k, z.shape[1]))
            np.add.at(sums, labels[found], z[rows][found])
            counts = np.bincount(labels[found], minlength=k)[:, None]
            centres = sums / np.maximum(counts, 1)
            d2 = ((z[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            runs.append(np.argmin(d2, axis=1))
        scores.append(adjusted_rand_score(runs[0], runs[1]))
    return float(np.mean(scores))


def _best(ks: Sequence[int], values: Sequence[float], higher: bool) -> int | None:
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).any():
        return None
    scores = np.where(np.isfinite(values), values if higher else -values, -np.inf)
    return int(ks[int(np.argmax(scores))])


def votes(ks: Sequence[int], values: Mapping[str, Sequence[float]]) -> dict[str, int]:
    """Each criterion's own ``k``: silhouette and Calinski–Harabasz highest, Davies–Bouldin and
    BIC lowest, the gap statistic by Tibshirani's rule, stability highest (smallest k on ties)."""
    out: dict[str, int] = {}
    for measure, higher in (("silhouette", True), ("calinski_harabasz", True),
                            ("davies_bouldin", False), ("bic", False)):  # fmt: skip
        if measure in values:
            best = _best(ks, values[measure], higher)
            if best is not None:
                out[measure] = best
    if "gap" in values and np.isfinite(values["gap"]).all():
        out["gap"] = gap_k(ks, np.asarray(values["gap"]), np.asarray(values["gap_se"]))
    if "stability" in values and np.isfinite(values["stability"]).any():
        out["stability"] = _best(ks, values["stability"], True)
    return out


#: Criteria whose interior optima vote in :func:`combined_k`: (measure, higher is better).
LOCAL_CRITERIA = (
    ("silhouette", True),
    ("calinski_harabasz", True),
    ("davies_bouldin", False),
    ("bic", False),
    ("stability", True),
)


#: A local optimum must beat both neighbours by this share of the curve's range: a wiggle of
#: a nearly flat curve (stability 0.8606 against 0.8598) is not a level of structure.
LOCAL_MARGIN = 0.01


def interior_optima(values: Sequence[float], higher: bool) -> list[int]:
    """Indices better than both neighbours by :data:`LOCAL_MARGIN` of the curve's range (not
    the ends of the range)."""
    v = np.asarray(values, dtype=float)
    v = v if higher else -v
    finite = v[np.isfinite(v)]
    margin = LOCAL_MARGIN * (np.ptp(finite) if len(finite) else 0.0)
    return [
        i for i in range(1, len(v) - 1) if v[i] > v[i - 1] + margin and v[i] > v[i + 1] + margin
    ]


def gap_rule_k(ks: Sequence[int], gap: Sequence[float], spread: Sequence[float]) -> int | None:
    """Tibshirani's 1-SE rule if it fires inside the range, else None (no knee fallback)."""
    for i in range(len(ks) - 1):
        if gap[i] >= gap[i + 1] - spread[i + 1]:
            return int(ks[i])
    return None


def combined_k(ks: Sequence[int], values: Mapping[str, Sequence[float]]) -> tuple[int, str]:
    """The documented rule; returns ``(k, why)``.

    Each criterion's *global* optimum is biased on behaviour data (measured on the planted
    personas, ``experiments/results/``): silhouette, Calinski–Harabasz and Davies–Bouldin reward
    merging personas that overlap on some inputs (k = 2–3 for seven personas), a diagonal
    mixture's BIC and the gap statistic keep improving up to ``k_max``, and a two-way split is
    always reproducible. A level of real structure shows as a *local* optimum instead, so:

    1. every criterion of :data:`LOCAL_CRITERIA` votes for each ``k`` where it is better than
       at both neighbours by 1% of its range (an interior local optimum), twice when that is
       also its best value over the whole range; the gap statistic votes
       for its 1-SE ``k`` when that rule fires inside the range;
    2. the ``k`` with most votes wins; ties go to the larger ``k``: a segment too many is
       merged by the significance guard when no input separates it, a segment too few (two
       personas in one) is never split again;
    3. no vote at all (every curve monotone): the most stable ``k`` (ties: the smaller).
    """
    ks = [int(k) for k in ks]
    ballots: dict[int, list[str]] = {}
    for measure, higher in LOCAL_CRITERIA:
        if measure in values:
            v = np.asarray(values[measure], dtype=float)
            best = int(np.nanargmax(v if higher else -v)) if np.isfinite(v).any() else -1
            for i in interior_optima(v, higher):
                ballots.setdefault(ks[i], []).append(measure)
                if i == best:  # the criterion's own best k counts twice
                    ballots[ks[i]].append(measure)
    if "gap" in values and "gap_se" in values:
        k = gap_rule_k(ks, values["gap"], values["gap_se"])
        if k is not None:
            ballots.setdefault(k, []).append("gap")
    stable = np.nan_to_num(np.asarray(values.get("stability", [0.0] * len(ks)), float), nan=0.0)
    if not ballots:
        k = ks[int(np.argmax(stable))]
        return k, "no interior optimum; the most stable k"
    k = max(ballots, key=lambda c: (len(ballots[c]), c))
    return k, f"{len(ballots[k])} votes of interior optima ({', '.join(ballots[k])})"
