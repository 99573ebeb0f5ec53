"""The one MLflow adapter in ``training/``: runs, models, registry aliases.

Commands call :func:`configure` first; importing this module sets nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from features.workspace import Workspace

logger = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """A saved :class:`models.bundle.ModelBundle` behind MLflow's pyfunc interface.

    Input: a frame with ``user_id`` and ``k``. Output: one row per recommended item with
    ``user_id, item_id, rank, score, strategy`` (cold users get popular items).
    """

    def load_context(self, context: Any) -> None:
        from models.bundle import ModelBundle
        from serving.logic import Scorer

        bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))
        self._scorer = Scorer.from_bundle(bundle, label=bundle.model_name)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        from serving.logic import RecommendRequest, recommend

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
        return pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "score", "strategy"])


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace's store (or ``$MLFLOW_TRACKING_URI``)."""
    ws.mlflow_dir.mkdir(parents=True, exist_ok=True)
    uri = ws.mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment(ws: Workspace, name: str) -> str:
    """Get or create an experiment whose artifacts live in the workspace."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(name)
        return found.experiment_id
    experiment_id = client.create_experiment(
        name, artifact_location=f"{ws.mlflow_artifacts_uri}/{name}"
    )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_metrics(metrics: dict[str, float], prefix: str = "") -> None:
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()})


def log_params(params: dict[str, Any], prefix: str = "") -> None:
    mlflow.log_params({f"{prefix}{k}": v for k, v in params.items()})


def log_dataset(frame: pd.DataFrame, name: str, context: str, source: str) -> None:
    """Record a training frame as an MLflow dataset input (schema, digest, source)."""
    dataset = mlflow.data.from_pandas(frame, source=source, name=name)
    mlflow.log_input(dataset, context=context)


def log_artifacts(directory: Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(directory), artifact_path)


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_bundle(bundle_dir: Path, example_users: list[str], k: int) -> mlflow.models.model.ModelInfo:
    """Log a saved bundle as a pyfunc model with signature and input example."""
    example = pd.DataFrame({"user_id": example_users, "k": np.full(len(example_users), k)})
    output = pd.DataFrame(
        {
            "user_id": ["u"],
            "item_id": ["i"],
            "rank": np.array([1], dtype=np.int64),
            "score": [0.5],
            "strategy": ["model"],
        }
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=RecommenderPyfunc(),
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        signature=infer_signature(example, output),
        input_example=example,
    )


def register(
    model_uri: str, name: str, alias: str, tags: dict[str, str]
) -> mlflow.entities.model_registry.ModelVersion:
    """Register a logged model, tag the version and move ``alias`` to it."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version


def start_run(run_name: str, nested: bool = False):
    """A run context (``with tracking.start_run(...) as run``), nested under the active one."""
    return mlflow.start_run(run_name=run_name, nested=nested)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)
