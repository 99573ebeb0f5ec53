"""API keys with roles, stored as keyed hashes in the workspace database (issue #13).

A key is ``tk_<key_id>_<secret>``: ``key_id`` (8 hex characters) names it in ``tailor keys
list`` and the audit log; the whole key is shown once, by ``tailor keys create``, and never
stored. The table ``api_keys`` keeps ``HMAC-SHA-256(pepper, key)``, the pepper being a random
secret in ``<home>/secrets/api_key_pepper`` (outside the database: a copy of the database alone
cannot test guesses). A keyed hash, not Argon2: keys are 256-bit random values, so a slow hash
adds no protection against guessing (there is nothing to guess from a dictionary) while Argon2's
~50 ms per check would cap a worker at ~20 authenticated requests a second; the HMAC costs ~2 µs,
and a verified key is cached for :data:`CACHE_SECONDS` (a revoked key stops working within that
time in every worker).

Roles: ``collector`` (``/events``, ``/identify``), ``app`` (``/recommend``, ``/similar_items``,
``/segment``) and ``admin`` (every endpoint, consent administration, the debug view, metrics).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from features.database import engine as database_engine
from features.security.secret_files import workspace_secret
from features.workspace import Workspace
from models.errors import TailorError

ROLES = ("collector", "app", "admin")
PEPPER_FILE = "api_key_pepper"
KEY_PREFIX = "tk_"
#: Seconds a verified (or unknown) key's answer is reused by one process.
CACHE_SECONDS = 5.0
#: Most cached answers (unknown keys included, so a flood of random keys cannot grow it).
CACHE_SIZE = 10_000

_metadata = sa.MetaData()
API_KEYS = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


class ApiKeyError(TailorError):
    """A key command's mistake: an unknown role, an unknown key id."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the key itself)."""

    key_id: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``key`` is shown once and then forgotten."""

    key: str
    stored: ApiKey


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    return role


class KeyStore:
    """The ``api_keys`` table of one database, hashed with one pepper."""

    def __init__(self, engine: sa.Engine, pepper: str, *, clock=time.monotonic) -> None:
        self.engine = engine
        self._pepper = pepper.encode()
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()
        _metadata.create_all(engine, checkfirst=True)

    @classmethod
    def for_workspace(cls, ws: Workspace) -> KeyStore:
        pepper = workspace_secret(ws.secrets_dir, PEPPER_FILE, f"a new {PEPPER_FILE}")
        return cls(database_engine(ws.database_url), pepper)

    def hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    def create(self, role: str, name: str | None = None) -> CreatedKey:
        """A new key of ``role``; ``name`` (default ``<role>-<key_id>``) labels it."""
        check_role(role)
        key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        stored = ApiKey(key_id, role, name or f"{role}-{key_id}", datetime.now(UTC))
        with self.engine.begin() as connection:
            connection.execute(
                API_KEYS.insert().values(
                    key_id=key_id,
                    key_hash=self.hash(key),
                    role=role,
                    name=stored.name,
                    created_at=stored.created_at,
                )
            )
        return CreatedKey(key, stored)

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as connection:
            rows = connection.execute(API_KEYS.select().order_by(API_KEYS.c.created_at)).all()
        return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key ``key_id`` (its id as listed, or a whole key); revoking twice is
        harmless. An unknown id is a :class:`ApiKeyError`."""
        if key_id.startswith(KEY_PREFIX):
            key_id = key_id[len(KEY_PREFIX) :].split("_", 1)[0]
        with self.engine.begin() as connection:
            row = connection.execute(API_KEYS.select().where(API_KEYS.c.key_id == key_id)).first()
            if row is None:
                known = [k.key_id for k in self.list()]
                raise ApiKeyError(f"no key {key_id!r}; keys: {', '.join(known) or 'none'}")
            if row.revoked_at is None:
                connection.execute(
                    API_KEYS.update()
                    .where(API_KEYS.c.key_id == key_id)
                    .values(revoked_at=datetime.now(UTC))
                )
        with self._lock:
            self._cache.clear()
        return next(k for k in self.list() if k.key_id == key_id)

    def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, else None (unknown, malformed or revoked)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 128:
            return None
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        digest = self.hash(key)
        with self.engine.connect() as connection:
            row = connection.execute(API_KEYS.select().where(API_KEYS.c.key_hash == digest)).first()
        found = _key(row) if row is not None and row.revoked_at is None else None
        # a constant-time look at the hash is not needed: the database finds it by equality,
        # and what an attacker could time is the hash of their own guess
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (now, found)
        return found


def _key(row) -> ApiKey:
    return ApiKey(row.key_id, row.role, row.name, _utc(row.created_at), _utc(row.revoked_at))


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite gives naive datetimes back
