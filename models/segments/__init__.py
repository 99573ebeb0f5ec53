"""User segmentation: scaling, clustering with k selection, significance-guarded consolidation,
readable labels and id matching across runs. numpy / scipy / scikit-learn only."""

from models.segments.labels import Phrase, Profile, Vocabulary, describe, name_segments, profiles
from models.segments.matching import agreement, align_labels, contingency, match_centroids
from models.segments.preprocess import SCALINGS, Preprocessor, fit_preprocessor
from models.segments.segmenter import AUTO_ALGORITHMS, Report, Segmenter, SegmenterConfig
from models.segments.selection import ALGORITHMS, CRITERIA, KCurve, cluster, knee_index, select_k
from models.segments.significance import FeatureTest, Merge, consolidate, feature_tests

__all__ = [
    "ALGORITHMS", "AUTO_ALGORITHMS", "CRITERIA", "SCALINGS", "FeatureTest", "KCurve", "Merge",
    "Phrase", "Preprocessor", "Profile", "Report", "Segmenter", "SegmenterConfig", "Vocabulary",
    "agreement", "align_labels", "cluster", "consolidate", "contingency", "describe",
    "feature_tests", "fit_preprocessor", "knee_index", "match_centroids", "name_segments",
    "profiles", "select_k",
]  # fmt: skip
