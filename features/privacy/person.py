"""Who a person is, across their ids, and what every store of their data must do.

A person is resolved once, through the identity graph, to **every** person key linked to them
(their user id and ``anon:<id>`` for each device), so no store is asked about one id and left
holding another. Every store of people's data has an adapter with the :class:`PersonStore`
shape: a name, ``export`` (what it holds, JSON-ready) and ``erase`` (how many records went).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from features.identity.graph import IdentityGraph, check_id
from features.identity.keys import ANON_PREFIX, person_key
from features.workspace import Workspace


@dataclass(frozen=True)
class Person:
    """Every person key of one person, the canonical key first (see
    :mod:`features.identity.keys`: a user id, or ``anon:<anonymous_id>``)."""

    keys: tuple[str, ...]

    @property
    def canonical(self) -> str:
        return self.keys[0]

    @property
    def user_ids(self) -> list[str]:
        return [k for k in self.keys if not k.startswith(ANON_PREFIX)]

    @property
    def anonymous_ids(self) -> list[str]:
        return [k[len(ANON_PREFIX) :] for k in self.keys if k.startswith(ANON_PREFIX)]

    @property
    def raw_ids(self) -> list[str]:
        """Every id as it arrives from outside (user ids and anonymous ids)."""
        return [*self.user_ids, *self.anonymous_ids]


def resolve(ws: Workspace, user_id: str | None = None, anonymous_id: str | None = None) -> Person:
    """The person of ``user_id`` and/or ``anonymous_id`` with every key the identity graph links
    to them (an id never linked is a person of one key). Raises
    :class:`~features.identity.graph.IdentityError` naming a malformed id."""
    wanted = []
    if user_id is not None:
        wanted.append(person_key(check_id("user_id", user_id), None))
    if anonymous_id is not None:
        wanted.append(person_key(None, check_id("anonymous_id", anonymous_id)))
    if not wanted:
        raise ValueError("one of user_id or anonymous_id is required")
    graph = IdentityGraph.for_workspace(ws)
    keys: list[str] = []
    for key in wanted:
        keys.extend(graph.aliases(key))
    return Person(tuple(dict.fromkeys(keys)))


class PersonStore(Protocol):
    """One store of people's data, as erasure and export see it.

    ``export`` returns what the store holds about the person (JSON-ready: lists and dicts of
    text, numbers, booleans, None); ``erase`` deletes it and returns how many records went (0
    when it held nothing, so a rerun is a no-op)."""

    name: str

    def export(self, person: Person) -> Any: ...

    def erase(self, person: Person) -> int: ...
