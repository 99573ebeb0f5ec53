"""The broker figures of `tailor bench realtime` (issue #11): raw publish vs. end to end."""

from __future__ import annotations

import uuid

import pytest

from features.broker.throughput import measure_realtime_throughput
from features.settings import Settings
from features.workspace import Workspace
from tests.features.broker.conftest import RABBIT_URL, require_rabbitmq


@pytest.mark.parametrize("kind", ["embedded", "rabbitmq", "kafka"])
def test_both_rates_are_measured_in_one_run_on_scratch_queues(tmp_path, request, kind):
    settings = Settings()
    if kind == "rabbitmq":
        require_rabbitmq()
        settings = Settings(broker_url=RABBIT_URL, broker_queue="tailor.test.bench")
    elif kind == "kafka":
        url = request.getfixturevalue("kafka").url
        settings = Settings(
            broker_url=url, broker_queue=f"tailor.test.bench.{uuid.uuid4().hex[:8]}"
        )
    ws = Workspace.from_env(home=tmp_path, settings=settings)
    result = measure_realtime_throughput(ws, events=2000, batch_size=200)
    assert result.broker == kind
    assert result.events == 2000
    assert result.raw_rate == pytest.approx(2000 / result.raw_seconds)
    assert result.end_to_end_rate == pytest.approx(2000 / result.end_to_end_seconds)
    assert result.ratio == pytest.approx(result.end_to_end_rate / result.raw_rate)
    # end to end includes a publish of the same size, so it cannot be faster than publishing
    assert result.end_to_end_seconds > result.raw_seconds * 0.5
    assert list((tmp_path / "bench").iterdir()) == []  # scratch log and queues removed
    assert not (tmp_path / "events").exists()  # the workspace's own log untouched
