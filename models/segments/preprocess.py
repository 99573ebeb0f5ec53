"""Scaling for segmentation: log of heavy tails, min-max or z-score, block weights, optional PCA.

Features of one block (for example the ten category shares) share one scale (the block's root
mean variance), so shares stay comparable with each other, and get weight
``block size ** -block_power``: ``0.5`` makes a block count as much as one feature in Euclidean
distances, ``0`` lets every share column count like a rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

SCALINGS = ("zscore", "minmax")


@dataclass(frozen=True)
class Preprocessor:
    """A fitted transform ``X (n, d) -> Z (n, d')``; arrays are per input column."""

    log_mask: np.ndarray  # (d,) bool: log1p applied (non-negative heavy-tailed columns)
    center: np.ndarray  # (d,)
    scale: np.ndarray  # (d,) > 0
    weights: np.ndarray  # (d,) block weights
    pca_mean: np.ndarray | None = None  # (d,)
    pca_components: np.ndarray | None = None  # (d', d)

    def logged(self, x: np.ndarray) -> np.ndarray:
        """Columns with ``log_mask`` as ``log1p`` (negative values clipped at 0), the rest as is."""
        x = np.asarray(x, dtype=float).copy()
        x[:, self.log_mask] = np.log1p(np.clip(x[:, self.log_mask], 0.0, None))
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (self.logged(x) - self.center) / self.scale * self.weights
        if self.pca_components is not None:
            z = (z - self.pca_mean) @ self.pca_components.T
        return z

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in ("log_mask", "center", "scale", "weights")}
        if self.pca_components is not None:
            out |= {"pca_mean": self.pca_mean, "pca_components": self.pca_components}
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Preprocessor:
        return cls(**{k: np.asarray(v) for k, v in arrays.items()})


def block_weights(
    names: Sequence[str], groups: Mapping[str, str] | None, power: float = 0.5
) -> np.ndarray:
    """``size ** -power`` of the column's block (``1 / sqrt(size)`` by default: a block weighs
    as much as one feature; ``power=0``: every column weighs 1); a column without a block is
    its own block."""
    groups = groups or {}
    keys = [groups.get(name, name) for name in names]
    sizes = {key: keys.count(key) for key in keys}
    return np.array([float(sizes[key]) ** -power for key in keys])


def fit_preprocessor(
    x: np.ndarray,
    names: Sequence[str],
    *,
    scaling: str = "zscore",
    log_features: Sequence[str] = (),
    groups: Mapping[str, str] | None = None,
    pca: float = 0,
    seed: int = 0,
    pooled_blocks: bool = True,
    block_power: float = 0.5,
) -> Preprocessor:
    """Fit on ``x`` (n, d). ``pca``: 0 = off, an int >= 1 = components, a float in (0, 1) = the
    share of variance to keep. Constant columns get scale 1 (they then contribute nothing).

    With ``pooled_blocks`` (z-score only) the columns of a block share one scale, the root mean
    variance of the block: shares stay comparable, so a rare category's share (tablet, garden)
    is not blown up to the weight of a common one by its own tiny standard deviation."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling {scaling!r} is not one of {SCALINGS}")
    unknown = sorted(set(log_features) - set(names))
    if unknown:
        raise ValueError(f"log_features {unknown} are not among the features {list(names)}")
    log_mask = np.isin(np.asarray(names, dtype=object), list(log_features))
    base = Preprocessor(log_mask, np.zeros(len(names)), np.ones(len(names)), np.ones(len(names)))
    logged = base.logged(x)
    if scaling == "zscore":
        center, scale = logged.mean(axis=0), logged.std(axis=0)
    else:
        center, scale = logged.min(axis=0), logged.max(axis=0) - logged.min(axis=0)
    if scaling == "zscore" and pooled_blocks and groups:
        keys = np.array([groups.get(name, "") for name in names], dtype=object)
        for key in set(keys.tolist()) - {""}:
            block = keys == key
            if block.sum() > 1:
                scale[block] = np.sqrt(np.mean(scale[block] ** 2))
    scale = np.where(scale > 1e-12, scale, 1.0)
    fitted = Preprocessor(log_mask, center, scale, block_weights(names, groups, block_power))
    if not pca:
        return fitted
    n_components = int(pca) if pca >= 1 else float(pca)
    model = PCA(n_components=n_components, random_state=seed).fit(fitted.transform(x))
    return Preprocessor(
        log_mask, center, scale, fitted.weights, model.mean_, model.components_.copy()
    )
