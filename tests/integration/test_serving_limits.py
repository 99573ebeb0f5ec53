"""Body limits are settings the service reads when it starts (issue #10 item 4): a real
``bentoml serve`` with ``TAILOR_MAX_EVENTS_BYTES`` / ``TAILOR_MAX_REQUEST_BYTES`` set answers 413
at those sizes, and a limit that is not a positive byte count stops it at start-up."""

from __future__ import annotations

import httpx
import pytest

from features.eventlog import EventLog
from features.workspace import Workspace
from serving.process import bearer, running_service, service_key

pytestmark = pytest.mark.integration


def _copy(trained_workspace, tmp_path) -> Workspace:
    return trained_workspace.copy_to(tmp_path)


def test_configured_limits_are_applied(trained_workspace, tmp_path):
    ws = _copy(trained_workspace, tmp_path)
    limits = {"TAILOR_MAX_EVENTS_BYTES": "2048", "TAILOR_MAX_REQUEST_BYTES": "300"}
    key = bearer(service_key(ws, "admin"))  # a valid key: the body limits come next
    with running_service(ws, extra_env=limits) as url:
        events = len(EventLog(ws.event_log_dir))
        batch = [{"event_id": f"e{i}", "page": "x" * 100} for i in range(20)]  # ~2.6 KB
        response = httpx.post(f"{url}/events", json=batch, headers=key, timeout=30)
        assert response.status_code == 413
        assert response.json()["detail"] == {"limit_bytes": 2048}
        assert len(EventLog(ws.event_log_dir)) == events
        # read, then rejected
        under = httpx.post(f"{url}/events", json=batch[:5], headers=key, timeout=30)
        assert (under.status_code, under.json()["rejected"]) == (202, 5)

        request = {"user_id": "u1", "k": 3, "exclude": ["p" * 20] * 15}  # ~350 bytes
        response = httpx.post(f"{url}/recommend", json=request, headers=key, timeout=30)
        assert response.status_code == 413
        assert response.json()["detail"] == {"limit_bytes": 300}
        small = {"user_id": "u1", "k": 3}
        assert httpx.post(f"{url}/recommend", json=small, headers=key).status_code == 200


def test_a_limit_that_is_not_a_byte_count_stops_the_service(trained_workspace, tmp_path):
    ws = _copy(trained_workspace, tmp_path)
    with pytest.raises(RuntimeError, match="TAILOR_MAX_EVENTS_BYTES='1MiB' must be a positive"):
        with running_service(ws, extra_env={"TAILOR_MAX_EVENTS_BYTES": "1MiB"}, timeout=120):
            pass
