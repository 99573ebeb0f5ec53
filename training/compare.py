"""A leaderboard across MLflow experiments: the best run(s) of each on one metric.

Rows come from every run of the named experiments (nested trial and benchmark child runs too)
that logged the metric. A metric has one name everywhere: tune studies before issue #10 logged
their test value as ``test_ndcg_at_10``, which is read as ``ndcg_at_10``. The table is written as
Markdown and the values as a bar chart beside it, into the workspace (``<home>/results``) unless
``out`` names a file such as one under ``experiments/results/``; its first line is the command
that regenerates it. Values measured on different test splits (``tailor.split_fingerprint``; the
runs of one benchmark share one) are labelled by split group and flagged: only rows with the same
split are a fair contest. Runs on different data sets (MovieLens and the shop's events) are never
put on one chart.
"""

from __future__ import annotations

import logging
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.workspace import Workspace
from training import lineage, result_files, tracking

logger = logging.getLogger(__name__)

DEFAULT_METRIC = "ndcg_at_10"
DIRECTIONS = ("maximize", "minimize")
COLUMNS = [
    "rank",
    "experiment",
    "run_name",
    "model",
    "metric",
    "value",
    "dataset",
    "split_group",
    "split",
    "protocol",
    "run_id",
]


@dataclass(frozen=True)
class Leaderboard:
    """``table`` has one row per kept run, best first (:data:`COLUMNS`); ``split_group`` is a
    letter per distinct test split (``-`` when a run recorded none)."""

    metric: str
    direction: str
    experiments: list[str]
    table: pd.DataFrame
    same_split: bool
    files: dict[str, Path] = field(default_factory=dict)


def _tag(runs: pd.DataFrame, key: str) -> pd.Series:
    column = f"tags.{key}"
    if column not in runs.columns:
        return pd.Series([""] * len(runs), index=runs.index, dtype=object)
    return runs[column].fillna("").astype(str)


def _choose_metric(runs: pd.DataFrame) -> str:
    """The metric most runs name in ``tailor.metric``, else ``ndcg_at_10``."""
    named = _tag(runs, lineage.METRIC)
    named = named[named != ""].map(lineage.canonical_metric)
    if not named.empty:
        return str(named.value_counts().index[0])
    return DEFAULT_METRIC


def _choose_direction(runs: pd.DataFrame, metric: str) -> str:
    """``tailor.direction`` of runs that name ``metric``, else maximize."""
    mask = _tag(runs, lineage.METRIC).map(lineage.canonical_metric) == metric
    directions = _tag(runs, lineage.DIRECTION)[mask]
    directions = directions[directions.isin(DIRECTIONS)]
    return str(directions.value_counts().index[0]) if not directions.empty else "maximize"


def compare(
    ws: Workspace,
    experiments: list[str],
    metric: str | None = None,
    results_dir: Path | None = None,
    *,
    top: int = 1,
    direction: str | None = None,
    out: Path | None = None,
) -> Leaderboard:
    """The ``top`` best runs of each experiment on ``metric``, ranked across experiments.

    ``metric`` defaults to the one the runs name in ``tailor.metric`` (else ``ndcg_at_10``);
    ``direction`` to their ``tailor.direction`` (else maximize). Writes ``out`` (default
    ``results_dir/compare-<names>.md``, ``results_dir`` defaulting to ``<home>/results``) and a
    bar chart with the same name and ``.png``. Raises ``ValueError`` for unknown experiments
    (listing the existing ones), when an experiment has no run with the metric (listing the
    metrics its runs have) or when the kept runs were measured on different data sets.
    """
    if not experiments:
        raise ValueError("name at least one experiment to compare")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    tracking.configure(ws)
    ids = {name: tracking.experiment_id_of(name) for name in experiments}
    unknown = [name for name, found in ids.items() if found is None]
    if unknown:
        existing = ", ".join(tracking.experiment_names()) or "none"
        raise ValueError(
            f"unknown experiment(s) {', '.join(map(repr, unknown))} in {ws.mlflow_uri}; "
            f"existing: {existing}"
        )
    runs = tracking.runs_frame(list(ids.values()))
    metric = lineage.canonical_metric(metric or _choose_metric(runs))
    direction = direction or _choose_direction(runs, metric)
    column = f"metrics.{metric}"
    if not runs.empty:
        runs = runs.assign(**{column: _values(runs, metric)})
    names_by_id = {found: name for name, found in ids.items()}
    rows = []
    for name in experiments:
        mine = runs[runs["experiment_id"] == ids[name]] if not runs.empty else runs
        scored = mine[mine[column].notna()] if column in mine.columns else mine.iloc[0:0]
        if scored.empty:
            have = sorted(
                c.removeprefix("metrics.")
                for c in mine.columns
                if c.startswith("metrics.") and mine[c].notna().any()
            )
            raise ValueError(
                f"experiment {name!r} has no run with metric {metric!r}; its runs have: "
                f"{', '.join(have) or 'no metrics'}"
            )
        best = scored.sort_values(column, ascending=direction == "minimize").head(top)
        for _, run in best.iterrows():
            rows.append(
                {
                    "experiment": names_by_id[run["experiment_id"]],
                    "run_name": str(run.get("tags.mlflow.runName") or ""),
                    "model": _model_of(run),
                    "metric": metric,
                    "value": float(run[column]),
                    "dataset": _first(
                        run, f"tags.{lineage.DATASET}", "tags.dataset", "params.dataset"
                    ),
                    "split": _split_of(run, names_by_id[run["experiment_id"]]),
                    "protocol": _protocol_of(run),
                    "run_id": str(run["run_id"]),
                }
            )
    table = pd.DataFrame(rows)
    _refuse_mixed_datasets(table)
    table = table.sort_values("value", ascending=direction == "minimize", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    groups = {key: string.ascii_uppercase[i % 26] for i, key in enumerate(dict.fromkeys(
        key for key in table["split"] if key))}  # fmt: skip
    table["split_group"] = [groups.get(key, "-") for key in table["split"]]
    table = table.reset_index(drop=True)[COLUMNS]
    splits = set(table["split"])
    board = Leaderboard(
        metric=metric,
        direction=direction,
        experiments=list(experiments),
        table=table,
        same_split=len(splits) == 1 and "" not in splits,
    )
    path = out or (results_dir or result_files.workspace_results(ws)) / (
        f"compare-{_slug(experiments)}.md"
    )
    command = ["tailor", "compare", *experiments, "--metric", metric, "--top", str(top)]
    command += ["--direction", direction, "--home", result_files.shown(ws.home)]
    command += ["--out", result_files.shown(path)]
    return write_leaderboard(board, path, command)


def _values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's value of ``metric``, read under its old ``test_`` name where runs logged that."""
    values = pd.Series(float("nan"), index=runs.index, dtype=float)
    for name in (f"metrics.{metric}", f"metrics.test_{metric}"):
        if name in runs.columns:
            values = values.fillna(runs[name].astype(float))
    return values


def _first(run: pd.Series, *keys: str) -> str:
    for key in keys:
        value = run.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _split_of(run: pd.Series, experiment: str) -> str:
    """The run's test split: its fingerprint; for a benchmark child that recorded none (before
    issue #10), the benchmark it belongs to, since every model of one benchmark shares a split."""
    fingerprint = _first(run, f"tags.{lineage.SPLIT_FINGERPRINT}")
    if fingerprint:
        return fingerprint
    parent = _first(run, "tags.mlflow.parentRunId")
    if experiment.startswith("benchmark-") and parent:
        return f"benchmark-run-{parent[:8]}"
    return ""


def _refuse_mixed_datasets(table: pd.DataFrame) -> None:
    """One chart, one data set: MovieLens figures and the shop's are not on one scale."""
    families: dict[str, list[str]] = {}
    for row in table.itertuples(index=False):
        if row.dataset:
            family = "workspace" if row.dataset in lineage.WORKSPACE_DATASETS else row.dataset
            families.setdefault(family, []).append(f"{row.dataset} ({row.experiment})")
    if len(families) > 1:
        listed = "; ".join(", ".join(dict.fromkeys(v)) for v in families.values())
        raise ValueError(
            f"runs on different data sets cannot share one leaderboard: {listed}; "
            "compare the experiments of each data set separately"
        )


def _model_of(run: pd.Series) -> str:
    return _first(run, f"tags.{lineage.MODEL}", "params.model")


def _protocol_of(run: pd.Series) -> str:
    return _first(run, f"tags.{lineage.PROTOCOL}", "tags.protocol", "params.protocol")


def _slug(names: list[str]) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") for name in names)


def write_leaderboard(board: Leaderboard, path: Path, command: list[str]) -> Leaderboard:
    """Write the Markdown table to ``path`` (first line: ``command``, which regenerates it) and
    the bar chart to ``path`` with ``.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    goal = "higher" if board.direction == "maximize" else "lower"
    datasets = ", ".join(sorted(set(board.table["dataset"]) - {""})) or "not recorded"
    lines = [
        result_files.generated_by(command),
        "",
        f"# Leaderboard: {board.metric} ({goal} is better)",
        "",
        f"Command: `{shlex.join(command)}`",
        f"Data set: {datasets}.",
        "",
        "| rank | experiment | run | model | value | split group | split | protocol | run id |",
        "| ---: | --- | --- | --- | ---: | --- | --- | --- | --- |",
    ]
    for row in board.table.to_dict(orient="records"):
        lines.append(
            f"| {row['rank']} | {row['experiment']} | {row['run_name']} | {row['model']} | "
            f"{row['value']:.4f} | {row['split_group']} | {row['split'] or '-'} | "
            f"{row['protocol'] or '-'} | {row['run_id']} |"
        )
    lines += ["", "Rows with the same split group were measured on the same test split."]
    if not board.same_split:
        lines += ["Runs measured on different or unrecorded test splits: not a fair contest."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot = path.with_suffix(".png")
    _plot(board, plot)
    return Leaderboard(
        metric=board.metric,
        direction=board.direction,
        experiments=board.experiments,
        table=board.table,
        same_split=board.same_split,
        files={"md": path, "png": plot},
    )


def _plot(board: Leaderboard, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = board.table.iloc[::-1]  # best at the top of a horizontal bar chart
    labels = [
        f"{row.experiment} / {row.model or row.run_name} [split {row.split_group}]"
        for row in table.itertuples(index=False)
    ]
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    letters = sorted(set(table["split_group"]))
    colors = [palette[letters.index(g) % len(palette)] for g in table["split_group"]]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(table)))
    ax.barh(labels, table["value"], color=colors)
    for y, value in enumerate(table["value"]):
        ax.text(value, y, f" {value:.4f}", va="center")
    ax.set_xlabel(board.metric)
    ax.set_title(f"{board.metric} per experiment ({board.direction})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
