"""``tailor bench session``: the session strategy against popularity for first-session visitors.

Each first session (`training.session_holdout`) is replayed event by event. Before every product
view after the session's first one, ``/recommend``'s own logic (:func:`serving.logic.recommend`,
the packaged rules) answers for the visitor twice, from the same state:

* **popularity**, what such a visitor gets without a live session: the real-time activity
  features ``/events`` pushes (:func:`features.context.activity_rows` of the events so far: the
  last category viewed, ...) and no session;
* **session**, the same features plus the live session folded from the same events
  (:func:`features.live_sessions.fold`), answered item-to-item (``session:<model>``).

The product viewed next is the one relevant item; NDCG@k and HR@k come from
`models.ranking_metrics`. Steps whose next product the model does not know (new in the test
period) are left out of both arms and counted; the figures are also given for the steps whose
next product was not viewed before in the session (the session strategy never shows a product
back, popularity may). The paired difference carries a 95% interval (normal approximation over
steps).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.context import activity_rows
from features.live_sessions import fold, session_events
from models.ranking_metrics import hit_rate_at_k, ndcg_at_k
from models.scoring import Scorer
from serving.logic import clean_features, recommend
from serving.rules import RuleSet
from serving.schemas import RecommendRequest

ARMS = ("popularity", "session")
#: Feature columns of the activity push that ``/recommend`` reads back (entity key dropped).
ACTIVITY_COLUMNS = ("last_event_type", "last_product_id", "last_category", "last_device_type")
#: TTL of the replayed sessions: long enough that none expires while it is replayed.
REPLAY_TTL = 24 * 3600.0


@dataclass
class SessionBenchResult:
    """Per-step figures of both arms; ``answered`` counts the steps the session arm answered
    with its own strategy (not a popularity fallback)."""

    k: int
    model: str
    ndcg: dict[str, np.ndarray] = field(default_factory=dict)  # arm -> (n_steps,)
    hit: dict[str, np.ndarray] = field(default_factory=dict)
    new_next: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    n_visitors: int = 0
    n_sessions: int = 0
    n_unknown_next: int = 0
    answered: int = 0

    @property
    def n_steps(self) -> int:
        return len(self.new_next)

    def summary(self, subset: str = "all") -> dict[str, dict[str, float]]:
        """``{arm: {"ndcg", "hr"}}`` and ``{"difference": {"ndcg", "ndcg_ci"}}`` (session minus
        popularity, 95% half-width) over every step (``all``) or the ``new`` next products."""
        mask = self.new_next if subset == "new" else np.ones(self.n_steps, dtype=bool)
        out: dict[str, dict[str, float]] = {}
        for arm in ARMS:
            out[arm] = {
                "ndcg": _mean(self.ndcg[arm][mask]),
                "hr": _mean(self.hit[arm][mask]),
            }
        diff = self.ndcg["session"][mask] - self.ndcg["popularity"][mask]
        half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
        out["difference"] = {"ndcg": _mean(diff), "ndcg_ci": float(half), "steps": int(mask.sum())}
        return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def _features(activity: pd.DataFrame, position: int) -> dict:
    """The activity features the online store holds after the push of row ``position`` of
    ``activity`` (:func:`features.context.activity_rows` of one session: the last push wins)."""
    last = activity.iloc[position]
    return clean_features({column: last[column] for column in ACTIVITY_COLUMNS})


def _request(person: str, k: int) -> RecommendRequest:
    if person.startswith("anon:"):
        return RecommendRequest(anonymous_id=person.removeprefix("anon:"), k=k)
    return RecommendRequest(user_id=person, k=k)


def bench_session_strategy(
    scorer: Scorer,
    sessions: pd.DataFrame,
    k: int = 10,
    rules: RuleSet | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SessionBenchResult:
    """Replay ``sessions`` (event-log columns plus ``person``, one session per person, sorted by
    time) and score both arms on every next product view (see the module docstring)."""
    result = SessionBenchResult(k=k, model=scorer.label)
    rows: dict[str, list[list[int]]] = {arm: [] for arm in ARMS}
    relevant: list[set[int]] = []
    new_next: list[bool] = []
    groups = list(sessions.groupby(["person", "session_id"], sort=True))
    result.n_visitors = sessions["person"].nunique() if len(sessions) else 0
    strategy = f"session:{scorer.bundle.model_name}"
    for done, ((person, session_id), events) in enumerate(groups, start=1):
        events = events.sort_values(["timestamp", "event_id"], kind="stable")
        events = events.reset_index(drop=True)
        views = np.flatnonzero((events["event_type"] == "product_view").to_numpy())
        if len(views) >= 2:
            result.n_sessions += 1
        activity = activity_rows(events)  # same order: row i is the push after event i
        replayed = session_events(events)[str(session_id)]  # the same order again
        session, folded = None, 0
        for position in views[1:]:
            target = str(events.at[position, "product_id"])
            target_idx = scorer.item_positions.get(target, -1)
            if target_idx < 0:
                result.n_unknown_next += 1
                continue
            before = events.iloc[:position]
            now = before["timestamp"].iloc[-1].timestamp()
            features = _features(activity, position - 1)
            # the live session after the events so far, folded as the store folds them
            session = fold(session, str(session_id), replayed[folded:position], REPLAY_TTL, now)
            folded = position
            request = _request(str(person), k)
            answers = {
                "popularity": recommend(scorer, request, features, rules),
                "session": recommend(scorer, request, features, rules, session=session),
            }
            result.answered += answers["session"].strategy == strategy
            for arm, answer in answers.items():
                ids = [scorer.item_positions[item.item_id] for item in answer.items]
                rows[arm].append(ids + [-1] * (k - len(ids)))
            relevant.append({target_idx})
            new_next.append(target not in set(before["product_id"].dropna().astype(str)))
        if progress is not None:
            progress(done, len(groups))
    result.new_next = np.array(new_next, dtype=bool)
    for arm in ARMS:
        matrix = np.array(rows[arm], dtype=np.int64).reshape(-1, k)
        if len(matrix):
            result.ndcg[arm] = ndcg_at_k(matrix, relevant, k)
            result.hit[arm] = hit_rate_at_k(matrix, relevant, k)
        else:
            result.ndcg[arm] = result.hit[arm] = np.zeros(0)
    return result


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def table_rows(result: SessionBenchResult) -> list[list[str]]:
    """``[steps, arm, NDCG@k, HR@k]`` rows of the result table, both subsets."""
    rows = []
    for subset, label in (("all", "every next view"), ("new", "next view of a new product")):
        summary = result.summary(subset)
        steps = str(summary["difference"]["steps"])
        for arm in ARMS:
            name = f"session:{result.model.split('@')[0]}" if arm == "session" else arm
            rows.append([label, steps, name, _fmt(summary[arm]["ndcg"]), _fmt(summary[arm]["hr"])])
        diff = f"{summary['difference']['ndcg']:+.4f} ± {summary['difference']['ndcg_ci']:.4f}"
        rows.append([label, steps, "session - popularity", diff, ""])
    return rows


def verdict(result: SessionBenchResult) -> str:
    """One sentence on the difference over every next view, from its 95% interval."""
    diff = result.summary("all")["difference"]
    low, high = diff["ndcg"] - diff["ndcg_ci"], diff["ndcg"] + diff["ndcg_ci"]
    if math.isnan(low):
        return "Too few steps to compare the strategies."
    if low > 0:
        return f"The session strategy beats popularity: NDCG@{result.k} +{diff['ndcg']:.4f}."
    if high < 0:
        return f"The session strategy loses to popularity: NDCG@{result.k} {diff['ndcg']:.4f}."
    return f"No significant difference in NDCG@{result.k} ({diff['ndcg']:+.4f})."


def revisits(result: SessionBenchResult) -> str:
    """What the next views that return to a product seen earlier in the session do to both
    arms (the session strategy never shows a viewed product back)."""
    again = ~result.new_next
    if not again.any():
        return ""
    share = again.mean()
    hits = {arm: _mean(result.hit[arm][again]) for arm in ARMS}
    return (
        f"{int(again.sum())} of {result.n_steps} next views ({share:.0%}) return to a product "
        f"viewed earlier in the session: popularity has it in its top {result.k} "
        f"{hits['popularity']:.0%} of the time, the session strategy "
        f"{hits['session']:.0%} (it excludes viewed products, as issue #11 asks)."
    )


def write_session_report(
    result: SessionBenchResult, path: Path, first_line: str, data: dict[str, str]
) -> Path:
    """The Markdown table at ``path``; ``first_line`` names the command that regenerates it
    (``training.result_files.generated_by``), ``data`` describes the data and the cut."""
    k = result.k
    lines = [
        first_line,
        "",
        "# Session strategy vs popularity for first-session visitors (`tailor bench session`)",
        "",
        "Visitors first seen after the training cut, replayed view by view through "
        "`serving.logic.recommend` with the packaged rules: before each product view after the "
        "session's first, the next product viewed is the one relevant item. *popularity*: the "
        "real-time activity features only (what such a visitor gets without a live session, "
        "e.g. `popular_in_category:<last category>`); *session*: the same plus the live session "
        "(item-to-item from the model's `similar_items` over the views so far, viewed and "
        "carted items excluded). Steps whose next product the model does not know are left out "
        "of both. ± is the 95% interval of the paired difference.",
        "",
        *[f"- {name}: {value}" for name, value in data.items()],
        f"- model: {result.model}",
        f"- first-session visitors: {result.n_visitors}; sessions with 2+ views: "
        f"{result.n_sessions}; next views scored: {result.n_steps} "
        f"(next product unknown to the model, left out: {result.n_unknown_next})",
        f"- answers of the session arm from the session strategy: {result.answered} of "
        f"{result.n_steps} (the rest fell back to popularity)",
        "",
        f"| next views | steps | strategy | NDCG@{k} | HR@{k} |",
        "| --- | ---: | --- | ---: | ---: |",
        *["| " + " | ".join(row) + " |" for row in table_rows(result)],
        "",
        verdict(result) + " " + revisits(result),
        "",
        f"Run on {platform.node() or 'unknown host'} ({platform.platform()}), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
