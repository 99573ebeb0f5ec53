"""The registered recommender as an MLflow pyfunc, logged as models-from-code.

`training.tracking.log_bundle` hands this file to ``mlflow.pyfunc.log_model(python_model=<path>)``:
MLflow copies it into the logged model and runs it when the model is loaded, so no pickled object
is stored. The packages it imports (read from the import below, `tracking.code_packages`) travel
with it as ``code_paths``, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve -m
models:/...`` work outside this checkout. Not imported by the project: running it registers the
model with MLflow (`mlflow.models.set_model`).

Input: a frame with ``user_id`` and ``k``. Output: one row per recommended item with
``user_id, item_id, rank, score, strategy`` (cold users get popular items), as the service answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from models.bundle import ModelBundle
from serving.logic import RecommendRequest, Scorer, recommend  # the scorer: one line to repoint

#: The artifact holding the saved `models.bundle.ModelBundle` (`training.tracking.BUNDLE_ARTIFACT`).
BUNDLE_ARTIFACT = "bundle"
COLUMNS = ["user_id", "item_id", "rank", "score", "strategy"]


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """A saved model bundle behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))
        self._scorer = Scorer.from_bundle(bundle, label=bundle.model_name)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        rows = []
        for record in model_input.to_dict(orient="records"):
            request = RecommendRequest(user_id=str(record["user_id"]), k=int(record.get("k", 10)))
            answer = recommend(self._scorer, request)
            for rank, item in enumerate(answer.items, start=1):
                rows.append(
                    {
                        "user_id": answer.user_id,
                        "item_id": item.item_id,
                        "rank": rank,
                        "score": item.score,
                        "strategy": item.strategy,
                    }
                )
        return pd.DataFrame(rows, columns=COLUMNS)


mlflow.models.set_model(RecommenderPyfunc())
