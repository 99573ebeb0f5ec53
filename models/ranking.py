"""Ranking arithmetic shared by every model: exact top-k selection and cosine similarity.

`top_k` picks the best ``k`` valid items per row with ties broken by lower item index (exact even
when scores tie at the k-th place), padding with -1 / -inf; `cosine_to` is the item-similarity
most factor models use for `Recommender.similar_items`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_SIGN_BIT = np.uint32(0x80000000)


def nonzero_cells(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of every nonzero stored entry."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    nonzero = matrix.data != 0
    return rows[nonzero], matrix.indices[nonzero]


def _rank_keys(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Unique ``uint64`` keys that sort like (score desc, item index asc); 0 for invalid items.

    The high 32 bits are the ``float32`` score mapped to an order-preserving unsigned integer,
    the low 32 bits the reversed item index. Unique keys make `argpartition` exact even when
    scores tie at the k-th place. NaN ranks like -inf: below every other valid item.
    """
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), np.float32(-np.inf), scores)
    clean = scores + np.float32(0.0)  # a fresh copy, and -0.0 becomes 0.0
    bits = clean.view(np.uint32)
    # Negative floats: flip every bit; others: flip the sign bit. Unsigned order = float order.
    flip = (clean.view(np.int32) >> 31).view(np.uint32) | _SIGN_BIT
    np.bitwise_xor(bits, flip, out=bits)
    n_cols = scores.shape[1]
    keys = bits.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= (n_cols - 1 - np.arange(n_cols)).astype(np.uint64)
    keys *= valid  # every valid key is > 0: even -inf maps to 0x007FFFFF in the high bits
    return keys


def cosine_to(vectors: np.ndarray, index: int) -> np.ndarray:
    """Cosine similarity ``(n,)`` of every row of ``vectors`` ``(n, d)`` to row ``index``.

    Rows with zero norm (never trained) score 0.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    dots = vectors @ vectors[index]
    denominator = norms * norms[index]
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def top_k(scores: np.ndarray, valid: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` valid items per row.

    Args:
        scores: ``(n, n_items)`` scores.
        valid: ``(n, n_items)`` bool mask of items that may be returned; ``None`` means all.
        k: number of items per row (> 0).

    Returns:
        ``(item_idx, scores)``, both ``(n, k)``: ``int64`` indices and ``float32`` scores, sorted by
        score descending with ties broken by lower item index, padded with -1 / -inf where a row
        has fewer than ``k`` valid items.
    """
    k = check_k(k)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, n_items), got shape {scores.shape}")
    n_rows, n_cols = scores.shape
    valid = np.ones(scores.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    item_idx = np.full((n_rows, k), -1, dtype=np.int64)
    top_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or n_cols == 0:
        return item_idx, top_scores

    keys = _rank_keys(scores, valid)
    m = min(k, n_cols)
    if m < n_cols:
        chosen = np.argpartition(keys, n_cols - m, axis=1)[:, n_cols - m :]
    else:
        chosen = np.broadcast_to(np.arange(n_cols), keys.shape)
    chosen_keys = np.take_along_axis(keys, chosen, axis=1)
    order = np.argsort(chosen_keys, axis=1)[:, ::-1]
    chosen = np.take_along_axis(chosen, order, axis=1)
    is_valid = np.take_along_axis(chosen_keys, order, axis=1) > 0

    item_idx[:, :m] = np.where(is_valid, chosen, -1)
    top_scores[:, :m] = np.where(is_valid, np.take_along_axis(scores, chosen, axis=1), -np.inf)
    return item_idx, top_scores


def check_k(k: int) -> int:
    """``k`` as an ``int``; ``ValueError`` unless it is a positive int."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)
