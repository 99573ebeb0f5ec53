"""Where a model came from: data fingerprints, the code commit, and the run tags that say so.

Every run that logs a registrable model sets :data:`RunTags` keys, so `training.promote` can tell
whether two model versions were measured on the same test split before it compares them.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pandas as pd

#: Run / model-version tag keys shared by training, tuning, benchmarks and promotion.
DATASET = "tailor.dataset"
DATASET_FINGERPRINT = "tailor.dataset_fingerprint"
PROTOCOL = "tailor.protocol"
SPLIT_FINGERPRINT = "tailor.split_fingerprint"
#: Name of the run metric that holds the model's test value (for example ``test_ndcg_at_10``).
METRIC = "tailor.metric"
DIRECTION = "tailor.direction"
FEATURE_SERVICE = "feast.feature_service"
GIT_COMMIT = "git.commit"
MODEL = "model"

#: The shop's recommender in the registry: it only ever holds models trained on the workspace.
SHOP_MODEL = "tailor-recommender"
#: ``tailor.dataset`` values that mean "the workspace's own events" (train; tune on `generated`).
WORKSPACE_DATASETS = ("workspace-events", "generated")


def registered_model_name(dataset: str, model: str) -> str:
    """Where a model trained on ``dataset`` is registered: the shop's recommender for the
    workspace's events, else a name of its own, data set + model (``movielens-100k-ease``)."""
    if dataset in WORKSPACE_DATASETS:
        return SHOP_MODEL
    stem = Path(dataset).stem if dataset.endswith((".csv", ".parquet")) else dataset
    return f"{re.sub(r'[^A-Za-z0-9.-]+', '-', stem).strip('-')}-{model}"


def run_name(model: str, params: dict | None = None, dataset: str = "", when=None) -> str:
    """A run name that says what differs between runs: the model, its given parameters, the
    data set and the minute it started (``ease l2=500 · movielens-100k · 2026-12-04 21:50``)."""
    import datetime as dt

    shown = " ".join(f"{key}={_short(value)}" for key, value in sorted((params or {}).items()))
    stamp = (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M")
    return " · ".join(part for part in (f"{model} {shown}".strip(), dataset, stamp) if part)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def canonical_metric(name: str) -> str:
    """One name per metric: tune studies logged the test value as ``test_ndcg_at_10`` before
    issue #10, training and benchmarks as ``ndcg_at_10``; both mean the same figure."""
    return name.removeprefix("test_")


def frame_fingerprint(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A short SHA-256 of a frame's rows, independent of row order and index.

    ``columns`` (default: every column, sorted by name) are hashed per row with pandas' stable
    row hash; the row hashes are sorted so the same rows in another order give the same print.
    """
    cols = sorted(frame.columns) if columns is None else list(columns)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot fingerprint: no column(s) {missing}; have {list(frame.columns)}")
    digest = hashlib.sha256(",".join(cols).encode())
    if len(frame):
        rows = pd.util.hash_pandas_object(frame[cols].astype(str), index=False).to_numpy()
        rows.sort()
        digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


def split_fingerprint(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> str:
    """One print for a train/test split: two models compare only when theirs are equal."""
    both = f"{frame_fingerprint(train, columns)}:{frame_fingerprint(test, columns)}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]


def git_commit(path: Path | None = None) -> str:
    """The checked-out commit (with ``+dirty`` when files differ), or ``unknown`` outside git."""
    cwd = Path(path or Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = "+dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return head.stdout.strip() + dirty
