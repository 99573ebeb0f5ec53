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
        text, origin = path.read_text(encoding="utf-8"), str(path)
    try:
        return yaml.safe_load(text), origin
    except yaml.YAMLError as exc:
        raise error(f"{origin}: not valid YAML: {exc}") from None
