"""Every runtime dependency pyproject.toml declares is imported by the product's code (issue #10,
"dead code out": ``optuna-integration`` was declared and installed but never imported)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions

from tests.test_layers import ROOT, imported_modules

#: The packages that make up the product (experiments and tests have their own extras).
PRODUCT = ("features", "feature_repo", "models", "training", "serving", "cli")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_normalized(re.split(r"[<>=!~\[ ;]", d)[0]) for d in project["dependencies"]}
    top_levels = {
        name.split(".")[0]
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        for _, name in imported_modules(path)
    }
    distributions = packages_distributions()
    imported = {_normalized(d) for top in top_levels for d in distributions.get(top, [])}
    unused = sorted(declared - imported)
    assert not unused, f"declared in pyproject.toml but never imported: {', '.join(unused)}"
