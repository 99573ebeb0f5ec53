"""Where a Tailor workspace keeps its data, feature store, runs and models.

Every path comes from one place so that later work (erasure across every store, the scale
profile) has a single map of where a person's data can live. Nothing here runs at import time:
commands call :meth:`Workspace.from_env` and then :meth:`Workspace.ensure`. The workspace carries
the :class:`~features.settings.Settings` it was made with, so the feature store and the online
read follow the same settings as the command or service that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from features.settings import PROFILES, Settings


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. ``home`` holds everything; ``profile`` picks the store backends."""

    home: Path
    profile: str = "local"
    tracking_uri: str | None = None  # MLflow store; None means SQLite inside ``home``
    settings: Settings = field(default_factory=Settings, repr=False)  # default: every default

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")

    @classmethod
    def from_env(
        cls,
        home: str | Path | None = None,
        profile: str | None = None,
        settings: Settings | None = None,
    ) -> Workspace:
        """Build from arguments, else ``settings`` (default: :meth:`Settings.from_env`, read
        here, by the command that asks): ``TAILOR_HOME``, ``TAILOR_PROFILE``,
        ``MLFLOW_TRACKING_URI``. Read once, here: MLflow itself writes ``MLFLOW_TRACKING_URI``
        into the environment when a store is chosen, so reading it later would follow whichever
        workspace was used last in this process."""
        settings = Settings.from_env() if settings is None else settings
        return cls(
            home=Path(home or settings.home).expanduser().resolve(),
            profile=profile or settings.profile,
            tracking_uri=settings.mlflow_tracking_uri,
            settings=settings,
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

    # -- the real-time path (issue #11) ------------------------------------------------------
    @property
    def database_url(self) -> str:
        """The workspace database (identity graph, session store on the local profile): the
        configured URL, else PostgreSQL on the scale profile, else SQLite inside ``home``."""
        if self.settings.database_url:
            return self.settings.database_url
        if self.profile == "scale":
            return self.settings.postgres_url
        return f"sqlite:///{self.home / 'tailor.db'}"

    @property
    def queue_dir(self) -> Path:
        """The embedded durable event queue (used when no broker URL is configured)."""
        return self.home / "queue"

    @property
    def spool_dir(self) -> Path:
        """Events accepted while the broker was unreachable, forwarded when it returns."""
        return self.home / "spool"

    @property
    def secrets_dir(self) -> Path:
        """Generated secrets (the cookie-signing key), readable by the owner only."""
        return self.home / "secrets"

    @property
    def privacy_dir(self) -> Path:
        """Erasure receipts, the erasure journal and the minimal proofs of erasure (issue #13)."""
        return self.home / "privacy"

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
