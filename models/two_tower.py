"""Two-tower retrieval model with side features and pooled history (YouTube-DNN style).

User tower: an MLP over the concatenation of the user's id embedding, the user's encoded side
features and the mean of a separate "history" embedding over the items in the user's
``user_items`` row. Item tower: an MLP over the item's id embedding and encoded item side
features. Both towers end in ``embedding_dim`` units; the score of a (user, item) pair is the dot
product of the two outputs. Because the user tower also reads features and history, a user without
a trained id (cold start, `TwoTower.score_new_users`) still gets a personal list: the id embedding
is replaced by a learned "unknown user" row.

Training: sampled softmax. Every training interaction (user, item) is one example whose item
competes with ``negatives`` items drawn uniformly among the user's unseen items (fresh each
epoch); the loss is the cross-entropy of the positive among those ``1 + negatives`` dot products.
Uniform sampled negatives rather than in-batch negatives: on small catalogues in-batch negatives
are often the user's own positives, and they need a popularity (logQ) correction. The pooled
history of an example leaves its own item out (otherwise the tower learns "an item scores high
when it is in the history", which says nothing about unseen items). With probability
``cold_dropout`` an example's id is replaced by the unknown row, and independently with the same
probability its history is dropped, so the tower also learns to score from features (and from
history alone), as it must for cold users.

Side features: ``Interactions.user_features`` / ``item_features`` frames indexed by the external
id (a ``user_id`` / ``item_id`` column is used as the index when present). Numeric and boolean
columns are standardized (missing -> 0, the mean); other columns are categorical, multi-hot over
tokens split on ``"|"`` (``"Action|Comedy"`` sets two bits), keeping tokens seen in at least
`MIN_TOKEN_COUNT` rows, at most `MAX_TOKENS` per column (the most frequent). Ids missing from a
frame get all-zero features. The encoders are fitted in `_fit` and saved as plain arrays (means,
scales and unicode token arrays: nothing needs pickle).

Early stopping as in `models.ncf`: ``validation_fraction`` of each user's interactions are held
out (`models.neural.holdout_per_user`) and NDCG@10 on them is monitored by `fit_epochs`.

Scoring is deterministic and row-by-row (each user's tower runs with the same tensor shapes
whatever the batch), so a batch scores exactly like single users.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Callback, IdMap, Interactions, Recommender, cosine_to
from models.checks import check_float as _check_float
from models.checks import check_int as _check_int
from models.neural import (
    EpochHistory,
    NegativeSampler,
    Validate,
    arrays_to_state,
    binarize,
    fit_epochs,
    holdout_per_user,
    ndcg_at_k,
    positive_pairs,
    seed_everything,
    state_to_arrays,
)

logger = logging.getLogger(__name__)

VALIDATION_K = 10
MONITOR = f"val_ndcg_at_{VALIDATION_K}"
#: A categorical token must appear in this many rows to get its own one-hot column.
MIN_TOKEN_COUNT = 2
#: At most this many tokens (the most frequent) per categorical column.
MAX_TOKENS = 100
TOKEN_SEPARATOR = "|"
USER_ENCODER_PREFIX = "user_encoder."


# ---------------------------------------------------------------------- config


def _parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; ``""`` -> ``()`` (a linear tower)."""
    if not isinstance(text, str):
        raise ValueError(f"hidden must be a comma-separated str like '64' or '64,32', got {text!r}")
    if not text.strip():
        return ()
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(
            f"hidden must be positive ints separated by commas like '64,32' (or ''), got {text!r}"
        )
    return tuple(int(part) for part in parts)


@dataclass(frozen=True)
class TwoTowerConfig:
    """Two-tower hyperparameters.

    ``embedding_dim``: size of the id and history embeddings and of both towers' outputs.
    ``hidden``: hidden ReLU layer sizes of each tower as a comma-separated string (``"64"``,
    ``"128,64"``; ``""`` for a linear tower), a string so the config stays a flat JSON value (see
    `models.ncf.NCFConfig`). ``epochs``: at most this many passes. ``batch_size``: training
    interactions per step. ``learning_rate`` / ``weight_decay``: Adam's. ``negatives``: uniformly
    sampled unseen items each positive competes with in the sampled softmax.
    ``validation_fraction``: share of each user's interactions held out for early stopping (0
    disables it). ``patience``: epochs without a better validation NDCG@10 before stopping.
    ``seed``: initialization, hold-out, sampling, dropout and shuffling. ``use_features``: feed
    the interactions' side-feature frames to the towers (ignored where a frame is ``None``).
    ``cold_dropout``: per training example, probability of replacing the user id by the unknown
    row, and (independently) of dropping the history, so that cold users score well.
    """

    embedding_dim: int = 32
    hidden: str = "64"
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-2
    negatives: int = 4
    weight_decay: float = 0.0
    validation_fraction: float = 0.1
    patience: int = 3
    seed: int = 42
    use_features: bool = True
    cold_dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_int("embedding_dim", self.embedding_dim, 1)
        _parse_hidden(self.hidden)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("learning_rate", self.learning_rate, 0.0, float("inf"), low_open=True)
        _check_int("negatives", self.negatives, 1)
        _check_float("weight_decay", self.weight_decay, 0.0, float("inf"), low_open=False)
        _check_float("validation_fraction", self.validation_fraction, 0.0, 1.0, low_open=False)
        _check_int("patience", self.patience, 1)
        _check_int("seed", self.seed, 0)
        if not isinstance(self.use_features, bool):
            raise ValueError(f"use_features must be a bool, got {self.use_features!r}")
        _check_float("cold_dropout", self.cold_dropout, 0.0, 1.0, low_open=False)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """``hidden`` parsed: ``"64,32"`` -> ``(64, 32)``."""
        return _parse_hidden(self.hidden)


# ---------------------------------------------------------------------- side features


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


def _encode_features(
    frame: pd.DataFrame | None, ids: IdMap, kind: str, use: bool
) -> tuple[FeatureEncoder, np.ndarray]:
    """``(encoder, features (len(ids), dim))``; an empty encoder when unused or absent."""
    if not use or frame is None:
        encoder = FeatureEncoder((), np.zeros(0), np.zeros(0), (), ())
        return encoder, np.zeros((len(ids), 0), dtype=np.float32)
    aligned = _aligned(frame, ids, kind)
    encoder = FeatureEncoder.fit(aligned)
    return encoder, encoder.transform(aligned, len(ids))


# ---------------------------------------------------------------------- the module


def _mlp(size_in: int, hidden: Sequence[int], size_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip((size_in, *hidden), hidden, strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(hidden[-1] if hidden else size_in, size_out))
    return nn.Sequential(*layers)


class TwoTowerNet(nn.Module):
    """User and item towers. ``user_id`` has ``n_users + 1`` rows, the last for unknown users.

    Buffers ``user_side`` ``(n_users, d_user)`` and ``item_side`` ``(n_items, d_item)`` hold the
    encoded side features of the training users and items (saved with the weights).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        hidden: Sequence[int],
        user_feature_dim: int,
        item_feature_dim: int,
    ) -> None:
        super().__init__()
        self.n_users = n_users
        self.user_id = nn.Embedding(n_users + 1, dim)
        self.history = nn.Embedding(n_items, dim)
        self.item_id = nn.Embedding(n_items, dim)
        self.register_buffer("user_side", torch.zeros(n_users, user_feature_dim))
        self.register_buffer("item_side", torch.zeros(n_items, item_feature_dim))
        self.user_mlp = _mlp(2 * dim + user_feature_dim, hidden, dim)
        self.item_mlp = _mlp(dim + item_feature_dim, hidden, dim)
        for embedding in (self.user_id, self.history, self.item_id):
            nn.init.normal_(embedding.weight, std=0.1)

    @property
    def unknown_user(self) -> int:
        return self.n_users

    def user_vectors(
        self, id_idx: torch.Tensor, side: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """``(b, dim)`` from id rows ``(b,)``, side features ``(b, d_user)`` and pooled history
        ``(b, dim)``."""
        return self.user_mlp(torch.cat([self.user_id(id_idx), side, pooled], dim=1))

    def item_vectors(self, item_idx: torch.Tensor) -> torch.Tensor:
        """``(*shape, dim)`` for item indices of any ``shape``."""
        flat = item_idx.reshape(-1)
        out = self.item_mlp(torch.cat([self.item_id(flat), self.item_side[flat]], dim=1))
        return out.reshape(*item_idx.shape, -1)

    def history_sum(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``(b, dim)``: sum of history embeddings per bag (CSR-style ``indices``/``offsets``)."""
        return F.embedding_bag(indices, self.history.weight, offsets, mode="sum")


# ---------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Score with one intra-op thread: small ops, and results independent of the machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _bags(rows: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(indices, offsets, counts)`` of the nonzero items per row of binary CSR ``rows``."""
    counts = np.diff(rows.indptr).astype(np.int64)
    indices = torch.from_numpy(rows.indices.astype(np.int64))
    offsets = torch.from_numpy(rows.indptr[:-1].astype(np.int64))
    return indices, offsets, counts


def _pooled(module: TwoTowerNet, rows: sp.csr_matrix) -> torch.Tensor:
    """Mean history embedding ``(n, dim)`` of binary CSR ``rows``; zero for empty rows."""
    indices, offsets, counts = _bags(rows)
    total = module.history_sum(indices, offsets)
    return total / torch.from_numpy(np.maximum(counts, 1).astype(np.float32))[:, None]


def _sampled_softmax_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    (id_idx, user_idx, items, keep_history, indices, offsets, counts) = batch
    total = module.history_sum(indices, offsets)
    # Leave the positive (column 0) out of its own history: (sum - e_pos) / (n - 1).
    total = total - module.history(items[:, 0])
    pooled = total / (counts - 1).clamp(min=1)[:, None] * keep_history[:, None]
    users = module.user_vectors(id_idx, module.user_side[user_idx], pooled)  # (b, dim)
    logits = (module.item_vectors(items) * users[:, None, :]).sum(dim=2)  # (b, 1 + negatives)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64))


# ---------------------------------------------------------------------- the adapter


class TwoTower(Recommender):
    """Two-tower model over dense indices; ``module`` is the trained `TwoTowerNet` (eval mode)."""

    name = "two_tower"
    config_class = TwoTowerConfig
    config: TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        super().__init__(config)
        self.module: TwoTowerNet | None = None
        self.user_encoder: FeatureEncoder | None = None
        self.history: EpochHistory | None = None  # set by fit, not saved
        self._item_matrix: np.ndarray | None = None  # (n_items, dim) item tower outputs

    def _new_module(self, n_users: int, n_items: int, d_user: int, d_item: int) -> TwoTowerNet:
        config = self.config
        return TwoTowerNet(
            n_users, n_items, config.embedding_dim, config.hidden_sizes, d_user, d_item
        )

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        config = self.config
        n_users, n_items = interactions.matrix.shape
        self.user_encoder, user_side = _encode_features(
            interactions.user_features, interactions.users, "user", config.use_features
        )
        _, item_side = _encode_features(
            interactions.item_features, interactions.items, "item", config.use_features
        )
        split_rng = np.random.default_rng([config.seed, 1])  # a stream apart from the loop's
        train, held_out = holdout_per_user(
            interactions.matrix, config.validation_fraction, split_rng
        )
        users, items = positive_pairs(train)
        sampler = NegativeSampler(train)
        has_negatives = sampler.n_free[users] > 0  # users who saw every item have none
        users, items = users[has_negatives], items[has_negatives]
        if users.size == 0:
            raise ValueError("TwoTower needs at least one interaction with an unseen item")

        def make_batches(
            epoch: int, rng: np.random.Generator
        ) -> Iterator[tuple[torch.Tensor, ...]]:
            negatives = sampler.sample(np.repeat(users, config.negatives), rng)
            all_items = np.column_stack([items, negatives.reshape(-1, config.negatives)])
            drop_id = rng.random(users.size) < config.cold_dropout
            keep_history = (rng.random(users.size) >= config.cold_dropout).astype(np.float32)
            id_idx = np.where(drop_id, n_users, users)
            order = rng.permutation(users.size)
            for start in range(0, users.size, config.batch_size):
                rows = order[start : start + config.batch_size]
                indices, offsets, counts = _bags(train[users[rows]])
                yield (
                    torch.from_numpy(id_idx[rows]),
                    torch.from_numpy(users[rows]),
                    torch.from_numpy(all_items[rows]),
                    torch.from_numpy(keep_history[rows]),
                    indices,
                    offsets,
                    torch.from_numpy(counts.astype(np.float32)),
                )

        seed_everything(config.seed)
        module = self._new_module(n_users, n_items, user_side.shape[1], item_side.shape[1])
        module.user_side.copy_(torch.from_numpy(user_side))
        module.item_side.copy_(torch.from_numpy(item_side))
        optimizer = torch.optim.Adam(
            module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.history = fit_epochs(
            module,
            make_batches,
            _sampled_softmax_loss,
            optimizer,
            epochs=config.epochs,
            callback=callback,
            validate=self._validator(module, train, held_out),
            monitor=MONITOR,
            patience=config.patience,
            seed=config.seed,
        )
        self._set_module(module)
        logger.info(
            "TwoTower: %d epochs (%s), best epoch %s, %.1fs",
            self.history.epochs_run,
            self.history.stop_reason,
            self.history.best_epoch,
            self.history.seconds,
        )

    @staticmethod
    def _validator(
        module: TwoTowerNet, train: sp.csr_matrix, held_out: sp.csr_matrix
    ) -> Validate | None:
        """Mean NDCG@10 over users with held-out items (batched: speed over bit-exactness)."""
        val_users = np.flatnonzero(np.diff(held_out.indptr) > 0)
        if val_users.size == 0:
            return None

        def validate() -> dict[str, float]:
            items = module.item_vectors(torch.arange(train.shape[1]))
            per_user = []
            for start in range(0, val_users.size, 256):
                chunk = val_users[start : start + 256]
                chunk_t = torch.from_numpy(chunk)
                pooled = _pooled(module, train[chunk])
                vectors = module.user_vectors(chunk_t, module.user_side[chunk_t], pooled)
                scores = (vectors @ items.T).numpy()
                seen = train[chunk].tocoo()
                scores[seen.row, seen.col] = -np.inf
                per_user.append(ndcg_at_k(scores, held_out[chunk], VALIDATION_K))
            return {MONITOR: float(np.nanmean(np.concatenate(per_user)))}

        return validate

    def _set_module(self, module: TwoTowerNet) -> None:
        self.module = module.eval()
        with torch.inference_mode(), _one_thread():
            items = module.item_vectors(torch.arange(module.item_side.shape[0]))
        self._item_matrix = items.numpy().astype(np.float32)

    def _score_rows(
        self, id_idx: np.ndarray, side: np.ndarray, user_items: sp.csr_matrix
    ) -> np.ndarray:
        """Scores ``(n, n_items)``, one user at a time with fixed shapes (batch == single)."""
        rows = binarize(user_items)
        scores = np.empty((len(id_idx), self._item_matrix.shape[0]), dtype=np.float32)
        with torch.inference_mode(), _one_thread():
            for row in range(len(id_idx)):
                pooled = _pooled(self.module, rows[row])
                vector = self.module.user_vectors(
                    torch.tensor([id_idx[row]], dtype=torch.int64),
                    torch.from_numpy(side[row : row + 1]),
                    pooled,
                )
                scores[row] = self._item_matrix @ vector.numpy()[0]
        return scores

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        side = self.module.user_side[torch.from_numpy(user_idx)].numpy()
        return self._score_rows(user_idx, side, user_items)

    def score_new_users(
        self, features: pd.DataFrame | None, user_items: sp.spmatrix | None
    ) -> np.ndarray:
        """Scores ``(n, n_items)`` ``float32`` for users without a trained id (cold start).

        ``features``: ``n`` rows in the order of ``user_items``' rows, with the columns the model
        was fitted on (extra columns are ignored; missing values count as unknown); ``None``
        means no features. ``user_items``: ``(n, n_items)`` histories (may be empty rows);
        ``None`` means empty histories (then ``n = len(features)``). The unknown-user id row
        stands in for the id. Seen items are not excluded here: mask ``user_items`` yourself.
        """
        self._check_fitted()
        if user_items is None:
            if features is None:
                raise ValueError("score_new_users needs features, user_items or both")
            user_items = sp.csr_matrix((len(features), self.n_items), dtype=np.float32)
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        n = user_items.shape[0]
        if user_items.shape[1] != self.n_items:
            raise ValueError(
                f"user_items has {user_items.shape[1]} columns, the model has {self.n_items} items"
            )
        if features is not None and len(features) != n:
            raise ValueError(f"features has {len(features)} rows, user_items {n}")
        encoder = self.user_encoder
        if encoder.dim == 0:
            side = np.zeros((n, 0), dtype=np.float32)
        else:
            side = encoder.transform(features, n)
        ids = np.full(n, self.module.unknown_user, dtype=np.int64)
        return self._score_rows(ids, side, user_items)

    def _similar(self, item_idx: int) -> np.ndarray:
        return cosine_to(self._item_matrix, item_idx)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {**state_to_arrays(self.module), **self.user_encoder.to_arrays(USER_ENCODER_PREFIX)}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        weights = {k: v for k, v in state.items() if not k.startswith(USER_ENCODER_PREFIX)}
        module = self._new_module(
            self.n_users,
            self.n_items,
            weights["user_side"].shape[1],
            weights["item_side"].shape[1],
        )
        arrays_to_state(module, weights)
        self.user_encoder = FeatureEncoder.from_arrays(state, USER_ENCODER_PREFIX)
        self._set_module(module)
