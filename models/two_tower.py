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

Side features: ``Interactions.user_features`` / ``item_features`` frames, encoded by
`models.side_features.FeatureEncoder` (standardized numeric columns, multi-hot categorical
tokens). The encoders are fitted in `_fit`; the user encoder is saved with the weights (plain
arrays, nothing needs pickle) so `score_new_users` can encode new users' features.

Early stopping as in `models.ncf`: ``validation_fraction`` of each user's interactions are held
out (`models.neural.sampling.holdout_per_user`) and NDCG@10 on them is monitored by `fit_epochs`.

Scoring is deterministic and row-by-row (each user's tower runs with the same tensor shapes
whatever the batch), so a batch scores exactly like single users.

This file holds the config and the `Recommender` adapter (batches, validation, scoring, state);
the torch module is `models.two_tower_net`, the feature encoding `models.side_features`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from models.base import Callback
from models.checks import (
    check_early_stopping,
    check_float,
    check_int,
    check_sampling,
    check_schedule,
    parse_sizes,
)
from models.interactions import Interactions
from models.neural.adapter import MONITOR, NeuralRecommender, held_out_ndcg
from models.neural.recommender import Validate, arrays_to_state, seed_everything, state_to_arrays
from models.neural.sampling import NegativeSampler, binarize, holdout_per_user, positive_pairs
from models.ranking import cosine_to
from models.side_features import (
    FeatureEncoder,
    encode_features,
)
from models.two_tower_net import (
    TwoTowerNet,
    history_bags,
    one_thread,
    pooled_history,
    sampled_softmax_loss,
)

__all__ = [
    "USER_ENCODER_PREFIX",
    "TwoTower",
    "TwoTowerConfig",
]

USER_ENCODER_PREFIX = "user_encoder."


# ---------------------------------------------------------------------- config


def _parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; ``""`` -> ``()`` (a linear tower)."""
    if not isinstance(text, str):
        raise ValueError(f"hidden must be a comma-separated str like '64' or '64,32', got {text!r}")
    if not text.strip():
        return ()
    sizes = parse_sizes(text)
    if sizes is None:
        raise ValueError(
            f"hidden must be positive ints separated by commas like '64,32' (or ''), got {text!r}"
        )
    return sizes


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
        check_int("embedding_dim", self.embedding_dim, 1)
        _parse_hidden(self.hidden)
        check_schedule(self)
        check_sampling(self)
        check_early_stopping(self)
        if not isinstance(self.use_features, bool):
            raise ValueError(f"use_features must be a bool, got {self.use_features!r}")
        check_float("cold_dropout", self.cold_dropout, 0.0, 1.0, low_open=False)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """``hidden`` parsed: ``"64,32"`` -> ``(64, 32)``."""
        return _parse_hidden(self.hidden)


# ---------------------------------------------------------------------- the adapter


class TwoTower(NeuralRecommender):
    """Two-tower model over dense indices; ``module`` is the trained `TwoTowerNet` (eval mode)."""

    name = "two_tower"
    config_class = TwoTowerConfig
    config: TwoTowerConfig

    module: TwoTowerNet | None

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        super().__init__(config)
        self.user_encoder: FeatureEncoder | None = None
        self._item_matrix: np.ndarray | None = None  # (n_items, dim) item tower outputs

    def _new_module(self, n_users: int, n_items: int, d_user: int, d_item: int) -> TwoTowerNet:
        config = self.config
        return TwoTowerNet(
            n_users, n_items, config.embedding_dim, config.hidden_sizes, d_user, d_item
        )

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        config = self.config
        n_users, n_items = interactions.matrix.shape
        self.user_encoder, user_side = encode_features(
            interactions.user_features, interactions.users, "user", config.use_features
        )
        _, item_side = encode_features(
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
                indices, offsets, counts = history_bags(train[users[rows]])
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
        validate = self._validator(module, train, held_out)
        self._train(module, make_batches, sampled_softmax_loss, optimizer, callback, validate)

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

            def score_users(chunk: np.ndarray) -> np.ndarray:
                chunk_t = torch.from_numpy(chunk)
                pooled = pooled_history(module, train[chunk])
                vectors = module.user_vectors(chunk_t, module.user_side[chunk_t], pooled)
                return (vectors @ items.T).numpy()

            return {MONITOR: held_out_ndcg(score_users, train, held_out, val_users)}

        return validate

    def _set_module(self, module: TwoTowerNet) -> None:
        self.module = module.eval()
        with torch.inference_mode(), one_thread():
            items = module.item_vectors(torch.arange(module.item_side.shape[0]))
        self._item_matrix = items.numpy().astype(np.float32)

    def _score_rows(
        self, id_idx: np.ndarray, side: np.ndarray, user_items: sp.csr_matrix
    ) -> np.ndarray:
        """Scores ``(n, n_items)``, one user at a time with fixed shapes (batch == single)."""
        rows = binarize(user_items)
        scores = np.empty((len(id_idx), self._item_matrix.shape[0]), dtype=np.float32)
        with torch.inference_mode(), one_thread():
            for row in range(len(id_idx)):
                pooled = pooled_history(self.module, rows[row])
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
