"""NCF: Neural Collaborative Filtering, the NeuMF model of He et al. (2017), "Neural
Collaborative Filtering", for implicit feedback.

Two towers with separate embeddings: GMF (the element-wise product of a user and an item embedding
of size ``factors``) and an MLP over the concatenated user and item embeddings (each of size
``layer_sizes[0] / 2``) through ReLU layers of ``layer_sizes[1:]``. Their outputs are concatenated
into one linear layer giving a logit. Training minimizes binary cross-entropy on every interaction
(label 1) plus ``negatives`` uniformly sampled unseen items per interaction (label 0), drawn afresh
each epoch.

Early stopping: ``validation_fraction`` of each user's interactions (seeded, see
`models.neural.sampling.holdout_per_user`) are held out of training; after each epoch the model
ranks all items the user has not trained on and NDCG@10 on the held-out ones is reported as
``val_ndcg_at_10``. Training stops after ``patience`` epochs without improvement and keeps the
best epoch's weights. Held-out interactions are not trained on. With ``validation_fraction == 0``
(or data too small to hold any item out) every interaction is trained on for all ``epochs``.

Scores come from the trained user embeddings: ``_score`` ignores the passed history (the base class
still uses it to exclude seen items), so a user's interactions after training do not change their
scores, and users unknown at training time cannot be scored; the serving layer only calls models
for known users.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Callback
from models.checks import (
    check_early_stopping,
    check_int,
    check_sampling,
    check_schedule,
    parse_sizes,
)
from models.interactions import Interactions
from models.neural.adapter import MONITOR, NeuralRecommender, held_out_ndcg
from models.neural.recommender import Validate, seed_everything, shuffled_batches
from models.neural.sampling import NegativeSampler, holdout_per_user, positive_pairs
from models.ranking import cosine_to

__all__ = [
    "NCF",
    "NCFConfig",
    "NeuMF",
    "score_all_items",
]


def _parse_layers(text: str) -> tuple[int, ...]:
    """``"64,32,16"`` -> ``(64, 32, 16)``; raises ``ValueError`` naming the bad value."""
    if not isinstance(text, str):
        raise ValueError(f"mlp_layers must be a comma-separated str like '64,32,16', got {text!r}")
    sizes = parse_sizes(text)
    if sizes is None:
        raise ValueError(
            f"mlp_layers must be positive ints separated by commas like '64,32,16', got {text!r}"
        )
    if sizes[0] % 2:
        raise ValueError(
            f"mlp_layers' first size is the concatenated user+item embedding and must be even, "
            f"got {text!r}"
        )
    return sizes


@dataclass(frozen=True)
class NCFConfig:
    """NeuMF hyperparameters.

    ``factors``: GMF embedding size. ``mlp_layers``: MLP sizes as a comma-separated string,
    ``"64,32,16"`` meaning user and item MLP embeddings of 32 each (concatenated: 64), then ReLU
    layers of 32 and 16. It is a string, not a tuple, so the config stays a flat JSON value that
    survives every round trip unchanged: ``config.json`` (a tuple would come back as a list and
    the loaded config would no longer compare equal), YAML specs and ``--set
    params.mlp_layers=64,32,16``, the registry's type check, Optuna's categorical choices and
    MLflow params. `layer_sizes` gives the parsed tuple.

    ``epochs``: at most this many passes. ``batch_size``: examples (positives and negatives) per
    step. ``learning_rate`` / ``weight_decay``: Adam's. ``negatives``: sampled negatives per
    interaction and epoch. ``validation_fraction``: share of each user's interactions held out for
    early stopping (0 disables it). ``patience``: epochs without a better validation NDCG@10
    before stopping. ``seed``: initialization, hold-out, sampling and shuffling.
    """

    factors: int = 32
    mlp_layers: str = "64,32,16"
    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 1e-3
    negatives: int = 4
    weight_decay: float = 0.0
    validation_fraction: float = 0.1
    patience: int = 3
    seed: int = 42

    def __post_init__(self) -> None:
        check_int("factors", self.factors, 1)
        _parse_layers(self.mlp_layers)
        check_schedule(self)
        check_sampling(self)
        check_early_stopping(self)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``mlp_layers`` parsed: ``"64,32,16"`` -> ``(64, 32, 16)``."""
        return _parse_layers(self.mlp_layers)


class NeuMF(nn.Module):
    """GMF and MLP towers over separate embeddings, fused by one linear layer into a logit."""

    def __init__(
        self, n_users: int, n_items: int, factors: int, layer_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        half = layer_sizes[0] // 2
        self.gmf_user = nn.Embedding(n_users, factors)
        self.gmf_item = nn.Embedding(n_items, factors)
        self.mlp_user = nn.Embedding(n_users, half)
        self.mlp_item = nn.Embedding(n_items, half)
        layers: list[nn.Module] = []
        for size_in, size_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(factors + layer_sizes[-1], 1)
        for embedding in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(embedding.weight, std=0.01)  # as in the paper
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(b,)`` for the pairs ``(user_idx[j], item_idx[j])``, both ``int64`` ``(b,)``."""
        gmf = self.gmf_user(user_idx) * self.gmf_item(item_idx)  # (b, factors)
        mlp = self.mlp(torch.cat([self.mlp_user(user_idx), self.mlp_item(item_idx)], dim=1))
        return self.output(torch.cat([gmf, mlp], dim=1)).squeeze(1)


def score_all_items(module: NeuMF, user_idx: np.ndarray, n_items: int) -> np.ndarray:
    """Logits ``(n, n_items)`` ``float32`` for users ``(n,)`` against every item, without grad.

    One forward pass per user over all items: every user's row is computed with the same tensor
    shapes whatever the batch, so a batch scores exactly like single users (BLAS kernels may sum
    in a different order for a different number of rows).
    """
    items = torch.arange(n_items, dtype=torch.int64)
    scores = np.empty((len(user_idx), n_items), dtype=np.float32)
    with torch.inference_mode():
        for row, user in enumerate(np.asarray(user_idx, dtype=np.int64).tolist()):
            users = torch.full((n_items,), user, dtype=torch.int64)
            scores[row] = module(users, items).numpy()
    return scores


def _bce_loss(module: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    user_idx, item_idx, labels = batch
    return F.binary_cross_entropy_with_logits(module(user_idx, item_idx), labels)


class NCF(NeuralRecommender):
    """NeuMF over dense indices; ``module`` is the trained `NeuMF` (eval mode)."""

    name = "ncf"
    config_class = NCFConfig
    config: NCFConfig

    module: NeuMF | None

    def __init__(self, config: NCFConfig | None = None) -> None:
        super().__init__(config)

    def _new_module(self, n_users: int, n_items: int) -> NeuMF:
        return NeuMF(n_users, n_items, self.config.factors, self.config.layer_sizes)

    def _fit(self, interactions: Interactions, callback: Callback | None) -> None:
        config = self.config
        n_users, n_items = interactions.matrix.shape
        split_rng = np.random.default_rng([config.seed, 1])  # a stream apart from the loop's
        train, held_out = holdout_per_user(
            interactions.matrix, config.validation_fraction, split_rng
        )
        users, items = positive_pairs(train)
        if users.size == 0:
            raise ValueError("NCF needs at least one interaction to train on")
        sampler = NegativeSampler(train)
        # Users who have seen every item get no negatives (there are none to draw).
        negative_users = np.repeat(users[sampler.n_free[users] > 0], config.negatives)
        labels = np.concatenate(
            [np.ones(users.size, np.float32), np.zeros(negative_users.size, np.float32)]
        )
        all_users = torch.from_numpy(np.concatenate([users, negative_users]))
        labels_t = torch.from_numpy(labels)

        def make_batches(
            epoch: int, rng: np.random.Generator
        ) -> Iterator[tuple[torch.Tensor, ...]]:
            negative_items = sampler.sample(negative_users, rng)
            all_items = torch.from_numpy(np.concatenate([items, negative_items]))
            return shuffled_batches((all_users, all_items, labels_t), config.batch_size, rng)

        seed_everything(config.seed)
        module = self._new_module(n_users, n_items)
        # Start the logit at the labels' log-odds (1 positive per `negatives` negatives) so the
        # first steps learn which items and users differ instead of all pulling the bias down.
        nn.init.constant_(module.output.bias, math.log(1.0 / config.negatives))
        optimizer = torch.optim.Adam(
            module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        validate = self._validator(module, train, held_out)
        self._train(module, make_batches, _bce_loss, optimizer, callback, validate)

    @staticmethod
    def _validator(module: NeuMF, train: sp.csr_matrix, held_out: sp.csr_matrix) -> Validate | None:
        """``validate()`` giving mean NDCG@10 over users with held-out items, or ``None`` when
        nothing is held out."""
        val_users = np.flatnonzero(np.diff(held_out.indptr) > 0)
        if val_users.size == 0:
            return None
        n_items = train.shape[1]

        def validate() -> dict[str, float]:
            def score_users(chunk: np.ndarray) -> np.ndarray:
                return score_all_items(module, chunk, n_items)

            return {MONITOR: held_out_ndcg(score_users, train, held_out, val_users)}

        return validate

    def _score(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        # The user embedding is the user's history as of training; ``user_items`` only drives
        # the exclusion of seen items, which the base class does.
        return score_all_items(self.module, user_idx, self.n_items)

    def _similar(self, item_idx: int) -> np.ndarray:
        return cosine_to(self.module.gmf_item.weight.detach().numpy(), item_idx)

    def _module_for_state(self, state: Mapping[str, np.ndarray]) -> NeuMF:
        return self._new_module(self.n_users, self.n_items)
