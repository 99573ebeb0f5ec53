"""The segmenter as an MLflow pyfunc, logged as models-from-code (see `training.pyfunc_model`).

Input: a frame with the segmenter's feature columns (``feature_names``). Output: one row per
input row with ``segment_id`` (int64) and ``segment_label``. Not imported by the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.feature_specs import UNCLASSIFIED_ID, UNCLASSIFIED_LABEL
from models.segments.segmenter import Segmenter

#: The artifact holding the saved segmenter (`training.tracking.SEGMENTER_ARTIFACT`).
SEGMENTER_ARTIFACT = "segmenter"


class SegmenterPyfunc(mlflow.pyfunc.PythonModel):
    """A saved :class:`models.segments.Segmenter` behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        self._segmenter = Segmenter.load(Path(context.artifacts[SEGMENTER_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        segmenter = self._segmenter
        index = segmenter.predict(model_input[segmenter.feature_names].to_numpy(dtype=float))
        known = index >= 0  # -1: fits no segment (outlier option)
        safe = np.where(known, index, 0)
        return pd.DataFrame(
            {
                "segment_id": np.where(known, segmenter.ids[safe], UNCLASSIFIED_ID).astype(
                    np.int64
                ),
                "segment_label": np.where(
                    known, np.asarray(segmenter.labels, dtype=object)[safe], UNCLASSIFIED_LABEL
                ),
            }
        )


mlflow.models.set_model(SegmenterPyfunc())
