"""The saved-model format: what `Recommender.save` writes and `Recommender.load` reads.

A saved model is a folder of ``config.json`` (registry name, config fields, format version),
``ids.npz`` (the user and item id maps), ``weights.npz`` (the model's `_get_state` arrays) and
``train_user_items.npz`` (the training matrix). Everything is JSON or plain arrays, so loading
never unpickles code. `read_saved_meta` lets `models.registry` pick the class before loading.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import scipy.sparse as sp

from models.interactions import IdMap

if TYPE_CHECKING:
    from models.base import Recommender

    R = TypeVar("R", bound=Recommender)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
IDS_FILE = "ids.npz"
WEIGHTS_FILE = "weights.npz"
TRAIN_FILE = "train_user_items.npz"


def read_saved_meta(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` written by `Recommender.save`.

    Keys: ``model`` (registry name), ``config`` (config fields) and ``format_version``.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved model in {directory}: {CONFIG_FILE} is missing")
    meta = json.loads(path.read_text())
    for key in ("model", "config", "format_version"):
        if key not in meta:
            raise ValueError(f"{path} has no {key!r} entry; is it a saved Tailor model?")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {meta['format_version']!r}; "
            f"this code reads {FORMAT_VERSION}"
        )
    return meta


def write_model(model: Recommender, directory: str | Path) -> None:
    """Write a fitted ``model`` into ``directory`` (created if needed); see the module docstring."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model.name,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(model.config),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    np.savez(
        directory / IDS_FILE, users=model.users.ids.astype(str), items=model.items.ids.astype(str)
    )
    np.savez(directory / WEIGHTS_FILE, **model._get_state())
    sp.save_npz(directory / TRAIN_FILE, model.train_user_items, compressed=False)


def read_model(cls: type[R], directory: str | Path) -> R:
    """A ``cls`` model read from ``directory``; ``ValueError`` when it holds another model."""
    directory = Path(directory)
    meta = read_saved_meta(directory)
    if meta["model"] != cls.name:
        raise ValueError(
            f"{directory} holds a {meta['model']!r} model, not {cls.name!r}; "
            "use models.registry.load_model to load any model"
        )
    model = cls(cls.config_class(**meta["config"]))
    with np.load(directory / IDS_FILE, allow_pickle=False) as ids:
        model.users = IdMap(ids["users"])
        model.items = IdMap(ids["items"])
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as weights:
        state = {key: weights[key] for key in weights.files}
    model.train_user_items = sp.csr_matrix(sp.load_npz(directory / TRAIN_FILE), dtype=np.float32)
    model._set_state(state)
    return model
