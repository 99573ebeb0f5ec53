"""issue #18: the k-selection criteria, the combined rule, the Unclassified option and the k
chosen on planted personas of each difficulty (pinned)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from features.segment_inputs import event_inputs
from features.synthetic.generate import generate_clickstream
from features.synthetic.specs import DIFFICULTIES, NOISE_PERSONA
from features.transforms import user_features
from models.segments.criteria import combined_k, gap_rule_k, interior_optima
from models.segments.outliers import fit_outlier_model
from models.segments.segmenter import Segmenter, SegmenterConfig
from models.segments.selection import select_k
from models.segments.significance import consolidate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(limits=1):
        yield


def test_combined_rule_prefers_the_level_most_criteria_mark_over_the_global_optima():
    """Measured curves of the hard data (k 2..10): silhouette and Calinski–Harabasz are best at
    k = 2-3 (two personas merged), BIC and the gap keep improving; the interior optima of
    silhouette, BIC and stability agree on 7."""
    ks = list(range(2, 11))
    values = {
        "silhouette": [.1504, .1554, .1448, .1391, .1483, .1522, .1495, .143, .1199],
        "calinski_harabasz": [418.9, 389.6, 352, 321.4, 307.6, 290.9, 268.6, 247, 230.5],
        "davies_bouldin": [2.029, 2.127, 2.097, 2.021, 1.956, 1.977, 2.033, 2.074, 2.056],
        "gap": [1.446, 1.509, 1.555, 1.602, 1.654, 1.688, 1.707, 1.718, 1.729],
        "gap_se": [.0049, .0027, .0037, .0042, .0055, .0036, .0045, .0042, .0033],
        "bic": [1.818, 1.777, 1.678, 1.619, 1.585, 1.543, 1.55, 1.541, 1.53],
        "stability": [.9924, .9812, .9797, .8365, .8333, .9657, .9616, .8179, .8328],
    }  # fmt: skip
    k, why = combined_k(ks, values)
    assert k == 7 and "silhouette" in why and "stability" in why and "bic" in why
    assert gap_rule_k(ks, values["gap"], values["gap_se"]) is None  # never flattens
    assert interior_optima([1, 3, 2, 2, 4], higher=True) == [1]


def test_combined_rule_ties_go_to_the_larger_k_and_monotone_curves_to_the_most_stable():
    ks = [2, 3, 4, 5]
    tie = {"silhouette": [0.1, 0.3, 0.2, 0.1], "davies_bouldin": [2.0, 2.1, 1.5, 1.6]}
    assert combined_k(ks, tie)[0] == 4
    flat = {"silhouette": [0.1, 0.2, 0.3, 0.4], "stability": [0.8, 0.9, 0.95, 0.99]}
    assert combined_k(ks, flat) == (5, "no interior optimum; the most stable k")


def test_select_k_records_every_criterion_and_finds_blobs():
    x, truth = make_blobs(n_samples=500, centers=4, n_features=5, random_state=3)
    curve, labels = select_k(x, "kmeans", range(2, 8), "combined", seed=0)
    assert curve.chosen_k == 4
    assert {"gap", "gap_se", "bic", "stability", "silhouette"} <= set(curve.values)
    assert curve.votes["gap"] == 4 and curve.values["stability"][2] > 0.99
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


def test_guard_keeps_two_close_segments_that_differ_on_one_input():
    """issue #18: the over-segmentation guard must not merge segments that differ significantly
    on the inputs, however close their centroids are in the clustering space."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (300, 4))
    b = rng.normal(0, 1, (300, 4))
    b[:, 3] += 0.6  # one input apart, well inside the spread of the others
    x = np.vstack([a, b])
    labels = np.r_[np.zeros(300, int), np.ones(300, int)]
    merged, merges = consolidate(x, x, ["f0", "f1", "f2", "f3"], labels, min_size=10, alpha=0.01)
    assert merges == [] and merged.max() == 1


def test_outlier_model_leaves_people_between_segments_unassigned():
    rng = np.random.default_rng(1)
    a, b = rng.normal(-4, 1, (300, 2)), rng.normal(4, 1, (300, 2))
    between = rng.normal(0, 0.3, (30, 2))  # a mix of both: fits neither
    z = np.vstack([a, b, between])
    labels = np.r_[np.zeros(300, int), np.ones(300, int), np.zeros(30, int)]
    model = fit_outlier_model(z, labels, threshold=0.99, seed=0)
    unassigned = model.unassigned(z)
    assert unassigned[600:].mean() >= 0.9
    assert unassigned[:600].mean() <= 0.02


def _planted(level: str, seed: int, users: int = 500):
    data = generate_clickstream(users, 30, seed, difficulty=DIFFICULTIES[level])
    as_of = data.events["timestamp"].max().floor("D") + pd.Timedelta(days=1)
    inputs = event_inputs(user_features(data.events, [as_of]))
    truth = pd.Series(inputs.user_ids).map(data.personas.set_index("user_id")["persona"])
    fit = inputs.numeric["sessions_30d"].to_numpy() >= 5
    return inputs, truth.to_numpy()[fit], fit


def _segment(inputs, fit, **config) -> Segmenter:
    return Segmenter(SegmenterConfig(**config)).fit(
        inputs.numeric.to_numpy(float)[fit], list(inputs.numeric.columns),
        groups=inputs.groups, log_features=inputs.log_features,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("level", "seed", "k", "min_ari"),
    [
        ("easy", 7, 5, 0.95),
        ("easy", 8, 5, 0.95),
        ("medium", 8, 7, 0.85),
        ("hard", 8, 7, 0.8),
        pytest.param("medium", 7, 7, 0.85, marks=pytest.mark.xfail(
            strict=True, reason="known miss: k=6 (two overlapping personas merged)")),
        pytest.param("hard", 7, 7, 0.8, marks=pytest.mark.xfail(
            strict=True, reason="known miss: k=5 (silhouette's best and Davies-Bouldin)")),
    ],
)  # fmt: skip
def test_k_chosen_on_planted_personas_of_each_difficulty(level, seed, k, min_ari):
    """issue #18: pins the k the combined rule chooses on 500 planted users (k_max 10). Two
    draws of six miss the planted k and are pinned as strict xfails: when a better rule finds
    it, they fail and must be moved up (experiments/results/segments-k-choice.md has the
    record on more draws)."""
    inputs, truth, fit = _planted(level, seed)
    segmenter = _segment(inputs, fit)
    assert segmenter.report.k_selected == k
    persona = pd.notna(truth) & (truth != NOISE_PERSONA)
    assert adjusted_rand_score(truth[persona], segmenter.assignments[persona]) >= min_ari


def test_unclassified_option_unassigns_noise_users_more_than_persona_users():
    inputs, truth, fit = _planted("hard", 8)
    segmenter = _segment(inputs, fit, outliers="gmm", outlier_posterior=0.9)
    unassigned = segmenter.assignments < 0
    noise = truth == NOISE_PERSONA
    persona = pd.notna(truth) & ~noise
    assert segmenter.report.unassigned == int(unassigned.sum())
    assert unassigned[noise].mean() > 2 * unassigned[persona].mean()
    predicted = segmenter.predict(inputs.numeric.to_numpy(float)[fit])
    assert ((predicted < 0) == unassigned).mean() > 0.99  # the saved rule, applied again
