"""The one evaluation path: fit a model on a split's train part, rank ``k`` unseen items for each
test user, score the lists.

`tailor train` (`training.pipeline`), `tailor benchmark`, `tailor tune` and the experiment
scripts all measure a model here, on an `training.protocols.EvalSet` built by
`training.protocols.to_eval` from one `training.protocols.Split`, with the metrics of
`models.ranking_metrics`, so a figure means the same wherever it is printed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from models.base import Callback, Recommender
from models.interactions import Interactions
from models.ranking_metrics import ranking_report
from models.registry import build
from training.protocols import EvalSet


@dataclass(frozen=True)
class Evaluation:
    """A fitted model and what it scored: ``metrics`` as `models.ranking_metrics.ranking_report`
    (``ndcg_at_{k}``, ...), and the seconds spent fitting and ranking."""

    model: Recommender
    metrics: dict[str, float]
    fit_seconds: float
    recommend_seconds: float

    @property
    def timings(self) -> dict[str, float]:
        """``{"train_seconds", "recommend_seconds"}``, the names the result tables carry."""
        return {"train_seconds": self.fit_seconds, "recommend_seconds": self.recommend_seconds}


def fit(
    name: str, params: dict, interactions: Interactions, callback: Callback | None = None
) -> tuple[Recommender, float]:
    """Build registered model ``name`` with ``params`` and fit it: the model and the seconds."""
    model = build(name, params)
    started = time.perf_counter()
    model.fit(interactions, callback=callback)
    return model, time.perf_counter() - started


def score(
    model: Recommender, evalset: EvalSet, k: int, *, novelty: bool = False
) -> tuple[dict[str, float], float]:
    """Rank ``k`` items each test user has not seen in train; the metrics and the seconds.

    ``novelty``: also report ``novelty_at_{k}`` against the train matrix (the benchmark tables).
    """
    users = evalset.test_users
    started = time.perf_counter()
    recommended, _ = model.recommend(users, evalset.train.matrix[users], k=k, exclude_seen=True)
    seconds = time.perf_counter() - started
    report = ranking_report(
        recommended,
        evalset.relevant,
        evalset.train.n_items,
        k,
        train_matrix=evalset.train.matrix if novelty else None,
    )
    return report, seconds


def fit_and_score(
    name: str,
    params: dict,
    evalset: EvalSet,
    k: int,
    *,
    callback: Callback | None = None,
    novelty: bool = False,
) -> Evaluation:
    """Fit model ``name`` on ``evalset.train`` and score it on ``evalset``'s test users."""
    model, fit_seconds = fit(name, params, evalset.train, callback)
    metrics, recommend_seconds = score(model, evalset, k, novelty=novelty)
    return Evaluation(model, metrics, fit_seconds, recommend_seconds)
