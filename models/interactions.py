"""The data side of the model contract: `IdMap` (external ids <-> dense indices) and `Interactions`.

Ids are translated at the edges. `IdMap` turns external ids (strings) into dense indices and back,
and `Interactions` holds a users x items CSR matrix built from an event frame, with its two id maps
and optional side-feature frames. Models see only the dense indices and arrays.

An interaction is a nonzero entry of the matrix; explicit zeros count as "not seen".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)


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
