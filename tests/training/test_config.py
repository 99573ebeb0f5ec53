"""Training config: dataclass defaults → YAML spec → ``--set``, and the errors for bad input."""

import dataclasses
from pathlib import Path

import pytest
from pydantic import field_validator
from pydantic.dataclasses import dataclass

from features.yaml_files import FILE_CONFIG, reject_bool_numbers, validate
from models.errors import ConfigError
from models.registry import build
from training.config import (
    TrainConfig,
    load_layers,
    load_train_config,
    parse_sets,
)

FIELD_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_spec_or_sets() -> None:
    config = load_train_config()
    assert config == TrainConfig()
    assert config.model == "ease"
    assert config.params == {}
    assert config.baseline == "popularity"
    assert config.test_days == 7
    assert config.k == 10
    assert config.register is True
    assert config.seed == 42


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().k = 5  # type: ignore[misc]


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        "model: popularity\nk: 20\nregister: false\nparams:\n  weighting: count\n",
    )
    config = load_train_config(spec)
    assert config.model == "popularity"
    assert config.k == 20
    assert config.register is False
    assert config.params == {"weighting": "count"}
    assert config.test_days == 7  # untouched default
    assert config.seed == 42


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_train_config(_spec(tmp_path, "")) == TrainConfig()


def test_yaml_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "- model\n- ease\n")
    with pytest.raises(ConfigError, match=r"the top level, value \['model', 'ease'\]: expected a"):
        load_train_config(spec)


def test_set_overrides_yaml(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "k: 20\ntest_days: 3\n")
    config = load_train_config(spec, ["k=5"])
    assert config.k == 5
    assert config.test_days == 3


def test_set_coerces_text_to_int_and_bool() -> None:
    config = load_train_config(
        sets=["k=25", "test_days=3", "seed=7", "register=false", "model=popularity"]
    )
    assert config.k == 25 and type(config.k) is int
    assert config.test_days == 3 and type(config.test_days) is int
    assert config.seed == 7
    assert config.register is False
    assert config.model == "popularity"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("True", True), ("1", True), ("yes", True)]
    + [("false", False), ("FALSE", False), ("0", False), ("no", False)],
)
def test_set_bool_spellings(text: str, expected: bool) -> None:
    assert load_train_config(sets=[f"register={text}"]).register is expected


@dataclass(frozen=True, config=FILE_CONFIG)
class _Floats:
    alpha: float = 0.0
    beta: float | None = None

    _no_bool_numbers = field_validator("*", mode="before")(reject_bool_numbers)


@pytest.mark.parametrize(
    ("value", "expected"), [("0.5", 0.5), ("1e-3", 0.001), (2, 2.0), (0.25, 0.25)]
)
def test_float_fields_take_numbers_and_number_text(value: object, expected: float) -> None:
    coerced = validate(_Floats, {"alpha": value}, ConfigError, "spec.yaml").alpha
    assert coerced == expected
    assert type(coerced) is float
    assert load_layers(_Floats, None, [f"alpha={value}"]).alpha == expected


def test_optional_float_accepts_null_and_numbers() -> None:
    assert validate(_Floats, {"beta": None}, ConfigError, "spec.yaml").beta is None
    assert load_layers(_Floats, None, ["beta=1.5"]).beta == 1.5


@pytest.mark.parametrize("value", ["abc", True])
def test_float_fields_reject_non_numbers(value: object) -> None:
    with pytest.raises(ConfigError, match=r"key 'alpha', value .*: expected a number"):
        validate(_Floats, {"alpha": value}, ConfigError, "spec.yaml")


def test_set_whitespace_around_key_and_value_is_stripped() -> None:
    assert load_train_config(sets=[" k = 12 "]).k == 12


def test_set_value_may_contain_equals_sign() -> None:
    assert load_train_config(sets=["experiment=a=b"]).experiment == "a=b"


def test_set_params_lands_in_params_with_yaml_types() -> None:
    config = load_train_config(sets=["params.l2=200", "params.implicit=false"])
    assert config.params == {"l2": 200, "implicit": False}
    assert "l2" not in FIELD_NAMES  # not a top-level field
    # The model accepts it: ints are taken as floats for float parameters.
    assert build("ease", config.params).config.l2 == 200.0


def test_set_params_merge_with_yaml_params(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "params:\n  l2: 50.0\n  implicit: true\n")
    config = load_train_config(spec, ["params.l2=200.5"])
    assert config.params == {"l2": 200.5, "implicit": True}


def test_unknown_key_from_set_names_the_key_and_lists_allowed() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_train_config(sets=["epochs=3"])
    message = str(excinfo.value)
    assert "--set: key 'epochs', value '3': unknown key" in message
    assert "allowed:" in message
    for name in FIELD_NAMES:
        assert f"{name}:" in message
    assert "test_days: int" in message
    assert "register: bool" in message


def test_unknown_key_from_yaml_names_the_key(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "model: ease\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as caught:
        load_train_config(spec)
    assert str(caught.value).startswith(
        f"{spec}: key 'learning_rate', value 0.1: unknown key; allowed: model: str"
    )


@pytest.mark.parametrize(
    ("sets", "pattern"),
    [
        (["k=ten"], r"--set: key 'k', value 'ten': expected an integer"),
        (["test_days=2.5"], r"key 'test_days', value '2.5': expected an integer"),
        (["register=maybe"], r"key 'register', value 'maybe': expected a boolean"),
    ],
)
def test_wrong_type_from_set_names_key_and_value(sets: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_train_config(sets=sets)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("k: 5.5\n", r"train.yaml: key 'k', value 5\.5: expected an integer"),
        ("test_days: true\n", r"key 'test_days', value True: expected an integer"),
        ("model: 5\n", r"key 'model', value 5: expected text"),
        ("params: [1, 2]\n", r"key 'params', value \[1, 2\]: expected a mapping"),
        ("register: sometimes\n", r"key 'register', value 'sometimes': expected a boolean"),
    ],
)
def test_wrong_type_from_yaml_names_key_and_value(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_train_config(_spec(tmp_path, text))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("item", ["k", "params.l2", ""])
def test_malformed_set_is_an_error(item: str) -> None:
    with pytest.raises(ConfigError, match=r"--set .*expected key=value"):
        load_train_config(sets=[item])


def test_parse_sets_splits_on_first_equals() -> None:
    assert parse_sets(["a=1", "params.l2=200", "b=x=y"]) == {
        "a": "1",
        "params.l2": "200",
        "b": "x=y",
    }


def test_errors_name_the_layer_the_key_path_the_value_and_the_allowed_keys(tmp_path: Path) -> None:
    """issue #10 (one shape): the train spec is a pydantic dataclass with unknown keys forbidden;
    an error names its layer (the file, or --set), the key path, the value and what is allowed."""
    spec = _spec(tmp_path, "k: 20\n")
    with pytest.raises(ConfigError) as caught:
        load_train_config(spec, ["params.l2=200", "alias=3", "modl=ease"])
    assert str(caught.value).startswith("--set: key 'modl', value 'ease': unknown key; allowed:")
    spec.write_text("register: maybe\n")
    with pytest.raises(ConfigError) as caught:
        load_train_config(spec, ["k=5"])
    assert str(caught.value) == (
        f"{spec}: key 'register', value 'maybe': expected a boolean (true/false)"
    )
