"""Fetching data-set files out of registry wheels into a local cache folder.

:func:`fetch` runs ``pip download`` for the wheel that ships a data set (never installs it),
copies the data files into ``<raw_dir>/<name>/`` and leaves them there as a cache; files already
there (for MovieLens also GroupLens files copied in by hand) are used without a download.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from features.datasets.cdnow import CDNOW_FILE
from features.datasets.movielens import GROUPLENS_FILES, RECBOLE_FILES
from features.datasets.types import DatasetFetchError, DatasetUnreachableError

logger = logging.getLogger(__name__)

DATASETS = ("movielens-100k", "cdnow")
_PIP_TIMEOUT_S = 300
#: How an unreachable-registry error starts (tests skip on it, and only on it).
UNREACHABLE = "the package registry could not be reached: "
#: What pip prints when it never got an answer from the registry (as opposed to an answer that
#: says no such wheel): connection refused or reset, name resolution, time-outs, proxies.
_UNREACHABLE_MARKERS = (
    "NewConnectionError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
)


@dataclass(frozen=True)
class _WheelSource:
    package: str
    version: str
    members: tuple[tuple[str, str], ...]  # (path inside the wheel, cached file name)
    by_hand: str  # how to supply the files without pip, {folder} filled in


_SOURCES = {
    "movielens-100k": _WheelSource(
        package="recbole",
        version="1.2.1",
        members=tuple((f"recbole/dataset_example/ml-100k/{f}", f) for f in RECBOLE_FILES),
        by_hand=(
            "unzip ml-100k.zip from https://grouplens.org/datasets/movielens/100k/ and copy "
            "u.data, u.user and u.item into {folder} (or load that folder directly with "
            "load_movielens_grouplens)"
        ),
    ),
    "cdnow": _WheelSource(
        package="lifetimes",
        version="0.11.3",
        members=((f"lifetimes/datasets/{CDNOW_FILE}", CDNOW_FILE),),
        by_hand=f"copy {CDNOW_FILE} (customer id, YYYYMMDD date, CDs, dollars) into {{folder}}",
    ),
}


def fetch(name: str, raw_dir: Path, *, force: bool = False) -> Path:
    """Make sure data set ``name`` is cached under ``raw_dir / name`` and return that folder.

    Files already there are used as they are (no download) unless ``force`` is set. For
    MovieLens, GroupLens files copied there by hand count as cached too.
    """
    source = _source(name)
    folder = Path(raw_dir) / name
    if not force and _is_cached(name, folder):
        logger.debug("using cached %s in %s", name, folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailor-wheel-") as tmp:
        wheel = _download_wheel(name, source, folder, Path(tmp))
        _extract_members(name, source, wheel, folder)
    logger.info("fetched %s from %s==%s into %s", name, source.package, source.version, folder)
    return folder


def _source(name: str) -> _WheelSource:
    if name not in _SOURCES:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    return _SOURCES[name]


def _is_cached(name: str, folder: Path) -> bool:
    wheel_files = [folder / target for _, target in _SOURCES[name].members]
    if all(p.is_file() for p in wheel_files):
        return True
    return name == "movielens-100k" and all((folder / f).is_file() for f in GROUPLENS_FILES)


def _download_wheel(name: str, source: _WheelSource, folder: Path, dest: Path) -> Path:
    """``pip download`` the source's wheel (no dependencies, wheels only) into ``dest``."""
    requirement = f"{source.package}=={source.version}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        requirement, "-d", str(dest),
    ]  # fmt: skip
    by_hand = source.by_hand.format(folder=folder)
    logger.info("downloading %s to fetch %s", requirement, name)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:  # the registry never answered in time
        raise DatasetUnreachableError(
            f"{UNREACHABLE}pip download of {requirement} for data set {name!r} timed out: {exc}. "
            f"To supply the files by hand, {by_hand}."
        ) from exc
    except OSError as exc:  # pip itself would not run: a defect of this machine, not the network
        raise DatasetFetchError(
            f"could not run pip to download {requirement} for data set {name!r}: {exc}. "
            f"To supply the files by hand, {by_hand}."
        ) from exc
    if result.returncode != 0:
        lines = (result.stderr or result.stdout or "").strip().splitlines()
        logger.info("pip download %s said:\n%s", requirement, "\n".join(lines[-15:]))
        said = next((line.strip() for line in reversed(lines) if line.strip()), "nothing")
        unreachable = any(marker in line for line in lines for marker in _UNREACHABLE_MARKERS)
        raise (DatasetUnreachableError if unreachable else DatasetFetchError)(
            f"{UNREACHABLE if unreachable else ''}cannot fetch data set {name!r}: pip download "
            f"{requirement} failed (exit code {result.returncode}; pip said: {said}). Check the "
            f"network or the package index (PIP_INDEX_URL), or supply the files by hand: {by_hand}."
        )
    prefix = f"{source.package}-{source.version}-".lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if len(wheels) != 1:
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise DatasetFetchError(
            f"pip download of {requirement} left {found} in {dest}, expected one "
            f"{prefix}*.whl. To supply the files by hand, {by_hand}."
        )
    return wheels[0]


def _extract_members(name: str, source: _WheelSource, wheel: Path, folder: Path) -> None:
    """Copy the data files out of the wheel; each lands under a temporary name, then renames."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, target in source.members:
                try:
                    data = archive.read(member)
                except KeyError:
                    raise DatasetFetchError(
                        f"{wheel.name} has no {member}; cannot fetch data set {name!r}. "
                        f"To supply the files by hand, {source.by_hand.format(folder=folder)}."
                    ) from None
                partial = folder / f"{target}.part"
                partial.write_bytes(data)
                os.replace(partial, folder / target)
    except zipfile.BadZipFile as exc:
        raise DatasetFetchError(f"{wheel} is not a valid wheel (zip): {exc}") from exc
