"""``tailor benchmark`` on the real MovieLens-100K with the msr protocol."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from features.datasets.types import DatasetUnreachableError
from features.workspace import Workspace
from training.benchmark import run_benchmark

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    ws = Workspace(home=tmp_path_factory.mktemp("bench")).ensure()
    out = tmp_path_factory.mktemp("results")
    try:
        return ws, run_benchmark(
            ws, "movielens-100k", "msr", ["popularity", "ease"], results_dir=out
        )
    except DatasetUnreachableError as exc:  # only the network; a defect fails
        pytest.skip(f"MovieLens-100K could not be fetched: {exc}")


def test_ease_reproduces_the_independent_figure(result):
    """Issue #3: EASE at λ = 500 on msr gives NDCG@10 0.484 ± 0.01 in independent code."""
    _, bench = result
    ease = bench.table.set_index("model").loc["ease"]
    assert ease["ndcg_at_10"] == pytest.approx(0.484, abs=0.01)
    assert bench.table.iloc[0]["model"] == "ease"  # well above popularity


def test_split_matches_the_published_protocol_sizes(result):
    _, bench = result
    assert bench.split_sizes == {"train": 75066, "test": 24934}


def test_tables_and_nested_runs_are_written(result):
    ws, bench = result
    text = bench.files["md"].read_text()
    assert "| ease | tailor |" in text and "MS Recommenders 2022 (published)" in text
    client = MlflowClient(ws.mlflow_uri, ws.mlflow_uri)
    mlflow.set_tracking_uri(ws.mlflow_uri)
    children = client.search_runs(
        [client.get_run(bench.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{bench.parent_run_id}'",
    )
    assert sorted(r.data.tags["model"] for r in children) == ["ease", "popularity"]
    for run in children:  # the fitted model itself is logged with every run, under its name
        name = run.data.tags["model"]
        files = {a.path for a in client.list_artifacts(run.info.run_id, name)}
        assert f"{name}/config.json" in files


def test_children_carry_data_set_protocol_model_and_their_shared_split(result):
    """Issue #10 item 13: benchmark children are tagged (data set, protocol, model, split);
    each value is a tag or a param, not both; run names say model and data set, not the
    benchmark's name; the experiment opens MLflow's training view and says what it holds."""
    ws, bench = result
    client = MlflowClient(ws.mlflow_uri, ws.mlflow_uri)
    parent = client.get_run(bench.parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "every model fitted on the same msr train part" in experiment.tags["mlflow.note.content"]
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{bench.parent_run_id}'"
    )
    splits = {parent.data.tags["tailor.split_fingerprint"]}
    for run in children:
        tags = run.data.tags
        assert tags["tailor.dataset"] == "movielens-100k" and tags["tailor.protocol"] == "msr"
        assert run.info.run_name.startswith(f"{tags['model']} · movielens-100k msr · 20")
        assert not {"model", "dataset", "protocol"} & set(run.data.params)
        splits.add(tags["tailor.split_fingerprint"])
    assert len(splits) == 1 and len(splits.pop()) == 16
    assert parent.info.run_name.startswith("benchmark 2 models · movielens-100k msr · 20")


def test_the_table_starts_with_the_command_that_wrote_it(result):
    """Issue #10 item 12: the first line is the exact command, models and folder included."""
    from training.result_files import command_of

    _, bench = result
    out = bench.files["md"].parent
    for path in (bench.files["md"], bench.files["csv"]):
        assert command_of(path.read_text().splitlines()[0]) == [
            "tailor", "benchmark", "movielens-100k", "--protocol", "msr", "--k", "10",
            "--model", "popularity", "--model", "ease", "--out", str(out),
        ]  # fmt: skip


def test_the_cli_writes_to_the_workspace_unless_given_a_folder(result, tmp_path, monkeypatch):
    """Issue #10 item 12: a two-model run from the repository root used to overwrite the
    committed ten-model table; now it writes under ``<home>/results`` and records ``--spec``."""
    from typer.testing import CliRunner

    from cli.app import app
    from training.result_files import command_of

    ws, _ = result
    spec = Path(__file__).resolve().parents[2] / "experiments/benchmark-movielens-100k-msr.yaml"
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(
        app, ["benchmark", "--spec", str(spec), "--model", "popularity", "--home", str(ws.home)]
    )
    assert done.exit_code == 0, done.output
    written = ws.home / "results" / "movielens-100k-msr.md"
    assert not (tmp_path / "experiments").exists()
    assert command_of(written.read_text().splitlines()[0]) == [
        "tailor", "benchmark", "--spec", str(spec), "--model", "popularity",
        "--out", str(ws.home / "results"),
    ]  # fmt: skip
    assert "| popularity | tailor |" in written.read_text()


def test_a_named_markdown_file_gets_the_table_and_the_csv_beside_it(tmp_path):
    """Issue #10 item 12: ``--out experiments/results/<name>.md`` writes exactly that table (and
    ``<name>.csv``), headed by the command, so every committed table has a command that rewrites
    it in place, the ``msr-defaults`` one included."""
    import pandas as pd

    from training.benchmark import BenchmarkResult, benchmark_command, write_results
    from training.result_files import command_of

    columns = ["ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10", "coverage_at_10"]
    row = {"model": "ease", "source": "tailor", **dict.fromkeys(columns, 0.5)}
    row |= {"train_seconds": 1.0, "recommend_seconds": 0.1}
    result = BenchmarkResult("movielens-100k", "msr", 10, pd.DataFrame([row]), {}, {})
    target = tmp_path / "experiments" / "results" / "movielens-100k-msr-defaults.md"
    command = benchmark_command("movielens-100k", "msr", None, 10, target)
    written = write_results(result, target, command)
    assert written.files == {"md": target, "csv": target.with_suffix(".csv")}
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "movielens-100k-msr-defaults.csv",
        "movielens-100k-msr-defaults.md",
    ]
    expected = ["tailor", "benchmark", "movielens-100k", "--protocol", "msr", "--k", "10"]
    assert command_of(target.read_text().splitlines()[0]) == [*expected, "--out", str(target)]
    csv = target.with_suffix(".csv").read_text().splitlines()
    assert command_of(csv[0]) == command_of(target.read_text().splitlines()[0])
    assert csv[1].startswith("model,source,")
