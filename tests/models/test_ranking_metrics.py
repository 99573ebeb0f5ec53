"""Ranking and rating metrics against hand-computed values."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from models.ranking_metrics import (
    catalogue_coverage,
    hit_rate_at_k,
    intra_list_diversity_at_k,
    mae,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty_at_k,
    personalization_at_k,
    precision_at_k,
    ranking_report,
    recall_at_k,
    rmse,
)

# One user, k=3: a single hit at rank 2, two relevant items (5 and 7; 7 is not recommended).
ONE_HIT = np.array([[1, 5, 2]])
ONE_HIT_RELEVANT = [{5, 7}]
ONE_HIT_NDCG = (1 / math.log2(3)) / (1 + 1 / math.log2(3))


def test_perfect_ranking_scores_one() -> None:
    recommended = np.array([[3, 1, 2]])
    relevant = [{1, 2, 3}]
    for metric in (precision_at_k, recall_at_k, ndcg_at_k, map_at_k, hit_rate_at_k, mrr_at_k):
        assert metric(recommended, relevant, 3)[0] == pytest.approx(1.0), metric.__name__


def test_one_hit_at_rank_two_matches_hand_computed_values() -> None:
    assert precision_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == pytest.approx(1 / 3)
    assert recall_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == pytest.approx(1 / 2)
    assert ndcg_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == pytest.approx(ONE_HIT_NDCG)
    assert map_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == pytest.approx(0.25)  # (1/2) / 2
    assert mrr_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == pytest.approx(0.5)
    assert hit_rate_at_k(ONE_HIT, ONE_HIT_RELEVANT, 3)[0] == 1.0


def test_sparse_relevant_matches_sets() -> None:
    relevant = sp.csr_matrix(([1.0, 1.0], ([0, 0], [5, 7])), shape=(1, 10))
    report_sets = ranking_report(ONE_HIT, ONE_HIT_RELEVANT, n_items=10, k=3)
    report_matrix = ranking_report(ONE_HIT, relevant, n_items=10, k=3)
    assert report_matrix == pytest.approx(report_sets)


def test_map_divides_by_number_of_relevant_items() -> None:
    # Hits at ranks 1 and 3 of k=3, four relevant: (1/1 + 2/3) / 4.
    recommended = np.array([[0, 9, 1]])
    assert map_at_k(recommended, [{0, 1, 2, 3}], 3)[0] == pytest.approx((1 + 2 / 3) / 4)


def test_ndcg_ideal_uses_min_of_k_and_relevant() -> None:
    # Five relevant but k=2: both slots hit is the ideal ranking.
    assert ndcg_at_k(np.array([[0, 1]]), [{0, 1, 2, 3, 4}], 2)[0] == pytest.approx(1.0)


def test_padding_never_counts() -> None:
    recommended = np.array([[4, -1, -1]])
    relevant = [{4, 6}]
    assert precision_at_k(recommended, relevant, 3)[0] == pytest.approx(1 / 3)
    assert recall_at_k(recommended, relevant, 3)[0] == pytest.approx(1 / 2)
    assert ndcg_at_k(recommended, relevant, 3)[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    sparse = sp.csr_matrix(([1.0, 1.0], ([0, 0], [4, 6])), shape=(1, 10))
    assert precision_at_k(recommended, sparse, 3)[0] == pytest.approx(1 / 3)
    assert catalogue_coverage(recommended, n_items=10) == pytest.approx(0.1)


def test_repeated_item_counts_once() -> None:
    assert precision_at_k(np.array([[4, 4, 1]]), [{4}], 3)[0] == pytest.approx(1 / 3)


def test_only_first_k_columns_are_used() -> None:
    recommended = np.array([[0, 1, 2, 3]])
    assert recall_at_k(recommended, [{3}], 3)[0] == 0.0
    assert recall_at_k(recommended, [{3}])[0] == 1.0  # k defaults to the width


def test_users_without_relevant_items_are_skipped() -> None:
    recommended = np.array([[1, 5, 2], [0, 1, 2]])
    relevant = [{5, 7}, set()]
    per_user = precision_at_k(recommended, relevant, 3)
    assert per_user[0] == pytest.approx(1 / 3)
    assert np.isnan(per_user[1])
    report = ranking_report(recommended, relevant, n_items=10, k=3)
    assert report["precision_at_3"] == pytest.approx(1 / 3)
    assert report["ndcg_at_3"] == pytest.approx(ONE_HIT_NDCG)
    assert report["map_at_3"] == pytest.approx(0.25)
    assert report["mrr_at_3"] == pytest.approx(0.5)
    assert report["n_users"] == 1.0
    assert report["coverage_at_3"] == pytest.approx(4 / 10)  # items 0, 1, 2, 5 over all rows


def test_report_averages_over_users() -> None:
    recommended = np.array([[1, 5, 2], [3, 1, 2]])
    relevant = [{5, 7}, {1, 2, 3}]
    report = ranking_report(recommended, relevant, n_items=10, k=3)
    assert report["recall_at_3"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["hit_rate_at_3"] == 1.0


def test_report_without_any_relevant_item_raises() -> None:
    with pytest.raises(ValueError, match="no user has a relevant item"):
        ranking_report(np.array([[0, 1]]), [set()], n_items=5, k=2)


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_raises(k: int) -> None:
    with pytest.raises(ValueError, match="k must be a positive int"):
        precision_at_k(ONE_HIT, ONE_HIT_RELEVANT, k)


def test_mismatched_users_raise() -> None:
    with pytest.raises(ValueError, match="relevant has 2 users"):
        precision_at_k(ONE_HIT, [{1}, {2}], 3)


def test_rating_errors() -> None:
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.0, 2.0, 3.0, 6.0])
    assert rmse(y_true, y_pred) == pytest.approx(1.0)  # sqrt(4 / 4)
    assert mae(y_true, y_pred) == pytest.approx(0.5)  # 2 / 4


# -- beyond accuracy ---------------------------------------------------------------------------

# Four training users x three items: item 0 seen by all four, items 1 and 2 by one user each.
TRAIN = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [1, 0, 0]], dtype=np.float32))
THREE_LISTS = np.array([[0, 1], [0, 2], [1, 2]])


def test_novelty_is_the_mean_self_information_of_recommended_items() -> None:
    # Share of users: item 0 -> 4/4 (0 bits), items 1, 2 -> 1/4 (2 bits); six slots: 0,2,0,2,2,2.
    assert novelty_at_k(THREE_LISTS, TRAIN) == pytest.approx(8 / 6)
    # Share of interactions (Recommenders' historical_item_novelty): 4/6 and 1/6.
    expected = (2 * -math.log2(4 / 6) + 4 * -math.log2(1 / 6)) / 6
    assert novelty_at_k(THREE_LISTS, TRAIN, denominator="interactions") == pytest.approx(expected)
    assert novelty_at_k(THREE_LISTS, TRAIN, k=1) == pytest.approx(2 / 3)  # items 0, 0, 1


def test_novelty_skips_padding_repeats_and_items_nobody_saw() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0]], dtype=np.float32))
    # Item 2 has no training user; the padding and the repeated 1 are ignored: items 0 and 1.
    assert novelty_at_k(np.array([[0, 1, 1, 2, -1]]), train) == pytest.approx(0.5)
    assert math.isnan(novelty_at_k(np.array([[2, -1]]), train))
    with pytest.raises(ValueError, match="denominator must be one of"):
        novelty_at_k(THREE_LISTS, TRAIN, denominator="items")


def test_intra_list_diversity_matches_hand_computed_cosines() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    recommended = np.array([[0, 1, -1], [0, 2, -1], [0, 1, 2], [2, -1, -1], [2, 3, 2]])
    diversity = intra_list_diversity_at_k(recommended, vectors)
    half = 1 - 1 / math.sqrt(2)
    assert diversity[0] == pytest.approx(1.0)  # orthogonal
    assert diversity[1] == pytest.approx(half)
    assert diversity[2] == pytest.approx(1 - (0 + 2 / math.sqrt(2)) / 3)  # mean of three pairs
    assert math.isnan(diversity[3])  # a single item has no pair
    assert diversity[4] == pytest.approx(1.0)  # an all-zero vector has similarity 0
    sparse = intra_list_diversity_at_k(recommended, sp.csr_matrix(vectors))
    np.testing.assert_allclose(sparse, diversity)
    assert np.isnan(intra_list_diversity_at_k(recommended, vectors, k=1)).all()  # one item each


def test_intra_list_diversity_with_the_training_matrix_is_cooccurrence_cosine() -> None:
    # Items 1 and 2 share no user: similarity 0. Items 0 and 1: 1 / sqrt(4 * 1).
    diversity = intra_list_diversity_at_k(THREE_LISTS, TRAIN.T)
    assert diversity.tolist() == pytest.approx([1 - 0.5, 1 - 0.5, 1.0])


def test_personalization_hand_computed() -> None:
    assert personalization_at_k(np.array([[0, 1], [0, 1], [1, 0]])) == pytest.approx(0.0)
    assert personalization_at_k(np.array([[0, 1], [2, 3]])) == pytest.approx(1.0)
    # Every pair of the three lists shares one of two items: cosine 1/2.
    assert personalization_at_k(THREE_LISTS) == pytest.approx(0.5)
    assert math.isnan(personalization_at_k(np.array([[0, 1], [-1, -1]])))  # one non-empty list


def test_personalization_matches_the_recmetrics_formula() -> None:
    rng = np.random.default_rng(0)
    recommended = np.stack([rng.choice(12, size=4, replace=False) for _ in range(30)])
    recommended[3, 2:] = -1  # a shorter list
    rows = np.zeros((30, 12))
    for user, items in enumerate(recommended):
        rows[user, items[items >= 0]] = 1
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = unit @ unit.T
    expected = 1 - (similarity.sum() - 30) / (30 * 29)
    assert personalization_at_k(recommended) == pytest.approx(expected)


def test_report_adds_beyond_accuracy_metrics_only_when_asked() -> None:
    relevant = [{1}, {2}, {0}]
    plain = ranking_report(THREE_LISTS, relevant, n_items=3, k=2)
    assert not any(key.startswith(("novelty", "diversity", "personalization")) for key in plain)
    full = ranking_report(
        THREE_LISTS,
        relevant,
        n_items=3,
        k=2,
        train_matrix=TRAIN,
        item_vectors=TRAIN.T,
        personalization=True,
    )
    assert {key: full[key] for key in plain} == plain
    assert full["novelty_at_2"] == pytest.approx(8 / 6)
    assert full["diversity_at_2"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert full["personalization_at_2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="train_matrix has 3 items, n_items is 5"):
        ranking_report(THREE_LISTS, relevant, n_items=5, k=2, train_matrix=TRAIN)
