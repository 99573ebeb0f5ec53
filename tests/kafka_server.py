"""A Kafka cluster for the Kafka broker tests (issue #11): ``TAILOR_TEST_KAFKA`` when set, else a
single-node Apache Kafka started for the session from the jars ``make tools`` fetched into
``.ci/kafka/lib/`` (``.ci/kafka/start``: KRaft, 127.0.0.1, 512 MiB heap, data and log in the
session's temp dir), stopped at the end.

Without either the tests skip, even under ``TAILOR_REQUIRE_SERVICES=1``: the jars come from Maven
Central, which some machines (this project's CI among them) cannot reach, so a missing Kafka is
not a defect of the machine. Jars that are there but a broker that does not start is one: that
fails, with the broker's log."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
KAFKA_DIR = ROOT / ".ci" / "kafka"
START = KAFKA_DIR / "start"
#: Seconds the broker may take to accept connections (a cold JVM on 2 cores: about 5).
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalKafka:
    """``.ci/kafka/start`` on free ports with its data in ``workdir``; :meth:`restart` stops the
    broker process and starts it again on the same data (what a broker restart does to clients:
    every connection dropped, connects refused until it is back)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.controller_port = _free_port(), _free_port()
        self.log_path = workdir / "kafka.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(START), str(self.port), str(self.workdir / "broker")],
                env={**os.environ, "KAFKA_CONTROLLER_PORT": str(self.controller_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Kafka did not start on 127.0.0.1:{self.port}:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class KafkaCluster:
    """Where the tests find Kafka: ``url`` for :class:`~features.broker.kafka.KafkaBroker`;
    ``local`` is the broker process this session started (None for ``TAILOR_TEST_KAFKA``)."""

    url: str
    local: LocalKafka | None


def cluster_url(given: str) -> str:
    """``TAILOR_TEST_KAFKA`` as a ``kafka://`` URL (``host:port`` is taken as well)."""
    return given if "://" in given else f"kafka://{given}"


def kafka_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The session's Kafka (see the module doc); a generator for a session-scoped fixture."""
    given = Settings.from_env().test_kafka
    if given:
        yield KafkaCluster(cluster_url(given), None)
        return
    if not (KAFKA_DIR / "lib" / ".complete").exists():
        pytest.skip(
            f"no Kafka: {env_name('test_kafka')} is unset and .ci/kafka/lib/ has no jars "
            "(`make tools` fetches them from Maven Central; see .ci/kafka/fetch.log)"
        )
    local = LocalKafka(tmp_path_factory.mktemp("kafka"))
    local.start()
    try:
        yield KafkaCluster(local.url, local)
    finally:
        local.stop()
