"""`tailor compare`: a leaderboard across MLflow experiments, written as Markdown and a plot."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.app import app
from features.workspace import Workspace
from training import lineage, tracking
from training.compare import compare

pytestmark = pytest.mark.integration


def _run(
    name: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    nested: bool = False,
    params: dict | None = None,
):
    with tracking.start_run(name, nested=nested):
        tracking.set_tags(tags)
        tracking.log_metrics(metrics)
        tracking.log_params(params or {})


def _tuned(model: str, split: str = "s1", metric: str = "test_ndcg_at_10") -> dict[str, str]:
    """Lineage tags of a tune study; ``test_ndcg_at_10`` as studies named it before issue #10."""
    return {
        lineage.METRIC: metric,
        lineage.DIRECTION: "maximize",
        lineage.SPLIT_FINGERPRINT: split,
        lineage.MODEL: model,
        lineage.PROTOCOL: "msr",
        lineage.DATASET: "movielens-100k",
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """tune-ease (three runs, one nested), tune-ials (two): studies logged before issue #10;
    bench (no lineage tags, rmse too); tune-new: a study logged today (``ndcg_at_10``);
    benchmark-movielens-100k-msr: a benchmark logged before issue #10 (children without a split
    fingerprint); tailor-train: a training run on the workspace's events."""
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
    tracking.experiment(ws, "tune-new")
    _run("ease study", {"ndcg_at_10": 0.46}, _tuned("ease", metric="ndcg_at_10"))
    tracking.experiment(ws, "benchmark-movielens-100k-msr")
    with tracking.start_run("movielens-100k-msr"):
        tracking.set_tags({"dataset": "movielens-100k", "protocol": "msr"})
        for model, value in (("ease", 0.486), ("popularity", 0.25)):
            params = {"model": model, "dataset": "movielens-100k", "protocol": "msr"}
            _run(model, {"ndcg_at_10": value}, {}, nested=True, params=params)
    tracking.experiment(ws, "tailor-train")
    train_tags = {**_tuned("ease", "w1", "ndcg_at_10"), lineage.DATASET: "workspace-events"}
    _run("ease", {"ndcg_at_10": 0.12}, train_tags)
    return ws


def test_best_run_per_experiment_ranked_across_experiments(ws, tmp_path):
    board = compare(ws, ["tune-ease", "tune-ials"], results_dir=tmp_path)
    assert (board.metric, board.direction) == ("ndcg_at_10", "maximize")  # one name (item 14)
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
    assert "| 1 | tune-ials | refit | ials | 0.4700 | A | s1 |" in text
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
    with pytest.raises(ValueError, match="'tune-ease' has no run with metric 'rmse'.*test_ndcg"):
        compare(ws, ["tune-ease", "bench"], metric="rmse", results_dir=tmp_path)


def test_studies_and_training_runs_share_one_metric_name(ws, tmp_path):
    """Issue #10 item 14: a study logged before the rename (``test_ndcg_at_10``) and one logged
    after (``ndcg_at_10``) are ranked on one metric, asked for by either name."""
    for asked in (None, "ndcg_at_10", "test_ndcg_at_10"):
        board = compare(ws, ["tune-new", "tune-ease"], asked, results_dir=tmp_path)
        assert board.metric == "ndcg_at_10"
        assert board.table[["experiment", "value"]].values.tolist() == [
            ["tune-new", pytest.approx(0.46)],
            ["tune-ease", pytest.approx(0.45)],
        ]
        assert board.table["split_group"].tolist() == ["A", "A"] and board.same_split


def test_the_runs_of_one_benchmark_share_a_split(ws, tmp_path):
    """Issue #10 item 14: a benchmark's children recorded no fingerprint before issue #10, but
    they were all scored on one split: they form one split group, apart from the study's."""
    board = compare(ws, ["benchmark-movielens-100k-msr", "tune-new"], top=2, results_dir=tmp_path)
    rows = board.table[["experiment", "model", "split_group"]].values.tolist()
    assert rows == [
        ["benchmark-movielens-100k-msr", "ease", "A"],
        ["tune-new", "ease", "B"],
        ["benchmark-movielens-100k-msr", "popularity", "A"],
    ]
    assert board.table["dataset"].tolist() == ["movielens-100k"] * 3
    assert board.same_split is False
    assert "| 1 | benchmark-movielens-100k-msr | ease | ease | 0.4860 | A |" in (
        board.files["md"].read_text()
    )


def test_movielens_and_shop_runs_are_never_on_one_chart(ws, tmp_path):
    """Issue #10 item 14: one error line naming both data sets, and no file written."""
    with pytest.raises(ValueError) as raised:
        compare(ws, ["tune-new", "tailor-train"], results_dir=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "movielens-100k (tune-new)" in message and "workspace-events (tailor-train)" in message
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(
        app, ["compare", "tune-new", "tailor-train", "--home", str(ws.home)]
    )
    assert result.exit_code == 1
    assert "different data sets" in result.output and "workspace-events" in result.output


def test_compare_writes_to_the_workspace_unless_told_and_records_its_command(
    ws, tmp_path, monkeypatch
):
    """Issue #10 item 12: without ``--out`` the table goes to ``<home>/results``, never under
    ``experiments/results`` of the working folder; its first line is the command that rewrites
    it, and that command, run again, writes the same table."""
    from training.result_files import command_of

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "tune-new", "tune-ease", "--home", str(ws.home)])
    assert result.exit_code == 0, result.output
    written = ws.home / "results" / "compare-tune-new_tune-ease.md"
    assert written.is_file() and written.with_suffix(".png").is_file()
    assert not (tmp_path / "experiments").exists()
    first = written.read_text().splitlines()[0]
    command = command_of(first)
    assert command == [
        "tailor", "compare", "tune-new", "tune-ease", "--metric", "ndcg_at_10", "--top", "1",
        "--direction", "maximize", "--home", str(ws.home), "--out", str(written),
    ]  # fmt: skip
    before = written.read_text()
    written.unlink()
    again = runner.invoke(app, command[1:])
    assert again.exit_code == 0, again.output
    assert written.read_text() == before

    out = tmp_path / "experiments" / "results" / "board.md"
    given = runner.invoke(app, ["compare", "tune-new", "--out", str(out), "--home", str(ws.home)])
    assert given.exit_code == 0, given.output
    assert command_of(out.read_text().splitlines()[0])[-2:] == [
        "--out",
        "experiments/results/board.md",
    ]


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
