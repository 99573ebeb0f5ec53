"""``tailor benchmark``: every registered model on one data set and one published protocol.

Each model is fitted on the same train part and scored on the same test users in one process, so
the figures compare; each model is a nested MLflow run under one parent run per benchmark, tagged
with the data set, protocol, model and the split they share. The table is written to
``<results_dir>/<dataset>-<protocol>.md`` (or the ``.md`` file named) and ``.csv`` with the
published Microsoft Recommenders rows beside ours: the CLI writes to the workspace
(``<home>/results``) unless ``--out`` names a folder or file such as
``experiments/results/movielens-100k-msr.md``; the table's first line is the command that wrote it.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from features.datasets.load import movielens_file_order
from features.workspace import Workspace
from features.yaml_files import FileModel, Invalid, read_yaml, validate
from models.registry import MODELS, SEQUENTIAL, build
from training import lineage, result_files, tracking
from training.evaluate import fit_and_score
from training.protocols import PROTOCOLS, EvalSet, protocol_split, to_eval

logger = logging.getLogger(__name__)

DATASETS = ("movielens-100k",)

#: Microsoft Recommenders' MovieLens-100K benchmark (stratified split by item, 75/25, seed 42,
#: k = 10): NDCG@10 as published in its benchmark notebook (2022 run; 2025 run).
PUBLISHED = (
    ("BiVAE", "MS Recommenders 2022", 0.4751),
    ("BPR", "MS Recommenders 2022", 0.4420),
    ("LightGCN", "MS Recommenders 2022", 0.4176),
    ("NCF", "MS Recommenders 2022", 0.3988),
    ("SAR", "MS Recommenders 2022", 0.3883),
    ("BiVAE", "MS Recommenders 2025", 0.4687),
    ("BPR", "MS Recommenders 2025", 0.4450),
    ("SAR", "MS Recommenders 2025", 0.3938),
)


class BenchmarkSpec(FileModel):
    """``experiments/benchmark-*.yaml``: parameters chosen on a validation split, with how."""

    dataset: str = "movielens-100k"
    protocol: Literal[PROTOCOLS] = "msr"
    k: Annotated[int, Field(ge=1)] = 10
    selection: str = ""
    params: dict[str, dict] = {}

    @field_validator("params")
    @classmethod
    def _known_models(cls, params: dict[str, dict]) -> dict[str, dict]:
        for name, model_params in params.items():
            if name not in MODELS:
                raise Invalid(f"unknown model {name!r}; allowed: {', '.join(MODELS)}", (name,))
            try:
                build(name, model_params)  # an unknown or mistyped parameter fails here
            except (ValueError, TypeError) as exc:
                raise Invalid(str(exc), (name,), model_params) from None
        return params


def load_spec(path: Path) -> BenchmarkSpec:
    """Read and validate a benchmark spec; a `ConfigError` names the file, key and value."""
    from models.errors import SpecError

    loaded, origin = read_yaml(path, SpecError, "benchmark spec")
    return validate(BenchmarkSpec, {} if loaded is None else loaded, SpecError, origin)


@dataclass(frozen=True)
class BenchmarkResult:
    dataset: str
    protocol: str
    k: int
    table: pd.DataFrame
    split_sizes: dict[str, int]
    eval_counts: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)
    parent_run_id: str = ""
    selection: str = ""
    params: dict[str, dict] = field(default_factory=dict)


def load_frame(dataset: str, ws: Workspace) -> pd.DataFrame:
    """One row per interaction (``user_id``, ``item_id``, ...) with a unique 0..n-1 index.

    ``dataset``: ``movielens-100k`` (file order), ``generated`` (the workspace's event log as
    weighted product interactions, `training.data.interaction_frame`) or the path of an
    interactions file ``user_id,item_id[,rating][,timestamp]`` (CSV or Parquet).
    """
    if dataset == "movielens-100k":
        return movielens_file_order(ws.raw_dir)
    if dataset == "generated":
        from features.eventlog import EventLog
        from training.data import interaction_frame

        events = EventLog(ws.event_log_dir).read()
        if events.empty:
            raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
        return interaction_frame(events).reset_index(drop=True)
    if Path(dataset).is_file():
        from training.fit_predict import read_interactions

        frame = read_interactions(Path(dataset))
        if "timestamp" in frame.columns and not pd.api.types.is_numeric_dtype(frame["timestamp"]):
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame.reset_index(drop=True)
    raise ValueError(
        f"unknown data set {dataset!r}; allowed: {', '.join(DATASETS)}, generated or the path "
        "of an interactions file (user_id,item_id[,rating][,timestamp])"
    )


def side_features(dataset: str, ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User and item attributes indexed by id, for models that read side features."""
    from features.datasets.load import load

    loaded = load(dataset, ws.raw_dir)
    users = loaded.users.set_index("user_id").drop(columns=["zip_code"], errors="ignore")
    items = loaded.items.set_index("item_id").drop(columns=["title"], errors="ignore")
    return users, items


def with_features(evalset: EvalSet, users: pd.DataFrame, items: pd.DataFrame) -> EvalSet:
    train = dataclasses.replace(evalset.train, user_features=users, item_features=items)
    return dataclasses.replace(evalset, train=train)


def ordered(evalset: EvalSet, train_frame: pd.DataFrame) -> EvalSet:
    """The same evaluation with the train matrix holding time positions (sequential models)."""
    from models.interactions import Interactions
    from models.sequences import sequence_matrix

    train = evalset.train
    known = train_frame[
        train_frame["user_id"].isin(train.users.ids) & train_frame["item_id"].isin(train.items.ids)
    ]
    matrix = sequence_matrix(known, "user_id", "item_id", "timestamp", train.users, train.items)
    return dataclasses.replace(
        evalset, train=Interactions(matrix=matrix, users=train.users, items=train.items)
    )


def run_benchmark(
    ws: Workspace,
    dataset: str = "movielens-100k",
    protocol: str = "msr",
    models: list[str] | None = None,
    params: dict[str, dict] | None = None,
    k: int = 10,
    results_dir: Path | None = None,
    say: Callable[[str], None] | None = None,
    selection: str = "",
    command: list[str] | None = None,
) -> BenchmarkResult:
    """Fit and score ``models`` (default: all) on one split; with ``results_dir``, write the
    tables there, headed by ``command`` (default: the one :func:`benchmark_command` builds)."""
    say = say or logger.info
    names = list(models or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
    params = params or {}
    frame = load_frame(dataset, ws)
    split = protocol_split(frame, protocol)
    evalset = to_eval(split)
    user_side, item_side = side_features(dataset, ws)
    # Side features are attributes known before the split (demographics, genres), not behaviour.
    evalset = with_features(evalset, user_side, item_side)
    counts = {k_: v for k_, v in asdict(evalset).items() if k_.startswith("n_")}
    say(
        f"{dataset} / {protocol}: {split.sizes()} rows; {len(evalset.test_users)} test users, "
        f"{evalset.n_relevant} relevant pairs"
    )
    tracking.configure(ws)
    tracking.experiment(ws, f"benchmark-{dataset}-{protocol}", _description(dataset, protocol, k))
    label = Path(dataset).name if Path(dataset).is_file() else dataset
    # Every child shares the parent's split: one fingerprint, so `tailor compare` groups them.
    shared = {
        lineage.DATASET: label,
        lineage.PROTOCOL: protocol,
        lineage.SPLIT_FINGERPRINT: lineage.split_fingerprint(
            split.train, split.test, ["user_id", "item_id"]
        ),
        lineage.METRIC: f"ndcg_at_{k}",
        lineage.DIRECTION: "maximize",
    }
    rows = []
    parent_name = lineage.run_name(f"benchmark {len(names)} models", None, f"{label} {protocol}")
    with tracking.start_run(parent_name) as parent:
        tracking.set_tags({**shared, "tailor.models": ",".join(names)})
        tracking.log_params({"k": k})
        tracking.log_dataset(split.train, f"{dataset}-{protocol}-train", "training", dataset)
        tracking.log_dataset(split.test, f"{dataset}-{protocol}-test", "testing", dataset)
        for name in names:
            say(f"fitting {name}")
            model_params = params.get(name, {})
            child_name = lineage.run_name(name, model_params, f"{label} {protocol}")
            with tracking.start_run(child_name, nested=True):
                tracking.set_tags({**shared, lineage.MODEL: name})
                inputs = ordered(evalset, split.train) if name in SEQUENTIAL else evalset
                evaluated = fit_and_score(name, model_params, inputs, k, novelty=True)
                report, timings = evaluated.metrics, evaluated.timings
                with tempfile.TemporaryDirectory() as tmp:
                    saved = Path(tmp) / "model"
                    evaluated.model.save(saved)
                    tracking.log_artifacts(saved, name)
                config = build(name, model_params).config
                tracking.log_params(dict(config.__dict__), prefix="model.")
                tracking.log_metrics({m: v for m, v in report.items() if np.isfinite(v)})
                tracking.log_metrics(timings)
            rows.append({"model": name, "source": "tailor", **report, **timings})
            say(
                f"{name}: ndcg@{k} {report[f'ndcg_at_{k}']:.4f} in {timings['train_seconds']:.1f} s"
            )
    table = pd.DataFrame(rows).sort_values(f"ndcg_at_{k}", ascending=False).reset_index(drop=True)
    result = BenchmarkResult(
        dataset=dataset,
        protocol=protocol,
        k=k,
        table=table,
        split_sizes=split.sizes(),
        eval_counts=counts,
        parent_run_id=parent.info.run_id,
        selection=selection,
        params={name: params.get(name, {}) for name in names},
    )
    if results_dir is not None:
        command = command or benchmark_command(dataset, protocol, models, k, results_dir)
        result = write_results(result, results_dir, command)
    return result


def _description(dataset: str, protocol: str, k: int) -> str:
    return (
        f"tailor benchmark: every model fitted on the same {protocol} train part of {dataset} "
        f"and ranked on the same test users (k = {k}); one nested run per model."
    )


def benchmark_command(
    dataset: str,
    protocol: str,
    models: list[str] | None,
    k: int,
    out: Path,
    spec: Path | None = None,
    home: Path | None = None,
) -> list[str]:
    """The ``tailor benchmark`` command line that writes these tables to ``out`` again;
    ``home`` is recorded for ``generated`` (the workspace's own events), the one data set that
    depends on it."""
    command = ["tailor", "benchmark"]
    if spec is not None:
        command += ["--spec", result_files.shown(spec)]
    else:
        command += [dataset, "--protocol", protocol, "--k", str(k)]
    for name in models or []:
        command += ["--model", name]
    if dataset == "generated" and home is not None:
        command += ["--home", result_files.shown(home)]
    return command + ["--out", result_files.shown(out)]


def write_results(
    result: BenchmarkResult, results_dir: Path, command: list[str] | None = None
) -> BenchmarkResult:
    """Write the Markdown table (ours + published rows) and a CSV of our rows: into the folder
    ``results_dir`` as ``<dataset>-<protocol>.md`` / ``.csv``, or, when ``results_dir`` names a
    ``.md`` file, to that file with the CSV beside it.

    ``command``: what regenerates them (default: ``tailor benchmark <dataset> --protocol ...
    --out <results_dir>``), recorded as the Markdown's first line and the CSV's header comment.
    """
    command = command or benchmark_command(
        result.dataset, result.protocol, None, result.k, results_dir
    )
    results_dir = Path(results_dir)
    if results_dir.suffix == ".md":
        md_path = results_dir
    else:
        md_path = results_dir / f"{Path(result.dataset).name}-{result.protocol}.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = md_path.with_suffix(".csv")
    with csv_path.open("w", encoding="utf-8") as handle:
        handle.write(result_files.generated_by(command, comment="#") + "\n")
        result.table.to_csv(handle, index=False, float_format="%.6f")
    k = result.k
    columns = [f"ndcg_at_{k}", f"precision_at_{k}", f"recall_at_{k}", f"map_at_{k}"]
    columns += [f"coverage_at_{k}", "train_seconds", "recommend_seconds"]
    lines = [
        result_files.generated_by(command),
        "",
        f"# {result.dataset}, protocol `{result.protocol}`, k = {k}",
        "",
        f"Command: `{shlex.join(command)}`",
        f"Split rows: {result.split_sizes}. Evaluation: {result.eval_counts}.",
        "Timings are seconds on the machine that ran the command (2 cores for CI-sized runs).",
        f"Parameters: {result.selection or 'each model config class defaults'}.",
        "",
        "| model | source | " + " | ".join(c.replace("_at_", "@") for c in columns) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for row in result.table.to_dict(orient="records"):
        cells = [f"{row[c]:.4f}" if "seconds" not in c else f"{row[c]:.2f}" for c in columns]
        lines.append(f"| {row['model']} | {row['source']} | " + " | ".join(cells) + " |")
    if result.protocol == "msr":
        for model, source, ndcg in PUBLISHED:
            blanks = " | ".join("–" for _ in columns[1:])
            lines.append(f"| {model} | {source} (published) | {ndcg:.4f} | {blanks} |")
    lines += ["", "Non-default parameters:", ""]
    lines += [f"- `{name}`: `{params}`" for name, params in result.params.items() if params]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return BenchmarkResult(**{**result.__dict__, "files": {"md": md_path, "csv": csv_path}})
