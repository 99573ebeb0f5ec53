"""The one YAML reader and error shape for spec and rule files (issue #10, one shape)."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field

from features.yaml_files import FileModel, read_yaml, validate


class SpecError(ValueError):
    pass


class _Step(FileModel):
    name: str
    size: Annotated[int, Field(ge=1)] = 1


class _Plan(FileModel):
    rate: float = 0.5
    steps: Annotated[tuple[_Step, ...], Field(min_length=1)]


def _message(data: object) -> str:
    with pytest.raises(SpecError) as caught:
        validate(_Plan, data, SpecError, "plan.yaml", entries="steps", entry="step")
    return str(caught.value)


def test_an_entry_is_named_and_a_failed_item_is_not_reported_twice() -> None:
    """issue #10 (one shape): a bad item names its entry; its list is not reported as empty."""
    message = _message({"steps": [{"name": "warm-up", "size": 0}]})
    assert message == "plan.yaml: step 'warm-up', key 'size', value 0: expected an integer >= 1"


def test_an_unknown_key_comes_first_and_lists_the_allowed_keys_with_types() -> None:
    """issue #10 (one shape): a misspelt key is the first problem shown, not the missing one."""
    message = _message({"steps": [{"nme": "x"}]})
    assert message == (
        "plan.yaml: step #1, key 'nme', value 'x': unknown key; allowed: name: str, size: int "
        "(and 1 more problem)"
    )


def test_a_yaml_boolean_is_not_a_number_and_long_values_are_shortened() -> None:
    """issue #10 (one shape): pydantic's lax mode would read ``rate: true`` as 1.0."""
    assert _message({"rate": True, "steps": [{"name": "a"}]}) == (
        "plan.yaml: key 'rate', value True: expected a number"
    )
    message = _message({"rate": "x" * 500, "steps": [{"name": "a"}]})
    assert "value 'xxx" in message and "...: expected a number" in message
    assert len(message) < 300


def test_the_reader_names_the_file_for_a_missing_file_and_broken_yaml(tmp_path) -> None:
    with pytest.raises(SpecError, match="plan not found: .*nope.yaml"):
        read_yaml(tmp_path / "nope.yaml", SpecError, "plan")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [unclosed\n")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        read_yaml(broken, SpecError, "plan")
