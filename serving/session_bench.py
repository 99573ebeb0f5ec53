"""``tailor bench session``: session strategies against popularity for first-session visitors.

Each first session (`training.session_holdout`) is replayed event by event. Before every product
view after the session's first one, ``/recommend``'s own logic (:func:`serving.logic.recommend`,
the packaged rules) answers for the visitor once per arm, from the same state:

* **popularity**, what such a visitor gets without a live session: the real-time activity
  features ``/events`` pushes (:func:`features.context.activity_rows` of the events so far: the
  last category viewed, ...) and no session;
* one arm per session variant (:data:`SESSION_VARIANTS`, :class:`serving.logic.SessionBlend`):
  the same features plus the live session folded from the same events
  (:func:`features.live_sessions.fold`), answered by the session strategy (``session:<model>``)
  ranked as that variant says.

The product viewed next is the one relevant item; NDCG@k and HR@k come from
`models.ranking_metrics`. Steps whose next product the model does not know (new in the test
period) are left out of every arm and counted; the figures are also given for the steps whose
next product was not viewed before in the session. Paired differences (variant minus
popularity) carry a 95% interval (normal approximation, clustered by session: the steps of one
session are not independent).

The variant is chosen on one generated data set (the *selection* seed: the best NDCG@k over every
next view) and reported on others (the *report* seeds), so the reported figure is not the one the
choice was fitted to (:func:`choose`, :func:`write_session_report`).
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
from serving.logic import SESSION_BLEND, SessionBlend, clean_features, recommend
from serving.rules import RuleSet
from serving.schemas import RecommendRequest

#: The session variants compared, fixed before any run (issue #11): the similarities of the
#: session's views alone, viewed products excluded (the first served one); the same with the
#: recently viewed products back; fused with the popularity the visitor would get otherwise; both.
SESSION_VARIANTS = (
    SessionBlend("similar"),
    SessionBlend("similar+recent", show_viewed=True),
    SessionBlend("similar+popular", popular=True),
    SessionBlend("similar+recent+popular", show_viewed=True, popular=True),
)
BASELINE = "popularity"
#: Feature columns of the activity push that ``/recommend`` reads back (entity key dropped).
ACTIVITY_COLUMNS = ("last_event_type", "last_product_id", "last_category", "last_device_type")
#: TTL of the replayed sessions: long enough that none expires while it is replayed.
REPLAY_TTL = 24 * 3600.0
SUBSETS = (("all", "every next view"), ("new", "next view of a new product"))


@dataclass
class SessionBenchResult:
    """Per-step figures of every arm (``popularity`` and one per variant name); ``session_of``
    numbers the session of each step (for clustered intervals); ``answered`` counts, per variant,
    the steps it answered with the session strategy (not a popularity fallback)."""

    k: int
    model: str
    arms: tuple[str, ...] = ()
    ndcg: dict[str, np.ndarray] = field(default_factory=dict)  # arm -> (n_steps,)
    hit: dict[str, np.ndarray] = field(default_factory=dict)
    new_next: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: the next product is the one viewed last (the session strategy never shows it back)
    latest_next: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    session_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_visitors: int = 0
    n_sessions: int = 0
    n_unknown_next: int = 0
    answered: dict[str, int] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.new_next)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(arm for arm in self.arms if arm != BASELINE)

    def summary(self, arm: str, subset: str = "all") -> dict[str, float]:
        """``{"ndcg", "hr", "steps"}`` of ``arm`` and, for a variant, ``"difference"`` (its NDCG
        minus popularity's) with ``"ci"`` (95% half-width, clustered by session), and the same
        for HR (``"hr_difference"``, ``"hr_ci"``), over every step (``all``) or the steps whose
        next product is ``new`` in the session."""
        mask = self.new_next if subset == "new" else np.ones(self.n_steps, dtype=bool)
        out = {
            "ndcg": _mean(self.ndcg[arm][mask]),
            "hr": _mean(self.hit[arm][mask]),
            "steps": int(mask.sum()),
        }
        if arm != BASELINE:
            diff = self.ndcg[arm][mask] - self.ndcg[BASELINE][mask]
            out["difference"] = _mean(diff)
            out["ci"] = clustered_half_width(diff, self.session_of[mask])
            hits = self.hit[arm][mask] - self.hit[BASELINE][mask]
            out["hr_difference"] = _mean(hits)
            out["hr_ci"] = clustered_half_width(hits, self.session_of[mask])
        return out


def clustered_half_width(values: np.ndarray, clusters: np.ndarray) -> float:
    """95% half-width of the mean of ``values`` (1-D) when rows of one ``clusters`` label are
    correlated: the cluster-robust variance ``G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2``
    over ``G`` clusters (NaN with fewer than two)."""
    n = len(values)
    labels, inverse = np.unique(clusters, return_inverse=True)
    if n < 2 or len(labels) < 2:
        return math.nan
    sums = np.bincount(inverse, weights=values - values.mean(), minlength=len(labels))
    g = len(labels)
    variance = g / (g - 1) * float((sums**2).sum()) / n**2
    return 1.96 * math.sqrt(variance)


def pooled(results: list[SessionBenchResult]) -> SessionBenchResult:
    """Several runs as one (the steps of every run, sessions kept apart)."""
    first = results[0]
    out = SessionBenchResult(k=first.k, model=first.model, arms=first.arms)
    offset, session_of = 0, []
    for result in results:
        session_of.append(result.session_of + offset)
        offset += int(result.session_of.max()) + 1 if result.n_steps else 0
        out.n_visitors += result.n_visitors
        out.n_sessions += result.n_sessions
        out.n_unknown_next += result.n_unknown_next
    out.session_of = np.concatenate(session_of)
    out.new_next = np.concatenate([r.new_next for r in results])
    out.latest_next = np.concatenate([r.latest_next for r in results])
    for arm in first.arms:
        out.ndcg[arm] = np.concatenate([r.ndcg[arm] for r in results])
        out.hit[arm] = np.concatenate([r.hit[arm] for r in results])
        if arm != BASELINE:
            out.answered[arm] = sum(r.answered[arm] for r in results)
    return out


def choose(result: SessionBenchResult) -> str:
    """The variant with the best mean NDCG@k over every next view (ties: the first listed)."""
    return max(result.variants, key=lambda arm: result.summary(arm)["ndcg"])


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
    variants: tuple[SessionBlend, ...] = SESSION_VARIANTS,
) -> SessionBenchResult:
    """Replay ``sessions`` (event-log columns plus ``person``, one session per person, sorted by
    time) and score popularity and every variant on each next product view (module docstring)."""
    arms = (BASELINE, *(variant.name for variant in variants))
    result = SessionBenchResult(k=k, model=scorer.label, arms=arms)
    result.answered = dict.fromkeys(arms[1:], 0)
    rows: dict[str, list[list[int]]] = {arm: [] for arm in arms}
    relevant: list[set[int]] = []
    new_next: list[bool] = []
    latest_next: list[bool] = []
    session_of: list[int] = []
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
            answers = {BASELINE: recommend(scorer, request, features, rules)}
            for variant in variants:
                answers[variant.name] = recommend(
                    scorer, request, features, rules, session=session, session_blend=variant
                )
                result.answered[variant.name] += answers[variant.name].strategy == strategy
            for arm, answer in answers.items():
                ids = [scorer.item_positions[item.item_id] for item in answer.items]
                rows[arm].append(ids + [-1] * (k - len(ids)))
            relevant.append({target_idx})
            new_next.append(target not in set(before["product_id"].dropna().astype(str)))
            latest_next.append(bool(session.views) and target == session.views[-1])
            session_of.append(done - 1)
        if progress is not None:
            progress(done, len(groups))
    result.new_next = np.array(new_next, dtype=bool)
    result.latest_next = np.array(latest_next, dtype=bool)
    result.session_of = np.array(session_of, dtype=np.int64)
    for arm in arms:
        matrix = np.array(rows[arm], dtype=np.int64).reshape(-1, k)
        if len(matrix):
            result.ndcg[arm] = ndcg_at_k(matrix, relevant, k)
            result.hit[arm] = hit_rate_at_k(matrix, relevant, k)
        else:
            result.ndcg[arm] = result.hit[arm] = np.zeros(0)
    return result


@dataclass
class SeedRun:
    """One generated data set: its ``seed``, what it was (``data``: name -> description, e.g.
    the events and the cut) and the replay of its first sessions."""

    seed: int
    data: dict[str, str]
    result: SessionBenchResult


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _difference(summary: dict[str, float], name: str = "difference", ci: str = "ci") -> str:
    if math.isnan(summary[name]):
        return "-"
    return f"{summary[name]:+.4f} ± {_fmt(summary[ci])}"


def table_rows(result: SessionBenchResult, label: str, arms: tuple[str, ...]) -> list[list[str]]:
    """``[data, next views, steps, strategy, NDCG@k, HR@k]`` rows: popularity, then each of
    ``arms`` and its paired difference, over every next view and the new products."""
    model = result.model.split("@")[0]
    rows = []
    for subset, name in SUBSETS:
        base = result.summary(BASELINE, subset)
        steps = str(base["steps"])
        rows.append([label, name, steps, BASELINE, _fmt(base["ndcg"]), _fmt(base["hr"])])
        for arm in arms:
            summary = result.summary(arm, subset)
            shown = f"session:{model} ({arm})"
            rows.append([label, name, steps, shown, _fmt(summary["ndcg"]), _fmt(summary["hr"])])
            hits = _difference(summary, "hr_difference", "hr_ci")
            rows.append([label, name, steps, f"{arm} - popularity", _difference(summary), hits])
    return rows


def verdict(result: SessionBenchResult, arm: str) -> str:
    """One sentence on ``arm`` against popularity over every next view, from its 95% interval."""
    summary = result.summary(arm)
    low, high = summary["difference"] - summary["ci"], summary["difference"] + summary["ci"]
    k, diff = result.k, summary["difference"]
    if math.isnan(low):
        return f"Too few steps to compare {arm} with popularity."
    if low > 0:
        return f"The session strategy ({arm}) beats popularity: NDCG@{k} {diff:+.4f}."
    if high < 0:
        return f"The session strategy ({arm}) loses to popularity: NDCG@{k} {diff:+.4f}."
    return f"No significant difference between {arm} and popularity in NDCG@{k} ({diff:+.4f})."


def revisits(result: SessionBenchResult, arm: str) -> str:
    """How often the next view returns to a product viewed earlier in the session, and how often
    popularity and ``arm`` have it in their top k."""
    again = ~result.new_next
    if not again.any():
        return ""
    hits = {name: _mean(result.hit[name][again]) for name in (BASELINE, arm)}
    return (
        f"{int(again.sum())} of {result.n_steps} next views ({again.mean():.0%}) return to a "
        f"product viewed earlier in the session: popularity has it in its top {result.k} "
        f"{hits[BASELINE]:.0%} of the time, {arm} {hits[arm]:.0%}; "
        f"{int(result.latest_next.sum())} of them return to the product viewed last, which the "
        "session strategy never shows back (taken as the product on screen)."
    )


def _run_line(run: SeedRun, role: str, chosen: str) -> str:
    r = run.result
    described = "; ".join(f"{name}: {value}" for name, value in run.data.items())
    return (
        f"- seed {run.seed} ({role}): {described}; first-session visitors {r.n_visitors}; "
        f"sessions with 2+ views {r.n_sessions}; next views scored {r.n_steps} (next product "
        f"unknown to the model, left out: {r.n_unknown_next}); answers of {chosen} from the "
        f"session strategy: {r.answered[chosen]} of {r.n_steps} (the rest: popularity)"
    )


def write_session_report(
    selection: SeedRun, reports: list[SeedRun], path: Path, first_line: str
) -> Path:
    """The Markdown report at ``path``: every variant on the ``selection`` run, the variant
    chosen there (:func:`choose`) on each of the ``reports`` runs and on them pooled, and whether
    that is the one /recommend serves (:data:`serving.logic.SESSION_BLEND`). ``first_line`` names
    the command that regenerates it (``training.result_files.generated_by``)."""
    chosen = choose(selection.result)
    k, model = selection.result.k, selection.result.model
    variants = ", ".join(
        f"`{v.name}` (viewed products {'back' if v.show_viewed else 'excluded'}"
        f"{', fused with popularity' if v.popular else ''})"
        for v in SESSION_VARIANTS
    )
    rows = table_rows(
        selection.result, f"selection, seed {selection.seed}", selection.result.variants
    )
    for run in reports:
        rows += table_rows(run.result, f"report, seed {run.seed}", (chosen,))
    together = pooled([run.result for run in reports]) if len(reports) > 1 else None
    if together is not None:
        seeds = " + ".join(str(run.seed) for run in reports)
        rows += table_rows(together, f"report, seeds {seeds}", (chosen,))
    final = together or (reports[0].result if reports else selection.result)
    if reports:
        plural = "s" if len(reports) > 1 else ""
        where = f"On the report seed{plural} " + " + ".join(str(run.seed) for run in reports)
    else:
        where = f"On the selection seed {selection.seed}"
    said = verdict(final, chosen)
    served = SESSION_BLEND.name
    served_line = (
        f"/recommend serves `{served}` (`serving.logic.SESSION_BLEND`), the chosen variant."
        if served == chosen
        else f"**/recommend serves `{served}`, not the chosen `{chosen}`**: update "
        "`serving.logic.SESSION_BLEND`."
    )
    lines = [
        first_line,
        "",
        "# Session strategy vs popularity for first-session visitors (`tailor bench session`)",
        "",
        "Visitors first seen after the training cut, replayed view by view through "
        "`serving.logic.recommend` with the packaged rules: before each product view after the "
        "session's first, the next product viewed is the one relevant item. *popularity*: the "
        "real-time activity features only (what such a visitor gets without a live session, "
        "e.g. `popular_in_category:<last category>`); *session:<model> (variant)*: the same plus "
        "the live session, ranked by the variant (`serving.logic.SessionBlend`; several lists "
        f"fused by reciprocal rank, constant 60; carted products and the product on screen "
        f"never shown). Variants, fixed before any run: {variants}. Steps whose next product the "
        "model does not know are left out. ± is the 95% interval of the paired difference, "
        "clustered by session.",
        "",
        f"The variant is chosen on the selection seed (best NDCG@{k} over every next view) and "
        "reported on the other seeds, whose data played no part in the choice.",
        "",
        f"- model: {model}",
        _run_line(selection, "selection", chosen),
        *[_run_line(run, "report", chosen) for run in reports],
        f"- chosen on seed {selection.seed}: **{chosen}**",
        "",
        f"| data | next views | steps | strategy | NDCG@{k} | HR@{k} |",
        "| --- | --- | ---: | --- | ---: | ---: |",
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        f"{where}, {said[0].lower()}{said[1:]} {revisits(final, chosen)}",
        "",
        served_line,
        "",
        f"Run on {platform.node() or 'unknown host'} ({platform.platform()}), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
