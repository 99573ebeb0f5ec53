"""Keep segment ids meaningful across runs: Hungarian matching and migration matrices."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match_centroids(
    previous: np.ndarray, previous_ids: np.ndarray, current: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Ids for ``current`` segments (k, d): the Hungarian assignment to ``previous`` centroids
    (k', d) on Euclidean distance after dividing each feature by ``scale`` (d,). Segments left
    over when k > k' get fresh ids after the largest previous one."""
    scale = np.where(scale > 1e-12, scale, 1.0)
    cost = np.linalg.norm((current[:, None] - previous[None, :]) / scale, axis=2)
    rows, cols = linear_sum_assignment(cost)
    ids = np.full(len(current), -1, dtype=np.int64)
    ids[rows] = np.asarray(previous_ids)[cols]
    fresh = iter(range(int(np.max(previous_ids, initial=-1)) + 1, 1 << 62))
    ids[ids < 0] = [next(fresh) for _ in range(int((ids < 0).sum()))]
    return ids


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a_values, b_values, counts)``; counts[i, j] = rows with a_values[i] and b_values[j]."""
    a_values, a_idx = np.unique(a, return_inverse=True)
    b_values, b_idx = np.unique(b, return_inverse=True)
    counts = np.zeros((len(a_values), len(b_values)), dtype=np.int64)
    np.add.at(counts, (a_idx, b_idx), 1)
    return a_values, b_values, counts


def align_labels(reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` renamed to the ``reference`` label they overlap most with (Hungarian on the
    contingency table); unmatched labels get fresh values after the reference's largest."""
    ref_values, values, counts = contingency(reference, labels)
    rows, cols = linear_sum_assignment(-counts)
    mapping = {values[c]: ref_values[r] for r, c in zip(rows, cols, strict=True)}
    fresh = iter(range(int(np.max(ref_values)) + 1, 1 << 62))
    for value in values:
        mapping.setdefault(value, next(fresh))
    return np.array([mapping[v] for v in labels], dtype=np.int64)


def agreement(reference: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows with the same label after :func:`align_labels`."""
    return float(np.mean(align_labels(reference, labels) == reference))
