"""The shared neural epoch loop and helpers (`models.neural.recommender`) and the NCF model
(`models.ncf`)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from models.interactions import IdMap, Interactions
from models.ncf import NCF, NCFConfig
from models.neural.recommender import arrays_to_state, fit_epochs, state_to_arrays
from models.neural.sampling import NegativeSampler, holdout_per_user, ndcg_at_k, positive_pairs

# ---------------------------------------------------------------------- the epoch loop


def _tiny_problem() -> tuple[nn.Linear, torch.optim.Optimizer]:
    """One weight, starting at 0, pulled towards 1 by SGD: it changes every epoch."""
    module = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(module.weight)
    return module, torch.optim.SGD(module.parameters(), lr=0.1)


def _one_batch(epoch: int, rng: np.random.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.ones(4, 1), torch.ones(4, 1))]


def _mse(module: nn.Module, batch) -> torch.Tensor:
    inputs, targets = batch
    return ((module(inputs) - targets) ** 2).mean()


def _scripted_validation(values: list[float]):
    """``validate()`` returning ``values[e]`` as ``val_ndcg_at_10`` at epoch ``e``."""
    calls = iter(values)
    return lambda: {"val_ndcg_at_10": next(calls)}


def test_early_stopping_restores_the_best_epochs_weights() -> None:
    module, optimizer = _tiny_problem()
    weights: list[float] = []
    reports: list[tuple[int, dict[str, float]]] = []

    def record(epoch: int, metrics: dict[str, float]) -> None:
        weights.append(module.weight.item())
        reports.append((epoch, metrics))

    # The metric peaks at epoch 2; with patience 2, epochs 3 and 4 fail to beat it and it stops.
    history = fit_epochs(
        module,
        _one_batch,
        _mse,
        optimizer,
        epochs=10,
        callback=record,
        validate=_scripted_validation([0.1, 0.3, 0.8, 0.5, 0.8, 0.9, 1.0]),
        patience=2,
        seed=0,
    )
    assert [epoch for epoch, _ in reports] == [0, 1, 2, 3, 4]
    assert history.stop_reason == "early_stopping"
    assert history.best_epoch == 2 and history.best_value == 0.8  # a tie (epoch 4) is no gain
    assert len(set(weights)) == 5  # the weight moved every epoch
    assert module.weight.item() == weights[2] != weights[4]
    assert [metrics["val_ndcg_at_10"] for _, metrics in reports] == [0.1, 0.3, 0.8, 0.5, 0.8]
    assert all(set(m) == {"loss", "val_ndcg_at_10", "epoch_seconds"} for _, m in reports)
    assert all(isinstance(v, float) for _, m in reports for v in m.values())
    assert history.losses == [m["loss"] for _, m in reports]
    assert not module.training  # left in eval mode


def test_callback_returning_false_stops_after_that_epoch() -> None:
    module, optimizer = _tiny_problem()
    seen: list[int] = []

    def stop_at_one(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append(epoch)
        return epoch < 1

    history = fit_epochs(
        module, _one_batch, _mse, optimizer, epochs=10, callback=stop_at_one, patience=3, seed=0
    )
    assert seen == [0, 1]
    assert history.stop_reason == "callback" and history.epochs_run == 2
    assert history.best_epoch is None and history.validation == []


def test_callback_stop_still_restores_the_best_weights() -> None:
    module, optimizer = _tiny_problem()
    weights: list[float] = []

    def stop_at_two(epoch: int, metrics: dict[str, float]) -> bool:
        weights.append(module.weight.item())
        return epoch < 2

    history = fit_epochs(
        module,
        _one_batch,
        _mse,
        optimizer,
        epochs=10,
        callback=stop_at_two,
        validate=_scripted_validation([0.2, 0.9, 0.1]),
        patience=5,
        seed=0,
    )
    assert history.stop_reason == "callback" and history.best_epoch == 1
    assert module.weight.item() == weights[1]


def test_loop_runs_all_epochs_without_validation_and_restores_global_settings() -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    module, optimizer = _tiny_problem()
    history = fit_epochs(
        module, _one_batch, _mse, optimizer, epochs=4, callback=None, seed=0, num_threads=1
    )
    assert history.stop_reason == "epochs" and history.epochs_run == 4
    assert history.losses == sorted(history.losses, reverse=True)  # SGD on a convex loss
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_loop_rejects_bad_arguments_and_diverging_loss() -> None:
    module, optimizer = _tiny_problem()
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        fit_epochs(module, _one_batch, _mse, optimizer, epochs=0, callback=None)
    with pytest.raises(ValueError, match="patience must be an int >= 1, got 0"):
        fit_epochs(module, _one_batch, _mse, optimizer, epochs=1, callback=None, patience=0)
    with pytest.raises(ValueError, match="without the monitored 'val_ndcg_at_10'"):
        fit_epochs(
            module,
            _one_batch,
            _mse,
            optimizer,
            epochs=1,
            callback=None,
            validate=lambda: {"val_recall": 1.0},
        )

    def nan_loss(module: nn.Module, batch) -> torch.Tensor:
        return _mse(module, batch) * float("nan")

    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 0"):
        fit_epochs(module, _one_batch, nan_loss, optimizer, epochs=2, callback=None)


# ---------------------------------------------------------------------- data helpers


def _random_matrix(n_users: int = 50, n_items: int = 30, density: float = 0.3) -> sp.csr_matrix:
    return sp.random(
        n_users,
        n_items,
        density=density,
        format="csr",
        dtype=np.float32,
        rng=np.random.default_rng(3),
    )


def test_negative_sampler_never_returns_a_positive_and_is_seeded() -> None:
    matrix = _random_matrix()
    sampler = NegativeSampler(matrix)
    users = np.repeat(np.arange(matrix.shape[0]), 200)
    negatives = sampler.sample(users, np.random.default_rng(7))
    assert negatives.shape == users.shape and negatives.dtype == np.int64
    assert negatives.min() >= 0 and negatives.max() < matrix.shape[1]
    assert (np.asarray(matrix[users, negatives]).ravel() == 0).all()
    # Every unseen item of every user turns up, so nothing unseen is left out either.
    drawn = sp.csr_matrix((np.ones(users.size), (users, negatives)), shape=matrix.shape)
    assert ((drawn > 0).toarray() == (matrix.toarray() == 0)).all()
    np.testing.assert_array_equal(negatives, sampler.sample(users, np.random.default_rng(7)))
    assert not np.array_equal(negatives, sampler.sample(users, np.random.default_rng(8)))


def test_negative_sampler_is_uniform_and_treats_explicit_zeros_as_unseen() -> None:
    # Row 0: items 1 and 3 seen, item 4 an explicit zero -> unseen items 0, 2, 4.
    matrix = sp.csr_matrix(
        (np.array([1.0, 2.0, 0.0], np.float32), np.array([1, 3, 4]), np.array([0, 3])),
        shape=(1, 5),
    )
    sampler = NegativeSampler(matrix)
    assert sampler.n_free.tolist() == [3]
    draws = sampler.sample(np.zeros(30_000, dtype=np.int64), np.random.default_rng(0))
    counts = np.bincount(draws, minlength=5)
    assert counts[[1, 3]].tolist() == [0, 0]
    np.testing.assert_allclose(counts[[0, 2, 4]] / draws.size, 1 / 3, atol=0.015)


def test_negative_sampler_rejects_a_user_who_has_seen_everything() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0]], dtype=np.float32))
    sampler = NegativeSampler(matrix)
    assert sampler.n_free.tolist() == [0, 2]
    assert set(sampler.sample(np.ones(50, np.int64), np.random.default_rng(0)).tolist()) == {1, 2}
    with pytest.raises(ValueError, match="user 0 has seen all 3 items"):
        sampler.sample(np.array([1, 0]), np.random.default_rng(0))


def test_holdout_per_user_splits_each_row_and_is_seeded() -> None:
    matrix = _random_matrix(40, 50, 0.2)
    counts = np.diff(matrix.indptr)
    train, held_out = holdout_per_user(matrix, 0.25, np.random.default_rng(1))
    assert ((train + held_out) != (matrix != 0)).nnz == 0  # disjoint, together the input
    assert train.multiply(held_out).nnz == 0
    expected = np.minimum(np.floor(0.25 * counts + 0.5), np.maximum(counts - 1, 0))
    np.testing.assert_array_equal(np.diff(held_out.indptr), expected)
    again, _ = holdout_per_user(matrix, 0.25, np.random.default_rng(1))
    assert (again != train).nnz == 0
    other, _ = holdout_per_user(matrix, 0.25, np.random.default_rng(2))
    assert (other != train).nnz > 0
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1.0"):
        holdout_per_user(matrix, 1.0, np.random.default_rng(0))


def test_positive_pairs_and_ndcg_by_hand() -> None:
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32))
    users, items = positive_pairs(relevant)
    assert users.tolist() == [0, 0, 2] and items.tolist() == [1, 3, 0]
    scores = np.array([[0.9, 0.8, -np.inf, 0.1], [1, 2, 3, 4], [0.5, 0.5, 0.1, 0.0]])
    # User 0 ranks 0, 1, 3: hits at ranks 2 and 3 of 2 relevant; user 2: item 0 first (tie).
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(ndcg_at_k(scores, relevant, k=3), [dcg / ideal, np.nan, 1.0])


def test_state_arrays_round_trip_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
    torch.manual_seed(1)
    target = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
    arrays = state_to_arrays(source)
    assert set(arrays) == {"0.weight", "1.weight", "1.bias"}
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays.values())
    np.savez(tmp_path / "weights.npz", **arrays)
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as saved:
        arrays_to_state(target, {key: saved[key] for key in saved.files})
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name])
    arrays["0.weight"][0, 0] += 1  # copies: the module does not share memory with them
    assert not torch.equal(source.state_dict()["0.weight"], torch.from_numpy(arrays["0.weight"]))


def test_arrays_to_state_names_what_does_not_fit() -> None:
    module = nn.Linear(3, 2)
    arrays = state_to_arrays(module)
    with pytest.raises(ValueError, match=r"missing \['bias'\], unexpected \['extra'\]"):
        arrays_to_state(module, {"weight": arrays["weight"], "extra": arrays["bias"]})
    with pytest.raises(ValueError, match=r"'weight' has shape \(2, 4\).*expects \(2, 3\)"):
        arrays_to_state(module, {"weight": np.zeros((2, 4), np.float32), "bias": arrays["bias"]})


# ---------------------------------------------------------------------- NCF

N_ITEMS = 14
HELD_OUT = 5  # a00 has items 0-4; every other group-A user has 0-5 as well


def _two_blocks() -> Interactions:
    """Group A (16 users) consumes items 0-5, group B (16 users) items 6-11; items 12-13 are
    never consumed. a00 lacks item 5, the planted held-out item."""
    rows = []
    for user in range(16):
        rows += [(f"a{user:02d}", f"i{item:02d}") for item in range(6) if (user, item) != (0, 5)]
        rows += [(f"b{user:02d}", f"i{item:02d}") for item in range(6, 12)]
    items = IdMap.from_ids(f"i{item:02d}" for item in range(N_ITEMS))
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]), items=items)


SMALL = dict(epochs=8, batch_size=64, learning_rate=0.01, validation_fraction=0.0, seed=3)


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    return _two_blocks()


@pytest.fixture(scope="module")
def fitted(interactions: Interactions) -> NCF:
    return NCF(NCFConfig(**SMALL)).fit(interactions)


def test_config_keeps_layers_as_a_json_string() -> None:
    config = NCFConfig(mlp_layers="32, 16,8")
    assert config.layer_sizes == (32, 16, 8)
    assert NCFConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config
    for bad in ("", "64,,32", "64,-8", "63,32", "a,b"):
        with pytest.raises(ValueError, match="mlp_layers"):
            NCFConfig(mlp_layers=bad)
    with pytest.raises(ValueError, match=r"validation_fraction must lie in \[0.0, 1.0\)"):
        NCFConfig(validation_fraction=1.0)
    with pytest.raises(ValueError, match="negatives must be an int >= 1, got 0"):
        NCFConfig(negatives=0)


def test_ncf_finds_the_planted_item(fitted: NCF, interactions: Interactions) -> None:
    user = interactions.users.index("a00")
    item_idx, _ = fitted.recommend(user, interactions.user_items(user), k=3)
    assert HELD_OUT in item_idx.tolist()
    similar, _ = fitted.similar_items(0, k=4)
    assert set(similar.tolist()) <= {1, 2, 3, 4, 5}


def test_ncf_loss_decreases_and_all_epochs_run_without_validation(fitted: NCF) -> None:
    history = fitted.history
    assert history.epochs_run == SMALL["epochs"] and history.stop_reason == "epochs"
    assert history.validation == [] and history.best_epoch is None
    assert history.losses[-1] < 0.8 * history.losses[0]


def test_ncf_batch_scores_equal_single_scores(fitted: NCF, interactions: Interactions) -> None:
    users = np.arange(interactions.n_users)
    batch = fitted.score(users)
    for user in users:
        np.testing.assert_array_equal(fitted.score(int(user)), batch[user])


def test_ncf_is_seeded(fitted: NCF, interactions: Interactions) -> None:
    users = np.arange(interactions.n_users)
    same = NCF(NCFConfig(**SMALL)).fit(interactions)
    np.testing.assert_array_equal(same.score(users), fitted.score(users))
    other = NCF(NCFConfig(**{**SMALL, "seed": 4})).fit(interactions)
    assert not np.array_equal(other.score(users), fitted.score(users))


def test_ncf_save_load_gives_identical_scores(fitted: NCF, tmp_path: Path) -> None:
    fitted.save(tmp_path / "ncf")
    loaded = NCF.load(tmp_path / "ncf")
    assert loaded.config == fitted.config
    users = np.arange(fitted.n_users)
    np.testing.assert_array_equal(loaded.score(users), fitted.score(users))
    for a, b in zip(loaded.similar_items(3, k=5), fitted.similar_items(3, k=5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ncf_validates_each_epoch_and_reports_through_the_callback(
    interactions: Interactions,
) -> None:
    reports: list[tuple[int, dict[str, float]]] = []
    config = NCFConfig(**{**SMALL, "epochs": 6, "validation_fraction": 0.2, "patience": 2})
    model = NCF(config).fit(interactions, callback=lambda e, m: reports.append((e, m)))
    assert [epoch for epoch, _ in reports] == list(range(model.history.epochs_run))
    assert all(set(m) == {"loss", "val_ndcg_at_10", "epoch_seconds"} for _, m in reports)
    values = [m["val_ndcg_at_10"] for _, m in reports]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert model.history.best_value == max(values)
    assert values[model.history.best_epoch] == max(values)
