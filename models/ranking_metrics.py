"""Offline metrics: top-k ranking metrics per user, catalogue coverage, and rating errors.

Ranking inputs:

- ``recommended``: ``(n_users, width)`` item indices, best first, -1 for padding (padding never
  counts). Only the first ``k`` columns are used; a repeated item counts once (first place).
- ``relevant``: per user, the held-out items, as a list of ``n_users`` sets of item indices or a
  ``(n_users, n_items)`` sparse matrix whose nonzero entries are relevant.

Per-user functions return ``float64`` arrays ``(n_users,)`` with NaN for users without relevant
items (their recall, NDCG, ... are undefined); `ranking_report` averages over the other users.
Relevance is binary. Conventions follow Microsoft Recommenders: MAP@k divides by the user's number
of relevant items, NDCG@k's ideal DCG places ``min(k, n_relevant)`` hits first.

Beyond-accuracy metrics need no relevance and look at every row of ``recommended``:
`novelty_at_k` (how unknown the recommended items are to the training users),
`intra_list_diversity_at_k` (how unlike each other one user's items are) and
`personalization_at_k` (how unlike each other different users' lists are).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

Relevant = Sequence[set[int]] | sp.spmatrix | sp.sparray


def _check_k(k: int | None, width: int) -> int:
    if k is None:
        k = width
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def _as_recommended(recommended: np.ndarray, k: int | None) -> tuple[np.ndarray, int]:
    """``(n_users, width)`` -> its first ``k`` columns as ``int64``, and ``k``."""
    recommended = np.asarray(recommended)
    if recommended.ndim != 2:
        raise ValueError(
            f"recommended must be 2-D (n_users, k), got shape {recommended.shape}; "
            "use recommended[None, :] for one user"
        )
    if recommended.size and not np.issubdtype(recommended.dtype, np.integer):
        raise TypeError(f"recommended must hold integer item indices, got {recommended.dtype}")
    k = _check_k(k, recommended.shape[1])
    recommended = recommended[:, :k].astype(np.int64)
    if (recommended < -1).any():
        raise ValueError("recommended may hold item indices >= 0 and -1 (padding) only")
    return recommended, k


def _hits(recommended: np.ndarray, relevant: Relevant) -> tuple[np.ndarray, np.ndarray]:
    """``(hits (n_users, width) bool, n_relevant (n_users,) int)`` for truncated ``recommended``."""
    n_users = recommended.shape[0]
    is_item = recommended >= 0
    if sp.issparse(relevant):
        matrix = sp.csr_matrix(relevant)
        if matrix.shape[0] != n_users:
            raise ValueError(f"relevant has {matrix.shape[0]} rows, recommended {n_users}")
        if (recommended >= matrix.shape[1]).any():
            raise ValueError(f"recommended holds item indices >= n_items ({matrix.shape[1]})")
        row_of_entry = np.repeat(np.arange(n_users), np.diff(matrix.indptr))
        n_relevant = np.bincount(row_of_entry[matrix.data != 0], minlength=n_users)
        rows, cols = np.nonzero(is_item)
        hits = np.zeros(recommended.shape, dtype=bool)
        if rows.size:
            values = np.asarray(matrix[rows, recommended[rows, cols]]).ravel()
            hits[rows, cols] = values != 0
    else:
        if len(relevant) != n_users:
            raise ValueError(f"relevant has {len(relevant)} users, recommended {n_users}")
        n_relevant = np.array([len(items) for items in relevant], dtype=np.int64)
        hits = np.array(
            [
                [item in items for item in row]
                for row, items in zip(recommended, relevant, strict=True)
            ],
            dtype=bool,
        ).reshape(recommended.shape)
        hits &= is_item
    _drop_repeats(recommended, hits)
    return hits, n_relevant.astype(np.int64)


def _drop_repeats(recommended: np.ndarray, hits: np.ndarray) -> None:
    """A repeated item only counts at its first position (modifies ``hits`` in place)."""
    if recommended.shape[1] < 2:
        return
    ordered = np.sort(recommended, axis=1)
    repeats = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    for row in np.flatnonzero(repeats.any(axis=1)):
        first = np.zeros(recommended.shape[1], dtype=bool)
        first[np.unique(recommended[row], return_index=True)[1]] = True
        hits[row] &= first


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _undefined_to_nan(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.where(n_relevant > 0, values, np.nan)


def _per_user(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every per-user ranking metric from ``hits`` ``(n_users, k)``; NaN where no relevant."""
    n_hits = hits.sum(axis=1).astype(np.float64)
    denominator = np.maximum(n_relevant, 1).astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discounts = _discounts(k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_relevant, k)]
    dcg = hits.astype(np.float64) @ discounts
    precision_at_hits = np.cumsum(hits, axis=1) / ranks * hits
    any_hit = hits.any(axis=1)
    first_rank = np.argmax(hits, axis=1) + 1.0
    values = {
        "precision": n_hits / k,
        "recall": n_hits / denominator,
        "ndcg": np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0),
        "map": precision_at_hits.sum(axis=1) / denominator,
        "hit_rate": any_hit.astype(np.float64),
        "mrr": np.where(any_hit, 1.0 / first_rank, 0.0),
    }
    return {name: _undefined_to_nan(value, n_relevant) for name, value in values.items()}


def _metric(name: str, recommended: np.ndarray, relevant: Relevant, k: int | None) -> np.ndarray:
    recommended, k = _as_recommended(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))  # fewer columns than k: no hits there
    return _per_user(hits, n_relevant, k)[name]


def precision_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """Hits in the top ``k`` / ``k``, per user ``(n_users,)``."""
    return _metric("precision", recommended, relevant, k)


def recall_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """Hits in the top ``k`` / number of relevant items, per user ``(n_users,)``."""
    return _metric("recall", recommended, relevant, k)


def ndcg_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """Binary-relevance DCG@k / ideal DCG over ``min(k, n_relevant)`` hits, per user."""
    return _metric("ndcg", recommended, relevant, k)


def map_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """Sum of precision@rank at each hit / number of relevant items, per user ``(n_users,)``."""
    return _metric("map", recommended, relevant, k)


def hit_rate_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """1 if any of the top ``k`` is relevant else 0, per user ``(n_users,)``."""
    return _metric("hit_rate", recommended, relevant, k)


def mrr_at_k(recommended: np.ndarray, relevant: Relevant, k: int | None = None) -> np.ndarray:
    """1 / rank of the first relevant item in the top ``k`` (0 if none), per user."""
    return _metric("mrr", recommended, relevant, k)


def catalogue_coverage(recommended: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Distinct items among all users' top ``k`` / ``n_items`` (padding ignored)."""
    if n_items <= 0:
        raise ValueError(f"n_items must be > 0, got {n_items}")
    recommended, _ = _as_recommended(recommended, k)
    distinct = np.unique(recommended[recommended >= 0])
    if distinct.size and distinct[-1] >= n_items:
        raise ValueError(f"recommended holds item index {distinct[-1]} >= n_items ({n_items})")
    return distinct.size / n_items


def _distinct_cells(
    recommended: np.ndarray, k: int | None, n_items: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(rows (m,), items (m,), n_users)``: each distinct item of each row's top ``k`` once.

    Padding (-1) is dropped and a repeated item counts once, as in the ranking metrics.
    """
    recommended, k = _as_recommended(recommended, k)
    rows, cols = np.nonzero(recommended >= 0)
    items = recommended[rows, cols]
    if n_items is not None and items.size and items.max() >= n_items:
        raise ValueError(f"recommended holds item index {items.max()} >= n_items ({n_items})")
    if items.size:
        cells = np.unique(np.stack([rows, items], axis=1), axis=0)
        rows, items = cells[:, 0], cells[:, 1]
    return rows, items, recommended.shape[0]


def novelty_at_k(
    recommended: np.ndarray,
    train_matrix: sp.spmatrix | sp.sparray,
    k: int | None = None,
    *,
    denominator: str = "users",
) -> float:
    """Mean self-information ``-log2 p(i)`` of the recommended items (Castells et al., ECIR 2011).

    ``p(i)`` is item ``i``'s popularity share in ``train_matrix`` ``(n_train_users, n_items)``
    (nonzero = interacted): with ``denominator="users"`` the share of training users (rows) who
    interacted with ``i`` (the "discovery" model: how likely a random user already knows ``i``);
    with ``"interactions"`` the item's share of all nonzero cells, which is Microsoft Recommenders'
    ``historical_item_novelty`` for a training frame without duplicate rows.

    The mean runs over every distinct item of every row's top ``k`` (a popular item recommended to
    many users weighs many times). Items no training user interacted with have no finite
    self-information and are left out of the mean (Recommenders instead counts them as 0).
    Returns NaN when nothing with a finite value was recommended.
    """
    allowed = ("users", "interactions")
    if denominator not in allowed:
        raise ValueError(f"denominator must be one of {allowed}, got {denominator!r}")
    matrix = sp.csr_matrix(train_matrix)
    n_train_users, n_items = matrix.shape
    _, items, _ = _distinct_cells(recommended, k, n_items)
    counts = np.bincount(matrix.indices[matrix.data != 0], minlength=n_items)
    total = n_train_users if denominator == "users" else counts.sum()
    known = counts[items] > 0
    if not known.any():
        return float("nan")
    return float(np.mean(-np.log2(counts[items[known]] / total)))


def intra_list_diversity_at_k(
    recommended: np.ndarray,
    item_vectors: np.ndarray | sp.spmatrix | sp.sparray,
    k: int | None = None,
) -> np.ndarray:
    """Per user ``(n_users,)``: mean of ``1 - cos(v_i, v_j)`` over pairs of distinct top-k items.

    ``item_vectors`` is ``(n_items, n_features)``, dense or sparse; row ``i`` describes item index
    ``i``. Typical choices: a one-hot genre/category matrix (feature-based diversity, Recommenders'
    ``item_feature_vector`` measure); the binarized transposed training matrix
    ``(train.matrix.T != 0)`` ``(n_items, n_train_users)``, whose cosine is Recommenders' default
    ``item_cooccurrence_count`` similarity; or a model's item embeddings. An all-zero row has
    similarity 0 with every item. Users with fewer than two distinct items get NaN.
    (Ziegler et al. 2005; Recommenders' ``user_diversity``.)
    """
    vectors = item_vectors if sp.issparse(item_vectors) else np.asarray(item_vectors)
    if vectors.ndim != 2:
        raise ValueError(f"item_vectors must be 2-D (n_items, n_features), got {vectors.shape}")
    n_items = vectors.shape[0]
    rows, items, n_users = _distinct_cells(recommended, k, n_items)
    if sp.issparse(vectors):
        vectors = sp.csr_matrix(vectors, dtype=np.float64)
        norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
        unit = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ vectors
        unit_sq = np.asarray(unit.multiply(unit).sum(axis=1)).ravel()
    else:
        vectors = vectors.astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
        unit_sq = (unit * unit).sum(axis=1)
    chosen = sp.csr_matrix((np.ones(rows.size), (rows, items)), shape=(n_users, n_items))
    sums = chosen @ unit  # (n_users, n_features): the sum of each user's unit vectors
    sums_sq = (
        np.asarray(sums.multiply(sums).sum(axis=1)).ravel()
        if sp.issparse(sums)
        else (np.asarray(sums) ** 2).sum(axis=1)
    )
    # Sum over ordered pairs i != j of cos(i, j) = |sum of unit vectors|^2 - sum of |unit|^2.
    n_chosen = np.bincount(rows, minlength=n_users).astype(np.float64)
    pair_sum = sums_sq - chosen @ unit_sq
    n_pairs = n_chosen * (n_chosen - 1)
    mean_similarity = np.divide(pair_sum, n_pairs, out=np.zeros(n_users), where=n_pairs > 0)
    return np.where(n_chosen >= 2, 1.0 - mean_similarity, np.nan)


def personalization_at_k(recommended: np.ndarray, k: int | None = None) -> float:
    """1 - mean cosine similarity between the top-``k`` sets of every pair of users.

    Each user with at least one recommended item is a binary vector over items; the mean runs
    over all pairs of such users. This is ``recmetrics.personalization`` (mean off-diagonal
    cosine of the user x item recommendation matrix, subtracted from 1), except that users with
    empty lists are left out instead of entering with similarity 0. (Microsoft Recommenders
    1.2.1 has no personalization function.) 0: everyone gets the same list; near 1: lists share
    nothing. Computed in O(entries) without the user x user matrix. NaN for fewer than two users.
    """
    rows, items, _ = _distinct_cells(recommended, k)
    users, rows = np.unique(rows, return_inverse=True)
    n = users.size
    if n < 2:
        return float("nan")
    lengths = np.bincount(rows).astype(np.float64)
    weights = 1.0 / np.sqrt(lengths[rows])  # each row as a unit vector
    column_sums = np.bincount(items, weights=weights)
    # Sum over ordered pairs u != v of cos(u, v) = |sum of unit rows|^2 - n.
    mean_similarity = (float(column_sums @ column_sums) - n) / (n * (n - 1))
    return 1.0 - mean_similarity


def ranking_report(
    recommended: np.ndarray,
    relevant: Relevant,
    n_items: int,
    k: int,
    *,
    train_matrix: sp.spmatrix | sp.sparray | None = None,
    item_vectors: np.ndarray | sp.spmatrix | sp.sparray | None = None,
    personalization: bool = False,
) -> dict[str, float]:
    """Mean ranking metrics at ``k`` over users with at least one relevant item.

    Keys are ``{precision,recall,ndcg,map,hit_rate,mrr}_at_{k}`` (names MLflow accepts),
    ``coverage_at_{k}`` over every row of ``recommended``, and ``n_users`` (users averaged).
    Optional beyond-accuracy keys, over every row of ``recommended`` as coverage:
    ``novelty_at_{k}`` when ``train_matrix`` ``(n_train_users, n_items)`` is given (see
    `novelty_at_k`), ``diversity_at_{k}`` (mean intra-list diversity over users with two or more
    items) when ``item_vectors`` ``(n_items, n_features)`` is given, and
    ``personalization_at_{k}`` when ``personalization`` is true.
    Raises ``ValueError`` when no user has a relevant item.
    """
    recommended, k = _as_recommended(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    evaluated = n_relevant > 0
    if not evaluated.any():
        raise ValueError("no user has a relevant item; nothing to evaluate")
    per_user = _per_user(hits[evaluated], n_relevant[evaluated], k)
    report = {f"{name}_at_{k}": float(values.mean()) for name, values in per_user.items()}
    report[f"coverage_at_{k}"] = catalogue_coverage(recommended, n_items, k)
    report["n_users"] = float(evaluated.sum())
    if train_matrix is not None:
        if train_matrix.shape[1] != n_items:
            raise ValueError(
                f"train_matrix has {train_matrix.shape[1]} items, n_items is {n_items}"
            )
        report[f"novelty_at_{k}"] = novelty_at_k(recommended, train_matrix, k)
    if item_vectors is not None:
        if item_vectors.shape[0] != n_items:
            raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows, n_items is {n_items}")
        diversity = intra_list_diversity_at_k(recommended, item_vectors, k)
        has_pairs = ~np.isnan(diversity)
        report[f"diversity_at_{k}"] = (
            float(diversity[has_pairs].mean()) if has_pairs.any() else float("nan")
        )
    if personalization:
        report[f"personalization_at_{k}"] = personalization_at_k(recommended, k)
    return report


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error of rating predictions ``(n,)``."""
    # Imported here: sklearn.metrics takes seconds to import and ranking metrics do not need it.
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(y_true, y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error of rating predictions ``(n,)``."""
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y_true, y_pred))
