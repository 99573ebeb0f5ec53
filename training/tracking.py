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

from features.library_output import library_output
from features.workspace import Workspace

logger = logging.getLogger(__name__)

#: Experiment tags MLflow's UI reads: the description, and the kind that opens the classic
#: training view (runs, metrics, models) instead of the GenAI view of MLflow 3 (its UI reads
#: ``mlflow.experimentKind`` and knows ``custom_model_development`` and ``genai_development``).
NOTE_TAG = "mlflow.note.content"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: The models-from-code files MLflow copies into a logged pyfunc model and runs when loading it.
RECOMMENDER_CODE = Path(__file__).with_name("pyfunc_model.py")
SEGMENTER_CODE = Path(__file__).with_name("pyfunc_segmenter.py")
#: Artifact names the pyfunc files read their saved model from (``context.artifacts``).
BUNDLE_ARTIFACT = "bundle"
SEGMENTER_ARTIFACT = "segmenter"
REPO_ROOT = Path(__file__).resolve().parents[1]


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace's store (or ``$MLFLOW_TRACKING_URI``)."""
    ws.mlflow_dir.mkdir(parents=True, exist_ok=True)
    uri = ws.mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment(ws: Workspace, name: str, description: str | None = None) -> str:
    """Get or create an experiment whose artifacts live in the workspace, and make it active.

    The experiment carries :data:`EXPERIMENT_KIND` (MLflow's training view) and, when given,
    ``description`` as its note (the spec's description), also when it existed already.
    """
    experiment_id = ensure_experiment(ws, name, description)
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


def code_packages(code_file: Path) -> list[Path]:
    """The repository's top-level packages ``code_file`` needs, following their imports.

    A logged pyfunc carries them (``code_paths``), so it loads where this checkout is absent.
    Read from the source (``ast``), so moving an import changes what is logged with it.
    """
    import ast

    local = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").is_file()}
    needed: set[str] = set()
    todo = [code_file]
    while todo:
        tree = ast.parse(todo.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names} & local - needed:
                needed.add(top)
                todo.extend((REPO_ROOT / top).rglob("*.py"))
    return [REPO_ROOT / name for name in sorted(needed)]


def _log_pyfunc(
    name: str,
    code_file: Path,
    artifacts: dict[str, str],
    example: pd.DataFrame,
    output: pd.DataFrame,
) -> mlflow.models.model.ModelInfo:
    """Log ``code_file`` as a models-from-code pyfunc named ``name`` with the packages it
    imports: no pickled object, and it loads without this checkout on the path."""
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code_file),
        artifacts=artifacts,
        code_paths=[str(path) for path in code_packages(code_file)],
        signature=infer_signature(example, output),
        input_example=example,
    )


def log_bundle(
    bundle_dir: Path, example_users: list[str], k: int, name: str
) -> mlflow.models.model.ModelInfo:
    """Log a saved bundle as the pyfunc model ``name`` (the model's name, e.g. ``ease``) with
    signature and input example (:mod:`training.pyfunc_model`)."""
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
    artifacts = {BUNDLE_ARTIFACT: str(bundle_dir)}
    return _log_pyfunc(name, RECOMMENDER_CODE, artifacts, example, output)


def register(
    model_uri: str, name: str, alias: str, tags: dict[str, str]
) -> mlflow.entities.model_registry.ModelVersion:
    """Register a logged model, tag the version and move ``alias`` to it."""
    with library_output(logger, "mlflow register_model"):
        version = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version


def start_run(run_name: str, nested: bool = False):
    """A run context (``with tracking.start_run(...) as run``), nested under the active one."""
    return mlflow.start_run(run_name=run_name, nested=nested)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


# -- lookups and registry moves for training.promote and training.compare -------------------
def find_run(run_id: str) -> mlflow.entities.Run | None:
    """The run with this id, or None when the store has none (or the id is malformed)."""
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def logged_model_names(run: mlflow.entities.Run) -> list[str]:
    """Names of the models the run logged: MLflow 3 logged models, else MLflow 2 style
    ``<name>/MLmodel`` folders among the run's artifacts."""
    client = MlflowClient()
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    names = [client.get_logged_model(output.model_id).name for output in outputs]
    if names:
        return sorted(set(names))
    return sorted(
        folder.path
        for folder in client.list_artifacts(run.info.run_id)
        if folder.is_dir
        and any(
            a.path == f"{folder.path}/MLmodel"
            for a in client.list_artifacts(run.info.run_id, folder.path)
        )
    )


def register_run_model(
    run_id: str, artifact_path: str, name: str, tags: dict[str, str]
) -> mlflow.entities.model_registry.ModelVersion:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name`` with ``tags``."""
    # MLflow 3 keeps logged models outside the run's artifacts and warns that it resolved the
    # runs:/ URI through the logged model instead; that is the normal case here.
    registry_logger = logging.getLogger("mlflow.tracking._model_registry.fluent")
    level = registry_logger.level
    registry_logger.setLevel(logging.ERROR)
    try:
        with library_output(logger, "mlflow register_model"):
            return mlflow.register_model(f"runs:/{run_id}/{artifact_path}", name, tags=tags)
    finally:
        registry_logger.setLevel(level)


def model_version(name: str, version: str) -> mlflow.entities.model_registry.ModelVersion:
    return MlflowClient().get_model_version(name, str(version))


def alias_version(name: str, alias: str) -> mlflow.entities.model_registry.ModelVersion | None:
    """The version ``name@alias`` points at, or None (no such model or alias)."""
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def ensure_experiment(ws: Workspace, name: str, description: str | None = None) -> str:
    """Get or create an experiment (artifacts in the workspace) without making it active, so a
    caller's own active experiment and run stay as they are; tags as :func:`experiment`."""
    client = MlflowClient()
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if description:
        tags[NOTE_TAG] = description
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(
            name, artifact_location=f"{ws.mlflow_artifacts_uri}/{name}", tags=tags
        )
    for key, value in tags.items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def log_detached_run(
    experiment_id: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> str:
    """Record a finished run beside (not inside) any active run; returns its id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    client = MlflowClient()
    run = client.create_run(experiment_id, tags={MLFLOW_RUN_NAME: run_name}, run_name=run_name)
    run_id = run.info.run_id
    stamp = run.info.start_time
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    client.set_terminated(run_id)
    return run_id


def experiment_names() -> list[str]:
    """Names of the active experiments in the store, sorted."""
    return sorted(e.name for e in MlflowClient().search_experiments())


def experiment_id_of(name: str) -> str | None:
    found = MlflowClient().get_experiment_by_name(name)
    if found is None or found.lifecycle_stage != "active":
        return None
    return found.experiment_id


def runs_frame(experiment_ids: list[str]) -> pd.DataFrame:
    """Every active run of the experiments (nested ones too): ``run_id, experiment_id,
    start_time, metrics.*, params.*, tags.*``."""
    return mlflow.search_runs(experiment_ids=experiment_ids, output_format="pandas")


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow ui`` command line for a store (the same interpreter's MLflow)."""
    import sys

    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]


# -- tuning: a parent run per study, a child run per trial (possibly in other processes) ----


def use_experiment(experiment_id: str) -> None:
    """Make ``experiment_id`` the active experiment (worker processes of a study)."""
    mlflow.set_experiment(experiment_id=experiment_id)


def create_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """A RUNNING run that is not made active, so runs in other processes can nest under it."""
    run = MlflowClient().create_run(experiment_id, tags=tags, run_name=run_name)
    return run.info.run_id


def run_exists(run_id: str) -> bool:
    """Whether ``run_id`` is a live (not deleted) run in the configured store."""
    run = find_run(run_id)
    return run is not None and run.info.lifecycle_stage == "active"


def resume_run(run_id: str):
    """Make an existing run active again (``with tracking.resume_run(id):``); ends FINISHED."""
    return mlflow.start_run(run_id=run_id)


def start_child_run(parent_run_id: str, run_name: str, tags: dict[str, str] | None = None):
    """A run nested under ``parent_run_id`` by the ``mlflow.parentRunId`` tag, which, unlike
    nesting by the active run, works from any process or machine sharing the store."""
    return mlflow.start_run(run_name=run_name, parent_run_id=parent_run_id, tags=tags)


def log_metric_steps(curve: list[tuple[int, dict[str, float]]]) -> None:
    """Per-epoch values of the active run as metric steps, in one batch (finite values only)."""
    import math
    import time as _time

    from mlflow.entities import Metric

    stamp = int(_time.time() * 1000)
    metrics = [
        Metric(key, float(value), stamp, int(step))
        for step, values in curve
        for key, value in values.items()
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    run = mlflow.active_run()
    for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 1000])


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Set a run that is not active here to FINISHED, KILLED or FAILED."""
    MlflowClient().set_terminated(run_id, status=status)


#: The registry's model version type, for annotations outside this module.
ModelVersion = mlflow.entities.model_registry.ModelVersion


# -- navigation patterns (training.patterns) -------------------------------------------------
def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log one file (a result table) to the active run, under ``artifact_path``."""
    mlflow.log_artifact(str(path), artifact_path)


# -- segmentation: the segmenter as a pyfunc model ------------------------------------------
def log_segmenter(
    model_dir: Path, example: pd.DataFrame, name: str = "segmenter"
) -> mlflow.models.model.ModelInfo:
    """Log a saved segmenter as the pyfunc model ``name`` with signature and input example
    (:mod:`training.pyfunc_segmenter`)."""
    output = pd.DataFrame({"segment_id": np.array([0], dtype=np.int64), "segment_label": ["s"]})
    artifacts = {SEGMENTER_ARTIFACT: str(model_dir)}
    return _log_pyfunc(name, SEGMENTER_CODE, artifacts, example, output)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """A small result table as a CSV artifact of the active run."""
    mlflow.log_text(frame.to_csv(index=False), artifact_file)
