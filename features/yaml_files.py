"""Reading a YAML configuration file: the one a user names, else the one packaged with Tailor.

Shared by the rule files (``serving/rules.yaml``, ``features/personas.yaml``) so each reports a
missing file and broken YAML the same way, naming the file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any


def read_yaml(
    path: str | Path | None, package: str, name: str, error: type[Exception], what: str
) -> tuple[Any, str]:
    """``(document, origin)``: the YAML at ``path``, or the packaged ``package/name`` when
    ``path`` is None; ``error`` is raised for a missing file (``"<what> not found"``) or
    invalid YAML."""
    import yaml

    if path is None:
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
        origin = f"{package}/{name}"
    else:
        path = Path(path)
        if not path.is_file():
            raise error(f"{what} not found: {path}")
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{path}: cannot read the {what}: {exc}") from None
    try:
        return yaml.safe_load(text), origin
    except yaml.YAMLError as exc:
        # One line: where and what the parser found, not its multi-line excerpt of the file.
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise error(f"{origin}: not valid YAML{line}: {problem}") from None
