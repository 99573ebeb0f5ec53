"""Harder planted personas: off-persona sessions and noise users (issue #18).

Applied after the plain generator's draws, from a stream of their own, so that ``Difficulty()``
reproduces the original data draw for draw. A session acted "off-persona" takes another
persona's funnel, pace, price taste and deal searches (all read per session from
``Sessions.persona``) and draws its device and focus category from that persona's mixes. A noise
user has random category weights and main device, and every session follows a random persona.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from features.synthetic.population import Visitors, pick_rows
from features.synthetic.sessions import Sessions
from features.synthetic.specs import Difficulty


def noise_visitors(
    rng: np.random.Generator, vis: Visitors, n_users: int, difficulty: Difficulty
) -> tuple[Visitors, np.ndarray]:
    """``(visitors, noise)``: ``noise`` (n_visitors,) marks exactly
    ``round(noise_share * n_users)`` registered users (and the same share of anonymous-only
    visitors, at random), whose category weights and main device are redrawn at random."""
    n = len(vis.persona)
    noise = np.zeros(n, dtype=bool)
    n_noise = int(round(difficulty.noise_share * n_users))
    noise[rng.choice(n_users, n_noise, replace=False)] = True
    noise[n_users:] = rng.random(n - n_users) < difficulty.noise_share
    weights = vis.category_weights.copy()
    weights[noise] = rng.dirichlet(np.ones(weights.shape[1]), int(noise.sum()))
    main_device = vis.main_device.copy()
    main_device[noise] = rng.integers(0, 4, int(noise.sum()))
    return replace(vis, category_weights=weights, main_device=main_device), noise


def off_persona_sessions(
    rng: np.random.Generator,
    sessions: Sessions,
    noise: np.ndarray,
    difficulty: Difficulty,
    tables: dict[str, np.ndarray],
) -> Sessions:
    """Sessions with ``off_persona_share`` of each person's sessions (all of a noise user's)
    switched to another persona drawn uniformly, with device and focus from its mixes."""
    n_personas = len(tables["share"])
    off = rng.random(len(sessions.persona)) < difficulty.off_persona_share
    off |= noise[sessions.visitor]
    # Another persona than the person's own: shift by 1..n-1 (uniform over the others).
    shift = rng.integers(1, n_personas, len(off))
    persona = sessions.persona.copy()
    persona[off] = (persona[off] + shift[off]) % n_personas
    device, focus = sessions.device.copy(), sessions.focus.copy()
    device[off] = pick_rows(rng, tables["device_mix"][persona[off]])
    focus[off] = pick_rows(rng, tables["affinity"][persona[off]])
    return replace(sessions, persona=persona, device=device, focus=focus)
