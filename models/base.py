"""The one model contract: id maps, the interaction matrix and the `Recommender` base class.

Ids are translated at the edges. `IdMap` turns external ids (strings) into dense indices and back,
`Interactions` holds a users x items CSR matrix built from an event frame, and every model works on
dense indices and arrays only. `Recommender` owns everything models share (validation, top-k
selection, exclusion of seen items, candidate restriction, padding, save/load), so a model only
implements fitting, full-catalogue scoring and its weights.

An interaction is a nonzero entry of the matrix; explicit zeros count as "not seen".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: ``callback(epoch, metrics)``; returning ``False`` asks the model to stop early.
Callback = Callable[[int, dict[str, float]], bool | None]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
IDS_FILE = "ids.npz"
WEIGHTS_FILE = "weights.npz"
TRAIN_FILE = "train_user_items.npz"

_SIGN_BIT = np.uint32(0x80000000)


class NotFittedError(RuntimeError):
    """Raised when a model is used before `fit` or `load`."""


def _as_str_array(ids: Iterable[Any]) -> np.ndarray:
    """Any 1-D collection of ids -> object array of ``str`` (shape ``(n,)``)."""
    if isinstance(ids, pd.Series | pd.Index):
        values = ids.to_numpy(dtype=object)
    elif isinstance(ids, np.ndarray):
        values = ids
    else:
        values = np.asarray(list(ids), dtype=object)
    if values.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {values.shape}")
    return np.array([str(value) for value in values], dtype=object)


@dataclass(frozen=True, eq=False)
class IdMap:
    """External ids <-> dense indices; ``ids[i]`` is the external id of dense index ``i``.

    Ids are stored as ``str`` in an object array of shape ``(n,)``; they must be unique.
    """

    ids: np.ndarray
    _index: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = _as_str_array(self.ids)
        index = pd.Index(ids, dtype=object)
        if not index.is_unique:
            duplicate = index[index.duplicated()][0]
            raise ValueError(f"ids must be unique; {duplicate!r} appears more than once")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_ids(cls, ids: Iterable[Any]) -> IdMap:
        """Map over the sorted unique ids (converted to ``str``)."""
        return cls(np.sort(pd.unique(_as_str_array(ids))))

    @overload
    def index(self, ids: str) -> int: ...
    @overload
    def index(self, ids: Iterable[Any]) -> np.ndarray: ...
    def index(self, ids: str | Iterable[Any]) -> int | np.ndarray:
        """External -> dense: one id gives an ``int``, a collection an ``int64`` array ``(n,)``.

        Raises ``KeyError`` naming the first unknown id.
        """
        if isinstance(ids, str) or np.ndim(ids) == 0:
            position = self.index_or([ids])
            if position[0] < 0:
                raise KeyError(f"unknown id {str(ids)!r} (not among the {len(self)} known ids)")
            return int(position[0])
        keys = _as_str_array(ids)
        positions = self.index_or(keys)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            raise KeyError(
                f"unknown id {keys[unknown[0]]!r} ({unknown.size} of {keys.size} ids unknown)"
            )
        return positions

    def index_or(self, ids: Iterable[Any], missing: int = -1) -> np.ndarray:
        """External -> dense as an ``int64`` array ``(n,)``, with ``missing`` for unknown ids."""
        positions = self._index.get_indexer(_as_str_array(ids)).astype(np.int64)
        if missing != -1:
            positions[positions < 0] = missing
        return positions

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return bool(np.array_equal(self.ids, other.ids))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self.ids[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap(n={len(self)}, ids=[{head}{more}])"

    def to_list(self) -> list[str]:
        """Dense order -> list of external ids."""
        return [str(i) for i in self.ids]


def _encode(keys: np.ndarray, id_map: IdMap | None) -> tuple[IdMap, np.ndarray]:
    """``(map, dense indices (n,))``; without a map, the sorted unique ``keys`` become one."""
    if id_map is not None:
        return id_map, id_map.index_or(keys)
    codes, uniques = pd.factorize(keys, sort=True)
    return IdMap(uniques), codes.astype(np.int64)


def _unknown_message(keys: np.ndarray, positions: np.ndarray, col: str, map_name: str) -> str:
    unknown = np.flatnonzero(positions < 0)
    return (
        f"{unknown.size} rows have a {col!r} not in the given {map_name} map "
        f"(e.g. {keys[unknown[0]]!r})"
    )


@dataclass(frozen=True, eq=False)
class Interactions:
    """A users x items matrix (CSR, ``float32`` weights) with its id maps and side features.

    ``matrix`` has shape ``(len(users), len(items))``. Feature frames are carried along unchanged
    for models that use them.
    """

    matrix: sp.csr_matrix
    users: IdMap
    items: IdMap
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if not sp.issparse(self.matrix):
            raise TypeError(f"matrix must be a scipy sparse matrix, got {type(self.matrix)}")
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        if not matrix.has_canonical_format:
            matrix = matrix.copy()
            matrix.sum_duplicates()
        expected = (len(self.users), len(self.items))
        if matrix.shape != expected:
            raise ValueError(
                f"matrix shape {matrix.shape} does not match (n_users, n_items) {expected}"
            )
        object.__setattr__(self, "matrix", matrix)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        weight_col: str | None = None,
        users: IdMap | None = None,
        items: IdMap | None = None,
        *,
        drop_unknown: bool = False,
        user_features: pd.DataFrame | None = None,
        item_features: pd.DataFrame | None = None,
    ) -> Interactions:
        """Build from one row per event; duplicate (user, item) rows have their weights summed.

        Without ``weight_col`` each row weighs 1. Without ``users``/``items`` the maps are the
        sorted unique ids of the frame. With given maps, rows whose ids are not in them raise
        ``ValueError`` (naming how many and an example) unless ``drop_unknown=True``, which drops
        them. Cells whose weights sum to zero are not stored.
        """
        wanted = [c for c in (user_col, item_col, weight_col) if c is not None]
        missing_cols = [c for c in wanted if c not in df.columns]
        if missing_cols:
            raise ValueError(f"columns {missing_cols} not in frame; available: {list(df.columns)}")
        for col in (user_col, item_col):
            n_null = int(df[col].isna().sum())
            if n_null:
                raise ValueError(f"{n_null} rows have a missing {col!r}")

        user_keys = _as_str_array(df[user_col])
        item_keys = _as_str_array(df[item_col])
        users, rows = _encode(user_keys, users)
        items, cols = _encode(item_keys, items)

        if weight_col is None:
            weights = np.ones(len(df), dtype=np.float64)
        else:
            weights = pd.to_numeric(df[weight_col], errors="coerce").to_numpy(dtype=np.float64)
            n_bad = int((~np.isfinite(weights)).sum())
            if n_bad:
                raise ValueError(f"{n_bad} rows have a missing or non-numeric {weight_col!r}")

        unknown = (rows < 0) | (cols < 0)
        if unknown.any():
            if not drop_unknown:
                problems = []
                if (rows < 0).any():
                    problems.append(_unknown_message(user_keys, rows, user_col, "users"))
                if (cols < 0).any():
                    problems.append(_unknown_message(item_keys, cols, item_col, "items"))
                raise ValueError("; ".join(problems) + "; pass drop_unknown=True to drop them")
            logger.info("dropping %d of %d rows with unknown ids", int(unknown.sum()), len(df))
            keep = ~unknown
            rows, cols, weights = rows[keep], cols[keep], weights[keep]

        # Sum in float64 so many small weights do not lose precision, then store float32.
        matrix = sp.coo_matrix((weights, (rows, cols)), shape=(len(users), len(items))).tocsr()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        return cls(
            matrix=matrix.astype(np.float32),
            users=users,
            items=items,
            user_features=user_features,
            item_features=item_features,
        )

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_items(self, user_idx: int | np.ndarray) -> sp.csr_matrix:
        """Rows of the matrix: ``(1, n_items)`` for one user, ``(n, n_items)`` for a batch.

        This is the ``user_items`` argument `Recommender.recommend` expects.
        """
        return self.matrix[np.atleast_1d(np.asarray(user_idx, dtype=np.int64))]


def _nonzero_cells(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
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
    k = _check_k(k)
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


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def read_saved_meta(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` written by `Recommender.save`.

    Keys: ``model`` (registry name), ``config`` (config fields) and ``format_version``.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved model in {directory}: {CONFIG_FILE} is missing")
    meta = json.loads(path.read_text())
    for key in ("model", "config", "format_version"):
        if key not in meta:
            raise ValueError(f"{path} has no {key!r} entry; is it a saved Tailor model?")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {meta['format_version']!r}; "
            f"this code reads {FORMAT_VERSION}"
        )
    return meta


class Recommender(ABC):
    """Base class of every model. Subclasses implement only fitting, scoring and their weights.

    A subclass sets ``name`` (its registry key) and ``config_class`` (a frozen dataclass whose
    fields are JSON values), and implements `_fit`, `_score`, `_similar`, `_get_state` and
    `_set_state`. Everything else (validation, top-k, exclusion of seen items, candidates,
    padding, save/load) lives here so all models behave the same.

    After fitting, ``users``/``items`` are the training id maps and ``train_user_items`` the
    training matrix ``(n_users, n_items)``, used when scoring without an explicit history.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.users: IdMap | None = None
        self.items: IdMap | None = None
        self.train_user_items: sp.csr_matrix | None = None

    def __repr__(self) -> str:
        state = f"{self.n_users} users x {self.n_items} items" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({self.config!r}, {state})"

    # ----------------------------------------------------------------- what subclasses implement

    @abstractmethod
    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        """Learn weights from ``interactions.matrix`` ``(n_users, n_items)``."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """Scores ``(n, n_items)`` for users ``(n,)`` whose histories are ``user_items`` rows."""

    @abstractmethod
    def _similar(self, item_idx: int) -> np.ndarray:
        """Similarity ``(n_items,)`` of every item to ``item_idx`` (higher is more similar)."""

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """Weights to save, as plain numeric arrays (no object arrays: loaded without pickle)."""

    @abstractmethod
    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore weights from `_get_state` output; ``users``/``items`` are already set."""

    # ----------------------------------------------------------------- the contract

    @property
    def is_fitted(self) -> bool:
        return self.items is not None

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return len(self.users)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items)

    def fit(self, interactions: Interactions, *, callback: Callback | None = None) -> Self:
        """Fit on ``interactions``; returns ``self``.

        ``callback(epoch, metrics)`` is called after each epoch (closed-form models call it once,
        with epoch 0); returning ``False`` stops training early.
        """
        if not isinstance(interactions, Interactions):
            raise TypeError(f"fit needs Interactions, got {type(interactions).__name__}")
        if interactions.n_items == 0:
            raise ValueError("cannot fit on interactions with no items")
        self._fit(interactions, callback)
        self.users = interactions.users
        self.items = interactions.items
        self.train_user_items = interactions.matrix
        return self

    def score(
        self,
        user_idx: int | np.ndarray,
        item_idx: np.ndarray | None = None,
        user_items: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """Scores (``float32``): ``(n_selected_items,)`` for one user, ``(n, n_selected)`` for many.

        ``item_idx`` selects items (all items when ``None``). ``user_items`` gives the histories to
        score from, one row per user (``(n, n_items)``); ``None`` uses the training history.
        """
        users, single = self._as_user_idx(user_idx)
        user_items = self._resolve_user_items(users, user_items)
        scores = self._checked_scores(users, user_items)
        if item_idx is not None:
            scores = scores[:, self._as_item_idx(item_idx, "item_idx")]
        return scores[0] if single else scores

    def recommend(
        self,
        user_idx: int | np.ndarray,
        user_items: sp.csr_matrix | None,
        *,
        k: int = 10,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for one user or a batch.

        Args:
            user_idx: one dense user index (``int``) or a batch ``(n,)``.
            user_items: histories, one row per requested user: ``(1, n_items)`` or
                ``(n, n_items)`` (see `Interactions.user_items`). They are both the scoring input
                and what ``exclude_seen`` removes, so serving can pass fresh history. ``None``
                uses the training history.
            k: items per user (> 0).
            exclude_seen: drop items with a nonzero entry in ``user_items``.
            candidates: ``(m,)`` item indices; when given only these can be returned.

        Returns:
            ``(item_idx, scores)`` sorted by score descending, ties broken by lower item index.
            One user: 1-D arrays of length ``<= k``. A batch: ``(n, k)`` arrays padded with -1 /
            -inf where fewer than ``k`` items are available.
        """
        k = _check_k(k)
        users, single = self._as_user_idx(user_idx)
        user_items = self._resolve_user_items(users, user_items)
        scores = self._checked_scores(users, user_items)
        valid = np.ones(scores.shape, dtype=bool)
        if candidates is not None:
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[self._as_item_idx(candidates, "candidates")] = True
            valid &= allowed
        if exclude_seen:
            valid[_nonzero_cells(user_items)] = False
        item_idx, top_scores = top_k(scores, valid, k)
        if single:
            n_found = int((item_idx[0] >= 0).sum())
            return item_idx[0, :n_found], top_scores[0, :n_found]
        return item_idx, top_scores

    def similar_items(self, item_idx: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to ``item_idx`` (itself excluded): 1-D arrays, len ``<= k``.

        Sorted by similarity descending, ties broken by lower item index.
        """
        k = _check_k(k)
        item = int(self._as_item_idx(np.array([item_idx]), "item_idx")[0])
        similarity = np.asarray(self._similar(item), dtype=np.float32).reshape(1, -1)
        if similarity.shape != (1, self.n_items):
            raise RuntimeError(
                f"{type(self).__name__}._similar returned shape {similarity.shape[1:]}, "
                f"expected ({self.n_items},)"
            )
        valid = np.ones(similarity.shape, dtype=bool)
        valid[0, item] = False
        found, scores = top_k(similarity, valid, k)
        n_found = int((found[0] >= 0).sum())
        return found[0, :n_found], scores[0, :n_found]

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` (name + config), ``ids.npz``, ``weights.npz`` and the training
        matrix. Everything is JSON or plain arrays, so `load` never unpickles code."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        np.savez(
            directory / IDS_FILE, users=self.users.ids.astype(str), items=self.items.ids.astype(str)
        )
        np.savez(directory / WEIGHTS_FILE, **self._get_state())
        sp.save_npz(directory / TRAIN_FILE, self.train_user_items, compressed=False)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a model written by `save` (use `models.registry.load_model` when the class is
        not known in advance)."""
        directory = Path(directory)
        meta = read_saved_meta(directory)
        if meta["model"] != cls.name:
            raise ValueError(
                f"{directory} holds a {meta['model']!r} model, not {cls.name!r}; "
                "use models.registry.load_model to load any model"
            )
        model = cls(cls.config_class(**meta["config"]))
        with np.load(directory / IDS_FILE, allow_pickle=False) as ids:
            model.users = IdMap(ids["users"])
            model.items = IdMap(ids["items"])
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as weights:
            state = {key: weights[key] for key in weights.files}
        model.train_user_items = sp.csr_matrix(
            sp.load_npz(directory / TRAIN_FILE), dtype=np.float32
        )
        model._set_state(state)
        return model

    # ----------------------------------------------------------------- helpers for subclasses

    @staticmethod
    def _report(callback: Callback | None, epoch: int, metrics: dict[str, float]) -> bool:
        """Call ``callback``; ``True`` means keep training."""
        if callback is None:
            return True
        return callback(epoch, metrics) is not False

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load()")

    # ----------------------------------------------------------------- validation

    def _as_user_idx(self, user_idx: int | np.ndarray) -> tuple[np.ndarray, bool]:
        self._check_fitted()
        single = np.ndim(user_idx) == 0
        users = np.atleast_1d(np.asarray(user_idx))
        if users.ndim != 1:
            raise ValueError(f"user_idx must be an int or 1-D array, got shape {users.shape}")
        if users.size and not np.issubdtype(users.dtype, np.integer):
            raise TypeError(f"user_idx must be integer dense indices, got dtype {users.dtype}")
        users = users.astype(np.int64)
        bad = (users < 0) | (users >= self.n_users)
        if bad.any():
            raise IndexError(
                f"user_idx {int(users[bad][0])} out of range [0, {self.n_users}); "
                "translate external ids with IdMap.index first"
            )
        return users, single

    def _as_item_idx(self, item_idx: np.ndarray, what: str) -> np.ndarray:
        items = np.asarray(item_idx)
        if items.ndim != 1:
            raise ValueError(f"{what} must be a 1-D array of item indices, got shape {items.shape}")
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise TypeError(f"{what} must be integer dense indices, got dtype {items.dtype}")
        items = items.astype(np.int64)
        bad = (items < 0) | (items >= self.n_items)
        if bad.any():
            raise IndexError(f"{what} {int(items[bad][0])} out of range [0, {self.n_items})")
        return items

    def _resolve_user_items(
        self, users: np.ndarray, user_items: sp.csr_matrix | None
    ) -> sp.csr_matrix:
        if user_items is None:
            return self.train_user_items[users]
        if not sp.issparse(user_items):
            user_items = np.asarray(user_items)
            if user_items.ndim != 2:
                raise ValueError(
                    f"user_items must be 2-D (n_users, n_items), got shape {user_items.shape}"
                )
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        expected = (len(users), self.n_items)
        if user_items.shape != expected:
            raise ValueError(
                f"user_items has shape {user_items.shape}, expected {expected}: one row per "
                "requested user (use interactions.user_items(user_idx))"
            )
        return user_items

    def _checked_scores(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        scores = np.asarray(self._score(users, user_items), dtype=np.float32)
        expected = (len(users), self.n_items)
        if scores.shape != expected:
            raise RuntimeError(
                f"{type(self).__name__}._score returned shape {scores.shape}, expected {expected}"
            )
        return scores
