"""``tailor bench session`` (issue #11): the replay of first sessions scored by hand on the tiny
shoes-and-hats model, the first-session hold-out on a small generated data set, and the command
end to end writing its table under the command that regenerates it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from features.synthetic.generate import generate_clickstream
from models.scoring import Scorer
from serving.session_bench import bench_session_strategy, verdict
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
    """One visitor views h0, h1, h2, h0, new-item:

    * step h1 (after h0): popularity in hats (the last category) ranks h0 h1 h2 h3 h4, so h1 at
      rank 2: NDCG 1/log2(3); the session ranks h0's neighbours, h1 first: NDCG 1;
    * step h2 (after h0, h1): popularity again h0 h1 h2 ..., rank 3: 1/log2(4) = 0.5; the
      session puts h2 first (see test_session_strategy): 1;
    * step h0 (a product viewed before): popularity has it first: 1; the session never shows a
      viewed product back: 0 — only in "every next view", not in "new product";
    * step new-item: unknown to the model, left out and counted.
    """
    sessions = _session("anon:v1", "s1", ["h0", "h1", "h2", "h0", "new-item"])
    result = bench_session_strategy(scorer, sessions, k=5)
    assert result.n_steps == 3 and result.n_unknown_next == 1
    assert result.n_visitors == 1 and result.n_sessions == 1
    assert result.answered == 3
    np.testing.assert_allclose(result.ndcg["popularity"], [1 / math.log2(3), 0.5, 1.0])
    np.testing.assert_allclose(result.ndcg["session"], [1.0, 1.0, 0.0])
    assert result.new_next.tolist() == [True, True, False]
    new = result.summary("new")
    assert new["session"]["ndcg"] == pytest.approx(1.0)
    assert new["popularity"]["ndcg"] == pytest.approx((1 / math.log2(3) + 0.5) / 2)
    assert new["difference"]["steps"] == 2
    every = result.summary("all")
    assert every["difference"]["ndcg"] == pytest.approx(
        (1 + 1 + 0 - 1 / math.log2(3) - 0.5 - 1) / 3
    )
    assert every["session"]["hr"] == pytest.approx(2 / 3)
    assert verdict(result).startswith("No significant difference")  # three steps say little


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
    for arm in ("popularity", "session"):
        assert ((result.ndcg[arm] >= 0) & (result.ndcg[arm] <= 1)).all()


def test_bench_session_command_writes_its_table(tmp_path) -> None:
    out = tmp_path / "session_strategy.md"
    answer = CliRunner().invoke(
        app,
        ["bench", "session", "--home", str(tmp_path / "home"), "--users", "150", "--days", "21",
         "--test-days", "5", "--out", str(out)],
    )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    lines = out.read_text().splitlines()
    command = command_of(lines[0])
    assert command[:3] == ["tailor", "bench", "session"]
    assert command[command.index("--users") + 1] == "150"
    assert command[command.index("--out") + 1] == str(out)
    assert any(line.startswith("| every next view |") and "session:ease" in line for line in lines)
    assert "NDCG@10" in answer.output
