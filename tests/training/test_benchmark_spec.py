"""Benchmark specs: parameters chosen elsewhere, checked on load."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from training.benchmark import load_spec, make_split


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
        ("params:\n  magic: {}\n", "unknown model 'magic'"),
        ("params:\n  ease: {l3: 1}\n", "l3"),
        ("protcol: msr\n", "unknown key 'protcol'"),
        ("k: ten\n", "k='ten'"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, ValueError), match=message):
        load_spec(path)


def test_unknown_protocol_lists_the_allowed_ones():
    import pandas as pd

    with pytest.raises(ValueError, match="allowed: msr, recbole, temporal, leave-last-out"):
        make_split(pd.DataFrame(), "kfold")
