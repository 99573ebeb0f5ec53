"""PrefixSpan (models.prefixspan): hand-computed supports, closed patterns, limits, agreement.

The hand example is the BIDE paper's database (Wang & Han, 2004), used in
github.com/chuanconggao/PrefixSpan-py/issues/14: CAABC, ABCB, CABC, ABBCA with min support 2.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from models.prefixspan import (
    PatternConfig,
    PrefixSpan,
    SequenceIndex,
    resolve_min_support,
)

BIDE_DB = [list("CAABC"), list("ABCB"), list("CABC"), list("ABBCA")]
# closed at support >= 2, from the paper: e.g. A (4) is not closed because AB (4) is, and
# C (4) is not because AC (4) is (every sequence has an A before a C)
BIDE_CLOSED = {
    ("C", "A"): 3,
    ("C", "B"): 3,
    ("A", "A"): 2,
    ("A", "B", "C"): 4,
    ("A", "B", "B"): 2,
    ("C", "A", "B", "C"): 2,
}


def mine(db, **config):
    return PrefixSpan(PatternConfig(**config)).mine(db).as_dict()


def contains(sequence, pattern) -> bool:
    items = iter(sequence)
    return all(any(x == token for x in items) for token in pattern)


def brute_force(db, min_count: int, max_length: int) -> dict[tuple, int]:
    """Every pattern over the alphabet up to max_length, counted directly."""
    alphabet = sorted({t for seq in db for t in seq})
    found = {}
    for length in range(1, max_length + 1):
        for pattern in itertools.product(alphabet, repeat=length):
            support = sum(contains(seq, pattern) for seq in db)
            if support >= min_count:
                found[pattern] = support
    return found


def closed_by_definition(frequent: dict[tuple, int]) -> dict[tuple, int]:
    """No one-longer frequent pattern with the same support contains it."""
    return {
        p: s
        for p, s in frequent.items()
        if not any(len(q) == len(p) + 1 and t == s and contains(q, p) for q, t in frequent.items())
    }


# -- hand-computed -----------------------------------------------------------------------------
def test_supports_of_the_bide_example_are_the_hand_counts():
    found = mine(BIDE_DB, min_support=2)
    assert found[("A",)] == 4 and found[("B",)] == 4 and found[("C",)] == 4
    assert found[("A", "B", "C")] == 4  # A..B..C in all four
    assert found[("C", "A")] == 3  # not in ABCB (no A after its C)
    assert found[("A", "A")] == 2  # CAABC and ABBCA
    assert found[("C", "A", "B", "C")] == 2  # CAABC and CABC
    assert ("B", "A", "C") not in found  # only in no sequence: B..A..C
    assert all(support >= 2 for support in found.values())
    assert found == brute_force(BIDE_DB, 2, 5)


def test_closed_patterns_of_the_bide_example():
    assert mine(BIDE_DB, min_support=2, closed=True) == BIDE_CLOSED


def test_closed_with_max_length_keeps_patterns_closed_among_all_lengths():
    # AB (4) is not closed even though ABC, its equal-support super-pattern, is longer than 2
    assert mine(BIDE_DB, min_support=2, max_length=2, closed=True) == {
        p: s for p, s in BIDE_CLOSED.items() if len(p) <= 2
    }


def test_max_length_and_min_length_cut_the_same_patterns():
    everything = mine(BIDE_DB, min_support=2)
    assert mine(BIDE_DB, min_support=2, max_length=2) == {
        p: s for p, s in everything.items() if len(p) <= 2
    }
    assert mine(BIDE_DB, min_support=2, min_length=3) == {
        p: s for p, s in everything.items() if len(p) >= 3
    }
    assert max(map(len, everything)) == 4


def test_min_support_as_a_count_and_as_a_fraction():
    assert resolve_min_support(3, 10) == 3
    assert resolve_min_support(0.5, 4) == 2
    assert resolve_min_support(0.6, 4) == 3  # 2.4 sequences round up
    assert resolve_min_support(0.07, 100) == 7  # not 8 from 7.000000000000001
    assert resolve_min_support(1e-9, 10) == 1
    assert mine(BIDE_DB, min_support=0.5) == mine(BIDE_DB, min_support=2)
    three = mine(BIDE_DB, min_support=0.75)
    assert three == mine(BIDE_DB, min_support=3)
    assert min(three.values()) == 3


@pytest.mark.parametrize(
    "bad", [0, -1, 0.0, 1.5, True, "0.1", None], ids=lambda v: f"min_support={v!r}"
)
def test_bad_min_support_is_refused(bad):
    with pytest.raises(ValueError, match="min_support"):
        PatternConfig(min_support=bad)


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="max_length"):
        PatternConfig(max_length=0)
    with pytest.raises(ValueError, match="min_length 3 > max_length 2"):
        PatternConfig(min_length=3, max_length=2)


def test_result_order_support_then_length_then_tokens():
    found = PrefixSpan(PatternConfig(min_support=2)).mine(BIDE_DB)
    keys = [(-s, len(p), p) for p, s in zip(found.patterns, found.supports.tolist(), strict=True)]
    assert keys == sorted(keys)
    assert found.n_sequences == 4 and found.min_count == 2
    np.testing.assert_allclose(found.fractions, found.supports / 4)


def test_empty_inputs():
    assert len(PrefixSpan().mine([])) == 0
    assert mine([[], [], ["a"]], min_support=1) == {("a",): 1}
    assert mine([["a"], ["b"]], min_support=2) == {}


def test_sequence_index_contains_with_gaps_and_order():
    index = SequenceIndex(BIDE_DB)
    np.testing.assert_array_equal(index.contains(["C", "A"]), [True, False, True, True])
    np.testing.assert_array_equal(index.contains(["A", "A"]), [True, False, False, True])
    assert index.support(["B", "B"]) == 2  # ABCB, ABBCA
    assert index.support(["Z"]) == 0  # unknown token
    assert index.support([]) == 4


def test_mine_groups_equals_mining_each_group_alone():
    groups = ["x", "y", "x", "y"]
    per_group = PrefixSpan(PatternConfig(min_support=1.0)).mine_groups(BIDE_DB, groups)
    assert set(per_group) == {"x", "y"}
    # fraction 1.0 of each group: patterns in both of its sequences
    assert per_group["x"].as_dict() == mine([BIDE_DB[0], BIDE_DB[2]], min_support=2)
    assert per_group["y"].as_dict() == mine([BIDE_DB[1], BIDE_DB[3]], min_support=2)
    assert per_group["x"].as_dict()[("C", "A", "B", "C")] == 2
    with pytest.raises(ValueError, match="3 groups for 4 sequences"):
        PrefixSpan().mine_groups(BIDE_DB, groups[:3])


def test_progress_callback_counts_first_tokens():
    calls = []
    PrefixSpan(PatternConfig(min_support=2)).mine(BIDE_DB, callback=lambda d, t: calls.append(d))
    assert calls == [1, 2, 3]


# -- against brute force and the reference package -----------------------------------------------
def random_db(rng: random.Random, n: int, alphabet: str, max_len: int) -> list[list[str]]:
    return [[rng.choice(alphabet) for _ in range(rng.randint(0, max_len))] for _ in range(n)]


def test_random_sets_against_brute_force():
    rng = random.Random(6)
    for _ in range(60):
        db = random_db(rng, rng.randint(1, 8), "abc", 6)
        min_count = rng.randint(1, len(db))
        frequent = brute_force(db, min_count, 7)
        assert mine(db, min_support=min_count) == frequent, db
        assert mine(db, min_support=min_count, closed=True) == closed_by_definition(frequent), db


def test_agrees_with_the_prefixspan_package_on_random_sets():
    reference = pytest.importorskip("prefixspan")
    rng = random.Random(2026)
    for _ in range(25):
        db = random_db(rng, rng.randint(20, 60), "abcde", 10)
        min_count = rng.randint(2, 8)
        max_length = rng.choice([None, 2, 3])
        ref = reference.PrefixSpan(db)
        if max_length is not None:
            ref.maxlen = max_length + 1  # one longer, to derive the closed ones
        ref_frequent = {tuple(p): s for s, p in ref.frequent(min_count)}
        longest = max_length or 10_000
        expected = {p: s for p, s in ref_frequent.items() if len(p) <= longest}
        assert mine(db, min_support=min_count, max_length=max_length) == expected
        ours_closed = mine(db, min_support=min_count, max_length=max_length, closed=True)
        expected_closed = {
            p: s for p, s in closed_by_definition(ref_frequent).items() if len(p) <= longest
        }
        assert ours_closed == expected_closed
        # the package's closed=True returns a superset (issue #14): every extra is not closed
        ref_closed = {tuple(p): s for s, p in ref.frequent(min_count, closed=True)}
        ref_closed = {p: s for p, s in ref_closed.items() if len(p) <= longest}
        assert ours_closed.items() <= ref_closed.items()
        for p, s in ref_closed.items() - ours_closed.items():
            assert any(
                len(q) == len(p) + 1 and t == s and contains(q, p) for q, t in ref_frequent.items()
            )
