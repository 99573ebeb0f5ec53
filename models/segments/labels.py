"""Readable segment names from profiles: z-scores of segment means against the population.

A vocabulary maps a feature to what a high or a low value says about a person, as an adjective
("Mobile-First") or a noun ("Window Shoppers"). A segment's name is its strongest adjective plus
its strongest noun among features with ``|z| >= z_min`` ("Mobile-First Browsers"); without a
noun it ends in the vocabulary's default noun. Names are made unique by adding the next
adjective, then a numeral.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: ``(kind, text)`` with kind ``"adj"`` or ``"noun"``.
Phrase = tuple[str, str]
#: feature -> (phrase when high, phrase when low); either may be None.
Vocabulary = Mapping[str, tuple[Phrase | None, Phrase | None]]


@dataclass(frozen=True)
class Profile:
    """A segment against the population, features ordered by |z| (strongest first)."""

    size: int
    share: float
    z: dict[str, float]  # feature -> (segment mean - population mean) / population sd
    means: dict[str, float]  # feature -> segment mean (in the features' own units)
    top_features: list[str]


def profiles(
    x: np.ndarray, names: Sequence[str], labels: np.ndarray, z_space: np.ndarray | None = None
) -> list[Profile]:
    """One profile per segment ``0..k-1``. ``z_space`` (n, d), default ``x``, is where the
    z-scores are computed (e.g. after log1p of heavy tails); ``means`` are in ``x``'s units."""
    z_space = x if z_space is None else z_space
    mean, sd = z_space.mean(0), z_space.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    out = []
    for s in range(int(labels.max()) + 1):
        rows = labels == s
        z = (z_space[rows].mean(0) - mean) / sd
        order = np.argsort(-np.abs(z), kind="stable")
        out.append(
            Profile(
                size=int(rows.sum()),
                share=float(rows.mean()),
                z={names[j]: float(z[j]) for j in order},
                means={names[j]: float(x[rows, j].mean()) for j in order},
                top_features=[names[j] for j in order[:3]],
            )
        )
    return out


def _phrases(profile: Profile, vocabulary: Vocabulary, z_min: float) -> list[tuple[Phrase, str]]:
    """(phrase, feature) in order of |z| for features past the threshold."""
    found = []
    for feature, z in profile.z.items():
        if abs(z) < z_min or feature not in vocabulary:
            continue
        phrase = vocabulary[feature][0 if z > 0 else 1]
        if phrase is not None:
            found.append((phrase, feature))
    return found


def name_segments(
    segment_profiles: Sequence[Profile],
    vocabulary: Vocabulary,
    default_noun: str = "Users",
    z_min: float = 0.5,
) -> list[str]:
    """A unique readable name per profile."""
    candidates = []
    for profile in segment_profiles:
        phrases = _phrases(profile, vocabulary, z_min)
        nouns = [text for (kind, text), _ in phrases if kind == "noun"]
        adjectives = []
        for (kind, text), _ in phrases:
            if kind == "adj" and text not in adjectives:
                adjectives.append(text)
        candidates.append((adjectives, nouns[0] if nouns else default_noun))
    names = [" ".join([*adjs[:1], noun]) for adjs, noun in candidates]
    for depth in (2, 3):
        for i, (adjs, noun) in enumerate(candidates):
            if names.count(names[i]) > 1 and len(adjs) >= depth:
                names[i] = " ".join([*adjs[:depth], noun])
    repeated = {name for name in names if names.count(name) > 1}
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in repeated:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name} {seen[name]}"
    return names


def describe(profile: Profile, n_features: int = 3) -> str:
    """``"412 users (20.6%): high sessions_30d (z=+1.52), low mobile_share_30d (z=-1.10), …"``."""
    parts = [
        f"{'high' if profile.z[f] > 0 else 'low'} {f} (z={profile.z[f]:+.2f})"
        for f in profile.top_features[:n_features]
    ]
    return f"{profile.size} users ({profile.share:.1%}): " + ", ".join(parts)
