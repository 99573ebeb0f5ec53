"""SASRec: self-attentive sequential recommendation, Kang & McAuley (2018), "Self-Attentive
Sequential Recommendation".

A causal transformer over a user's item sequence: item embeddings (scaled by ``sqrt(hidden)``)
plus learned position embeddings go through ``blocks`` pre-norm blocks of causal multi-head
self-attention and a point-wise feed-forward layer (dropout, residuals, padding zeroed after each
block, as in the paper). The output at position ``t`` predicts item ``t + 1``; an item's logit is
the dot product of that output with the item's (shared input) embedding.

Where the order comes from: the contract passes histories as a CSR users x items row, which has no
order of its own, so SASRec reads it from the row's DATA values: items are ordered by value
ascending, ties broken by item index. Build ordered histories with `sequence_matrix` (data are
positions 1..n per user, latest = n) or with ``Interactions.from_frame(df,
weight_col="timestamp_rank")`` (any increasing rank or timestamp works). With plain weights (all
equal, the contract suite's case) the order falls back to item index. Only the ``max_len`` latest
items are used; shorter histories are left-padded with index 0 (item ``i`` is token ``i + 1``).

Training (``loss``): ``"bce"`` is the paper's objective, binary cross-entropy on every position's
next item (label 1) and one uniformly sampled item the user never interacted with (label 0),
redrawn each epoch; ``"softmax"`` is full cross-entropy over all items at every position (often
stronger for moderate catalogues, at ``O(n_items)`` per position). Each user's sequence is cut
from the end into windows of ``max_len`` next-item steps, so long histories give several
training examples per epoch instead of only their last ``max_len`` items.

Early stopping (the SASRec leave-last-out protocol, on a seeded share of users):
``validation_fraction`` of the users with two or more items have their last item held out of
training; after each epoch the model ranks all items those users have not trained on from their
remaining sequence, and NDCG@10 on the held-out item is reported as ``val_ndcg_at_10``. Training
stops after ``patience`` epochs without improvement and keeps the best epoch's weights. With
``validation_fraction == 0`` every item is trained on for all ``epochs``.

Scoring encodes the passed ``user_items`` row (not a stored user embedding), so fresh histories
and users unknown at training time are scored from what they did. Users are encoded in chunks of
`SCORE_CHUNK` padded ``(SCORE_CHUNK, max_len)`` token rows in eval mode: the same shapes for every
call, so a batch scores like single users, up to float rounding where a BLAS kernel treats a
block's last rows apart (943 MovieLens users: 1.5 s vs 22.7 s one
user per pass, measured in one process on a busy 2-core machine).
``similar_items(i)`` ranks items by the model's next-item logit after the one-item history
``[i]`` ("what follows i"), not by embedding cosine: items that only ever start sequences are
never a training target, so their embeddings hardly move and their cosines stay random.

This file holds the config and the `Recommender` adapter (batches, validation, scoring, state);
ordered histories and token windows are `models.sequences`, the torch module `models.sasrec_net`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from models.base import Callback
from models.checks import check_early_stopping, check_float, check_int, check_schedule
from models.interactions import Interactions
from models.neural.adapter import MONITOR, VALIDATION_K, NeuralRecommender
from models.neural.recommender import Validate, seed_everything, shuffled_batches
from models.neural.sampling import NegativeSampler, ndcg_at_k
from models.sasrec_net import (
    SASRecModule,
    bce_loss,
    encode_last,
    logits,
    softmax_loss,
)
from models.sequences import (
    ordered_histories,
    padded_tokens,
    training_windows,
)

__all__ = [
    "LOSSES",
    "SASRec",
    "SASRecConfig",
]

LOSSES = ("bce", "softmax")


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec hyperparameters.

    ``hidden``: embedding and model width (a multiple of ``heads``). ``blocks``: transformer
    blocks. ``heads``: attention heads. ``max_len``: most recent items the model sees.
    ``dropout``: on embeddings, attention and feed-forward layers while training. ``epochs``: at
    most this many passes. ``batch_size``: sequence windows per step. ``learning_rate``: Adam's.
    ``loss``: ``"bce"`` (paper: one sampled negative per position) or ``"softmax"`` (full
    cross-entropy). ``validation_fraction``: share of users whose last item is held out for early
    stopping (0 disables it). ``patience``: epochs without a better validation NDCG@10 before
    stopping. ``seed``: initialization, hold-out, sampling and shuffling.
    """

    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    loss: Literal["bce", "softmax"] = "bce"
    validation_fraction: float = 0.1
    patience: int = 3
    seed: int = 42

    def __post_init__(self) -> None:
        check_int("hidden", self.hidden, 1)
        check_int("blocks", self.blocks, 1)
        check_int("heads", self.heads, 1)
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden must be a multiple of heads, got hidden={self.hidden}, heads={self.heads}"
            )
        check_int("max_len", self.max_len, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, low_open=False)
        check_schedule(self)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check_early_stopping(self)


class SASRec(NeuralRecommender):
    """SASRec over dense indices; ``module`` is the trained `SASRecModule` (eval mode)."""

    name = "sasrec"
    config_class = SASRecConfig
    config: SASRecConfig

    module: SASRecModule | None

    def __init__(self, config: SASRecConfig | None = None) -> None:
        super().__init__(config)

    def _new_module(self, n_items: int) -> SASRecModule:
        c = self.config
        return SASRecModule(n_items, c.hidden, c.blocks, c.heads, c.max_len, c.dropout)

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        config = self.config
        n_items = interactions.n_items
        histories = ordered_histories(interactions.matrix)
        val_users = self._validation_users(histories)
        train_histories = list(histories)
        for user in val_users:
            train_histories[user] = histories[user][:-1]
        inputs, targets, owners = training_windows(train_histories, config.max_len)
        if len(inputs) == 0:
            raise ValueError("SASRec needs at least one user with two or more items to train on")
        inputs_t, targets_t = torch.from_numpy(inputs), torch.from_numpy(targets)
        sampler = NegativeSampler(interactions.matrix)
        position_users = np.repeat(owners, config.max_len)
        has_free = sampler.n_free[position_users] > 0

        def make_batches(
            epoch: int, rng: np.random.Generator
        ) -> Iterator[tuple[torch.Tensor, ...]]:
            if config.loss == "softmax":
                return shuffled_batches((inputs_t, targets_t), config.batch_size, rng)
            # Users who have seen every item get uniform negatives (there are no others).
            negatives = rng.integers(0, n_items, size=position_users.size)
            negatives[has_free] = sampler.sample(position_users[has_free], rng)
            negatives_t = torch.from_numpy((negatives + 1).reshape(inputs.shape))
            return shuffled_batches((inputs_t, targets_t, negatives_t), config.batch_size, rng)

        seed_everything(config.seed)
        module = self._new_module(n_items)
        optimizer = torch.optim.Adam(
            module.parameters(), lr=config.learning_rate, betas=(0.9, 0.98)
        )
        validate = self._validator(module, histories, val_users, n_items)
        loss_fn = softmax_loss if config.loss == "softmax" else bce_loss
        self._train(module, make_batches, loss_fn, optimizer, callback, validate)

    def _validation_users(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Seeded ``validation_fraction`` of the users with two or more items (at least one
        when the fraction is positive), sorted."""
        eligible = np.flatnonzero(np.array([len(h) >= 2 for h in histories], dtype=bool))
        fraction = self.config.validation_fraction
        if fraction == 0.0 or eligible.size == 0:
            return np.zeros(0, dtype=np.int64)
        n_val = max(1, int(round(fraction * eligible.size)))
        rng = np.random.default_rng([self.config.seed, 1])  # a stream apart from the loop's
        return np.sort(rng.choice(eligible, size=n_val, replace=False))

    def _validator(
        self,
        module: SASRecModule,
        histories: Sequence[np.ndarray],
        val_users: np.ndarray,
        n_items: int,
    ) -> Validate | None:
        """``validate()``: mean NDCG@10 of each validation user's held-out last item."""
        if val_users.size == 0:
            return None
        train_part = [histories[user][:-1] for user in val_users]
        tokens = torch.from_numpy(padded_tokens(train_part, self.config.max_len))
        last_items = [histories[user][-1] for user in val_users]
        held_out = sp.csr_matrix(
            (np.ones(val_users.size, dtype=np.float32), (np.arange(val_users.size), last_items)),
            shape=(val_users.size, n_items),
        )
        seen_rows = np.repeat(np.arange(val_users.size), [len(h) for h in train_part])
        seen_cols = np.concatenate(train_part) if train_part else np.zeros(0, dtype=np.int64)

        def validate() -> dict[str, float]:
            # Batched for speed; exact batch == single matters only for `_score`.
            states = torch.cat([module(chunk)[:, -1] for chunk in tokens.split(256)])
            scores = (states @ module.item_vectors.T).numpy()
            scores[seen_rows, seen_cols] = -np.inf
            return {MONITOR: float(np.nanmean(ndcg_at_k(scores, held_out, VALIDATION_K)))}

        return validate

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        tokens = padded_tokens(ordered_histories(user_items), self.config.max_len)
        states = encode_last(self.module, tokens)
        return logits(states, self.module.item_vectors.detach().numpy())

    def _similar(self, item_idx: int) -> np.ndarray:
        # The next-item logits after the one-item history [item_idx]. Plain embedding cosine
        # fails for items the model only sees as inputs (never as a next item, e.g. the first
        # item of every sequence): their embeddings barely move from initialization.
        tokens = padded_tokens([np.array([item_idx])], self.config.max_len)
        state = encode_last(self.module, tokens)[0]
        return self.module.item_vectors.detach().numpy() @ state

    def _module_for_state(self, state: Mapping[str, np.ndarray]) -> SASRecModule:
        return self._new_module(self.n_items)
