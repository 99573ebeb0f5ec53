"""The pure parts of ``tailor bench serve`` (issue #5): wrk scripts and output, Prometheus
histogram quantiles, the results table and the missing-wrk message. The load run itself is a
benchmark, not a test."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving import wrk
from serving.bench import (
    NOTES_MARKER,
    BenchReport,
    BenchSettings,
    feature_read_summary,
    render_markdown,
    target_lines,
    write_report,
)
from serving.process import serve_command, serve_env, workers_env
from tests.services import require_tool

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:3000
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.00ms  40.00ms   90.00%
  4000 requests in 10.00s, 1.20MB read
Requests/sec:    400.00
TAILOR_BENCH {"requests": 4000, "duration_us": 10000000, "p50_us": 4500, "p95_us": 9000, \
"p99_us": 15000, "max_us": 40000, "errors": 3}
"""


def _result(rps: float, p99_ms: float) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=int(rps * 10), seconds=10.0, p50_ms=1.0, p95_ms=2.0, p99_ms=p99_ms, max_ms=50.0,
        errors=0,
    )  # fmt: skip


def test_parse_wrk_reads_the_summary_line_in_milliseconds():
    result = wrk.parse_wrk(WRK_OUTPUT)
    assert result.requests == 4000
    assert result.seconds == 10.0
    assert result.rps == 400.0
    assert (result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms) == (4.5, 9.0, 15.0, 40.0)
    assert result.errors == 3


def test_parse_wrk_without_the_summary_line_says_so():
    with pytest.raises(ValueError, match="no TAILOR_BENCH line"):
        wrk.parse_wrk("Running 10s test @ http://x\nRequests/sec: 1.0\n")


def test_rotating_script_holds_every_body_and_the_done_callback():
    bodies = [json.dumps({"user_id": f"u{i}", "k": 10}) for i in range(3)]
    script = wrk.rotating_script("/recommend", bodies)
    for body in bodies:
        assert f"[=[{body}]=]" in script
    assert "i = i % #bodies + 1" in script
    assert 'wrk.format("POST", [=[/recommend]=], nil, bodies[i])' in script
    assert wrk.SUMMARY_PREFIX in script and "latency:percentile(95)" in script


def test_rotating_script_refuses_a_body_that_would_end_the_lua_string():
    with pytest.raises(ValueError, match="]=]"):
        wrk.rotating_script("/recommend", ['{"user_id": "]=]"}'])
    with pytest.raises(ValueError, match="at least one"):
        wrk.rotating_script("/recommend", [])


def test_events_script_makes_unique_event_ids_per_thread_and_request():
    script = wrk.events_script("/events", ["u1", "u2"])
    assert 'thread:set("tid", threads)' in script
    assert '"event_id": "%s-%d"' in script  # prefix (thread, start time) and counter
    assert "[=[u1]=], [=[u2]=]" in script


class _Ok(BaseHTTPRequestHandler):
    """Records ``(path, body)``: wrk may still have a request of an earlier run in flight when
    it stops, so each check reads only the bodies sent to its own route."""

    seen: list[tuple[str, bytes]] = []
    keys: set[str | None] = set()  # the Authorization headers that came in

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        _Ok.seen.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        _Ok.keys.add(self.headers.get("Authorization"))
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except BrokenPipeError:  # wrk closes its connections when its time is up
            pass

    @staticmethod
    def bodies(path: str) -> list[bytes]:
        return [body for seen_path, body in list(_Ok.seen) if seen_path == path]

    def log_message(self, *args) -> None:
        pass


def test_wrk_runs_the_generated_scripts_and_reports_through_done(tmp_path):
    """Real wrk against a tiny local HTTP server: the scripts load, send what they promise,
    and ``done`` prints the summary :func:`wrk.parse_wrk` reads."""
    require_tool("wrk", "tailor bench serve drives the service with it")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        key = {"Authorization": "Bearer tk_bench_key"}  # issue #13: the benchmark sends keys
        bodies = ['{"user_id": "u1"}', '{"user_id": "u2"}']
        rotating = wrk.rotating_script("/recommend", bodies, key)
        result = wrk.run_wrk(url, rotating, tmp_path / "r.lua", connections=1, seconds=1)
        assert result.requests > 2 and result.errors == 0
        assert {b'{"user_id": "u1"}', b'{"user_id": "u2"}'} <= set(_Ok.bodies("/recommend"))
        result = wrk.run_wrk(
            url, wrk.events_script("/events", ["u1"], key), tmp_path / "e.lua", 1, 1
        )
        assert _Ok.keys == {"Bearer tk_bench_key"}
        events = [json.loads(body) for body in _Ok.bodies("/events")]
        assert result.requests > 2 and len(events) >= 2
        assert len({event["event_id"] for event in events}) == len(events)  # never a duplicate
        assert {event["user_id"] for event in events} == {"u1"}
        assert events[0]["timestamp"].endswith("Z")
    finally:
        server.shutdown()


def test_missing_wrk_fails_with_how_to_install_it(monkeypatch):
    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    with pytest.raises(wrk.LoadGeneratorMissing, match="apt-get install -y wrk"):
        wrk.find_wrk()


def test_bench_command_without_wrk_exits_with_the_install_hint(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["bench", "serve", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert "wrk is not installed" in result.output


METRICS = """# TYPE tailor_feature_read_seconds histogram
tailor_feature_read_seconds_bucket{le="0.00025",service="user_profile_v1"} 10.0
tailor_feature_read_seconds_bucket{le="0.0005",service="user_profile_v1"} 60.0
tailor_feature_read_seconds_bucket{le="0.001",service="user_profile_v1"} 90.0
tailor_feature_read_seconds_bucket{le="0.002",service="user_profile_v1"} 99.0
tailor_feature_read_seconds_bucket{le="+Inf",service="user_profile_v1"} 100.0
tailor_feature_read_seconds_count{service="user_profile_v1"} 100.0
tailor_request_latency_seconds_bucket{le="0.005",endpoint="/recommend",strategy="model"} 7.0
"""


def test_histogram_quantiles_interpolate_inside_the_bucket_like_prometheus():
    buckets = wrk.histogram_buckets(METRICS, "tailor_feature_read_seconds")
    assert buckets == [(0.00025, 10.0), (0.0005, 60.0), (0.001, 90.0), (0.002, 99.0),
                       (math.inf, 100.0)]  # fmt: skip
    assert wrk.histogram_quantile(buckets, 0.5) == pytest.approx(0.00025 + 0.00025 * 40 / 50)
    assert wrk.histogram_quantile(buckets, 0.99) == pytest.approx(0.002)
    assert wrk.histogram_quantile(buckets, 0.995) == 0.002  # in +Inf: the last finite bound
    assert wrk.share_at_most(buckets, 0.002) == 0.99
    summary = feature_read_summary(METRICS)
    assert summary["count"] == 100
    assert summary["p99_ms"] == pytest.approx(2.0)
    assert feature_read_summary("no metrics here") == {}


def _report() -> BenchReport:
    report = BenchReport(settings=BenchSettings(concurrency=8, seconds=10), model="m@3")
    report.runs = {
        "baseline (before)": _result(1000, 10.0),
        "recommend: known users": _result(850, 14.0),
        "baseline (after)": _result(900, 10.0),
    }
    report.in_process = {
        "online_features (features.store, 1 row)": {
            "n": 2000, "p50_ms": 0.2, "p99_ms": 0.5, "mean_ms": 0.25
        }
    }  # fmt: skip
    return report


def test_baseline_is_the_mean_of_the_runs_before_and_after():
    base = _report().baseline
    assert base.rps == pytest.approx(950.0)
    assert base.p99_ms == 10.0


def test_targets_compare_known_users_with_the_baseline():
    lines = target_lines(_report())
    assert lines[0] == "known-user RPS ≥ 0.8× baseline: 0.89× — met"
    assert lines[1] == "known-user p99 ≤ 1.5× baseline p99: 1.40× — met"
    assert lines[2].endswith("0.500 ms — met")


def test_results_table_has_ratios_and_keeps_notes(tmp_path: Path):
    text = render_markdown(_report())
    assert "| recommend: known users | 850 | 1.00 | 2.00 | 14.00 | 0 | 0.89× | 1.40× |" in text
    out = tmp_path / "serving.md"
    out.write_text(f"old table\n{NOTES_MARKER}\nhand-written profile notes\n")
    write_report(_report(), out)
    written = out.read_text()
    assert "old table" not in written
    assert written.rstrip().endswith("hand-written profile notes")


def test_workers_go_to_bentoml_service_config_not_the_ignored_api_workers_flag(tmp_path):
    """`bentoml serve --api-workers` is ignored for @bentoml.service classes (BentoML 1.4), so
    `tailor serve --workers N` sets services.<name>.workers through BENTOML_CONFIG_OVERRIDES."""
    from features.workspace import Workspace

    env = serve_env(Workspace(home=tmp_path), workers=3)
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"tailor": {"workers": 3}}}
    # issue #10 (dead code out): the ignored flag is no longer passed at all
    command = serve_command(3000, "127.0.0.1")
    assert "--api-workers" not in command
    assert command[command.index("serve") + 1] == "serving.service:Tailor"
    merged = workers_env(
        {"BENTOML_CONFIG_OVERRIDES": '{"services": {"tailor": {"traffic": {"timeout": 5}}}}'},
        "tailor",
        2,
    )
    assert json.loads(merged["BENTOML_CONFIG_OVERRIDES"]) == {
        "services": {"tailor": {"traffic": {"timeout": 5}, "workers": 2}}
    }
    with pytest.raises(ValueError, match="workers must be >= 1"):
        workers_env({}, "tailor", 0)


def test_results_table_starts_with_the_command_that_writes_it_again(tmp_path, monkeypatch):
    """issue #10 (honest results): the first line of `tailor bench serve`'s table is the command
    that regenerates it, ``--out`` included (without it the command writes into the workspace),
    in the format of training.result_files; a command naming ``--out`` is kept as given."""
    from training.result_files import command_of

    monkeypatch.chdir(tmp_path)
    report = _report()
    report.command = "tailor bench serve --home /tmp/ws --concurrency 8"
    out = tmp_path / "results" / "serving.md"
    write_report(report, out)
    lines = out.read_text().splitlines()
    assert command_of(lines[0]) == [
        "tailor", "bench", "serve", "--home", "/tmp/ws", "--concurrency", "8",
        "--out", "results/serving.md",
    ]  # fmt: skip
    assert lines[2] == "# Scoring service under load (`tailor bench serve`)"
    report.command = "tailor bench serve --out elsewhere.md"
    write_report(report, out)
    assert command_of(out.read_text().splitlines()[0]) == [
        "tailor", "bench", "serve", "--out", "elsewhere.md"
    ]  # fmt: skip


def test_store_lock_table_starts_with_its_command():
    """issue #10 (honest results): `python -m serving.bench_store_lock` records its command as
    the table's first line, not inside the body only."""
    from serving.bench_store_lock import LockReport
    from serving.bench_store_lock import render_markdown as render_lock
    from training.result_files import command_of

    command = "python -m serving.bench_store_lock --home /tmp/ws --out store-lock.md"
    report = LockReport(command=command, started="now", model="m@1", machine="2 CPUs",
                        concurrency=8, seconds=10.0, lock_seconds=25.0)  # fmt: skip
    report.normal = report.locked = _result(500, 10.0)
    first = render_lock(report).splitlines()[0]
    assert command_of(first) == command.split()
