"""Shared fixtures: a small generated workspace taken once through the whole pipeline."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from features import store
from features.build import build_feature_tables, feature_time_range
from features.consent.files import import_csv
from features.consent.ledger import ConsentLedger
from features.eventlog import EventLog
from features.ingest import ingest_frame
from features.settings import Settings
from features.synthetic.generate import GeneratedData, generate_clickstream
from features.workspace import Workspace
from tests.kafka_server import KafkaCluster, kafka_cluster
from training.config import TrainConfig
from training.pipeline import TrainResult, train_and_evaluate


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment():
    """Tests never talk to a user's own tracking server or workspace."""
    saved = {key: os.environ.pop(key, None) for key in ("MLFLOW_TRACKING_URI", "TAILOR_HOME")}
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    yield
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> KafkaCluster:
    """The session's Kafka cluster (tests/kafka_server.py): TAILOR_TEST_KAFKA, else a local
    Apache Kafka from .ci/kafka/; the test skips when there is neither."""
    yield from kafka_cluster(tmp_path_factory)


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri():
    """MLflow writes MLFLOW_TRACKING_URI into os.environ when a store is set; one test's store
    must not become the next in-process CLI call's store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@dataclass(frozen=True)
class TrainedWorkspace:
    ws: Workspace
    generated: GeneratedData
    result: TrainResult
    config: TrainConfig

    def copy_to(self, home: Path, *skip: str, settings: Settings | None = None) -> Workspace:
        """A workspace of its own at ``home`` holding a copy of this one (its logs, BentoML
        store and the folders in ``skip`` left out), so a test can write to it freely."""
        shutil.copytree(
            self.ws.home,
            home,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("logs", "bentoml", *skip),
        )
        if settings is None:
            return Workspace(home=home).ensure()
        return Workspace(home=home, settings=settings).ensure()


#: The packaged consent policy file (its default regime is opt-in).
PACKAGED_POLICY = Path(__file__).resolve().parents[1] / "features" / "consent" / "policy.yaml"


def write_test_site_policy(ws: Workspace) -> Path:
    """Give ``ws`` the packaged consent policy with the opt-out regime as its default (issue
    #12): the test site's visitors without a country are allowed until they refuse, so the
    tests of other features need no consent records; listed countries keep their regime (a
    test of the opt-in regime sends ``FR``), and tests/integration/test_consent_enforced_http.py
    serves the packaged policy itself."""
    text = PACKAGED_POLICY.read_text(encoding="utf-8")
    assert "\ndefault_regime: opt-in" in text
    target = ws.home / "consent_policy.yaml"
    target.write_text(text.replace("\ndefault_regime: opt-in", "\ndefault_regime: opt-out"))
    return target


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory) -> TrainedWorkspace:
    """Generate → ingest → features → Feast apply + materialize → train + register, once."""
    ws = Workspace(home=tmp_path_factory.mktemp("trained")).ensure()
    write_test_site_policy(ws)
    generated = generate_clickstream(n_users=250, days=21, seed=11)
    report = ingest_frame(generated.events, EventLog(ws.event_log_dir), ws.quarantine_dir, "gen")
    assert report.rejected == 0, report.rejections[:3]
    # the generated consent choices, as `make demo` imports them: most people consent, some
    # refuse or withdraw (issue #12), so training and serving see both paths
    choices = tmp_path_factory.mktemp("consent") / "consent.csv"  # outside the workspace
    generated.consent.to_csv(choices, index=False)
    import_csv(ConsentLedger.for_workspace(ws), choices)
    build_feature_tables(ws)
    fs = store.apply(ws)
    start, end = feature_time_range(ws)
    store.materialize(ws, start.to_pydatetime(), end.to_pydatetime(), store=fs)
    config = TrainConfig(test_days=5, experiment="tests")
    result = train_and_evaluate(ws, config)
    return TrainedWorkspace(ws=ws, generated=generated, result=result, config=config)
