"""The segmentation job on a small generated workspace: real Feast and MLflow in a temp folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.app import app
from features import store
from features.consent.check import ConsentCheck
from features.consent.files import import_csv
from features.consent.ledger import ConsentLedger
from features.synthetic.generate import generate_clickstream, write_generated
from features.workspace import Workspace
from models.errors import ConfigError
from training import tracking
from training.segments.job import SegmentJob, load_segment_job
from training.segments.run import segment_events, segment_workspace

pytestmark = pytest.mark.integration

JOB = SegmentJob(stability_seeds=1, tsne_sample=300)


@pytest.fixture(scope="module")
def one_off(tmp_path_factory):
    """Generate 400 users with planted personas, then the whole `--events` path once (a one-off
    run on a file: logged, CSV written, nothing registered)."""
    home = tmp_path_factory.mktemp("segment")
    ws = Workspace(home=home).ensure()
    generated = generate_clickstream(n_users=400, days=28, seed=5)
    paths = write_generated(generated, home / "raw" / "generated")
    import_csv(ConsentLedger.for_workspace(ws), paths["consent"])  # issue #12
    out = home / "segments.csv"
    result = segment_events(ws, paths["events"], JOB, out, truth=generated.personas)
    tracking.configure(ws)
    registered = tracking.alias_version("tailor-segmenter", "champion")
    kept = (ws.models_dir / "segmenter").exists()
    return ws, generated, result, out, registered, kept


@pytest.fixture(scope="module")
def segmented(one_off):
    """The workspace's own segmentation of the same people: registered, in Feast."""
    ws, generated, first, out, _, _ = one_off
    result = segment_workspace(ws, JOB, first.as_of, truth=generated.personas)
    return ws, generated, result, out


def test_a_one_off_file_run_does_not_register_or_replace_the_workspace_segmenter(one_off):
    """issue #18: `tailor segment --events F` logs its run and writes its CSV; it neither
    registers nor promotes a segmenter, nor leaves one for the workspace's next run."""
    ws, _, result, out, registered, kept = one_off
    assert result.run_id and result.version is None and result.promotion is None
    assert registered is None and not kept
    assert out.is_file()


def test_planted_personas_are_recovered(segmented):
    _, _, result, _ = segmented
    assert result.ari >= 0.8
    assert len(result.segmenter.labels) >= 4
    assert (result.table["neighbour_p_bonferroni"] < 0.01).all()


def test_csv_lists_every_consenting_person_once(segmented):
    """Every person of the log with personalization consent at the as-of time and now gets one
    segment; the others (issue #12: refused, never asked, withdrawn) get none, not even
    Dormant."""
    ws, generated, result, out = segmented
    written = pd.read_csv(out, dtype={"segment_label": str})
    assert list(written.columns) == ["user_id", "segment_id", "segment_label"]
    assert written["user_id"].is_unique
    events = pd.read_parquet(ws.raw_dir / "generated" / "events.parquet")
    people = events["user_id"].fillna("anon:" + events["anonymous_id"]).unique().tolist()
    check = ConsentCheck.for_workspace(ws)
    then = check.decide_many(people, "personalization", as_of=result.as_of.to_pydatetime())
    now = check.decide_many(people, "personalization")
    consenting = {p for p in people if then[p].allowed and now[p].allowed}
    assert 0 < len(consenting) < len(people)  # the generated data has both paths
    assert set(written["user_id"]) == consenting
    assert result.consent.people_dropped == len(people) - len(consenting)
    assert set(generated.personas["user_id"]) & consenting <= set(written["user_id"])
    # nor in the offline table the online store is loaded from
    table = pd.read_parquet(ws.feature_data_dir / store.SEGMENT_TABLE)
    assert set(table.loc[table["event_timestamp"] == result.as_of, "user_id"]) == consenting
    assert written["segment_label"].notna().all()


def test_mlflow_run_has_plots_tables_model_and_champion(segmented):
    ws, _, result, _ = segmented
    tracking.configure(ws)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.metrics["ari_ground_truth"] == pytest.approx(result.ari)
    assert run.data.tags["feast.feature_service"] == store.USER_SERVICE
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/elbow.png", "plots/silhouette.png", "plots/pca_map.png",
            "plots/tsne_map.png"} <= plots  # fmt: skip
    steps = client.get_metric_history(result.run_id, "kmeans_silhouette")
    assert sorted(m.step for m in steps) == list(range(2, 11))
    champion = tracking.alias_version("tailor-segmenter", "champion")
    assert champion is not None and champion.run_id == result.run_id
    import mlflow

    model = mlflow.pyfunc.load_model("models:/tailor-segmenter@champion")
    x = pd.DataFrame(np.zeros((1, len(result.segmenter.feature_names))),
                     columns=result.segmenter.feature_names)  # fmt: skip
    assert set(model.predict(x).columns) == {"segment_id", "segment_label"}


def test_segments_are_readable_online_and_offline(segmented):
    ws, _, result, _ = segmented
    fs = store.feature_store(ws)
    assert store.SEGMENT_SERVICE in {s.name for s in fs.list_feature_services()}
    some = result.assignments.sample(5, random_state=0)
    rows = store.online_features(fs, [{"user_id": u} for u in some["user_id"]],
                                 service=store.SEGMENT_SERVICE)  # fmt: skip
    assert [r["segment_label"] for r in rows] == some["segment_label"].tolist()
    assert [r["segment_id"] for r in rows] == some["segment_id"].tolist()
    entity = pd.DataFrame({"user_id": some["user_id"], "event_timestamp": result.as_of})
    offline = store.historical_features(ws, entity, store.SEGMENT_SERVICE)
    assert set(offline["segment_label"]) == set(some["segment_label"])


def test_reclustering_matches_ids_and_logs_a_migration_matrix(segmented):
    ws, _, first, _ = segmented
    again = segment_workspace(ws, SegmentJob(stability_seeds=1, tsne_sample=300,
                                             register=False), first.as_of)  # fmt: skip
    merged = first.assignments.merge(again.assignments, on="user_id")
    same = (merged["segment_id_x"] == merged["segment_id_y"]).mean()
    assert same >= 0.9
    assert again.migration is not None
    assert int(again.migration.to_numpy().sum()) == len(merged)
    assert min(share for _, share in first.stability) >= 0.9


def test_segment_job_spec_errors_name_the_file_key_value_and_allowed(tmp_path):
    """issue #10 (one shape): the segment job is a pydantic dataclass with unknown keys
    forbidden; the segmenter's keys are written flat beside the job's, and an error names the
    file (or --set), the key, the value and every allowed key."""
    spec = tmp_path / "job.yaml"
    spec.write_text("k_max: 6\nstability_seed: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_segment_job(spec)
    message = str(caught.value)
    assert message.startswith(f"{spec}: key 'stability_seed', value 3: unknown key; allowed: ")
    assert "algorithm: str" in message and "stability_seeds: int" in message
    spec.write_text("k_max: true\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: key 'k_max', value True: expected"):
        load_segment_job(spec)
    spec.write_text("k_max: 6\nmin_sessions: 4\n")
    job = load_segment_job(spec, ["k_min=3"])
    assert (job.segmenter.k_min, job.segmenter.k_max, job.min_sessions) == (3, 6, 4)


def test_cli_segment_errors_and_spec_keys(tmp_path):
    result = CliRunner().invoke(app, ["segment", "--events", "x.csv", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "--out" in result.output
    with pytest.raises(ConfigError, match="unknown key"):
        load_segment_job(None, ["k_maxx=3"])
    job = load_segment_job(None, ["algorithm=gmm", "k_max=6", "min_sessions=3"])
    assert (job.segmenter.algorithm, job.segmenter.k_max, job.min_sessions) == ("gmm", 6, 3)


def test_cli_dbscan_refuses_one_dense_region_in_one_line(segmented):
    """Issue #10 item 9: `tailor segment --set algorithm=dbscan` raised IndexError in the
    significance tests; DBSCAN (eps at the k-distance knee) finds one region in these personas,
    and the command says so, and what to use instead, in one error line."""
    ws, _, _, _ = segmented
    result = CliRunner().invoke(
        app, ["segment", "--set", "algorithm=dbscan", "--set", "register=false", "--home",
              str(ws.home)],
    )  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: algorithm='dbscan' found a single segment in ")
    assert "use algorithm=hdbscan" in errors[0]


def test_report_starts_with_the_command_that_wrote_it(segmented, tmp_path):
    """issue #10 (honest results): `tailor segment --report` tables record their command as the
    first line (the format of training.result_files), figures copied beside them."""
    from training.result_files import command_of
    from training.segments.report import write_report

    _, _, result, _ = segmented
    command = "tailor segment --dataset cdnow --report out/segments.md --home /tmp/seg"
    path = write_report(result, tmp_path / "segments.md", "Segments", [command], [])
    lines = path.read_text().splitlines()
    assert command_of(lines[0]) == command.split()
    assert lines[2] == "# Segments"
    assert (tmp_path / "segments" / "elbow.png").is_file()
