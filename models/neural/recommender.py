"""The epoch loop every neural model shares, and their weights as plain arrays.

A neural model is a plain ``nn.Module`` plus a thin `Recommender` adapter (NCF, two-tower, SASRec;
their common adapter code is `models.neural.adapter.NeuralRecommender`). The adapter builds the
module, turns interactions into mini-batches and a loss, and hands them to `fit_epochs`, which owns
what the models share: seeding and deterministic kernels, the epoch loop, progress reporting
through the model callback (so MLflow curves and Optuna pruning plug in from outside), early
stopping on a validation metric with the best weights restored, and stopping when the callback
asks. `state_to_arrays` / `arrays_to_state` turn a module's ``state_dict`` into plain numpy arrays
and back, so `Recommender.save` stores weights without pickle.

The interaction-matrix helpers (`binarize`, `positive_pairs`, `NegativeSampler`,
`holdout_per_user`, `ndcg_at_k`) live in `models.neural.sampling`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.base import Callback, Recommender

__all__ = [
    "TRAIN_THREADS",
    "EpochHistory",
    "LossFn",
    "MakeBatches",
    "Validate",
    "arrays_to_state",
    "fit_epochs",
    "seed_everything",
    "shuffled_batches",
    "state_to_arrays",
]

logger = logging.getLogger(__name__)

#: Intra-op threads while training unless `fit_epochs(num_threads=...)` says otherwise. The
#: modules are small, so a step is dominated by per-op overhead that extra threads only add to (on
#: a 2-core machine shared with other jobs an NCF step took 4.6 ms on 1 thread, 90 ms on 2), and a
#: fixed count keeps seeded runs identical from machine to machine.
TRAIN_THREADS = 1

#: ``make_batches(epoch, rng)``: one epoch of mini-batches, each a tuple of tensors whose first
#: dimension is the batch size.
MakeBatches = Callable[[int, np.random.Generator], Iterable[Sequence[torch.Tensor]]]
#: ``loss_fn(module, batch)``: the mean loss of one mini-batch, a scalar tensor.
LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]
#: ``validate()``: validation metrics (higher is better for the monitored key), module in eval mode.
Validate = Callable[[], Mapping[str, float]]


@dataclass
class EpochHistory:
    """What `fit_epochs` did.

    ``losses[e]``: mean training loss of epoch ``e`` (weighted by batch size). ``validation[e]``:
    ``validate()``'s metrics after epoch ``e`` (empty without ``validate``). ``best_epoch`` and
    ``best_value``: the epoch whose weights the module holds at the end and its monitored value
    (``None`` without validation, or when no epoch gave a finite value). ``stop_reason``:
    ``"epochs"`` (all ran), ``"early_stopping"`` (``patience`` epochs without improvement) or
    ``"callback"`` (the callback returned ``False``).
    """

    losses: list[float] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stop_reason: Literal["epochs", "early_stopping", "callback"] = "epochs"
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.losses)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (module init uses torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit_epochs(
    module: nn.Module,
    make_batches: MakeBatches,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    callback: Callback | None,
    validate: Validate | None = None,
    monitor: str = "val_ndcg_at_10",
    patience: int = 3,
    seed: int = 0,
    num_threads: int | None = None,
) -> EpochHistory:
    """Train ``module`` for up to ``epochs`` epochs and return what happened.

    Each epoch draws its batches from ``make_batches(epoch, rng)`` (``rng`` is one numpy
    generator seeded with ``seed`` and shared across epochs, for shuffling and negative
    sampling), takes one optimizer step per batch on ``loss_fn(module, batch)``, then runs
    ``validate()`` with the module in eval mode, and reports ``{"loss", "epoch_seconds",
    **validation}`` (all ``float``) through ``callback(epoch, metrics)``, epochs counting from 0.

    With ``validate``, the value under ``monitor`` is maximized: training stops after ``patience``
    epochs in a row without a strictly better value, and the module ends holding the weights of
    the best epoch, however training stopped. Training also stops after any epoch whose callback
    returns ``False`` (Optuna pruning, a user's stop). The module is left in eval mode.

    The Python, numpy and torch global generators are seeded with ``seed``. On CPU,
    ``torch.use_deterministic_algorithms(True)`` holds during the loop, and the intra-op thread
    count is ``num_threads`` (default `TRAIN_THREADS`); both settings are restored afterwards.
    The same inputs, seed and thread count give the same weights.

    Raises ``ValueError`` for ``epochs`` or ``patience`` < 1 or a ``validate()`` result without
    ``monitor``, and ``FloatingPointError`` when the loss becomes NaN or infinite.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    if num_threads is None:
        num_threads = TRAIN_THREADS
    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    saved_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        torch.set_num_threads(max(1, int(num_threads)))
        if on_cpu:
            torch.use_deterministic_algorithms(True)
        seed_everything(seed)
        history = _run_epochs(
            module,
            make_batches,
            loss_fn,
            optimizer,
            np.random.default_rng(seed),
            epochs=epochs,
            callback=callback,
            validate=validate,
            monitor=monitor,
            patience=patience,
        )
    finally:
        torch.use_deterministic_algorithms(saved_deterministic, warn_only=saved_warn_only)
        torch.set_num_threads(saved_threads)
    history.seconds = time.perf_counter() - started
    return history


def _run_epochs(
    module: nn.Module,
    make_batches: MakeBatches,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    *,
    epochs: int,
    callback: Callback | None,
    validate: Validate | None,
    monitor: str,
    patience: int,
) -> EpochHistory:
    history = EpochHistory()
    best_weights: dict[str, torch.Tensor] | None = None
    epochs_without_improvement = 0
    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        history.losses.append(
            _train_one_epoch(module, make_batches(epoch, rng), loss_fn, optimizer)
        )
        if not math.isfinite(history.losses[-1]):
            raise FloatingPointError(
                f"training loss is {history.losses[-1]} at epoch {epoch}; "
                "lower the learning rate or check the inputs"
            )
        metrics = {"loss": history.losses[-1]}
        module.eval()
        if validate is not None:
            with torch.inference_mode():
                validation = {key: float(value) for key, value in validate().items()}
            if monitor not in validation:
                raise ValueError(
                    f"validate() returned {sorted(validation)}, without the monitored {monitor!r}"
                )
            history.validation.append(validation)
            metrics.update(validation)
            value = validation[monitor]
            if math.isfinite(value) and (history.best_value is None or value > history.best_value):
                history.best_epoch, history.best_value = epoch, value
                best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
        metrics["epoch_seconds"] = time.perf_counter() - epoch_started
        if not Recommender._report(callback, epoch, metrics):
            history.stop_reason = "callback"
            break
        if epochs_without_improvement >= patience:
            history.stop_reason = "early_stopping"
            break
    if best_weights is not None and history.best_epoch != history.epochs_run - 1:
        module.load_state_dict(best_weights)
        logger.info(
            "restored the weights of epoch %d (%s=%.4f)",
            history.best_epoch,
            monitor,
            history.best_value,
        )
    module.eval()
    return history


def _train_one_epoch(
    module: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
) -> float:
    """Mean loss over the epoch's examples (each batch weighted by its size)."""
    module.train()
    total, n_examples = 0.0, 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module, batch)
        loss.backward()
        optimizer.step()
        size = len(batch[0])
        total += float(loss.detach()) * size
        n_examples += size
    if n_examples == 0:
        raise ValueError("make_batches produced no examples for this epoch")
    return total / n_examples


def shuffled_batches(
    tensors: Sequence[torch.Tensor], batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Tensors sharing a first dimension ``n``, shuffled together with ``rng`` and cut into
    tuples of ``batch_size`` rows (the last one shorter)."""
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(
            f"tensors must share their first dimension, got {[len(t) for t in tensors]}"
        )
    order = torch.from_numpy(rng.permutation(n))
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        yield tuple(t[rows] for t in tensors)


# ---------------------------------------------------------------------- weights as arrays


def state_to_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as plain numpy arrays (copies, CPU), keyed by parameter name.

    Suits ``np.savez`` / ``np.load(allow_pickle=False)``; use it in ``_get_state``.
    """
    return {
        name: tensor.detach().to("cpu").numpy().copy()
        for name, tensor in module.state_dict().items()
    }


def arrays_to_state(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load `state_to_arrays` output into ``module`` (same architecture), in place.

    Raises ``ValueError`` naming missing or unexpected keys and mismatched shapes.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"saved weights do not fit {type(module).__name__}: missing {missing}, "
            f"unexpected {unexpected}"
        )
    state = {}
    for name, tensor in expected.items():
        array = np.asarray(arrays[name])
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(
                f"saved weight {name!r} has shape {tuple(array.shape)}, "
                f"{type(module).__name__} expects {tuple(tensor.shape)}"
            )
        state[name] = torch.as_tensor(array, dtype=tensor.dtype)
    module.load_state_dict(state)
