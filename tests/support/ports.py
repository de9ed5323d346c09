"""Ports for the programs a test cannot hand a bound socket (``redis-server``, ``nginx``).

Such a program binds its port itself, so it is started on a candidate port and, when it
reports that it could not bind it, started again on another: bind and retry. Nothing checks
a port first and hopes it is still free when the program binds it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Below Linux's default ephemeral range (32768-60999), where port-0 binds and outgoing
# connections get their ports; a Redis Cluster node's bus port (+10000) lies below it too.
CANDIDATES = range(20_000, 22_768)
BIND_FAILED = "Address already in use"


def start_on_some_port(start: Callable[[int], T | None], *, attempts: int = 12) -> T:
    """``start(port)`` starts the program on ``port`` and returns it once it serves there,
    or ``None`` when the program could not bind ``port``; then the next candidate is tried."""
    tried = []
    for port in random.sample(CANDIDATES, attempts):
        started = start(port)
        if started is not None:
            return started
        tried.append(port)
    raise RuntimeError(f"could not bind any of the candidate ports {tried}")
