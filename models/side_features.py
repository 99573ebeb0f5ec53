"""Side features as model inputs: `FeatureEncoder` turns a feature frame into a float matrix.

Frames are ``Interactions.user_features`` / ``item_features``, indexed by the external id (a
``user_id`` / ``item_id`` column is used as the index when present). Numeric and boolean columns
are standardized (missing -> 0, the mean); other columns are categorical, multi-hot over tokens
split on ``"|"`` (``"Action|Comedy"`` sets two bits), keeping tokens seen in at least
`MIN_TOKEN_COUNT` rows, at most `MAX_TOKENS` per column (the most frequent). Ids missing from a
frame get all-zero features. An encoder is saved as plain arrays (means, scales and unicode token
arrays: nothing needs pickle). Used by the two-tower model (`models.two_tower`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.interactions import IdMap

logger = logging.getLogger(__name__)

#: A categorical token must appear in this many rows to get its own one-hot column.
MIN_TOKEN_COUNT = 2
#: At most this many tokens (the most frequent) per categorical column.
MAX_TOKENS = 100
TOKEN_SEPARATOR = "|"


def _aligned(frame: pd.DataFrame, ids: IdMap, kind: str) -> pd.DataFrame:
    """``frame`` reindexed to ``ids`` (rows in dense order; unknown ids -> all missing)."""
    id_col = f"{kind}_id"
    if id_col in frame.columns:
        frame = frame.set_index(id_col)
    frame = frame.copy()
    frame.index = pd.Index([str(i) for i in frame.index], dtype=object)
    if not frame.index.is_unique:
        duplicate = frame.index[frame.index.duplicated()][0]
        raise ValueError(f"{kind}_features has more than one row for id {duplicate!r}")
    n_missing = int((~pd.Index(ids.ids).isin(frame.index)).sum())
    if n_missing == len(ids) and len(ids):
        raise ValueError(
            f"{kind}_features shares no id with the interactions' {kind}s (e.g. "
            f"{ids.ids[0]!r}); index it by the external {kind} id or give a {id_col!r} column"
        )
    if n_missing:
        logger.info(
            "%s_features: %d of %d ids have no row (zero features)", kind, n_missing, len(ids)
        )
    return frame.reindex(pd.Index(ids.ids, dtype=object))


def _is_numeric(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        raise ValueError(
            f"feature column {column.name!r} has dtype {column.dtype}; convert dates to numbers "
            "(e.g. a year or an age) first"
        )
    return pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column)


def _tokens(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return []
    return [token.strip() for token in str(value).split(TOKEN_SEPARATOR) if token.strip()]


@dataclass(frozen=True)
class FeatureEncoder:
    """Turns a feature frame into a ``float32`` matrix ``(n, dim)``: standardized numeric
    columns, then one multi-hot block per categorical column (see the module docstring)."""

    numeric_columns: tuple[str, ...]
    means: np.ndarray  # (n_numeric,)
    scales: np.ndarray  # (n_numeric,)
    categorical_columns: tuple[str, ...]
    vocabularies: tuple[tuple[str, ...], ...]  # one per categorical column

    @property
    def dim(self) -> int:
        return len(self.numeric_columns) + sum(len(v) for v in self.vocabularies)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> FeatureEncoder:
        numeric = [str(c) for c in frame.columns if _is_numeric(frame[c])]
        categorical = [str(c) for c in frame.columns if str(c) not in numeric]
        values = _numeric_values(frame, numeric)
        with np.errstate(all="ignore"):
            known = np.isfinite(values)
            counts = known.sum(axis=0)
            means = np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), 0.0)
            spread = np.sqrt(np.nansum((values - means) ** 2, axis=0) / np.maximum(counts, 1))
        scales = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        vocabularies = []
        for col in categorical:
            tokens = pd.Series([t for v in frame[col] for t in dict.fromkeys(_tokens(v))])
            frequent = tokens.value_counts()
            frequent = frequent[frequent >= MIN_TOKEN_COUNT]
            # Most frequent first, ties by token, then stored sorted so the layout is stable.
            ranked = sorted(zip(-frequent.to_numpy(), frequent.index.astype(str), strict=True))
            vocabularies.append(tuple(sorted(token for _, token in ranked[:MAX_TOKENS])))
        return cls(
            tuple(numeric),
            means.astype(np.float64),
            scales.astype(np.float64),
            tuple(categorical),
            tuple(vocabularies),
        )

    def transform(self, frame: pd.DataFrame | None, n_rows: int) -> np.ndarray:
        """``(n_rows, dim)``; ``frame`` ``None`` means every value is missing."""
        if frame is None:
            return np.zeros((n_rows, self.dim), dtype=np.float32)
        missing = [c for c in (*self.numeric_columns, *self.categorical_columns) if c not in frame]
        if missing:
            raise ValueError(
                f"feature frame lacks columns {missing}; the model was fitted on "
                f"{[*self.numeric_columns, *self.categorical_columns]}"
            )
        if len(frame) != n_rows:
            raise ValueError(f"feature frame has {len(frame)} rows, expected {n_rows}")
        blocks = [
            np.nan_to_num((_numeric_values(frame, self.numeric_columns) - self.means) / self.scales)
        ]
        for col, vocabulary in zip(self.categorical_columns, self.vocabularies, strict=True):
            position = {token: j for j, token in enumerate(vocabulary)}
            block = np.zeros((n_rows, len(vocabulary)))
            for row, value in enumerate(frame[col].tolist()):
                for token in _tokens(value):
                    if token in position:
                        block[row, position[token]] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Plain arrays (floats, ints, fixed-width unicode) that `np.load` reads without pickle."""
        tokens = [token for vocabulary in self.vocabularies for token in vocabulary]
        return {
            f"{prefix}numeric_columns": np.array(self.numeric_columns, dtype=str),
            f"{prefix}means": np.asarray(self.means, dtype=np.float64),
            f"{prefix}scales": np.asarray(self.scales, dtype=np.float64),
            f"{prefix}categorical_columns": np.array(self.categorical_columns, dtype=str),
            f"{prefix}vocabulary_sizes": np.array(
                [len(v) for v in self.vocabularies], dtype=np.int64
            ),
            f"{prefix}tokens": np.array(tokens, dtype=str),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> FeatureEncoder:
        tokens = [str(t) for t in arrays[f"{prefix}tokens"].tolist()]
        bounds = np.concatenate([[0], np.cumsum(arrays[f"{prefix}vocabulary_sizes"])])
        return cls(
            tuple(str(c) for c in arrays[f"{prefix}numeric_columns"].tolist()),
            np.asarray(arrays[f"{prefix}means"], dtype=np.float64),
            np.asarray(arrays[f"{prefix}scales"], dtype=np.float64),
            tuple(str(c) for c in arrays[f"{prefix}categorical_columns"].tolist()),
            tuple(tuple(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
        )


def _numeric_values(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    if not columns:
        return np.zeros((len(frame), 0))
    return np.column_stack(
        [
            pd.to_numeric(frame[c].astype("Float64"), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            for c in columns
        ]
    )


def encode_features(
    frame: pd.DataFrame | None, ids: IdMap, kind: str, use: bool
) -> tuple[FeatureEncoder, np.ndarray]:
    """``(encoder, features (len(ids), dim))``; an empty encoder when unused or absent."""
    if not use or frame is None:
        encoder = FeatureEncoder((), np.zeros(0), np.zeros(0), (), ())
        return encoder, np.zeros((len(ids), 0), dtype=np.float32)
    aligned = _aligned(frame, ids, kind)
    encoder = FeatureEncoder.fit(aligned)
    return encoder, encoder.transform(aligned, len(ids))
