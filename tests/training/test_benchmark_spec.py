"""Benchmark specs: parameters chosen elsewhere, checked on load."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from training.benchmark import load_spec
from training.protocols import protocol_split


def test_spec_loads_params_and_selection(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("protocol: recbole\nselection: valid split\nparams:\n  ease: {l2: 250}\n")
    spec = load_spec(path)
    assert (spec.protocol, spec.selection, spec.params) == (
        "recbole",
        "valid split",
        {"ease": {"l2": 250}},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "params:\n  magic: {}\n",
            "key 'params.magic', value {}: unknown model 'magic'; allowed: popularity",
        ),
        (
            "params:\n  ease: {l3: 1}\n",
            "key 'params.ease', value {'l3': 1}: ease: unknown parameter 'l3'",
        ),
        ("protcol: msr\n", "key 'protcol', value 'msr': unknown key; allowed: dataset"),
        ("k: ten\n", "key 'k', value 'ten': expected an integer"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, ValueError), match=message):
        load_spec(path)


def test_a_bad_protocol_in_the_spec_is_refused_on_load_naming_the_file(tmp_path):
    """issue #10 (one shape): the benchmark spec is a pydantic model; a protocol that is not one
    of the four fails when the file is read (before any data set is fetched), naming the file."""
    path = tmp_path / "spec.yaml"
    path.write_text("protocol: kfold\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    assert str(caught.value) == (
        f"{path}: key 'protocol', value 'kfold': "
        "not one of 'msr', 'recbole', 'temporal' or 'leave-last-out'"
    )


def test_unknown_protocol_lists_the_allowed_ones():
    import pandas as pd

    with pytest.raises(ValueError, match="allowed: msr, recbole, temporal, leave-last-out"):
        protocol_split(pd.DataFrame(), "kfold")
