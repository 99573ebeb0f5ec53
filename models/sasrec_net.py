"""The SASRec torch module (`SASRecModule`), its two training losses and fixed-shape scoring.

`bce_loss` is the paper's objective (one sampled negative per position), `softmax_loss` full
cross-entropy over all items. `encode_last` and `logits` run in chunks of exactly `SCORE_CHUNK`
rows so a batch scores like single users; see `models.sasrec` for the model as a whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


def bce_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Binary cross-entropy of each target position's next item (1) and sampled negative (0);
    ``batch`` is ``(tokens, targets, negatives)``, all ``(b, L)`` tokens (0 = no target)."""
    tokens, targets, negatives = batch
    states = module(tokens)  # (b, L, h)
    is_target = targets > 0
    states = states[is_target]
    positive = (states * module.item_embedding(targets[is_target])).sum(-1)
    negative = (states * module.item_embedding(negatives[is_target])).sum(-1)
    return F.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive)
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))


def softmax_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over all items at each target position; ``batch`` starts with
    ``(tokens, targets)``, both ``(b, L)`` tokens (0 = no target)."""
    tokens, targets = batch[0], batch[1]
    states = module(tokens)
    is_target = targets > 0
    logits = states[is_target] @ module.item_vectors.T  # (positions, n_items)
    return F.cross_entropy(logits, targets[is_target] - 1)


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
