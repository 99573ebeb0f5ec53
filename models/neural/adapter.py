"""The `Recommender` adapter code the neural models (NCF, two-tower, SASRec) share.

`NeuralRecommender` holds the trained ``module`` and the `EpochHistory` of the last fit, runs
`models.neural.recommender.fit_epochs` with the config's ``epochs``, ``patience`` and ``seed`` while
monitoring `MONITOR`, and saves / restores the module's weights as plain arrays. `held_out_ndcg`
is the validation metric of the models that hold out part of each user's interactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from torch import nn

from models.base import Callback, Recommender
from models.neural.recommender import (
    EpochHistory,
    LossFn,
    MakeBatches,
    Validate,
    arrays_to_state,
    fit_epochs,
    state_to_arrays,
)
from models.neural.sampling import ndcg_at_k

#: Early stopping monitors NDCG at this cutoff on the held-out items.
VALIDATION_K = 10
MONITOR = f"val_ndcg_at_{VALIDATION_K}"
#: Validation users scored per pass.
VALIDATION_CHUNK = 256


class NeuralRecommender(Recommender):
    """A `Recommender` whose weights are one ``nn.Module`` trained by `fit_epochs`.

    Subclasses build the module in `_fit` and hand it to `_train`, and implement
    `_module_for_state` (an untrained module of the saved shapes) unless they override
    `_set_state`. ``history`` is set by fit and not saved.
    """

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.module: nn.Module | None = None
        self.history: EpochHistory | None = None  # set by fit, not saved

    def _train(
        self,
        module: nn.Module,
        make_batches: MakeBatches,
        loss_fn: LossFn,
        optimizer: Any,
        callback: Callback | None,
        validate: Validate | None,
    ) -> None:
        """`fit_epochs` with the config's ``epochs``/``patience``/``seed``, then keep ``module``."""
        config = self.config
        self.history = fit_epochs(
            module,
            make_batches,
            loss_fn,
            optimizer,
            epochs=config.epochs,
            callback=callback,
            validate=validate,
            monitor=MONITOR,
            patience=config.patience,
            seed=config.seed,
        )
        self._set_module(module)
        # Logged under the model's own module logger, as each model did before sharing this.
        logging.getLogger(type(self).__module__).info(
            "%s: %d epochs (%s), best epoch %s, %.1fs",
            type(self).__name__,
            self.history.epochs_run,
            self.history.stop_reason,
            self.history.best_epoch,
            self.history.seconds,
        )

    def _set_module(self, module: nn.Module) -> None:
        self.module = module.eval()

    def _module_for_state(self, state: Mapping[str, np.ndarray]) -> nn.Module:
        """An untrained module whose weights ``state`` fits (``users``/``items`` are set)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _module_for_state")

    def _get_state(self) -> dict[str, np.ndarray]:
        return state_to_arrays(self.module)

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        module = self._module_for_state(state)
        arrays_to_state(module, state)
        self._set_module(module)


def held_out_ndcg(
    score_users: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    held_out: sp.csr_matrix,
    val_users: np.ndarray,
) -> float:
    """Mean NDCG@`VALIDATION_K` over ``val_users`` ``(n,)`` of their ``held_out`` items.

    ``score_users(chunk)`` gives scores ``(len(chunk), n_items)`` (a writable array) for up to
    `VALIDATION_CHUNK` users; items in their ``train`` rows are masked out before ranking.
    """
    per_user = []
    for start in range(0, val_users.size, VALIDATION_CHUNK):
        chunk = val_users[start : start + VALIDATION_CHUNK]
        scores = score_users(chunk)
        seen = train[chunk].tocoo()
        scores[seen.row, seen.col] = -np.inf
        per_user.append(ndcg_at_k(scores, held_out[chunk], VALIDATION_K))
    return float(np.nanmean(np.concatenate(per_user)))
