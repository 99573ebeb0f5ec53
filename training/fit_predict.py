"""``tailor fit-predict``: fit any registered model on an interactions file, write top-k lists.

Input: ``user_id,item_id[,rating][,timestamp]`` (CSV or Parquet). Output CSV:
``user_id,item_id,rank,score`` with the top-k items each listed user has not interacted with.
Users the training file does not know get the most popular unseen items, and the result says how
many (nothing is dropped silently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import popularity_order, popularity_scores
from models.interactions import Interactions
from models.registry import build

REQUIRED = ("user_id", "item_id")


@dataclass(frozen=True)
class FitPredictResult:
    out: Path
    n_users: int
    n_unknown_users: int
    n_rows: int
    n_train: int


def _read(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str})


def read_interactions(path: Path) -> pd.DataFrame:
    frame = _read(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame))}; "
            "expected user_id,item_id[,rating][,timestamp]"
        )
    frame = frame.astype({"user_id": str, "item_id": str})
    if "rating" in frame and not pd.api.types.is_numeric_dtype(frame["rating"]):
        bad = pd.to_numeric(frame["rating"], errors="coerce").isna()
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path}: rating on data row {row + 1} is not a number: {frame['rating'][row]!r}"
        )
    return frame


def read_users(path: Path) -> list[str]:
    frame = _read(path)
    if "user_id" in frame.columns:
        column = frame["user_id"]
    elif frame.shape[1] == 1:
        column = frame.iloc[:, 0]
    else:
        raise ValueError(f"{path}: needs a user_id column; found {', '.join(map(str, frame))}")
    return list(dict.fromkeys(column.astype(str)))


def fit_predict(
    train: Path, users: Path, model: str, params: dict, k: int, out: Path
) -> FitPredictResult:
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    recommender = build(model, params)  # unknown model / parameter errors name the key
    frame = read_interactions(train)
    weight = "rating" if "rating" in frame.columns else None
    interactions = Interactions.from_frame(frame, weight_col=weight)
    recommender.fit(interactions)
    wanted = read_users(users)
    known = [u for u in wanted if u in interactions.users]
    rows: list[tuple[str, str, int, float]] = []
    item_ids = interactions.items.ids
    if known:
        user_idx = interactions.users.index(known)
        items, scores = recommender.recommend(
            user_idx, interactions.matrix[user_idx], k=k, exclude_seen=True
        )
        for user, user_items, user_scores in zip(known, items, scores, strict=True):
            rank = 0
            for i, s in zip(user_items.tolist(), user_scores.tolist(), strict=True):
                if i < 0:
                    continue
                rank += 1
                rows.append((user, str(item_ids[i]), rank, float(s)))
    unknown = [u for u in wanted if u not in interactions.users]
    if unknown:
        order = popularity_order(interactions.matrix)[:k]
        share = popularity_scores(interactions.matrix)
        for user in unknown:
            rows.extend(
                (user, str(item_ids[i]), rank, float(share[i]))
                for rank, i in enumerate(order.tolist(), start=1)
            )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "score"]).to_csv(out, index=False)
    return FitPredictResult(
        out=out,
        n_users=len(wanted),
        n_unknown_users=len(unknown),
        n_rows=len(rows),
        n_train=int(interactions.matrix.nnz),
    )
