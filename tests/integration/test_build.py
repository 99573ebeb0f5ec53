"""``tailor build`` (issue #5): a real ``bentoml build`` on the trained workspace gives a Bento
holding the champion's bundle, the Feast declarations and the rules, and that Bento serves
``/recommend`` with no MLflow registry in reach."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from serving.bento import BENTO_MODEL_ENV
from serving.process import free_port, stop, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(trained_workspace, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml")
    # module scope runs before conftest's per-test cleanup: drop a tracking URI an earlier
    # module's MLflow calls left behind, so the workspace's own store is used
    saved = {key: os.environ.pop(key, None) for key in ("BENTOML_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["BENTOML_HOME"] = str(home)
    try:
        result = CliRunner().invoke(app, ["build", "--home", str(trained_workspace.ws.home)])
    finally:
        os.environ.pop("BENTOML_HOME", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({key: value for key, value in saved.items() if value is not None})
    assert result.exit_code == 0, result.output
    bentos = [p for p in (home / "bentos" / "tailor").iterdir() if p.is_dir()]
    assert len(bentos) == 1, bentos
    return home, bentos[0]


def test_bento_names_the_service_the_model_and_its_env(built, trained_workspace):
    home, bento = built
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "serving.service:Tailor"
    (model,) = info["models"]
    assert model["tag"].startswith("tailor-recommender:")
    assert model["module"] == "bentoml.mlflow"
    assert {"name": BENTO_MODEL_ENV, "value": "tailor-recommender:latest", "stage": "all"} in info[
        "envs"
    ]
    assert "ENV TAILOR_BENTO_MODEL" in (bento / "env/docker/Dockerfile").read_text()
    # the model in the store carries what the registry's tags said
    version = model["tag"].split(":")[1]
    model_yaml = home / "models/tailor-recommender" / version / "model.yaml"
    stored = yaml.safe_load(model_yaml.read_text())
    assert stored["metadata"]["version"] == str(trained_workspace.result.registered_version)
    assert stored["metadata"]["feature_service"] == "user_profile_v1"


def test_bento_holds_the_code_feature_repo_and_rules_but_not_the_benchmark(built):
    _, bento = built
    src = bento / "src"
    for path in (
        "serving/service.py",
        "serving/rules.yaml",
        "features/personas.yaml",
        "feature_repo/definitions.py",
        "feature_repo/feature_store.yaml",
        "feature_repo/feature_store.scale.yaml",
        "features/store.py",
        "models/bundle.py",
        # issue #12: the consent policy and the consent page's templates and catalogues
        "features/consent/policy.yaml",
        "serving/privacy/templates/privacy.html",
        "serving/privacy/templates/banner.js",
        "serving/privacy/locale/fr/LC_MESSAGES/messages.po",
    ):
        assert (src / path).is_file(), path
    # issue #10 (dead code out): the serving benchmark harness stays out of the Bento
    for harness in ("serving/baseline_service.py", "serving/bench.py", "serving/wrk.py"):
        assert not (src / harness).exists(), harness
    assert not (src / "tests").exists() and not (src / ".venv").exists()
    assert "feast==" in (bento / "env/python/requirements.txt").read_text()


def test_exported_bento_carries_the_model_files(built, tmp_path):
    home, bento = built
    out = tmp_path / "tailor.bento"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    tag = f"tailor:{bento.name}"
    subprocess.run(
        [sys.executable, "-m", "bentoml", "export", tag, str(out)],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    with tarfile.open(out) as archive:
        names = archive.getnames()
    assert any(n.endswith("mlflow_model/MLmodel") for n in names)
    assert any(n.endswith("artifacts/bundle/bundle.json") for n in names)
    assert any(n.startswith("./models/tailor-recommender/") for n in names)


def test_built_bento_serves_its_own_model_without_the_registry(built, trained_workspace, tmp_path):
    home, bento = built
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        BENTO_MODEL_ENV: "tailor-recommender:latest",  # the container's ENV; set here by hand
        "TAILOR_HOME": str(trained_workspace.ws.home),  # the Feast online store
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",  # no champion here
    }
    log = tmp_path / "bento.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", f"tailor:{bento.name}", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, timeout=180, log_path=log)
            events = trained_workspace.generated.events
            user = str(events["user_id"].dropna().value_counts().index[0])
            body = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 3}, timeout=30).json()
            privacy = httpx.get(f"{url}/privacy?lang=fr", timeout=30)  # issue #12
        finally:
            stop(process)
    version = trained_workspace.result.registered_version
    assert body["model"] == f"tailor-recommender@{version}", body
    assert body["personalized"] is True
    assert len(body["items"]) == 3
    assert privacy.status_code == 200 and "Vos choix de confidentialité" in privacy.text
