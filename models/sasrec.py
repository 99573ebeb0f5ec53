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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Callback, IdMap, Interactions, Recommender
from models.checks import check_float as _check_float
from models.checks import check_int as _check_int
from models.neural import (
    EpochHistory,
    NegativeSampler,
    Validate,
    arrays_to_state,
    fit_epochs,
    ndcg_at_k,
    seed_everything,
    shuffled_batches,
    state_to_arrays,
)

logger = logging.getLogger(__name__)

VALIDATION_K = 10
MONITOR = f"val_ndcg_at_{VALIDATION_K}"
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
        _check_int("hidden", self.hidden, 1)
        _check_int("blocks", self.blocks, 1)
        _check_int("heads", self.heads, 1)
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden must be a multiple of heads, got hidden={self.hidden}, heads={self.heads}"
            )
        _check_int("max_len", self.max_len, 1)
        _check_float("dropout", self.dropout, 0.0, 1.0, low_open=False)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("learning_rate", self.learning_rate, 0.0, float("inf"), low_open=True)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        _check_float("validation_fraction", self.validation_fraction, 0.0, 1.0, low_open=False)
        _check_int("patience", self.patience, 1)
        _check_int("seed", self.seed, 0)


# ---------------------------------------------------------------------- ordered histories


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


# ---------------------------------------------------------------------- the module


class SASRecModule(nn.Module):
    """Item + position embeddings, ``blocks`` causal self-attention blocks, a final LayerNorm."""

    def __init__(
        self, n_items: int, hidden: int, blocks: int, heads: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embedding_dropout = nn.Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            for _ in range(blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.Dropout(dropout),
            )
            for _ in range(blocks)
        )
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    @property
    def item_vectors(self) -> torch.Tensor:
        """Embeddings of the real items ``(n_items, hidden)`` (padding row dropped)."""
        return self.item_embedding.weight[1:]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(b, L, hidden)`` for left-padded tokens ``(b, L)`` (0 = padding)."""
        is_item = tokens > 0
        keep = is_item.unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.item_embedding(tokens) * math.sqrt(self.hidden)
        x = self.embedding_dropout(x + self.position_embedding.weight) * keep
        # Causal, and padding is never attended to, except each position attending to itself
        # so padded rows have a key and give no NaN (they are zeroed anyway).
        length = tokens.shape[1]
        blocked = self.causal[:length, :length].unsqueeze(0) | ~is_item.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool).unsqueeze(0)
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        for attention_norm, attention, ffn_norm, ffn in zip(
            self.attention_norms, self.attentions, self.ffn_norms, self.ffns, strict=True
        ):
            query = attention_norm(x)
            attended, _ = attention(query, x, x, attn_mask=blocked, need_weights=False)
            x = ffn_norm(query + attended)
            x = (x + ffn(x)) * keep
        return self.final_norm(x)


def _bce_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    tokens, targets, negatives = batch
    states = module(tokens)  # (b, L, h)
    is_target = targets > 0
    states = states[is_target]
    positive = (states * module.item_embedding(targets[is_target])).sum(-1)
    negative = (states * module.item_embedding(negatives[is_target])).sum(-1)
    return F.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive)
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))


def _softmax_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    tokens, targets = batch[0], batch[1]
    states = module(tokens)
    is_target = targets > 0
    logits = states[is_target] @ module.item_vectors.T  # (positions, n_items)
    return F.cross_entropy(logits, targets[is_target] - 1)


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


#: Users encoded per forward pass at scoring time. Every pass has this many rows (a short last
#: chunk is padded with empty histories), so each user meets the same kernels with the same
#: shapes whichever batch they arrive in, and a batch scores like single users (to float rounding).
SCORE_CHUNK = 64


def _fixed_chunks(rows: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """``rows`` in chunks of exactly `SCORE_CHUNK` rows (the last one zero-padded) with the
    count of real rows in each."""
    for start in range(0, len(rows), SCORE_CHUNK):
        chunk = rows[start : start + SCORE_CHUNK]
        real = len(chunk)
        if real < SCORE_CHUNK:
            padding = np.zeros((SCORE_CHUNK - real, *rows.shape[1:]), dtype=rows.dtype)
            chunk = np.concatenate([chunk, padding])
        yield chunk, real


def encode_last(module: SASRecModule, tokens: np.ndarray) -> np.ndarray:
    """The last position's hidden state ``(n, hidden)`` ``float32`` for tokens ``(n, L)``, in
    fixed-size chunks (so batches equal single users), no grad."""
    states = np.empty((len(tokens), module.hidden), dtype=np.float32)
    with torch.inference_mode():
        done = 0
        for chunk, real in _fixed_chunks(tokens):
            encoded = module(torch.from_numpy(chunk))[:, -1].numpy()
            states[done : done + real] = encoded[:real]
            done += real
    return states


def logits(states: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Next-item logits ``(n, n_items)`` for states ``(n, hidden)``, in fixed-size chunks."""
    scores = np.empty((len(states), len(item_vectors)), dtype=np.float32)
    done = 0
    for chunk, real in _fixed_chunks(states):
        scores[done : done + real] = (chunk @ item_vectors.T)[:real]
        done += real
    return scores


class SASRec(Recommender):
    """SASRec over dense indices; ``module`` is the trained `SASRecModule` (eval mode)."""

    name = "sasrec"
    config_class = SASRecConfig
    config: SASRecConfig

    def __init__(self, config: SASRecConfig | None = None) -> None:
        super().__init__(config)
        self.module: SASRecModule | None = None
        self.history: EpochHistory | None = None  # set by fit, not saved

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
        self.history = fit_epochs(
            module,
            make_batches,
            _softmax_loss if config.loss == "softmax" else _bce_loss,
            optimizer,
            epochs=config.epochs,
            callback=callback,
            validate=validate,
            monitor=MONITOR,
            patience=config.patience,
            seed=config.seed,
        )
        self.module = module.eval()
        logger.info(
            "SASRec: %d epochs (%s), best epoch %s, %.1fs",
            self.history.epochs_run,
            self.history.stop_reason,
            self.history.best_epoch,
            self.history.seconds,
        )

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

    def _get_state(self) -> dict[str, np.ndarray]:
        return state_to_arrays(self.module)

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        module = self._new_module(self.n_items)
        arrays_to_state(module, state)
        self.module = module.eval()
