"""Unit tests for models.segments: k selection, the significance guard, labels, matching."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from models.segments.labels import name_segments, profiles
from models.segments.matching import agreement, align_labels, match_centroids
from models.segments.segmenter import Segmenter, SegmenterConfig
from models.segments.selection import knee_index, select_k
from models.segments.significance import consolidate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """OpenMP threads spinning on a busy shared machine make small fits 20-50x slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    x, truth = make_blobs(n_samples=600, centers=4, n_features=5, cluster_std=1.0, random_state=3)
    return x, truth


@pytest.mark.parametrize(
    "criterion", ["silhouette", "elbow", "davies_bouldin", "calinski_harabasz"]
)
def test_select_k_finds_the_planted_number_of_blobs(blobs, criterion):
    x, truth = blobs
    curve, labels = select_k(x, "kmeans", range(2, 9), criterion, seed=0)
    assert curve.chosen_k == 4
    assert curve.ks == list(range(2, 9))
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("algorithm", ["gmm", "agglomerative", "hdbscan", "dbscan"])
def test_other_algorithms_recover_well_separated_blobs(blobs, algorithm):
    x, truth = blobs
    curve, labels = select_k(x, algorithm, range(2, 7), "silhouette", seed=0)
    assert labels.min() == 0  # density methods' noise joined a cluster
    assert adjusted_rand_score(truth, labels) > 0.9


def test_knee_of_a_falling_curve():
    ks = np.arange(1, 9)
    inertia = np.array([100, 50, 20, 17, 15, 14, 13, 12.5])
    assert ks[knee_index(ks, inertia)] == 3


def test_significance_guard_merges_two_identical_segments():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200, 3))
    b = rng.normal(6, 1, (200, 3))
    x = np.vstack([a, b])
    # Segment 0 is split at random into 0 and 2: same distribution, no feature tells them apart.
    labels = np.r_[np.where(rng.random(200) < 0.5, 0, 2), np.ones(200, dtype=int)]
    merged, merges = consolidate(x, x, ["f0", "f1", "f2"], labels, min_size=5, alpha=0.01)
    assert len(merges) == 1 and merges[0].reason == "not-significant"
    assert {merges[0].absorbed, merges[0].into} == {0, 2}
    assert merges[0].p_value >= 0.01
    assert adjusted_rand_score(np.r_[np.zeros(200), np.ones(200)], merged) == 1.0


def test_guard_merges_a_segment_below_the_minimum_size():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(8, 1, (100, 2)), [[20.0, 20.0]] * 3])
    labels = np.r_[np.zeros(100, int), np.ones(100, int), np.full(3, 2)]
    merged, merges = consolidate(x, x, ["a", "b"], labels, min_size=10, alpha=0.01)
    assert [m.reason for m in merges] == ["min-size"]
    assert merges[0].absorbed_size == 3
    assert merged.max() == 1


def test_labels_name_the_defining_features():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (300, 3))
    labels = np.repeat([0, 1, 2], 100)
    x[labels == 0, 0] += 3  # segment 0: many purchases
    x[labels == 1, 1] += 3  # segment 1: mobile
    x[labels == 2, 2] += 3  # segment 2: electronics, abandoned carts
    x[labels == 2, 0] -= 2
    names = ["purchases", "mobile_share", "share_electronics"]
    vocabulary = {
        "purchases": (("noun", "Frequent Buyers"), ("noun", "Window Shoppers")),
        "mobile_share": (("adj", "Mobile-First"), None),
        "share_electronics": (("adj", "Electronics"), None),
    }
    segment_profiles = profiles(x, names, labels)
    assert segment_profiles[0].top_features[0] == "purchases"
    assert segment_profiles[0].z["purchases"] > 1
    got = name_segments(segment_profiles, vocabulary, default_noun="Browsers")
    assert got == ["Frequent Buyers", "Mobile-First Browsers", "Electronics Window Shoppers"]


def test_duplicate_names_are_made_unique():
    profile = profiles(np.c_[np.r_[np.zeros(10), np.ones(10) * 5]], ["f"], np.repeat([0, 1], 10))
    names = name_segments([profile[1], profile[1]], {"f": (("noun", "Fans"), None)})
    assert names == ["Fans 1", "Fans 2"]
    assert len(set(names)) == 2


def test_hungarian_matching_recovers_permuted_segments():
    previous = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    current = previous[[2, 0, 1]] + 0.1  # same segments, shuffled and slightly moved
    ids = match_centroids(previous, np.array([7, 8, 9]), current, np.ones(2))
    assert ids.tolist() == [9, 7, 8]
    more = np.vstack([current, [[50.0, 50.0]]])  # a new segment gets a fresh id
    assert match_centroids(previous, np.array([7, 8, 9]), more, np.ones(2)).tolist() == [
        9,
        7,
        8,
        10,
    ]


def test_align_labels_undoes_a_permutation():
    reference = np.repeat([0, 1, 2], 5)
    permuted = np.array([2, 0, 1])[reference]
    assert align_labels(reference, permuted).tolist() == reference.tolist()
    assert agreement(reference, permuted) == 1.0


def test_segmenter_is_stable_across_seeds_and_round_trips(blobs, tmp_path):
    x, _ = blobs
    names = [f"f{i}" for i in range(x.shape[1])]
    runs = [
        Segmenter(SegmenterConfig(seed=seed, k_max=7)).fit(x, names).assignments
        for seed in (0, 1, 2)
    ]
    assert min(agreement(runs[0], other) for other in runs[1:]) >= 0.9
    model = Segmenter(SegmenterConfig(k_max=7)).fit(x, names)
    loaded = Segmenter.load(model.save(tmp_path / "seg"))
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert np.array_equal(model.predict(x), model.assignments)
    assert loaded.labels == model.labels


def test_match_previous_keeps_ids_and_names(blobs):
    x, _ = blobs
    names = [f"f{i}" for i in range(x.shape[1])]
    first = Segmenter(SegmenterConfig(seed=0, k_max=6)).fit(x, names)
    first.ids = np.array([40, 41, 42, 43])
    first.labels = ["A", "B", "C", "D"]
    again = Segmenter(SegmenterConfig(seed=5, k_max=6)).fit(x[::-1], names)
    again.match_previous(first)
    # The same users carry the same id in both runs.
    assert np.array_equal(first.ids[first.predict(x)], again.ids[again.predict(x)])
    assert sorted(again.labels) == ["A", "B", "C", "D"]


def test_config_errors_name_the_key_and_the_allowed_values():
    with pytest.raises(ValueError, match="algorithm='spectral'; allowed: kmeans"):
        SegmenterConfig(algorithm="spectral")
    with pytest.raises(ValueError, match="k_min"):
        SegmenterConfig(k_min=5, k_max=3)


def test_feature_tests_of_a_single_segment_find_no_difference():
    """Issue #10 item 9: one segment left scipy's Kruskal-Wallis with one group, which raised
    IndexError (`tailor segment --set algorithm=dbscan`); one group has nothing to compare."""
    from models.segments.significance import feature_tests

    x = np.random.default_rng(0).normal(size=(50, 3))
    tests = feature_tests(x, ["a", "b", "c"], np.zeros(50, dtype=np.int64))
    assert [(t.feature, t.statistic, t.p_value) for t in tests] == [
        ("a", 0.0, 1.0),
        ("b", 0.0, 1.0),
        ("c", 0.0, 1.0),
    ]


def test_dbscan_on_one_dense_region_refuses_with_a_reason():
    """Issue #10 item 9: DBSCAN with eps at the k-distance knee finds one region in a single
    blob; the segmenter says so and what to use instead (it raised IndexError)."""
    from models.errors import DataError

    x = np.random.default_rng(0).normal(size=(300, 4))
    with pytest.raises(DataError) as caught:
        Segmenter(SegmenterConfig(algorithm="dbscan")).fit(x, ["a", "b", "c", "d"])
    message = str(caught.value)
    assert message.startswith("algorithm='dbscan' found a single segment in 300 users")
    assert "min_samples=8" in message and "use algorithm=hdbscan" in message


def test_dbscan_segments_separated_blobs_end_to_end(blobs):
    """Issue #10 item 9: DBSCAN works through the whole segmenter (eps from the knee)."""
    x, truth = blobs
    names = [f"f{j}" for j in range(x.shape[1])]
    segmenter = Segmenter(SegmenterConfig(algorithm="dbscan")).fit(x, names)
    assert segmenter.report.algorithm == "dbscan"
    assert adjusted_rand_score(truth, segmenter.assignments) > 0.9
