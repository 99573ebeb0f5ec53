"""The workspace database: one SQLAlchemy engine per URL (issue #11).

SQLite ``<home>/tailor.db`` on the embedded default, PostgreSQL on the scale profile
(:attr:`features.workspace.Workspace.database_url`). The identity graph and the embedded session
store keep their tables here; each module creates its own tables with SQLAlchemy Core, so the same
code runs on both. SQLite gets WAL mode and a busy timeout so the service, ``tailor consume`` and
commands share it across processes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine(url: str) -> sa.Engine:
    """The process's engine for ``url`` (made once; the SQLite file's folder is created)."""
    with _lock:
        found = _engines.get(url)
        if found is not None:
            return found
        made = sa.make_url(url)
        if made.get_backend_name() == "sqlite":
            if made.database and made.database != ":memory:":
                Path(made.database).parent.mkdir(parents=True, exist_ok=True)
            created = sa.create_engine(made, connect_args={"timeout": 30})
            sa.event.listen(created, "connect", _sqlite_pragmas)
        else:
            if made.get_driver_name() == "psycopg":
                import psycopg  # noqa: F401 - the driver of the scale profile's postgresql+psycopg URLs

            created = sa.create_engine(made, pool_pre_ping=True)
        _engines[url] = created
        return created


_create_lock = threading.Lock()


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """Create ``metadata``'s tables in ``engine`` if missing. Two processes may race between
    the check and the create: the loser's error is retried (five tries, short back-off)."""
    with _create_lock:
        for attempt in range(5):
            try:
                metadata.create_all(engine, checkfirst=True)
                return
            except sa.exc.DBAPIError:  # another process created one between check and create
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
