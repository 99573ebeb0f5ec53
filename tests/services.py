"""What tests of the scale profile ask before they use a local service (PostgreSQL, Redis):
is it listening? They skip with the service's name and address when it is not."""

from __future__ import annotations

import socket


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
