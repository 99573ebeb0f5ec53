"""List operations on candidate items: boosts, the diversity re-rank and pinned slots.

Pure functions over :class:`Candidate` lists; :mod:`serving.logic` decides which lists to build.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import NamedTuple

import numpy as np


class Candidate(NamedTuple):
    """One item on its way into a response: dense index, score and provenance.

    A named tuple: ~80 are built per request, at half the cost of a frozen dataclass.
    """

    item_idx: int
    score: float
    strategy: str
    rule: str | None = None


def candidates(
    item_idx: Iterable[int],
    scores: np.ndarray,
    strategy: str,
    rule: str | None,
    exclude: set[int],
    limit: int,
) -> list[Candidate]:
    """The first ``limit`` items of ``item_idx`` outside ``exclude``; ``scores`` by item index."""
    return list(iter_candidates(item_idx, scores, strategy, rule, exclude, limit))


def iter_candidates(
    item_idx: Iterable[int],
    scores: np.ndarray,
    strategy: str,
    rule: str | None,
    exclude: set[int],
    limit: int,
) -> Iterator[Candidate]:
    """:func:`candidates`, built as they are read: a tail that is rarely reached (the popular
    fill-in behind a model's list) then costs nothing when it is not."""
    found = 0
    for i in _as_ints(item_idx, step=2 * limit + 16):
        if i < 0 or i in exclude:
            continue
        yield Candidate(i, float(scores.item(i)), strategy, rule)
        found += 1
        if found >= limit:
            return


def _as_ints(item_idx: Iterable[int], step: int) -> Iterator[int]:
    """Python ints of ``item_idx``; an array is converted a slice at a time (iterating numpy
    scalars costs twice as much, and a whole catalogue's order must not be copied per call)."""
    if not isinstance(item_idx, np.ndarray):
        yield from (int(i) for i in item_idx)
        return
    for start in range(0, len(item_idx), step):
        yield from item_idx[start : start + step].tolist()


def boost(
    items: Sequence[Candidate], factors: dict[str, float], categories: Sequence[str] | np.ndarray
) -> list[Candidate]:
    """Raise the score of items in each boosted category, then re-sort (stable) by score.

    A factor ``f`` multiplies a positive score and divides a negative one, so a boost always
    moves an item up whatever the sign of the model's scores.
    """
    if not factors:
        return list(items)

    def lifted(c: Candidate) -> Candidate:
        factor = factors.get(str(categories[c.item_idx]), 1.0)
        return c._replace(score=c.score * factor if c.score >= 0 else c.score / factor)

    return sorted((lifted(c) for c in items), key=lambda c: -c.score)


def diversify(
    items: Iterable[Candidate],
    categories: Sequence[str] | np.ndarray,
    cap: int | None,
    limit: int | None = None,
) -> list[Candidate]:
    """At most ``cap`` items of one category ahead of the others: walk the list in order and move
    an item whose category already has ``cap`` to the back (keeping their order), so nothing is
    dropped and the head is diverse whenever other categories have items to offer.

    With ``limit``, only the first ``limit`` items of that list: the walk stops once ``limit``
    items are kept (everything after could only follow them), so a lazy ``items`` is read no
    further than needed.
    """
    if cap is None:
        return list(items) if limit is None else list(islice(items, limit))
    kept: list[Candidate] = []
    moved: list[Candidate] = []
    counts: dict[str, int] = {}
    for item in items:
        category = str(categories[item.item_idx])
        if category and counts.get(category, 0) >= cap:
            moved.append(item)
            continue
        counts[category] = counts.get(category, 0) + 1
        kept.append(item)
        if len(kept) == limit:
            return kept
    out = kept + moved
    return out if limit is None else out[:limit]


def place_slots(
    items: Sequence[Candidate], slots: Sequence[tuple[Sequence[int], Sequence[Candidate]]], k: int
) -> list[Candidate]:
    """Pin items from other sources at fixed 0-based ranks; the list keeps ``k`` items at most.

    Each slot is ``(positions, pool)``: its next pool item not already in the list goes to each
    position (in rank order); later items shift down.
    """
    out = list(items[:k])
    for positions, pool in slots:
        remaining = iter(pool)
        for position in positions:
            if position >= k:
                break
            taken = {c.item_idx for c in out}
            pick = next((c for c in remaining if c.item_idx not in taken), None)
            if pick is None:
                break
            out.insert(min(position, len(out)), pick)
            out = out[:k]
    return out
