"""``tailor bench session`` (issue #11): the replay of first sessions scored by hand on the tiny
shoes-and-hats model, the first-session hold-out on a small generated data set, and the command
end to end writing its table under the command that regenerates it."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from features.synthetic.generate import generate_clickstream
from models.scoring import Scorer
from serving.logic import SESSION_BLEND, SessionBlend
from serving.session_bench import (
    bench_session_strategy,
    choose,
    clustered_half_width,
    pooled,
    verdict,
)
from tests.serving.test_logic import _scorer
from training.result_files import command_of
from training.session_holdout import first_session_holdout, first_sessions

scorer = _scorer("ease")
CATEGORY = {f"s{i}": "shoes" for i in range(5)} | {f"h{i}": "hats" for i in range(5)}


def _session(person: str, session_id: str, products: list[str]) -> pd.DataFrame:
    start = pd.Timestamp("2026-03-01", tz="UTC")
    return pd.DataFrame(
        {
            "event_id": [f"{session_id}-{n}" for n in range(len(products))],
            "event_type": "product_view",
            "timestamp": [start + pd.Timedelta(minutes=n) for n in range(len(products))],
            "user_id": None,
            "anonymous_id": person.removeprefix("anon:"),
            "session_id": session_id,
            "device_type": "desktop",
            "product_id": products,
            "category": [CATEGORY.get(p, "other") for p in products],
            "quantity": None,
            "person": person,
        }
    )


def test_replay_scores_each_next_view_by_hand() -> None:
    """One visitor views h0, h1, h2, h0, new-item (the last category is always hats):

    * step h1 (after h0): popularity in hats ranks h0 h1 h2 h3 h4, so h1 at rank 2: NDCG
      1/log2(3); ``similar`` ranks h0's neighbours, h1 first: 1; the served blend has h1 first
      in the similarities and in popular-in-hats without h0 (on screen): 1;
    * step h2 (after h0, h1): popularity again h0 h1 h2 ..., rank 3: 1/log2(4) = 0.5;
      ``similar`` puts h2 first (see test_session_strategy): 1; the served blend h0 then h2
      (test_a_visitor_with_session_views_gets_the_fused_session_list): 1/log2(3);
    * step h0 (a product viewed before): popularity has it first: 1; ``similar`` never shows a
      viewed product back: 0; the served blend has h0 first (first in the similarities and in
      popular-in-hats without h2, second in recently viewed h1 h0): 1. Only in "every next
      view", not in "new product";
    * step new-item: unknown to the model, left out and counted.
    """
    sessions = _session("anon:v1", "s1", ["h0", "h1", "h2", "h0", "new-item"])
    variants = (SessionBlend("similar"), SESSION_BLEND)
    result = bench_session_strategy(scorer, sessions, k=5, variants=variants)
    served = SESSION_BLEND.name
    assert result.arms == ("popularity", "similar", served)
    assert result.n_steps == 3 and result.n_unknown_next == 1
    assert result.n_visitors == 1 and result.n_sessions == 1
    assert result.answered == {"similar": 3, served: 3}
    third = 1 / math.log2(3)
    np.testing.assert_allclose(result.ndcg["popularity"], [third, 0.5, 1.0])
    np.testing.assert_allclose(result.ndcg["similar"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(result.ndcg[served], [1.0, third, 1.0])
    assert result.new_next.tolist() == [True, True, False]
    assert result.latest_next.tolist() == [False, False, False]
    assert result.session_of.tolist() == [0, 0, 0]
    new = result.summary("similar", "new")
    assert new["ndcg"] == pytest.approx(1.0)
    assert result.summary("popularity", "new")["ndcg"] == pytest.approx((third + 0.5) / 2)
    assert new["steps"] == 2
    every = result.summary("similar")
    assert every["difference"] == pytest.approx((1 + 1 + 0 - third - 0.5 - 1) / 3)
    assert every["hr"] == pytest.approx(2 / 3)
    assert every["hr_difference"] == pytest.approx((2 - 3) / 3)
    assert math.isnan(every["ci"])  # one session: no interval
    assert result.summary(served)["difference"] == pytest.approx((1 - third + third - 0.5) / 3)
    assert choose(result) == served  # 0.86 over every next view against 0.67
    assert verdict(result, served).startswith("Too few steps")


def test_intervals_are_clustered_by_session() -> None:
    """Differences +1 +1 in one session and -1 -1 in another: the mean 0; the deviations sum
    to +2 and -2 per session, variance 2/1 * (4 + 4) / 4^2 = 1, half-width 1.96 (a naive interval
    over 4 independent steps would say 1.96 * 1.155 / 2 = 1.13)."""
    values = np.array([1.0, 1.0, -1.0, -1.0])
    assert clustered_half_width(values, np.array([0, 0, 1, 1])) == pytest.approx(1.96)
    assert clustered_half_width(values, np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    assert math.isnan(clustered_half_width(values, np.zeros(4, dtype=int)))


def test_pooled_runs_keep_their_sessions_apart() -> None:
    one = _session("anon:v1", "s1", ["h0", "h1", "h2"])
    two = _session("anon:v2", "s2", ["s0", "s1", "s1", "s2"])  # s1 viewed twice in a row
    first = bench_session_strategy(scorer, one, k=5)
    second = bench_session_strategy(scorer, two, k=5)
    both = pooled([first, second])
    assert both.session_of.tolist() == [0, 0, 1, 1, 1]
    assert both.latest_next.tolist() == [False, False, False, True, False]
    assert both.new_next.tolist() == [True, True, True, False, True]
    assert both.n_steps == 5 and both.n_visitors == 2 and both.n_sessions == 2
    for arm in first.arms:
        np.testing.assert_allclose(both.ndcg[arm], np.r_[first.ndcg[arm], second.ndcg[arm]])
    assert both.answered[SESSION_BLEND.name] == 5


def test_first_sessions_keep_only_visitors_first_seen_after_the_cut() -> None:
    early = _session("anon:old", "a", ["h0", "h1"])
    late = _session("anon:old", "b", ["s0", "s1"])
    late["timestamp"] += pd.Timedelta(days=2)
    fresh = _session("anon:new", "c", ["s0", "s1"])
    fresh2 = _session("anon:new", "d", ["h0", "h1"])
    fresh["timestamp"] += pd.Timedelta(days=2)
    fresh2["timestamp"] += pd.Timedelta(days=3)
    events = pd.concat([early, late, fresh, fresh2]).drop(columns="person")
    cut = pd.Timestamp("2026-03-02", tz="UTC")
    kept = first_sessions(events, cut)
    assert kept["session_id"].unique().tolist() == ["c"]  # not b (old visitor), not d (2nd)
    assert kept["person"].unique().tolist() == ["anon:new"]


def test_holdout_on_generated_data_trains_before_the_cut_only() -> None:
    events = generate_clickstream(n_users=200, days=21, seed=5).events
    holdout = first_session_holdout(events, test_days=5, model="ease")
    assert (holdout.sessions["timestamp"] >= holdout.cut).all()
    assert holdout.n_train_events == int((events["timestamp"] < holdout.cut).sum())
    # no test visitor is known to the model: the model never saw their first session
    users = set(holdout.bundle.users.ids.tolist())
    assert not users & set(holdout.sessions["person"])
    assert holdout.n_visitors > 0
    scorer_at_cut = Scorer.from_bundle(holdout.bundle, "ease@cut")
    result = bench_session_strategy(scorer_at_cut, holdout.sessions)
    assert result.n_steps > 0
    assert result.arms[0] == "popularity" and SESSION_BLEND.name in result.arms
    for arm in result.arms:
        assert ((result.ndcg[arm] >= 0) & (result.ndcg[arm] <= 1)).all()


def test_bench_session_command_writes_its_table(tmp_path) -> None:
    """Chosen on one seed, reported on another; the command that regenerates it comes first."""
    out = tmp_path / "session_strategy.md"
    answer = CliRunner().invoke(
        app,
        ["bench", "session", "--home", str(tmp_path / "home"), "--users", "150", "--days", "21",
         "--seed", "3", "--report-seed", "4", "--test-days", "5", "--out", str(out)],
    )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    text = out.read_text()
    lines = text.splitlines()
    command = command_of(lines[0])
    assert command[:3] == ["tailor", "bench", "session"]
    assert command[command.index("--users") + 1] == "150"
    assert command[command.index("--seed") + 1] == "3"
    assert command[command.index("--report-seed") + 1] == "4"
    assert command[command.index("--out") + 1] == str(out)
    chosen = re.search(r"chosen on seed 3: \*\*(.+?)\*\*", text)
    assert chosen is not None
    rows = [line for line in lines if line.startswith("| ")]
    for variant in ("similar", "similar+recent", "similar+popular", "similar+recent+popular"):
        assert any(
            row.startswith("| selection, seed 3 | every next view |")
            and f"session:ease ({variant})" in row
            for row in rows
        )
    reported = [row for row in rows if row.startswith("| report, seed 4 | every next view |")]
    assert len(reported) == 3  # popularity, the chosen variant, their difference
    assert f"session:ease ({chosen.group(1)})" in reported[1]
    assert any(row.startswith("| report, seed 4 | next view of a new product |") for row in rows)
    assert not any(row.startswith("| report, seeds") for row in rows)  # one report seed
    assert "On the report seed 4, " in text
    assert "NDCG@10" in answer.output


def test_bench_session_refuses_to_report_on_the_selection_seed(tmp_path) -> None:
    answer = CliRunner().invoke(
        app,
        ["bench", "session", "--home", str(tmp_path), "--users", "150", "--days", "21",
         "--seed", "3", "--report-seed", "3"],
    )  # fmt: skip
    assert answer.exit_code == 1
    assert "error:" in answer.output and "--report-seed 3" in answer.output
