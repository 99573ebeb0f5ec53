"""issue #18: people the segmentation leaves Unclassified are served like people without one."""

from __future__ import annotations

from features.feature_specs import UNCLASSIFIED_ID, UNCLASSIFIED_LABEL
from serving.logic import known_segment


def test_unclassified_is_served_as_no_segment():
    row = {"user_id": "u1", "segment_id": UNCLASSIFIED_ID, "segment_label": UNCLASSIFIED_LABEL}
    assert known_segment(row) == {"user_id": "u1", "segment_id": None, "segment_label": None}


def test_a_real_segment_and_no_segment_pass_unchanged():
    row = {"user_id": "u1", "segment_id": 3, "segment_label": "Mobile-First Browsers"}
    assert known_segment(row) == row
    assert known_segment({}) == {}
