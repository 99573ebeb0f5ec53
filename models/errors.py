"""The one family of user-facing errors: `TailorError` and its kinds.

A `TailorError` is a mistake or a condition the user can act on (a bad key, a missing file, a
data set that cannot be fetched); its message is one line naming the offending value, what is
allowed and what to do. The ``tailor`` CLI turns it into a single ``error:`` line (never a
traceback); anything else that escapes a command is a bug.

It lives in ``models`` because every layer may import ``models`` (``features``, ``training``,
``serving`` and the CLI), and this module imports nothing, so it adds no dependency.
"""

from __future__ import annotations


class TailorError(Exception):
    """Base of every error the user can fix; ``str(error)`` is the whole message."""


class ConfigError(TailorError, ValueError):
    """A config key or value that is not allowed (``--set``, options, environment)."""


class SpecError(ConfigError):
    """A spec or rules file (YAML) that cannot be read or does not validate."""


class DataError(TailorError):
    """Input data that is missing, unreadable or cannot support what was asked (files, data
    sets, the workspace, the feature store)."""
