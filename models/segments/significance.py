"""Over-segmentation guard: per-feature tests across segments, and hierarchical consolidation.

Numeric features get one-way ANOVA and Kruskal–Wallis (the verdict uses Kruskal–Wallis, which
does not assume normal, equal-variance groups); categorical features get a χ² test of the
segment × category table. A pair of segments *differs* when at least one feature separates them
at ``alpha`` after a Bonferroni correction over the features. Consolidation merges, one at a
time, a segment below the minimum size into its nearest neighbour, then the nearest pair that
does not differ, until neither happens; every merge is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from models.segments.selection import centroids


@dataclass(frozen=True)
class FeatureTest:
    """One feature tested across all segments."""

    feature: str
    kind: str  # numeric | categorical
    test: str  # kruskal | chi2
    statistic: float
    p_value: float
    anova_p_value: float | None = None  # numeric features: one-way ANOVA too


@dataclass(frozen=True)
class Merge:
    """``absorbed`` joined ``into`` (indices before the merge) and why."""

    absorbed: int
    into: int
    reason: str  # min-size | not-significant
    absorbed_size: int
    p_value: float  # the pair's smallest Bonferroni-corrected p-value (nan for min-size)
    feature: str  # the feature that came closest to separating them


def _numeric_p(groups: list[np.ndarray]) -> tuple[float, float, float]:
    """Kruskal–Wallis statistic and p, and the ANOVA p; identical values or a single group (one
    segment: nothing to compare) → no difference."""
    if len(groups) < 2 or len({float(v) for g in groups for v in np.unique(g)}) < 2:
        return 0.0, 1.0, 1.0
    kruskal = stats.kruskal(*groups)
    with np.errstate(all="ignore"):
        anova = stats.f_oneway(*groups).pvalue
    return float(kruskal.statistic), float(kruskal.pvalue), float(np.nan_to_num(anova, nan=1.0))


def _chi2_p(codes: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    table = np.zeros((labels.max() + 1, codes.max() + 1))
    np.add.at(table, (labels, codes), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if min(table.shape) < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def feature_tests(
    x: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
    categorical: np.ndarray | None = None,
    categorical_names: Sequence[str] = (),
) -> list[FeatureTest]:
    """Each numeric column of ``x`` (n, d) and each categorical code column (n, c; codes >= 0)
    tested across the segments ``labels``."""
    groups = [np.flatnonzero(labels == s) for s in range(int(labels.max()) + 1)]
    groups = [g for g in groups if len(g)]
    out = []
    for j, name in enumerate(names):
        statistic, p_value, anova_p = _numeric_p([x[g, j] for g in groups])
        out.append(FeatureTest(name, "numeric", "kruskal", statistic, p_value, anova_p))
    for j, name in enumerate(categorical_names):
        statistic, p_value = _chi2_p(categorical[:, j], labels)
        out.append(FeatureTest(name, "categorical", "chi2", statistic, p_value))
    return out


def pair_difference(
    x: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
    a: int,
    b: int,
    categorical: np.ndarray | None = None,
    categorical_names: Sequence[str] = (),
) -> tuple[float, str]:
    """The smallest Bonferroni-corrected p-value of any feature between segments a and b."""
    rows = np.flatnonzero((labels == a) | (labels == b))
    pair = (labels[rows] == b).astype(np.int64)
    cats = None if categorical is None else categorical[rows]
    tests = feature_tests(x[rows], names, pair, cats, categorical_names)
    best = min(tests, key=lambda t: t.p_value)
    return min(1.0, best.p_value * len(tests)), best.feature


def consolidate(
    z: np.ndarray,
    x: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
    *,
    min_size: int,
    alpha: float,
    categorical: np.ndarray | None = None,
    categorical_names: Sequence[str] = (),
) -> tuple[np.ndarray, list[Merge]]:
    """Merge small and indistinguishable segments; return labels 0..k'-1 (largest first).

    ``z`` is the clustering space (neighbours are nearest centroids there); ``x`` holds the
    features the tests read (n, d).
    """
    labels = labels.copy()
    merges: list[Merge] = []
    checked: set[tuple[int, int]] = set()  # pairs already found different (sizes unchanged)
    while labels.max() > 0:
        k = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=k)
        centers = centroids(z, labels, k)
        dist = np.linalg.norm(centers[:, None] - centers[None, :], axis=2)
        np.fill_diagonal(dist, np.inf)
        small = int(np.argmin(sizes))
        if sizes[small] < min_size:
            into = int(np.argmin(dist[small]))
            merges.append(Merge(small, into, "min-size", int(sizes[small]), np.nan, ""))
            labels = _merge(labels, small, into)
            checked.clear()
            continue
        merged = False
        for a, b in sorted({tuple(sorted((i, int(np.argmin(dist[i]))))) for i in range(k)},
                           key=lambda p: dist[p]):  # fmt: skip
            key = (a, b)
            if key in checked:
                continue
            p_value, feature = pair_difference(
                x, names, labels, a, b, categorical, categorical_names
            )
            if p_value < alpha:
                checked.add(key)
                continue
            absorbed, into = (a, b) if sizes[a] <= sizes[b] else (b, a)
            merges.append(
                Merge(absorbed, into, "not-significant", int(sizes[absorbed]), p_value, feature)
            )
            labels = _merge(labels, absorbed, into)
            checked.clear()
            merged = True
            break
        if not merged:
            break
    return by_size(labels), merges


def _merge(labels: np.ndarray, absorbed: int, into: int) -> np.ndarray:
    labels = np.where(labels == absorbed, into, labels)
    return np.searchsorted(np.unique(labels), labels)


def by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so segment 0 is the largest (ties: lower old index first)."""
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[order] = np.arange(len(sizes))
    return rank[labels]
