"""Layer rules: imports follow the data flow ``features → training → (registry) → serving``, with
``models`` below both (issue #10, "one shape": layer rules checked by a test).

Every ``.py`` file of each package is parsed with `ast`; every ``import`` and ``from ... import``
counts, wherever it stands (module level, inside a function, under ``TYPE_CHECKING``), and so
does ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Top-level packages each layer must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    # Models get arrays and report through callbacks; tracking, tuning, features and serving
    # plug in from outside.
    "models": frozenset(
        {"mlflow", "feast", "bentoml", "optuna", "features", "feature_repo", "training", "serving"}
    ),
    "features": frozenset({"models", "training", "serving", "mlflow", "bentoml", "optuna"}),
    "training": frozenset({"serving"}),
    "serving": frozenset({"training"}),
}

#: Modules allowed to break a rule, by (layer, imported package). None: the CLI, the composition
#: root that may import every layer, lives in its own package ``cli/`` (issue #10).
ALLOWED: dict[tuple[str, str], frozenset[str]] = {}
#: The layers no library layer may import: only the composition root imports them.
FORBIDDEN_TO_ALL_LAYERS = frozenset({"cli"})


#: Modules every layer may import although their package is forbidden to it: the error family
#: (`models.errors`, which imports nothing), so one `TailorError` base serves every layer.
SHARED_MODULES = frozenset({"models.errors"})


def _package_of(path: Path) -> list[str]:
    """Dotted package parts of a module file, relative to the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1]  # a module's package; for __init__.py, the package itself


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted module name)`` of every import in the file ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's own package
                base = _package_of(path)[: len(_package_of(path)) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(layer: str, files: list[Path] | None = None) -> list[str]:
    """``path:line imports name`` for every import of ``layer``'s files that breaks its rule."""
    files = files if files is not None else sorted((ROOT / layer).rglob("*.py"))
    out = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top not in FORBIDDEN[layer] | FORBIDDEN_TO_ALL_LAYERS or name in SHARED_MODULES:
                continue
            if relative in ALLOWED.get((layer, top), frozenset()):
                continue
            out.append((relative, line, name))
    return [f"{path}:{line} imports {name}" for path, line, name in sorted(out)]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_follow_the_data_flow(layer: str) -> None:
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no Python files under {layer}/"
    found = violations(layer, files)
    assert not found, (
        f"{layer} must not import {', '.join(sorted(FORBIDDEN[layer]))}:\n" + "\n".join(found)
    )


def test_allow_list_names_existing_modules_only() -> None:
    """A stale entry would silently allow a future file of that name."""
    for modules in ALLOWED.values():
        missing = sorted(m for m in modules if not (ROOT / m).is_file())
        assert not missing, f"allow-list names modules that do not exist: {missing}"


def test_a_forbidden_import_anywhere_in_a_file_is_found(tmp_path: Path) -> None:
    """The checker sees module-level, function-level, aliased, dotted and dynamic imports."""
    module = tmp_path / "example.py"
    module.write_text(
        "import numpy as np\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import optuna\n"
        "def load():\n"
        "    from mlflow.tracking import MlflowClient\n"
        "    import feast as f\n"
        "    return importlib.import_module('bentoml')\n"
        "class Model:\n"
        "    def fit(self):\n"
        "        from training import tracking\n",
        encoding="utf-8",
    )
    shared = tmp_path / "shared.py"
    shared.write_text("from models.errors import DataError\nfrom models.ease import EASE\n")
    assert violations("features", [shared]) == [f"{shared}:2 imports models.ease"]
    assert violations("models", [module]) == [
        f"{module}:4 imports optuna",
        f"{module}:6 imports mlflow.tracking",
        f"{module}:7 imports feast",
        f"{module}:8 imports bentoml",
        f"{module}:11 imports training",
    ]


# -- one import path per name ------------------------------------------------------------------

#: The packages whose modules are checked, and the folders whose imports of them are checked.
PACKAGES = ("features", "feature_repo", "models", "training", "serving", "cli")
IMPORTERS = (*PACKAGES, "tests", "experiments")
#: ``module.name`` imported from a module that only imports it. ``cli.app.app``: the Typer app is
#: made in ``cli.common`` (every command module registers on it), and ``cli.app`` is the one place
#: that imports every command module, so the app with all its commands is taken from there.
SECOND_PATHS_ALLOWED = frozenset({"cli.app.app"})


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if path.name == "__init__.py" else parts)


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module binds itself at top level (not by importing them)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _project_modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[_module_of(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


def second_import_paths(
    modules: dict[str, tuple[Path, ast.Module]], files: list[Path]
) -> list[str]:
    """``path:line: from M import N`` where project module ``M`` does not define ``N`` itself
    (``N`` only passes through ``M``'s own imports: a second path to a name)."""
    defined = {name: _defined_names(tree) for name, (_, tree) in modules.items()}
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in defined:
                continue
            for alias in node.names:
                qualified = f"{node.module}.{alias.name}"
                if alias.name in defined[node.module] or qualified in modules:
                    continue  # defined there, or a submodule
                if qualified in SECOND_PATHS_ALLOWED:
                    continue
                found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_each_name_has_one_import_path() -> None:
    """Issue #10: no re-export shims; every import names the module that defines the name."""
    modules = _project_modules()
    files = [p for folder in IMPORTERS for p in sorted((ROOT / folder).rglob("*.py"))]
    found = second_import_paths(modules, files)
    assert not found, "import these names from the module that defines them:\n" + "\n".join(found)


def test_no_module_lists_a_name_it_does_not_define_in_all() -> None:
    """A name in ``__all__`` that the module only imports is a re-export: a second path."""
    found = []
    for name, (_, tree) in _project_modules().items():
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                listed = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
                foreign = sorted(
                    n
                    for n in set(listed) - _defined_names(tree)
                    if f"{name}.{n}" not in SECOND_PATHS_ALLOWED
                )
                if foreign:
                    found.append(f"{name}: {', '.join(foreign)}")
    assert not found, "__all__ re-exports:\n" + "\n".join(found)


def test_a_second_import_path_is_found(tmp_path: Path) -> None:
    caller = tmp_path / "caller.py"
    caller.write_text(
        "from models.interactions import IdMap\n"
        "def f():\n"
        "    from models.base import Interactions, Recommender\n",
        encoding="utf-8",
    )
    modules = _project_modules()
    assert second_import_paths(modules, [caller]) == [
        f"{caller}:3: from models.base import Interactions"
    ]


def test_each_module_basename_is_used_once() -> None:
    """Issue #10: ``metrics``, ``patterns``, ``personas`` and ``ranking`` each named modules in
    several packages; a module's file name says which one it is."""
    seen: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py":
                seen.setdefault(path.name, []).append(path.relative_to(ROOT).as_posix())
    repeated = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not repeated, repeated
