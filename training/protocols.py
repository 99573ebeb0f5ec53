"""Published evaluation protocols: how an interaction frame is cut into train / valid / test.

Every split function takes one row per interaction (``user_id``, ``item_id``, ``timestamp``, ...;
column names are arguments) with a unique index, and returns a `Split` whose parts keep the
input's rows, columns and index labels. Each row lands in exactly one part (the parts are built
from one label per row, so no row is in two parts and their union is the input), and the
temporal splits never put a test row earlier than a train row of the same scope (the whole log
for `temporal_global_split`, the user for `leave_last_out`).

`to_eval` turns a split into what the models and `models.ranking_metrics` consume: the train
`Interactions` and, per test user, the set of relevant dense item indices. Test rows whose user or
item the train part never saw are dropped and counted in the result, never silently.

Sources followed:

- `msr_split`: ``recommenders==1.2.1`` (the latest release, Dec 2024),
  ``recommenders/datasets/python_splitters.py::_do_stratification`` as called by
  ``python_stratified_split``, read from the released wheel.
- `recbole_split`: ``recbole==1.2.1``, ``recbole/data/dataset/dataset.py``: ``build`` (order
  ``RO`` shuffles all rows, ``RS`` with ``group_by: user``) and ``_calcu_split_ids``.
- `leave_last_out`: RecBole's ``_split_index_by_leave_one_out`` rule (each user keeps at least
  one train row) with a time order, as RecBole's ``LS`` with order ``TO``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.interactions import Interactions

logger = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
ROUNDING_RULES = ("round", "fraction")
#: The published protocols `protocol_split` cuts by (``tailor benchmark --protocol``, tune specs).
PROTOCOLS = ("msr", "recbole", "temporal", "leave-last-out")


@dataclass(frozen=True)
class Split:
    """One evaluation split: row subsets of the input frame (same columns, same index labels).

    ``valid`` is ``None`` when the protocol has no validation part. ``name`` is the protocol
    (``"msr"``, ``"recbole"``, ``"temporal_global"``, ``"leave_last_out"``) and ``params`` the
    arguments that reproduce it (JSON values, ready to log).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    valid: pd.DataFrame | None = None
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Rows per part: ``{"train": ..., "valid": ..., "test": ...}`` (valid only if present)."""
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        return {name: len(part) for name, part in parts.items() if part is not None}


def _check_frame(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in frame; available: {list(df.columns)}")
    if not df.index.is_unique:
        raise ValueError(
            "the frame's index has duplicate labels; splits identify rows by index label: "
            "call df.reset_index(drop=True) first"
        )
    for col in columns:
        n_null = int(df[col].isna().sum())
        if n_null:
            raise ValueError(f"{n_null} rows have a missing {col!r}")


def _from_labels(
    df: pd.DataFrame,
    labels: np.ndarray,
    name: str,
    params: dict[str, Any],
    *,
    order: np.ndarray | None = None,
    with_valid: bool = False,
) -> Split:
    """Cut ``df`` by ``labels`` ``(n,)`` (TRAIN / VALID / TEST per row, in ``df``'s row order).

    Rows come out in ``df``'s order, or in ``order`` (positions into ``df``) when given.
    """
    positions = np.arange(len(df)) if order is None else order
    part_of = labels[positions]

    def part(label: int) -> pd.DataFrame:
        return df.iloc[positions[part_of == label]]

    return Split(
        train=part(TRAIN),
        test=part(TEST),
        valid=part(VALID) if with_valid else None,
        name=name,
        params=params,
    )


# -- Microsoft Recommenders -----------------------------------------------------------------


def msr_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    seed: int = 42,
    *,
    filter_by: str = "item",
    rounding: str = "round",
    user_col: str = "user_id",
    item_col: str = "item_id",
) -> Split:
    """Microsoft Recommenders' ``python_stratified_split(df, ratio, filter_by=..., seed=...)``.

    The defaults are the Recommenders MovieLens benchmark (75/25, "stratified based on items").
    What it does, exactly as ``_do_stratification`` in ``recommenders==1.2.1``:

    1. ``np.random.seed(seed); random = np.random.rand(len(df))``: one uniform draw per row in
       the input's row order (here from a private ``RandomState(seed)``, the same MT19937 stream,
       so the global NumPy state is left alone and ``df`` is not modified, unlike upstream).
    2. Sort by ``[group column, random]`` (``item_col`` for ``filter_by="item"``, ``user_col``
       for ``"user"``) with pandas ``sort_values``, as upstream does.
    3. ``count`` = rows of the group, ``rank`` = 1-based position in the sorted group.
    4. ``rounding="round"`` (1.2.1): train = ``rank <= round(ratio * count)`` with NumPy's
       round-half-to-even (``round()`` of a pandas Series); test = the rest. Upstream's test
       condition, ``round(ratio * count) < rank <= round(1.0 * count)``, is the same set because
       ``np.cumsum([ratio, 1 - ratio])[-1]`` is exactly 1.0 for every float ratio in (0, 1).
       ``rounding="fraction"``: train = ``rank / count <= ratio`` (= ``floor(ratio * count)``
       rows), the rule of a later unreleased revision on Recommenders' main branch.

    ``min_rating`` is upstream's default 1, which filters nothing, so no row is dropped.
    Train and test come out in upstream's order (sorted by group, then draw) with the input's
    index labels, so for the same input frame they equal upstream's frames row for row. The rows
    chosen depend on the input's row order (the draws are assigned in it): feed MovieLens in
    ``u.data`` file order to reproduce Recommenders' own split of it.

    Args:
        df: one row per rating, ``(n, ...)``, unique index.
        ratio: train share in (0, 1) (a float, as upstream requires).
        seed: seed of the draws.
        filter_by: ``"item"`` or ``"user"``: the column each group is stratified on.
        rounding: ``"round"`` or ``"fraction"`` (see 4).
    """
    _check_frame(df, [user_col, item_col])
    if isinstance(ratio, bool) or not isinstance(ratio, float) or not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be a float in (0, 1), got {ratio!r}")
    groups = {"user": user_col, "item": item_col}
    if filter_by not in groups:
        raise ValueError(f"filter_by must be one of {list(groups)}, got {filter_by!r}")
    if rounding not in ROUNDING_RULES:
        raise ValueError(f"rounding must be one of {ROUNDING_RULES}, got {rounding!r}")

    draws = np.random.RandomState(seed).rand(len(df))
    group = df[groups[filter_by]].reset_index(drop=True)  # keeps the dtype, so the sort order
    keys = pd.DataFrame({"group": group, "random": draws})
    keys = keys.sort_values(["group", "random"])
    order = keys.index.to_numpy()
    grouped = keys.groupby("group", sort=False)
    count = grouped["group"].transform("count").to_numpy()
    rank = grouped.cumcount().to_numpy() + 1
    if rounding == "round":
        in_train = rank <= np.round(ratio * count)
    else:
        in_train = rank / count <= ratio

    labels = np.empty(len(df), dtype=np.int8)
    labels[order] = np.where(in_train, TRAIN, TEST)
    params = {"ratio": ratio, "seed": seed, "filter_by": filter_by, "rounding": rounding}
    return _from_labels(df, labels, "msr", params, order=order)


# -- RecBole --------------------------------------------------------------------------------


def recbole_part_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Rows per part for a group of ``n`` rows, as RecBole 1.2.1's ``_calcu_split_ids``.

    Ratios are normalised by their sum; every part but the first gets ``int(ratio * n)``
    (rounded down), the first part (train) the remainder; then, while train keeps more than one
    row, each later part whose exact share is in (0, 1) row is raised to one row (taken from
    train), last part first. E.g. ``n=5`` and (0.8, 0.1, 0.1) give ``[3, 1, 1]``.
    """
    total = sum(ratios)
    shares = [r / total for r in ratios]
    counts = [int(share * n) for share in shares]
    counts[0] = n - sum(counts[1:])
    for i in range(1, len(shares)):
        if counts[0] <= 1:
            break
        if 0 < shares[-i] * n < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def recbole_split(
    df: pd.DataFrame,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
    *,
    user_col: str = "user_id",
) -> Split:
    """RecBole's default protocol: ``eval_args: {split: {RS: ratios}, order: RO, group_by: user}``.

    All rows are shuffled (RecBole: ``torch.randperm`` after ``init_seed(seed)``; here
    ``np.random.default_rng(seed).permutation``, so the per-user sizes are RecBole's exactly but
    the rows drawn are not the ones RecBole's torch generator would draw). Each user's rows, in
    shuffled order, are then cut into consecutive parts of `recbole_part_sizes` rows. Three
    ratios give train / valid / test, two give train / test. Parts come out in input row order.

    Args:
        df: one row per interaction, ``(n, ...)``, unique index.
        ratios: two or three non-negative shares (normalised by their sum), train first.
        seed: seed of the shuffle (RecBole's default seed is 2020).
    """
    _check_frame(df, [user_col])
    ratios = [float(r) for r in ratios]
    if len(ratios) not in (2, 3) or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"ratios must be 2 or 3 non-negative shares, got {ratios}")

    shuffled = np.random.default_rng(seed).permutation(len(df))
    codes, _ = pd.factorize(df[user_col].to_numpy()[shuffled])
    by_user = np.argsort(codes, kind="stable")  # positions into `shuffled`, users grouped
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(len(df)) - np.repeat(starts, sizes)  # rank within the user, 0-based

    cut_cache: dict[int, np.ndarray] = {}
    cuts = np.empty((sizes.size, len(ratios) - 1), dtype=np.int64)
    for user, size in enumerate(sizes.tolist()):
        if size not in cut_cache:
            cut_cache[size] = np.cumsum(recbole_part_sizes(size, ratios))[:-1]
        cuts[user] = cut_cache[size]
    user_of_row = np.repeat(np.arange(sizes.size), sizes)
    part = (position[:, None] >= cuts[user_of_row]).sum(axis=1)  # 0, 1 (, 2)
    part_labels = np.array([TRAIN, VALID, TEST] if len(ratios) == 3 else [TRAIN, TEST])

    labels = np.empty(len(df), dtype=np.int8)
    labels[shuffled[by_user]] = part_labels[part]
    params = {"ratios": ratios, "seed": seed}
    return _from_labels(df, labels, "recbole", params, with_valid=len(ratios) == 3)


# -- temporal --------------------------------------------------------------------------------


def temporal_global_split(
    df: pd.DataFrame,
    *,
    test_fraction: float | None = None,
    cut: Any = None,
    time_col: str = "timestamp",
) -> Split:
    """One global time cut: train = rows before ``cut``, test = rows at or after it.

    Give either ``cut`` (a value comparable with ``time_col``) or ``test_fraction`` in (0, 1):
    the cut is then the timestamp of the ``round(test_fraction * n)``-th latest row, so rows
    tied with it all go to test and the test share can exceed ``test_fraction`` slightly.
    Every test row is at or after every train row. Parts come out in input row order.
    """
    _check_frame(df, [time_col])
    if (test_fraction is None) == (cut is None):
        raise ValueError("give exactly one of test_fraction and cut")
    times = df[time_col]
    if test_fraction is not None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        n_test = max(1, round(test_fraction * len(df)))
        cut = times.sort_values(kind="stable").iloc[len(df) - n_test] if len(df) else None
    in_test = (times >= cut).to_numpy() if cut is not None else np.zeros(0, dtype=bool)
    n_test_rows = int(in_test.sum())
    if n_test_rows in (0, len(df)):
        raise ValueError(
            f"a cut at {cut!r} leaves {len(df) - n_test_rows} train and {n_test_rows} test rows; "
            f"{time_col!r} spans {times.min()!r} to {times.max()!r}"
        )
    labels = np.where(in_test, TEST, TRAIN).astype(np.int8)
    params = {"test_fraction": test_fraction, "cut": str(cut)}
    return _from_labels(df, labels, "temporal_global", params)


def leave_last_out(
    df: pd.DataFrame,
    n_valid: int = 1,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
) -> Split:
    """Per user: the last interaction to test, the ``n_valid`` before it to validation.

    Each user's rows are ordered by ``(time_col, item_col)`` (ties in time broken by item id as
    the column compares, then by input row order). As RecBole's leave-one-out, every user keeps
    at least one train row: a user with ``m`` rows holds out ``min(1 + n_valid, m - 1)`` of them,
    the latest to test first, so a user with one row has no test row. ``n_valid=0`` gives no
    validation part. Within a user, test is at or after validation, which is at or after train.
    Parts come out in input row order.
    """
    _check_frame(df, [user_col, item_col, time_col])
    if isinstance(n_valid, bool) or not isinstance(n_valid, int | np.integer) or n_valid < 0:
        raise ValueError(f"n_valid must be an int >= 0, got {n_valid!r}")
    keys = pd.DataFrame(
        {
            "user": df[user_col].reset_index(drop=True),
            "time": df[time_col].reset_index(drop=True),
            "item": df[item_col].reset_index(drop=True),
            "row": np.arange(len(df)),
        }
    )
    order = keys.sort_values(["user", "time", "item", "row"], kind="stable")["row"].to_numpy()
    grouped = keys.iloc[order].groupby("user", sort=False)
    count = grouped["row"].transform("count").to_numpy()
    from_end = count - 1 - grouped.cumcount().to_numpy()  # 0 = the user's latest row
    held_out = np.minimum(1 + n_valid, count - 1)
    sorted_labels = np.where(
        from_end >= held_out, TRAIN, np.where(from_end == 0, TEST, VALID)
    ).astype(np.int8)
    labels = np.empty(len(df), dtype=np.int8)
    labels[order] = sorted_labels
    params = {"n_valid": n_valid}
    return _from_labels(df, labels, "leave_last_out", params, with_valid=n_valid > 0)


def protocol_split(frame: pd.DataFrame, protocol: str) -> Split:
    """``frame`` cut by one of `PROTOCOLS` with its published settings: ``msr`` 75/25 stratified
    by item with seed 42, ``recbole`` 80/10/10 per user, ``temporal`` the latest 20 % of rows,
    ``leave-last-out`` each user's last row to test and the one before to validation."""
    if protocol == "msr":
        return msr_split(frame, ratio=0.75, seed=42)
    if protocol == "recbole":
        return recbole_split(frame, ratios=(0.8, 0.1, 0.1))
    if protocol == "temporal":
        return temporal_global_split(frame, test_fraction=0.2)
    if protocol == "leave-last-out":
        return leave_last_out(frame, n_valid=1)
    raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")


# -- evaluation inputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """What one evaluation needs: the train matrix and each test user's relevant items.

    ``test_users`` ``(n_eval_users,)`` holds ascending dense user indices of ``train``;
    ``relevant[j]`` is the set of dense item indices relevant to ``test_users[j]``. Counts are of
    rows of the evaluated part: ``n_rows`` in all, ``n_unknown_user`` whose user is not in train,
    ``n_unknown_item`` whose user is known but item is not (both dropped), ``n_seen`` whose
    (user, item) pair is already in train (kept in ``relevant`` only when ``keep_seen``), and
    ``n_relevant`` the (user, item) pairs in ``relevant`` in total.
    """

    train: Interactions
    test_users: np.ndarray
    relevant: list[set[int]]
    n_rows: int
    n_unknown_user: int
    n_unknown_item: int
    n_seen: int
    n_relevant: int
    keep_seen: bool


def to_eval(
    split: Split,
    *,
    part: str = "test",
    train_with_valid: bool = False,
    keep_seen: bool | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
) -> EvalSet:
    """Build the train `Interactions` and the relevant sets of ``split``'s ``part``.

    Every row of the evaluated part whose user and item are known to train is relevant
    (relevance is binary, whatever the rating). ``keep_seen`` decides about test pairs that are
    also in train: with the default ``None`` they stay relevant for ``"msr"`` (Recommenders
    counts every test rating; the model's ``exclude_seen`` still hides them from the candidates)
    and are removed for every other protocol.

    Args:
        split: a `Split`.
        part: ``"test"`` or ``"valid"``.
        train_with_valid: add the validation rows to train (refit before the final test).
        keep_seen: see above.
        weight_col: weight column for the train matrix; ``None`` weighs each row 1.
    """
    if part not in ("test", "valid"):
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    evaluated = split.test if part == "test" else split.valid
    if evaluated is None:
        raise ValueError(f"split {split.name!r} has no validation part")
    train_frame = split.train
    if train_with_valid:
        if part == "valid":
            raise ValueError("train_with_valid=True would train on the evaluated rows")
        if split.valid is not None:
            train_frame = pd.concat([split.train, split.valid])
    if keep_seen is None:
        keep_seen = split.name == "msr"

    train = Interactions.from_frame(train_frame, user_col, item_col, weight_col)
    users = train.users.index_or(evaluated[user_col].to_numpy())
    items = train.items.index_or(evaluated[item_col].to_numpy())
    unknown_user = users < 0
    unknown_item = ~unknown_user & (items < 0)
    known = ~unknown_user & ~unknown_item
    users, items = users[known], items[known]
    seen = np.asarray(train.matrix[users, items]).ravel() != 0 if users.size else np.zeros(0, bool)
    if not keep_seen:
        users, items = users[~seen], items[~seen]

    relevant: dict[int, set[int]] = {}
    for user, item in zip(users.tolist(), items.tolist(), strict=True):
        relevant.setdefault(user, set()).add(item)
    test_users = np.array(sorted(relevant), dtype=np.int64)
    result = EvalSet(
        train=train,
        test_users=test_users,
        relevant=[relevant[u] for u in test_users.tolist()],
        n_rows=len(evaluated),
        n_unknown_user=int(unknown_user.sum()),
        n_unknown_item=int(unknown_item.sum()),
        n_seen=int(seen.sum()),
        n_relevant=int(sum(len(r) for r in relevant.values())),
        keep_seen=keep_seen,
    )
    if result.n_unknown_user or result.n_unknown_item:
        logger.info(
            "%s %s: dropped %d of %d rows with a user and %d with an item unknown to train",
            split.name,
            part,
            result.n_unknown_user,
            result.n_rows,
            result.n_unknown_item,
        )
    return result
