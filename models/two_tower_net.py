"""The two-tower torch module (`TwoTowerNet`), its training loss and history pooling.

User tower: an MLP over the user's id embedding, encoded side features and the mean of a separate
"history" embedding over the items in the user's row; item tower: an MLP over the item's id
embedding and encoded side features. `sampled_softmax_loss` is the training objective (see
`models.two_tower` for the sampling); `pooled_history` and `history_bags` turn CSR rows into the
pooled history input; `one_thread` pins scoring to one intra-op thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Score with one intra-op thread: small ops, and results independent of the machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def history_bags(rows: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(indices, offsets, counts)`` of the nonzero items per row of binary CSR ``rows``."""
    counts = np.diff(rows.indptr).astype(np.int64)
    indices = torch.from_numpy(rows.indices.astype(np.int64))
    offsets = torch.from_numpy(rows.indptr[:-1].astype(np.int64))
    return indices, offsets, counts


def pooled_history(module: TwoTowerNet, rows: sp.csr_matrix) -> torch.Tensor:
    """Mean history embedding ``(n, dim)`` of binary CSR ``rows``; zero for empty rows."""
    indices, offsets, counts = history_bags(rows)
    total = module.history_sum(indices, offsets)
    return total / torch.from_numpy(np.maximum(counts, 1).astype(np.float32))[:, None]


def sampled_softmax_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of each example's positive (``items[:, 0]``) among its ``1 + negatives``
    items; ``batch`` as `models.two_tower.TwoTower` builds it."""
    (id_idx, user_idx, items, keep_history, indices, offsets, counts) = batch
    total = module.history_sum(indices, offsets)
    # Leave the positive (column 0) out of its own history: (sum - e_pos) / (n - 1).
    total = total - module.history(items[:, 0])
    pooled = total / (counts - 1).clamp(min=1)[:, None] * keep_history[:, None]
    users = module.user_vectors(id_idx, module.user_side[user_idx], pooled)  # (b, dim)
    logits = (module.item_vectors(items) * users[:, None, :]).sum(dim=2)  # (b, 1 + negatives)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64))
