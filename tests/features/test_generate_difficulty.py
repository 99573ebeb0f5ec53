"""issue #18: the generator's difficulty (overlapping personas, off-persona sessions, noise)."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from features.synthetic.generate import generate_clickstream
from features.synthetic.specs import (
    DIFFICULTIES,
    NOISE_PERSONA,
    OVERLAPPING_PERSONA_SPECS,
    PERSONAS,
    Difficulty,
)


def test_easy_is_the_original_generator_draw_for_draw():
    plain = generate_clickstream(80, 5, 11)
    easy = generate_clickstream(80, 5, 11, difficulty=DIFFICULTIES["easy"])
    pd.testing.assert_frame_equal(plain.events, easy.events)
    assert set(easy.personas["persona"]) == set(PERSONAS)


def test_hard_plants_seven_overlapping_personas_and_exactly_the_noise_share():
    data = generate_clickstream(300, 7, 3, difficulty=DIFFICULTIES["hard"])
    counts = data.personas["persona"].value_counts()
    assert counts[NOISE_PERSONA] == 30  # one in ten of 300 registered users
    assert set(counts.index) == {s.name for s in OVERLAPPING_PERSONA_SPECS} | {NOISE_PERSONA}
    assert data.personas["user_id"].is_unique


def _mobile_share(difficulty: Difficulty, persona: str) -> float:
    data = generate_clickstream(400, 10, 5, difficulty=difficulty)
    users = data.personas.loc[data.personas["persona"] == persona, "user_id"]
    events = data.events[data.events["user_id"].isin(users)]
    return float((events["device_type"] == "mobile").mean())


def test_off_persona_sessions_act_like_another_persona():
    """The phone-first casual browser leaves its phone in the sessions it acts off-persona."""
    own = _mobile_share(Difficulty(personas=7), "mobile_casual_browser")
    off = _mobile_share(Difficulty(personas=7, off_persona_share=0.4), "mobile_casual_browser")
    assert own > 0.85
    assert off < own - 0.15


def test_overlaps_are_the_planted_ones():
    specs = {s.name: s for s in OVERLAPPING_PERSONA_SPECS}
    assert specs["mobile_impulse_buyer"].device_mix == specs["mobile_casual_browser"].device_mix
    assert specs["gadget_buyer"].anchor_category == "electronics"
    assert specs["electronics_window_shopper"].anchor_category == "electronics"
    assert abs(sum(s.share for s in OVERLAPPING_PERSONA_SPECS) - 1.0) < 1e-9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"personas": 6}, "personas=6; allowed: [5, 7]"),
     ({"noise_share": 1.0}, "noise_share=1.0; allowed: 0 <= noise_share < 1")],
)  # fmt: skip
def test_bad_difficulty_names_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Difficulty(**kwargs)


def test_cli_generates_hard_data_and_refuses_an_unknown_difficulty(tmp_path):
    runner = CliRunner()
    out = tmp_path / "hard"
    result = runner.invoke(app, ["data", "generate", "--users", "60", "--days", "3",
                                 "--difficulty", "hard", "--noise-share", "0.2", "--out",
                                 str(out), "--home", str(tmp_path / "ws")])  # fmt: skip
    assert result.exit_code == 0, result.output
    personas = pd.read_csv(out / "personas.csv")
    assert (personas["persona"] == NOISE_PERSONA).sum() == 12
    bad = runner.invoke(app, ["data", "generate", "--difficulty", "extreme", "--home",
                              str(tmp_path / "ws")])  # fmt: skip
    assert bad.exit_code == 1
    assert "--difficulty 'extreme'; allowed: easy, medium, hard" in bad.stderr
