"""List operations behind the rules: boosts, the diversity re-rank, pinned slots."""

import numpy as np

from serving.rerank import Candidate, boost, candidates, diversify, place_slots

CATEGORIES = np.array(["a", "a", "a", "b", "b", ""], dtype=object)


def _list(*items: int) -> list[Candidate]:
    return [Candidate(i, 1.0 - i / 10, "s") for i in items]


def test_boost_moves_negative_scores_up_too() -> None:
    items = [Candidate(3, 0.5, "m"), Candidate(0, -1.0, "m"), Candidate(4, -2.0, "m")]
    out = boost(items, {"a": 4.0, "b": 2.0}, CATEGORIES)
    assert [(c.item_idx, c.score) for c in out] == [(3, 1.0), (0, -0.25), (4, -1.0)]


def test_diversify_moves_extra_items_to_the_back_in_order() -> None:
    out = diversify(_list(0, 1, 2, 3, 4), CATEGORIES, cap=2)
    assert [c.item_idx for c in out] == [0, 1, 3, 4, 2]
    assert diversify(_list(0, 1, 2), CATEGORIES, cap=None) == _list(0, 1, 2)


def test_items_without_a_category_are_never_capped() -> None:
    items = _list(5) * 3
    assert diversify(items, CATEGORIES, cap=1) == items


def test_place_slots_pins_unique_items_and_keeps_k() -> None:
    main = _list(0, 1, 2, 3)
    pool = [Candidate(1, 9.0, "pop", "pin"), Candidate(5, 8.0, "pop", "pin")]
    out = place_slots(main, [((0, 2), pool)], k=4)
    assert [c.item_idx for c in out] == [5, 0, 1, 2]  # item 1 is already listed: 5 is next
    assert out[0].rule == "pin"
    assert place_slots(main, [((9,), pool)], k=4) == main  # a rank past k is ignored


def test_candidates_skip_excluded_and_negative_and_stop_at_limit() -> None:
    scores = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    order = np.array([5, -1, 4, 3, 2, 1, 0])
    out = candidates(order, scores, "pop", "r", exclude={4, 2}, limit=3)
    assert out == [
        Candidate(5, 0.0, "pop", "r"),
        Candidate(3, 0.2, "pop", "r"),
        Candidate(1, 0.4, "pop", "r"),
    ]
    assert all(type(c.item_idx) is int and type(c.score) is float for c in out)
    assert candidates([5, 3], scores, "pop", None, set(), 5) == [
        Candidate(5, 0.0, "pop"),
        Candidate(3, 0.2, "pop"),
    ]


def test_candidates_walk_a_long_order_past_the_first_slice() -> None:
    """Arrays are read a slice (2 * limit + 16 items) at a time; a long excluded head must not
    end the walk early."""
    n = 200
    scores = np.linspace(1.0, 0.0, n)
    out = candidates(np.arange(n), scores, "pop", None, exclude=set(range(150)), limit=4)
    assert [c.item_idx for c in out] == [150, 151, 152, 153]
