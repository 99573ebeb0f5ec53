"""A leaderboard across MLflow experiments: the best run(s) of each on one metric.

Rows come from every run of the named experiments (nested trial and benchmark child runs too)
that logged the metric. The table is written as Markdown and the values as a bar chart beside it,
so a comparison can be committed under ``experiments/results/``. Values measured on different
test splits (``tailor.split_fingerprint``) are shown side by side but flagged: only rows with the
same split are a fair contest.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.workspace import Workspace
from training import lineage, tracking

logger = logging.getLogger(__name__)

DEFAULT_METRIC = "ndcg_at_10"
DIRECTIONS = ("maximize", "minimize")
RESULTS_DIR = Path("experiments/results")
COLUMNS = [
    "rank",
    "experiment",
    "run_name",
    "model",
    "metric",
    "value",
    "split",
    "protocol",
    "run_id",
]


@dataclass(frozen=True)
class Leaderboard:
    """``table`` has one row per kept run, best first (:data:`COLUMNS`)."""

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
    named = named[named != ""]
    if not named.empty:
        return str(named.value_counts().index[0])
    return DEFAULT_METRIC


def _choose_direction(runs: pd.DataFrame, metric: str) -> str:
    """``tailor.direction`` of runs that name ``metric``, else maximize."""
    mask = _tag(runs, lineage.METRIC) == metric
    directions = _tag(runs, lineage.DIRECTION)[mask]
    directions = directions[directions.isin(DIRECTIONS)]
    return str(directions.value_counts().index[0]) if not directions.empty else "maximize"


def compare(
    ws: Workspace,
    experiments: list[str],
    metric: str | None = None,
    results_dir: Path = RESULTS_DIR,
    *,
    top: int = 1,
    direction: str | None = None,
    out: Path | None = None,
) -> Leaderboard:
    """The ``top`` best runs of each experiment on ``metric``, ranked across experiments.

    ``metric`` defaults to the one the runs name in ``tailor.metric`` (else ``ndcg_at_10``);
    ``direction`` to their ``tailor.direction`` (else maximize). Writes ``out`` (default
    ``results_dir/compare-<names>.md``) and a bar chart with the same name and ``.png``.
    Raises ``ValueError`` for unknown experiments (listing the existing ones) or when an
    experiment has no run with the metric (listing the metrics its runs have).
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
    metric = metric or _choose_metric(runs)
    direction = direction or _choose_direction(runs, metric)
    column = f"metrics.{metric}"
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
                    "split": str(run.get(f"tags.{lineage.SPLIT_FINGERPRINT}") or ""),
                    "protocol": _protocol_of(run),
                    "run_id": str(run["run_id"]),
                }
            )
    table = pd.DataFrame(rows)
    table = table.sort_values("value", ascending=direction == "minimize", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.reset_index(drop=True)[COLUMNS]
    splits = set(table["split"])
    board = Leaderboard(
        metric=metric,
        direction=direction,
        experiments=list(experiments),
        table=table,
        same_split=len(splits) == 1 and "" not in splits,
    )
    return write_leaderboard(board, out or results_dir / f"compare-{_slug(experiments)}.md")


def _model_of(run: pd.Series) -> str:
    for key in (f"tags.{lineage.MODEL}", "params.model"):
        value = run.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _protocol_of(run: pd.Series) -> str:
    for key in (f"tags.{lineage.PROTOCOL}", "tags.protocol", "params.protocol"):
        value = run.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _slug(names: list[str]) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") for name in names)


def write_leaderboard(board: Leaderboard, path: Path) -> Leaderboard:
    """Write the Markdown table to ``path`` and the bar chart to ``path`` with ``.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    goal = "higher" if board.direction == "maximize" else "lower"
    names = " ".join(board.experiments)
    lines = [
        f"# Leaderboard: {board.metric} ({goal} is better)",
        "",
        f"Command: `tailor compare {names} --metric {board.metric}`",
        "",
        "| rank | experiment | run | model | value | split | protocol | run id |",
        "| ---: | --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for row in board.table.to_dict(orient="records"):
        lines.append(
            f"| {row['rank']} | {row['experiment']} | {row['run_name']} | {row['model']} | "
            f"{row['value']:.4f} | {row['split'] or '-'} | {row['protocol'] or '-'} | "
            f"{row['run_id']} |"
        )
    if not board.same_split:
        lines += ["", "Runs measured on different or unrecorded test splits: not a fair contest."]
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
        f"{row.experiment} / {row.model or row.run_name}" for row in table.itertuples(index=False)
    ]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(table)))
    ax.barh(labels, table["value"], color="tab:blue")
    for y, value in enumerate(table["value"]):
        ax.text(value, y, f" {value:.4f}", va="center")
    ax.set_xlabel(board.metric)
    ax.set_title(f"{board.metric} per experiment ({board.direction})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
