"""Every setting Tailor takes from the environment, in one frozen object (issue #10, one shape).

:meth:`Settings.from_env` is the only reader of ``os.environ`` in the product: commands (through
:meth:`features.workspace.Workspace.from_env`) and the service constructor call it once and pass
the object on; the workspace carries it to the feature store and the online read. Nothing reads
the environment at import time.

Each field is one variable: ``TAILOR_`` + the field name in capitals, except
``mlflow_tracking_uri`` (MLflow's own ``MLFLOW_TRACKING_URI``). An unset or blank variable gives
the field's default. A value that does not parse is a :class:`~models.errors.ConfigError` naming
the variable, the value and what is allowed (every bad variable in one message); a ``TAILOR_*``
variable that is not a setting is logged as a warning naming the closest setting (a typo would
otherwise be ignored in silence).

README's "Configuration" table is :func:`markdown_table` (``python -m features.settings`` prints
it; ``tests/features/test_settings.py`` checks they agree).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from models.errors import ConfigError

logger = logging.getLogger(__name__)

PREFIX = "TAILOR_"
PROFILES = ("local", "scale")


def _flag(value: Any) -> Any:
    """``1`` or ``0`` (the only spellings accepted from the environment); bools pass."""
    if isinstance(value, bool):
        return value
    if value in ("1", "0"):
        return value == "1"
    raise ValueError("not 1 or 0")


Flag = Annotated[bool, BeforeValidator(_flag)]


def _setting(default: Any, meaning: str, allowed: str, env: str | None = None, **checks) -> Any:
    """A field: its default, its meaning (README's table), what a bad value is told is allowed,
    and the variable when it is not ``TAILOR_<NAME>``."""
    extra = {"allowed": allowed, **({"env": env} if env else {})}
    return Field(default, description=meaning, json_schema_extra=extra, **checks)


class Settings(BaseModel):
    """Tailor's settings; ``Settings()`` is every default, :meth:`from_env` the environment's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- the workspace and its stores -----------------------------------------------------------
    home: Path = _setting(
        Path("data"),
        "Workspace folder: event log, feature store, MLflow store, models (`--home` wins).",
        "a folder path",
    )
    profile: Literal[PROFILES] = _setting(
        "local",
        "Store backends: `local` (SQLite, files) or `scale` (Redis online store, "
        "PostgreSQL registry).",
        "local or scale",
    )
    mlflow_tracking_uri: str | None = _setting(
        None,
        "MLflow tracking and registry store of commands and the service; unset: SQLite in "
        "`<home>/mlflow/mlflow.db`.",
        "an MLflow tracking URI",
        env="MLFLOW_TRACKING_URI",
    )
    feast_project: str = _setting(
        "tailor", "Feast project name (scale profile: the key space in Redis).", "a project name"
    )
    redis: str = _setting(
        "127.0.0.1:6379",
        "Scale profile: Redis online store, `host:port` (Feast connection string).",
        "a Redis connection string",
    )
    postgres_url: str = _setting(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "Scale profile: Feast registry, a SQLAlchemy URL.",
        "a SQLAlchemy URL",
    )
    # -- rule files -----------------------------------------------------------------------------
    personas: Path | None = _setting(
        None,
        "Persona rules file; unset: the packaged `features/personas.yaml`.",
        "a file path",
    )
    rules: Path | None = _setting(
        None,
        "Serving rules file; unset: the packaged `serving/rules.yaml`.",
        "a file path",
    )
    consent_policy: Path | None = _setting(
        None,
        "Consent policy file (purposes, `policy_version`, regimes by country); unset: "
        "`<home>/consent_policy.yaml` when present, else the packaged "
        "`features/consent/policy.yaml`.",
        "a file path",
    )
    country_header: str = _setting(
        "CF-IPCountry",
        "Request header carrying the visitor's ISO country code (set by your CDN or proxy), "
        "which picks the consent regime; a `country` in the body wins.",
        "an HTTP header name",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
    )
    consent_checks: Flag = _setting(
        True,
        "Whether the service enforces consent (events of people without `analytics` suppressed, "
        "non-personalized answers without `personalization`). `0` only for the consent "
        "benchmark's comparison run: never on a site with real visitors.",
        "1 or 0",
    )
    # -- the served model -----------------------------------------------------------------------
    model_name: str = _setting(
        "tailor-recommender",
        "Registered model the service serves (and `tailor serve` / `tailor build` check).",
        "a registered model name",
    )
    model_alias: str = _setting("champion", "Alias of that model to serve.", "an alias name")
    model_poll_seconds: float = _setting(
        30.0,
        "Seconds between the service's checks of the alias (a moved alias is swapped in).",
        "a finite number of seconds, more than 0",
        gt=0,
        allow_inf_nan=False,
    )
    bento_model: str | None = _setting(
        None,
        "BentoML model tag to serve instead of the registry's alias (set inside a built Bento); "
        "unset: the registry.",
        "a BentoML model tag",
    )
    # -- the online read ------------------------------------------------------------------------
    fast_online_read: Flag = _setting(
        True,
        "`1`: online reads and pushes on the fast path; `0`: Feast's public API only.",
        "1 (fast path) or 0 (Feast's public read)",
    )
    online_read_timeout_ms: float = _setting(
        100.0,
        "Longest wait of one online read for a locked SQLite store (fast path), in ms.",
        "milliseconds, more than 0 and at most 60000",
        gt=0,
        le=60_000,
    )
    online_retry_seconds: float = _setting(
        1.0,
        "Seconds the service skips the online store after two failed reads in a row.",
        "seconds, more than 0 and at most 3600",
        gt=0,
        le=3600,
    )
    online_answers: int = _setting(
        4096,
        "One-row online answers kept per thread until the store's next write (`0`: none).",
        "an integer >= 0 (0 keeps none)",
        ge=0,
    )
    # -- request limits -------------------------------------------------------------------------
    max_events_bytes: int = _setting(
        1 << 20,
        "Largest `/events` body in bytes (larger: 413).",
        f"a positive number of bytes, e.g. {1 << 20}",
        ge=1,
    )
    max_request_bytes: int = _setting(
        64 << 10,
        "Largest body of every other POST in bytes (larger: 413).",
        f"a positive number of bytes, e.g. {64 << 10}",
        ge=1,
    )
    # -- the real-time path (issue #11) ----------------------------------------------------------
    database_url: str | None = _setting(
        None,
        "Workspace database (identity graph, embedded session store), a SQLAlchemy URL; unset: "
        "SQLite `<home>/tailor.db` on the local profile, `TAILOR_POSTGRES_URL` on scale.",
        "a SQLAlchemy URL",
    )
    broker_url: str | None = _setting(
        None,
        "Event broker between collection and processing: `amqp://user:pass@host:5672/` "
        "(RabbitMQ) or `kafka://host:9092[,host:9092]` (Kafka); unset: the embedded durable "
        "queue in `<home>/queue/`.",
        "an amqp:// or kafka:// URL",
    )
    broker_queue: str = _setting(
        "tailor.events",
        "Name of the broker's event queue or Kafka topic (its dead letters: `<name>.dead`).",
        "a queue name",
    )
    spool_max_bytes: int = _setting(
        256 << 20,
        "Disk spool for events while the broker is unreachable, in bytes (full: 503).",
        f"a positive number of bytes, e.g. {256 << 20}",
        ge=1,
    )
    serve_consumer: Flag = _setting(
        True,
        "`1`: with the embedded queue the service runs the event consumer in-process; `0`: run "
        "`tailor consume` yourself.",
        "1 (in-process consumer) or 0 (none)",
    )
    session_timeout_minutes: float = _setting(
        30.0,
        "Minutes without events after which a visitor's session id (`tailor_sid`) rotates.",
        "minutes, more than 0 and at most 1440",
        gt=0,
        le=1440,
    )
    collect_origins: str = _setting(
        "",
        "Origins allowed to call `/collect` from a browser (CORS, with credentials), "
        "comma-separated, e.g. `https://shop.example`; empty: none.",
        "comma-separated origins (scheme://host[:port])",
    )
    cookie_secret: str | None = _setting(
        None,
        "Key that signs the collector's cookies; unset: a random key kept in "
        "`<home>/secrets/cookie_secret`.",
        "a secret of at least 32 characters",
        min_length=32,
    )
    cookie_days: int = _setting(
        395,
        "Lifetime of the anonymous-id cookie `tailor_aid` in days (renewed on use; 13 months at "
        "most).",
        "days, from 1 to 395",
        ge=1,
        le=395,
    )
    fingerprint: Flag = _setting(
        False,
        "`1`: the collector stores a coarse device fingerprint as a weak identity hint (never "
        "enough alone to merge people).",
        "1 (compute it) or 0 (never)",
    )
    allow_user_merge: Flag = _setting(
        False,
        "`1`: `/identify` may merge two known user ids into one person; `0`: refused.",
        "1 (allowed) or 0 (refused)",
    )
    # -- the test harness -----------------------------------------------------------------------
    require_services: Flag = _setting(
        False,
        "Tests only: `1` fails, instead of skipping, a test whose service (Redis, PostgreSQL) "
        "or tool (`wrk`) is missing; `.ci/run` sets it.",
        "1 (a missing service fails the test) or 0 (it skips)",
    )
    test_kafka: str | None = _setting(
        None,
        "Tests only: a Kafka cluster for the Kafka broker tests, `host:port[,host:port]` or a "
        "`kafka://` URL; unset: they start a local broker from `.ci/kafka/` (`make tools` "
        "fetches it), or skip when there is none.",
        "host:port or a kafka:// URL",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default ``os.environ``), each variable read once.

        Blank or unset variables give the defaults; bad values raise one :class:`ConfigError`
        naming each variable, its value and what is allowed; unknown ``TAILOR_*`` variables are
        logged as a warning with the closest setting's name."""
        environ = os.environ if environ is None else environ
        names = variables()
        raw = {field: environ.get(name, "").strip() for field, name in names.items()}
        raw = {field: value for field, value in raw.items() if value}
        _warn_unknown(environ, set(names.values()))
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0])
                allowed = cls.model_fields[field].json_schema_extra["allowed"]
                problems.append(f"{names[field]}={raw[field]!r} must be {allowed}")
            raise ConfigError("; ".join(dict.fromkeys(problems))) from None


def env_name(field: str) -> str:
    """The environment variable of the setting ``field``."""
    extra = Settings.model_fields[field].json_schema_extra
    return extra.get("env") or PREFIX + field.upper()


def variables() -> dict[str, str]:
    """Every setting's field name -> its environment variable, in declaration order."""
    return {field: env_name(field) for field in Settings.model_fields}


#: Unknown variables already warned about in this process (one warning each, not one per read).
_warned: set[str] = set()


def _warn_unknown(environ: Mapping[str, str], known: set[str]) -> None:
    for name in sorted(environ):
        if not name.startswith(PREFIX) or name in known or name in _warned:
            continue
        _warned.add(name)
        # compared without the prefix every name shares, which would make any two look close
        tails = {known_name.removeprefix(PREFIX): known_name for known_name in sorted(known)}
        close = difflib.get_close_matches(name.removeprefix(PREFIX), tails, n=1, cutoff=0.6)
        hint = f"did you mean {tails[close[0]]}?" if close else "see README, Configuration"
        logger.warning("%s is not a Tailor setting and is ignored; %s", name, hint)


def default_text(field: str) -> str:
    """A field's default as README's table shows it: ``1``/``0`` for flags, ``unset`` for
    None, numbers without a trailing ``.0``."""
    value = Settings.model_fields[field].default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def markdown_table() -> str:
    """README's configuration table: variable, default, meaning, one row per field."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field, name in variables().items():
        meaning = Settings.model_fields[field].description
        rows.append(f"| `{name}` | {default_text(field)} | {meaning} |")
    return "\n".join(rows)


#: Every default (no environment read): the defaults of the modules that take settings.
DEFAULTS = Settings()


if __name__ == "__main__":
    print(markdown_table())
