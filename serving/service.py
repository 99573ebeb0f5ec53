"""The BentoML service: the only BentoML importer.

Heavy loading happens once in ``__init__`` (champion model from the MLflow registry, the Feast
store); each request reads the user's online features and delegates to :mod:`serving.logic`.
Configuration comes from the environment when the service starts: ``TAILOR_HOME``,
``MLFLOW_TRACKING_URI``, ``TAILOR_MODEL_NAME`` (default ``tailor-recommender``) and
``TAILOR_MODEL_ALIAS`` (default ``champion``).
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import bentoml
from pydantic import Field

from features import store as feature_store
from features.workspace import Workspace
from serving.loader import check_feature_service, load_registered
from serving.logic import MAX_K, RecommendRequest, RecommendResponse, recommend

logger = logging.getLogger(__name__)


@bentoml.service(name="tailor", traffic={"timeout": 30})
class Tailor:
    def __init__(self) -> None:
        ws = Workspace.from_env()
        name = os.environ.get("TAILOR_MODEL_NAME", "tailor-recommender")
        alias = os.environ.get("TAILOR_MODEL_ALIAS", "champion")
        self.loaded = load_registered(ws, name, alias)
        self.store = feature_store.feature_store(ws)
        check_feature_service(self.store, self.loaded.feature_service)

    def _features(self, user_id: str, device_type: str) -> dict:
        rows = [{"user_id": user_id, "device_type": device_type}]
        return feature_store.online_features(self.store, rows, self.loaded.feature_service)[0]

    @bentoml.api(route="/recommend")
    def recommend(
        self,
        user_id: Annotated[str, Field(min_length=1, max_length=256, description="Person key.")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many items.")] = 10,
        device_type: Annotated[str, Field(description="Device of this request.")] = "other",
    ) -> RecommendResponse:
        """Top-k items for one person, with the strategy behind each item."""
        parsed = RecommendRequest(user_id=user_id, k=k, device_type=device_type)
        features = self._features(parsed.user_id, parsed.device_type)
        return recommend(self.loaded.scorer, parsed, features)
