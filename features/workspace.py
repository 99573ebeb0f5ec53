"""Where a Tailor workspace keeps its data, feature store, runs and models.

Every path comes from one place so that later work (erasure across every store, the scale
profile) has a single map of where a person's data can live. Nothing here runs at import time:
commands call :meth:`Workspace.from_env` and then :meth:`Workspace.ensure`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TAILOR_HOME"
PROFILE_ENV = "TAILOR_PROFILE"
DEFAULT_HOME = "data"
PROFILES = ("local", "scale")


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. ``home`` holds everything; ``profile`` picks the store backends."""

    home: Path
    profile: str = "local"
    tracking_uri: str | None = None  # MLflow store; None means SQLite inside ``home``

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")

    @classmethod
    def from_env(cls, home: str | Path | None = None, profile: str | None = None) -> Workspace:
        """Build from arguments, else ``$TAILOR_HOME`` / ``$TAILOR_PROFILE`` /
        ``$MLFLOW_TRACKING_URI``, else defaults. Read once, here: MLflow itself writes
        ``MLFLOW_TRACKING_URI`` into the environment when a store is chosen, so reading it later
        would follow whichever workspace was used last in this process."""
        chosen = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(
            home=Path(chosen).expanduser().resolve(),
            profile=profile or os.environ.get(PROFILE_ENV) or "local",
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
        )

    # -- raw inputs -------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """Downloaded or generated source files (data-set caches, generated clickstreams)."""
        return self.home / "raw"

    # -- the event log ----------------------------------------------------------------------
    @property
    def event_log_dir(self) -> Path:
        """Append-only Parquet event log, partitioned by ``event_date``."""
        return self.home / "events"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected rows, one JSON Lines file per ingestion, with row number, field and reason."""
        return self.home / "quarantine"

    # -- features ---------------------------------------------------------------------------
    @property
    def feast_dir(self) -> Path:
        """The workspace's Feast repo: rendered ``feature_store.yaml``, registry, online store."""
        return self.home / "feast"

    @property
    def feature_data_dir(self) -> Path:
        """Feature Parquet files read by the Feast file sources (relative to ``feast_dir``)."""
        return self.feast_dir / "data"

    # -- training and tracking --------------------------------------------------------------
    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """The configured tracking URI, else a SQLite store inside the workspace."""
        return self.tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts_uri(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def models_dir(self) -> Path:
        """Scratch space for model files before they are logged to MLflow."""
        return self.home / "models"

    def ensure(self) -> Workspace:
        """Create the folders; commands call this, importing never does."""
        for path in (
            self.raw_dir,
            self.event_log_dir,
            self.quarantine_dir,
            self.feature_data_dir,
            self.mlflow_dir,
            self.models_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self
