"""The floor for ``tailor bench serve``: the smallest BentoML endpoint, one typed api answering
a constant small JSON, served with the same ``bentoml serve`` settings as the Tailor service.

Its throughput and latency are what BentoML itself costs on the machine; Tailor's figures are
reported as ratios to it. Kept out of ``serving/service.py`` so the Tailor service stays the only
service there.
"""

from __future__ import annotations

import bentoml
from pydantic import BaseModel, Field


class BaselineRequest(BaseModel):
    user_id: str | None = Field(None, description="Ignored; mirrors /recommend's body.")
    anonymous_id: str | None = Field(None, description="Ignored.")
    k: int = Field(10, ge=1, le=200, description="Ignored.")
    context: dict[str, str] | None = Field(None, description="Ignored.")


class BaselineResponse(BaseModel):
    items: list[str]
    model: str


ANSWER = BaselineResponse(items=["p0001", "p0002", "p0003"], model="baseline")


@bentoml.service(name="baseline", traffic={"timeout": 30})
class Baseline:
    @bentoml.api(route="/recommend")
    def recommend(self, request: BaselineRequest, /) -> BaselineResponse:
        """A constant answer: the cost of BentoML's request handling alone."""
        return ANSWER
