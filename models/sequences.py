"""Ordered histories for sequential models: CSR rows <-> time-ordered item sequences <-> tokens.

The model contract passes histories as a CSR users x items row, which has no order of its own, so
the order is read from the row's DATA values: items ordered by value ascending, ties broken by item
index (`ordered_histories`). `sequence_matrix` builds such rows from an event frame (positions
1..n per user by time). `padded_tokens` and `training_windows` turn sequences into the token rows
SASRec (`models.sasrec`) reads: item ``i`` is token ``i + 1``, 0 is padding, rows left-padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.interactions import IdMap


def sequence_matrix(
    df: pd.DataFrame,
    user_col: str,
    item_col: str,
    time_col: str,
    users: IdMap,
    items: IdMap,
) -> sp.csr_matrix:
    """Ordered histories as a ``float32`` CSR ``(len(users), len(items))`` for SASRec.

    A user's distinct items get positions ``1..n`` by ``time_col`` (oldest 1, latest ``n``;
    equal times keep the frame's row order). An item seen more than once keeps the position of
    its latest event. Raises ``ValueError`` for missing columns or ids not in the maps.
    """
    missing = [c for c in (user_col, item_col, time_col) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in frame; available: {list(df.columns)}")
    rows = users.index_or(df[user_col])
    cols = items.index_or(df[item_col])
    unknown = (rows < 0) | (cols < 0)
    if unknown.any():
        raise ValueError(
            f"{int(unknown.sum())} rows have a {user_col!r} or {item_col!r} not in the given maps"
        )
    times = df[time_col].to_numpy()
    # Stable sort by (user, time), frame order breaking ties; keep each (user, item)'s last event.
    order = np.lexsort((np.arange(len(df)), times, rows))
    rows, cols = rows[order], cols[order]
    keys = rows * len(items) + cols
    _, first_from_end = np.unique(keys[::-1], return_index=True)
    is_last = np.zeros(len(keys), dtype=bool)
    is_last[len(keys) - 1 - first_from_end] = True
    rows, cols = rows[is_last], cols[is_last]
    counts = np.bincount(rows, minlength=len(users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    positions = np.arange(len(rows)) - starts[rows] + 1
    return sp.csr_matrix(
        (positions.astype(np.float32), (rows, cols)), shape=(len(users), len(items))
    )


def ordered_histories(user_items: sp.spmatrix | sp.sparray) -> list[np.ndarray]:
    """Each row's nonzero item indices ordered by value ascending, ties by item index:
    a list of ``int64`` arrays, one per row (oldest first)."""
    matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, matrix.data, rows))
    items = matrix.indices[order].astype(np.int64)
    return np.split(items, matrix.indptr[1:-1])


def padded_tokens(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len`` items of each history as tokens (item + 1), left-padded with 0:
    ``int64`` ``(n, max_len)``."""
    tokens = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, history in enumerate(histories):
        recent = history[-max_len:]
        if recent.size:
            tokens[row, max_len - recent.size :] = recent + 1
    return tokens


def training_windows(
    histories: Sequence[np.ndarray], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-item windows cut from the end of each history.

    Returns ``(inputs, targets, window_user)``: tokens ``(w, max_len)`` (item + 1, left-padded
    with 0), the next item's token at each position ``(w, max_len)`` and each window's row in
    ``histories`` ``(w,)``. A history of ``n`` items gives ``n - 1`` steps in
    ``ceil((n - 1) / max_len)`` windows.
    """
    inputs, targets, owners = [], [], []
    for user, history in enumerate(histories):
        tokens = history + 1
        for end in range(len(tokens) - 1, 0, -max_len):
            start = max(0, end - max_len)
            window_in = np.zeros(max_len, dtype=np.int64)
            window_out = np.zeros(max_len, dtype=np.int64)
            window_in[max_len - (end - start) :] = tokens[start:end]
            window_out[max_len - (end - start) :] = tokens[start + 1 : end + 1]
            inputs.append(window_in)
            targets.append(window_out)
            owners.append(user)
    if not inputs:
        empty = np.zeros((0, max_len), dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.int64)
    return np.stack(inputs), np.stack(targets), np.asarray(owners, dtype=np.int64)
