"""``tailor benchmark``: every registered model on one data set and one published protocol.

Each model is fitted on the same train part and scored on the same test users in one process, so
the figures compare; each model is a nested MLflow run under one parent run per benchmark. The
table is written to ``experiments/results/<dataset>-<protocol>.md`` and ``.csv`` with the
published Microsoft Recommenders rows beside ours.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.datasets import movielens_file_order
from features.workspace import Workspace
from models.registry import MODELS, SEQUENTIAL, build
from training import tracking
from training.metrics import ranking_report
from training.protocols import (
    EvalSet,
    Split,
    leave_last_out,
    msr_split,
    recbole_split,
    temporal_global_split,
    to_eval,
)

logger = logging.getLogger(__name__)

DATASETS = ("movielens-100k",)
PROTOCOLS = ("msr", "recbole", "temporal", "leave-last-out")

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


@dataclass(frozen=True)
class BenchmarkSpec:
    """``experiments/benchmark-*.yaml``: parameters chosen on a validation split, with how."""

    dataset: str = "movielens-100k"
    protocol: str = "msr"
    k: int = 10
    selection: str = ""
    params: dict[str, dict] = field(default_factory=dict)


def load_spec(path: Path) -> BenchmarkSpec:
    from features.yaml_files import read_yaml
    from models.errors import SpecError
    from training.config import ConfigError, from_mapping

    loaded = read_yaml(path, "", "", SpecError, "benchmark spec")[0] or {}
    if not isinstance(loaded, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    spec = from_mapping(BenchmarkSpec, loaded)
    for name, params in spec.params.items():
        if name not in MODELS:
            raise ConfigError(f"{path}: unknown model {name!r}; allowed: {', '.join(MODELS)}")
        build(name, params)  # unknown or mistyped parameters fail here, naming the key
    return spec


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


def make_split(frame: pd.DataFrame, protocol: str) -> Split:
    if protocol == "msr":
        return msr_split(frame, ratio=0.75, seed=42)
    if protocol == "recbole":
        return recbole_split(frame, ratios=(0.8, 0.1, 0.1))
    if protocol == "temporal":
        return temporal_global_split(frame, test_fraction=0.2)
    if protocol == "leave-last-out":
        return leave_last_out(frame, n_valid=1)
    raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")


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
    from features.datasets import load

    loaded = load(dataset, ws.raw_dir)
    users = loaded.users.set_index("user_id").drop(columns=["zip_code"], errors="ignore")
    items = loaded.items.set_index("item_id").drop(columns=["title"], errors="ignore")
    return users, items


def with_features(evalset: EvalSet, users: pd.DataFrame, items: pd.DataFrame) -> EvalSet:
    train = dataclasses.replace(evalset.train, user_features=users, item_features=items)
    return dataclasses.replace(evalset, train=train)


def ordered(evalset: EvalSet, train_frame: pd.DataFrame) -> EvalSet:
    """The same evaluation with the train matrix holding time positions (sequential models)."""
    from models.base import Interactions
    from models.sasrec import sequence_matrix

    train = evalset.train
    known = train_frame[
        train_frame["user_id"].isin(train.users.ids) & train_frame["item_id"].isin(train.items.ids)
    ]
    matrix = sequence_matrix(known, "user_id", "item_id", "timestamp", train.users, train.items)
    return dataclasses.replace(
        evalset, train=Interactions(matrix=matrix, users=train.users, items=train.items)
    )


def evaluate_model(
    name: str, params: dict, evalset: EvalSet, k: int, save_to: Path | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Fit on the train part, rank k unseen items for every test user; metrics and timings.

    ``save_to``: also save the fitted model there (config, ids, weights) for logging.
    """
    model = build(name, params)
    started = time.perf_counter()
    model.fit(evalset.train)
    fit_seconds = time.perf_counter() - started
    users = evalset.test_users
    started = time.perf_counter()
    recommended, _ = model.recommend(users, evalset.train.matrix[users], k=k, exclude_seen=True)
    recommend_seconds = time.perf_counter() - started
    report = ranking_report(
        recommended, evalset.relevant, evalset.train.n_items, k, train_matrix=evalset.train.matrix
    )
    if save_to is not None:
        model.save(save_to)
    return report, {"train_seconds": fit_seconds, "recommend_seconds": recommend_seconds}


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
) -> BenchmarkResult:
    say = say or logger.info
    names = list(models or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
    params = params or {}
    frame = load_frame(dataset, ws)
    split = make_split(frame, protocol)
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
    tracking.experiment(ws, f"benchmark-{dataset}-{protocol}")
    rows = []
    with tracking.start_run(f"{dataset}-{protocol}") as parent:
        tracking.set_tags({"dataset": dataset, "protocol": protocol, "k": str(k)})
        tracking.log_dataset(split.train, f"{dataset}-{protocol}-train", "training", dataset)
        tracking.log_dataset(split.test, f"{dataset}-{protocol}-test", "testing", dataset)
        for name in names:
            say(f"fitting {name}")
            with tracking.start_run(name, nested=True):
                model_params = params.get(name, {})
                inputs = ordered(evalset, split.train) if name in SEQUENTIAL else evalset
                with tempfile.TemporaryDirectory() as tmp:
                    saved = Path(tmp) / "model"
                    report, timings = evaluate_model(name, model_params, inputs, k, saved)
                    tracking.log_artifacts(saved, "model")
                config = build(name, model_params).config
                tracking.log_params({"model": name, "protocol": protocol, "dataset": dataset})
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
        result = write_results(result, results_dir)
    return result


def write_results(result: BenchmarkResult, results_dir: Path) -> BenchmarkResult:
    """Write the Markdown table (ours + published rows) and a CSV of our rows."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result.dataset}-{result.protocol}"
    csv_path = results_dir / f"{stem}.csv"
    result.table.to_csv(csv_path, index=False, float_format="%.6f")
    k = result.k
    columns = [f"ndcg_at_{k}", f"precision_at_{k}", f"recall_at_{k}", f"map_at_{k}"]
    columns += [f"coverage_at_{k}", "train_seconds", "recommend_seconds"]
    lines = [
        f"# {result.dataset}, protocol `{result.protocol}`, k = {k}",
        "",
        f"Command: `tailor benchmark {result.dataset} --protocol {result.protocol}`",
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
    md_path = results_dir / f"{stem}.md"
    lines += ["", "Non-default parameters:", ""]
    lines += [f"- `{name}`: `{params}`" for name, params in result.params.items() if params]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return BenchmarkResult(**{**result.__dict__, "files": {"md": md_path, "csv": csv_path}})
