"""The registered recommender as an MLflow pyfunc, logged as models-from-code.

`training.tracking.log_bundle` hands this file to ``mlflow.pyfunc.log_model(python_model=<path>)``:
MLflow copies it into the logged model and runs it when the model is loaded, so no pickled object
is stored. The packages it imports (read from the import below, `tracking.code_packages`) travel
with it as ``code_paths``, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve -m
models:/...`` work outside this checkout. Not imported by the project: running it registers the
model with MLflow (`mlflow.models.set_model`).

Input: a frame with ``user_id`` and ``k``. Output: one row per recommended item with
``user_id, item_id, rank, score, strategy``: the model's rule-free answer, `models.scoring.top_k`
(unseen items by score, then popular ones; cold users get popular items). The service adds its
serving rules on top of the same scorer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from models.bundle import ModelBundle
from models.scoring import Scorer, top_k

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
            user_id = str(record["user_id"])
            items = top_k(self._scorer, user_id, int(record.get("k", 10)))
            for rank, item in enumerate(items, start=1):
                rows.append(
                    {
                        "user_id": user_id,
                        "item_id": self._scorer.item_ids[item.item_idx],
                        "rank": rank,
                        "score": item.score,
                        "strategy": item.strategy,
                    }
                )
        return pd.DataFrame(rows, columns=COLUMNS)


mlflow.models.set_model(RecommenderPyfunc())
