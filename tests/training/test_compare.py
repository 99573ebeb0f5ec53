"""`tailor compare`: a leaderboard across MLflow experiments, written as Markdown and a plot."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from features.workspace import Workspace
from training import lineage, tracking
from training.cli import app
from training.compare import compare

pytestmark = pytest.mark.integration


def _run(name: str, metrics: dict[str, float], tags: dict[str, str], nested: bool = False):
    with tracking.start_run(name, nested=nested):
        tracking.set_tags(tags)
        tracking.log_metrics(metrics)


def _tuned(model: str, split: str = "s1") -> dict[str, str]:
    return {
        lineage.METRIC: "test_ndcg_at_10",
        lineage.DIRECTION: "maximize",
        lineage.SPLIT_FINGERPRINT: split,
        lineage.MODEL: model,
        lineage.PROTOCOL: "temporal-global-cut-7d",
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """tune-ease (three runs, one nested), tune-ials (two), bench (no lineage tags, rmse too)."""
    ws = Workspace(home=tmp_path_factory.mktemp("compare")).ensure()
    tracking.configure(ws)
    tracking.experiment(ws, "tune-ease")
    with tracking.start_run("study"):
        _run("trial-0", {"test_ndcg_at_10": 0.41}, _tuned("ease"), nested=True)
        _run("trial-1", {"test_ndcg_at_10": 0.45}, _tuned("ease"), nested=True)
    _run("refit", {"test_ndcg_at_10": 0.44}, _tuned("ease"))
    tracking.experiment(ws, "tune-ials")
    _run("refit", {"test_ndcg_at_10": 0.47}, _tuned("ials"))
    _run("older", {"test_ndcg_at_10": 0.30}, _tuned("ials"))
    tracking.experiment(ws, "bench")
    _run("pop", {"ndcg_at_10": 0.2, "rmse": 1.1}, {"model": "popularity"})
    _run("knn", {"ndcg_at_10": 0.3, "rmse": 0.9}, {"model": "user_knn"})
    return ws


def test_best_run_per_experiment_ranked_across_experiments(ws, tmp_path):
    board = compare(ws, ["tune-ease", "tune-ials"], results_dir=tmp_path)
    assert (board.metric, board.direction) == ("test_ndcg_at_10", "maximize")
    table = board.table
    assert table[["rank", "experiment", "model", "run_name"]].values.tolist() == [
        [1, "tune-ials", "ials", "refit"],
        [2, "tune-ease", "ease", "trial-1"],  # nested trial runs are candidates too
    ]
    assert table["value"].tolist() == pytest.approx([0.47, 0.45])
    assert board.same_split is True
    assert board.files == {
        "md": tmp_path / "compare-tune-ease_tune-ials.md",
        "png": tmp_path / "compare-tune-ease_tune-ials.png",
    }
    text = board.files["md"].read_text()
    assert "| 1 | tune-ials | refit | ials | 0.4700 | s1 |" in text
    assert board.files["png"].read_bytes()[:4] == b"\x89PNG"


def test_top_runs_minimize_and_an_explicit_metric(ws, tmp_path):
    board = compare(ws, ["tune-ease"], results_dir=tmp_path, top=2)
    assert board.table["value"].tolist() == pytest.approx([0.45, 0.44])
    lower = compare(ws, ["bench"], metric="rmse", direction="minimize", out=tmp_path / "b.md")
    assert lower.table["model"].tolist() == ["user_knn"]
    assert lower.same_split is False  # no split fingerprint recorded: flagged in the file
    assert "not a fair contest" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.png").exists()


def test_unknown_experiment_and_missing_metric_are_clear_errors(ws, tmp_path):
    with pytest.raises(ValueError, match=r"unknown experiment\(s\) 'nope'.*existing: .*tune-ials"):
        compare(ws, ["tune-ease", "nope"], results_dir=tmp_path)
    with pytest.raises(ValueError, match="'bench' has no run with metric 'test_ndcg_at_10'.*rmse"):
        compare(ws, ["tune-ease", "bench"], results_dir=tmp_path)


def test_compare_and_ui_commands(ws, tmp_path):
    runner = CliRunner()
    home = ["--home", str(ws.home)]
    out = tmp_path / "board.md"
    result = runner.invoke(app, ["compare", "tune-ease", "tune-ials", "--out", str(out), *home])
    assert result.exit_code == 0, result.output
    assert "tune-ials" in result.output and "0.4700" in result.output
    assert out.exists() and out.with_suffix(".png").exists()
    unknown = runner.invoke(app, ["compare", "nope", *home])
    assert unknown.exit_code == 1 and "existing:" in unknown.output

    ui = runner.invoke(app, ["ui", "--port", "5123", "--dry-run", *home])
    assert ui.exit_code == 0, ui.output
    assert f"--backend-store-uri {ws.mlflow_uri} --host 127.0.0.1 --port 5123" in ui.output
    assert "-m mlflow ui" in ui.output
