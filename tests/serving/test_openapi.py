"""The OpenAPI document and the request models agree (issue #10 items 10 and 16).

The document is BentoML's, generated in process from the service definition, as ``/docs.json``
serves it; the real service answers it in tests/integration/test_serving_http.py.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
from pydantic import ValidationError

from serving.schemas import RecommendRequest, RequestContext, SegmentRequest, SimilarItemsRequest


@pytest.fixture(scope="module")
def spec() -> dict:
    from serving.service import Tailor

    return Tailor.openapi_spec.asdict()


def _request_schema(spec: dict, route: str) -> dict:
    return spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_the_document_carries_tailors_title_version_and_description(spec) -> None:
    """issue #10 item 16."""
    info = spec["info"]
    assert info["title"] == "Tailor"
    assert info["version"] == importlib.metadata.version("tailor")
    assert "/recommend" in info["description"] and "413" in info["description"]
    assert "contact" not in info  # BentoML's team is not Tailor's contact


def test_every_request_body_is_documented_required(spec) -> None:
    """issue #10 item 10: /segment and /similar_items bodies were documented as optional."""
    for route in ("/recommend", "/segment", "/similar_items", "/events"):
        assert spec["paths"][route]["post"]["requestBody"]["required"] is True, route


def test_recommend_documents_that_a_person_is_required_and_its_example_is_valid(spec) -> None:
    """issue #10 items 10 and 16: ``{}`` was documented valid; the example is a real request."""
    schema = _request_schema(spec, "/recommend")
    assert schema["anyOf"] == [{"required": ["user_id"]}, {"required": ["anonymous_id"]}]
    assert "required" not in schema
    example = schema["example"]
    assert RecommendRequest.model_validate(example).person == example["user_id"]


def test_events_documents_one_event_or_a_list(spec) -> None:
    schema = _request_schema(spec, "/events")
    assert [branch["type"] for branch in schema["oneOf"]] == ["array", "object"]


def test_error_schemas_declare_detail_as_an_object(spec) -> None:
    """issue #10 item 16: detail was documented (and sent) as JSON text."""
    schemas = spec["components"]["schemas"]
    for name in ("InvalidArgument", "NotFound", "PayloadTooLarge", "UnsupportedMediaType"):
        assert schemas[name]["properties"]["detail"]["type"] == "object", name
        assert schemas[name]["required"] == ["error"]
    responses = spec["paths"]["/events"]["post"]["responses"]
    assert responses[413]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PayloadTooLarge"
    }


def test_documented_patterns_are_what_the_models_check(spec) -> None:
    """issue #10 item 10: ``country: "00"`` fit the documented string of length 2, and
    whitespace was stripped before the length check (``" "`` documented valid, rejected)."""
    country = spec["components"]["schemas"]["RequestContext"]["properties"]["country"]
    user_id = _request_schema(spec, "/segment")["properties"]["user_id"]
    for value, documented in (("us", True), ("00", False), ("u1", False), (" us", False)):
        assert bool(re.search(country["pattern"], value)) is documented, value
        try:
            RequestContext(country=value)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is documented, value
    for value, documented in (("u1", True), ("a b", True), (" ", False), (" u1", False)):
        assert bool(re.search(user_id["pattern"], value)) is documented, value
        for model, field in ((SegmentRequest, "user_id"), (SimilarItemsRequest, "item_id")):
            try:
                model.model_validate({field: value})
                accepted = True
            except ValidationError:
                accepted = False
            assert accepted is documented, (model, value)
    with pytest.raises(ValidationError, match="no space at either end"):
        SegmentRequest(user_id="u1 ")


def test_top_level_optional_fields_are_left_out_not_null(spec) -> None:
    """issue #10 item 10: ``device_type: null`` was accepted while documented as an enum."""
    schema = _request_schema(spec, "/recommend")
    assert schema["properties"]["device_type"]["type"] == "string"  # BentoML drops the null
    for field in ("device_type", "user_id", "anonymous_id"):
        body = {"user_id": "u1", "anonymous_id": "a1", field: None}
        with pytest.raises(ValidationError, match=f"{field} may be left out but not null"):
            RecommendRequest.model_validate(body)
    assert RecommendRequest.model_validate({"user_id": "u1"}).device == "other"
    # inside context the document declares null, and null is accepted
    assert {"type": "null"} in spec["components"]["schemas"]["RequestContext"]["properties"][
        "device_type"
    ]["anyOf"]
    assert RequestContext.model_validate({"device_type": None}).device_type is None


def test_events_documents_202_queued_and_503_retry_later(spec) -> None:
    """issue #11: /events answers 202 once the broker confirmed, 503 when it cannot take them."""
    responses = spec["paths"]["/events"]["post"]["responses"]
    assert 200 not in responses and "200" not in responses
    accepted = responses[202]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/EventsResponseIODescriptor"}
    documented = spec["components"]["schemas"]["EventsResponseIODescriptor"]["properties"]
    assert set(documented) == {"accepted", "rejected", "suppressed", "rejections"}  # + #12
    assert "Retry-After" in responses[503]["description"]
    assert responses[503]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceUnavailable"
    }
    assert "202" in spec["info"]["description"] and "Retry-After" in spec["info"]["description"]
