"""Load the registered champion and check its Feast contract at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from features.workspace import Workspace
from models.bundle import ModelBundle
from models.errors import TailorError
from models.scoring import Scorer

logger = logging.getLogger(__name__)


class ServingStartupError(TailorError, RuntimeError):
    """The service cannot start: no champion, or its feature service is missing."""


@dataclass(frozen=True)
class LoadedModel:
    scorer: Scorer
    name: str
    version: str
    run_id: str
    feature_service: str

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def registered_version(ws: Workspace, name: str, alias: str):
    """The MLflow model version ``name@alias`` points at (the registry of the workspace).

    Raises :class:`ServingStartupError` saying what to run when there is none.
    """
    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise ServingStartupError(
            f"no model {name!r} with alias {alias!r} in the registry at {ws.mlflow_uri}: "
            "run `tailor train` first"
        ) from exc


def preflight(ws: Workspace, name: str, alias: str) -> str:
    """Cheap start-up checks in the calling process, so a doomed server is never spawned.

    Returns ``name@version``; raises :class:`ServingStartupError` with what to run.
    """
    version = registered_version(ws, name, alias)
    registry = ws.feast_dir / "registry.db"
    if ws.profile == "local" and not registry.exists():
        raise ServingStartupError(
            f"no Feast registry at {registry}: run `tailor features apply` first"
        )
    return f"{name}@{version.version}"


def load_registered(ws: Workspace, name: str, alias: str) -> LoadedModel:
    """Resolve ``name@alias`` in the MLflow registry and load its bundle."""
    version = registered_version(ws, name, alias)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}"))
    found = sorted(local.rglob("bundle.json"))
    if not found:
        raise ServingStartupError(f"{name}@{alias} (version {version.version}) has no bundle")
    bundle = ModelBundle.load(found[0].parent)
    label = f"{name}@{version.version}"
    service = version.tags.get("feast.feature_service", "")
    if not service:
        raise ServingStartupError(f"{label} has no 'feast.feature_service' tag")
    logger.info("loaded %s (%s) from run %s", label, bundle.model_name, version.run_id)
    return LoadedModel(
        scorer=Scorer.from_bundle(bundle, label),
        name=name,
        version=str(version.version),
        run_id=version.run_id or "",
        feature_service=service,
    )


def alias_version(ws: Workspace, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at now, or None when there is none (a cheap call)."""
    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def check_feature_service(store, service: str) -> None:
    """Fail start-up with a clear message when the model's feature service is not in Feast."""
    try:
        store.get_feature_service(service)
    except Exception as exc:  # Feast raises its own not-found errors
        raise ServingStartupError(
            f"the model needs Feast feature service {service!r}, which the feature store at "
            f"{store.repo_path} does not have: run `tailor features apply`"
        ) from exc
