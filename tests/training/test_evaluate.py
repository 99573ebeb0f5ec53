"""`training.evaluate`: the one evaluation path (issue #10, "one shape": one `evaluate` module
used by train, benchmark, tune and the experiment scripts; one split type; one NDCG)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.eventlog import EventLog
from models import ranking_metrics
from models.neural import sampling as neural_data
from models.registry import build
from training.data import interaction_frame, temporal_holdout
from training.evaluate import fit_and_score, score
from training.pipeline import consented_interactions
from training.protocols import PROTOCOLS, protocol_split, temporal_global_split, to_eval
from training.tune.splits import tuning_splits


def _frame(n_users: int = 30, n_items: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{i}", int(t))
        for u in range(n_users)
        for i, t in zip(
            rng.choice(n_items, size=5, replace=False),
            rng.integers(0, 1_000, size=5),
            strict=True,
        )
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_the_neural_models_validation_ndcg_is_the_reported_ndcg() -> None:
    """Early stopping monitors exactly the NDCG the tables report: same values, bit for bit."""
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(40, 25)), 1)  # rounded: many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # excluded items
    held_out = rng.random((40, 25)) < 0.15
    held_out[:3] = False  # users without relevant items: NaN
    relevant = sp.csr_matrix(held_out.astype(np.float32))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    expected = ranking_metrics.ndcg_at_k(top, relevant, 10)
    np.testing.assert_array_equal(neural_data.ndcg_at_k(scores, relevant, 10), expected)
    assert np.isnan(expected).any() and (expected > 0).any()  # both cases are exercised


def test_fit_and_score_reports_the_ranking_report_of_the_models_lists() -> None:
    evalset = to_eval(protocol_split(_frame(), "msr"))
    evaluated = fit_and_score("popularity", {}, evalset, 5, novelty=True)
    model = build("popularity", {}).fit(evalset.train)
    users = evalset.test_users
    recommended, _ = model.recommend(users, evalset.train.matrix[users], k=5)
    assert evaluated.metrics == ranking_metrics.ranking_report(
        recommended, evalset.relevant, evalset.train.n_items, 5, train_matrix=evalset.train.matrix
    )
    assert score(evaluated.model, evalset, 5)[0] == {
        key: value for key, value in evaluated.metrics.items() if key != "novelty_at_5"
    }
    assert set(evaluated.timings) == {"train_seconds", "recommend_seconds"}
    assert evaluated.fit_seconds >= 0 and evaluated.recommend_seconds >= 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_studys_outer_split_is_the_benchmarks_split(protocol: str) -> None:
    """Tune scores its final test on the very rows `tailor benchmark` tests on."""
    frame = _frame()
    _, outer = tuning_splits(frame, protocol)
    benchmark = protocol_split(frame, protocol)
    assert sorted(outer.test.index) == sorted(benchmark.test.index)
    expected_train = benchmark.train.index.union(
        benchmark.valid.index if benchmark.valid is not None else pd.Index([])
    )
    assert sorted(outer.train.index) == sorted(expected_train)


def test_the_training_holdout_is_a_temporal_global_split() -> None:
    """`tailor train`'s hold-out is the benchmark's temporal split type, cut at ``test_days``."""
    frame = _frame().assign(
        timestamp=lambda f: (
            pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(f.timestamp, "h")
        ),
        weight=1.0,
    )
    cut, evalset = temporal_holdout(frame, 10)
    same = to_eval(temporal_global_split(frame, cut=cut), weight_col="weight")
    assert evalset.test_users.tolist() == same.test_users.tolist()
    assert evalset.relevant == same.relevant
    assert (evalset.train.matrix != same.train.matrix).nnz == 0
    assert evalset.keep_seen is False  # test items seen before the cut are not relevant


def test_train_logs_the_figures_of_the_one_evaluation_path(trained_workspace) -> None:
    """The pipeline's logged metrics are `fit_and_score` on `temporal_holdout` of its events."""
    config, result = trained_workspace.config, trained_workspace.result
    events = EventLog(trained_workspace.ws.event_log_dir).read()
    # the interactions of people with personalization consent at their time (issue #12)
    frame, _ = consented_interactions(trained_workspace.ws, interaction_frame(events))
    cut, evalset = temporal_holdout(frame, config.test_days)
    assert str(cut) == result.cut
    assert fit_and_score(config.model, config.params, evalset, config.k).metrics == result.metrics
    assert fit_and_score(config.baseline, {}, evalset, config.k).metrics == result.baseline_metrics
