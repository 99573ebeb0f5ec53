"""A self-contained Bento: the champion's bundle inside it, and ``tailor build``.

The service loads ``champion`` from the MLflow registry by default. A Bento must run where that
registry is out of reach, so ``tailor build``:

1. imports the champion's MLflow model into the workspace's BentoML model store with
   ``bentoml.mlflow.import_model`` (the bundle files under ``mlflow_model/``), with the registered
   name, version, run and Feast feature service as metadata, since the registry's tags do not
   travel with the model files;
2. runs ``bentoml build`` with ``bentofile.yaml``, which packs that model, the code,
   ``feature_repo/`` (the Feast declarations) and ``serving/rules.yaml``.

Inside the Bento, ``TAILOR_BENTO_MODEL`` (set by ``bentofile.yaml``) names the model, and the
service loads it from the model store instead of the registry (:func:`load_bento_model`).

Both steps run as subprocesses with the workspace's ``BENTOML_HOME``: BentoML resolves its home
once per process, so an in-process import would follow whichever home was used first.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from features.workspace import Workspace
from models.scoring import Scorer
from serving.loader import LoadedModel, ServingStartupError, registered_version

logger = logging.getLogger(__name__)

#: Environment variable naming the BentoML model the service loads instead of the registry.
BENTO_MODEL_ENV = "TAILOR_BENTO_MODEL"
#: The model's name in the BentoML store; ``bentofile.yaml`` packs ``<this>:latest``.
BENTO_MODEL_NAME = "tailor-recommender"
BENTOFILE = "bentofile.yaml"


@dataclass(frozen=True)
class BuiltBento:
    """What ``tailor build`` made."""

    label: str  # name@version of the registered model packed
    model_tag: str  # BentoML model tag
    bento_tag: str  # BentoML Bento tag (name:version)
    path: Path  # the Bento's folder in the workspace's BentoML store
    bentoml_home: Path


def load_bento_model(directory: Path, metadata: dict) -> LoadedModel:
    """A :class:`LoadedModel` from a BentoML model folder made by :func:`import_champion`."""
    from models.bundle import ModelBundle

    missing = [key for key in ("name", "version", "feature_service") if not metadata.get(key)]
    if missing:
        raise ServingStartupError(
            f"the BentoML model at {directory} lacks metadata {missing}: rebuild it with "
            "`tailor build`"
        )
    found = sorted(directory.rglob("bundle.json"))
    if not found:
        raise ServingStartupError(f"the BentoML model at {directory} has no bundle.json")
    bundle = ModelBundle.load(found[0].parent)
    label = f"{metadata['name']}@{metadata['version']}"
    logger.info("loaded %s (%s) from the BentoML model at %s", label, bundle.model_name, directory)
    return LoadedModel(
        scorer=Scorer.from_bundle(bundle, label),
        name=str(metadata["name"]),
        version=str(metadata["version"]),
        run_id=str(metadata.get("run_id", "")),
        feature_service=str(metadata["feature_service"]),
    )


def champion_metadata(ws: Workspace, name: str, alias: str) -> dict[str, str]:
    """The registered version behind ``name@alias`` and what the service needs to know of it."""
    version = registered_version(ws, name, alias)
    service = version.tags.get("feast.feature_service", "")
    if not service:
        raise ServingStartupError(f"{name}@{version.version} has no 'feast.feature_service' tag")
    return {
        "name": name,
        "version": str(version.version),
        "alias": alias,
        "run_id": version.run_id or "",
        "feature_service": service,
        "model_uri": f"models:/{name}/{version.version}",
    }


def build_bento(
    ws: Workspace,
    name: str,
    alias: str,
    project_root: Path,
    env: dict[str, str],
    timeout: float = 900.0,
) -> BuiltBento:
    """Import ``name@alias`` into the BentoML store and ``bentoml build`` the project.

    ``env`` is the subprocesses' environment (``serving.process.serve_env``: the workspace's
    ``BENTOML_HOME`` and tracking URI).
    """
    metadata = champion_metadata(ws, name, alias)
    # MLflow keeps the URIs it was last given in the environment; the import must use this
    # workspace's registry whatever an earlier call in this process left there
    env = {**env, "MLFLOW_TRACKING_URI": ws.mlflow_uri, "MLFLOW_REGISTRY_URI": ws.mlflow_uri}
    imported = _run(
        [sys.executable, "-m", "serving.bento", json.dumps(metadata)], env, project_root, timeout
    )
    model_tag = imported.strip().splitlines()[-1]
    bentofile = project_root / BENTOFILE
    built = _run(
        [
            sys.executable,
            "-m",
            "bentoml",
            "build",
            "-f",
            str(bentofile),
            "-o",
            "tag",
            str(project_root),
        ],
        env,
        project_root,
        timeout,
    )
    tags = [line for line in built.splitlines() if line.startswith("__tag__:")]
    if not tags:
        raise RuntimeError(f"bentoml build printed no tag:\n{built[-2000:]}")
    bento_tag = tags[-1].removeprefix("__tag__:").strip()
    bento_name, _, bento_version = bento_tag.partition(":")
    home = Path(env["BENTOML_HOME"])
    return BuiltBento(
        label=f"{metadata['name']}@{metadata['version']}",
        model_tag=model_tag,
        bento_tag=bento_tag,
        path=home / "bentos" / bento_name / bento_version,
        bentoml_home=home,
    )


def _run(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed with code {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-4000:]}"
        )
    return result.stdout


def import_champion(metadata: dict[str, str]) -> str:
    """Import the registered model into the BentoML store (``BENTOML_HOME``); returns its tag."""
    import bentoml

    model = bentoml.mlflow.import_model(
        BENTO_MODEL_NAME,
        model_uri=metadata["model_uri"],
        labels={"registered_model": metadata["name"], "version": metadata["version"]},
        metadata={key: value for key, value in metadata.items() if key != "model_uri"},
    )
    return str(model.tag)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - run by build_bento
    parser = argparse.ArgumentParser(description="Import the champion into the BentoML store.")
    parser.add_argument("metadata", help="JSON from champion_metadata().")
    args = parser.parse_args(argv)
    print(import_champion(json.loads(args.metadata)))


if __name__ == "__main__":  # pragma: no cover
    main()
