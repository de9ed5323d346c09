"""An in-memory replay cache with time passed in: a message id is accepted once until it
expires. Bounded: when full of live entries it refuses (fails closed) rather than forgets."""

from __future__ import annotations

import heapq

from trust.errors import TrustError


class ReplayCacheFull(TrustError):
    """More live message ids than the cache may hold; refuse rather than forget one."""


class ReplayCache:
    def __init__(self, max_entries: int = 2_000_000) -> None:
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    def seen(self, key: str, *, now: int) -> bool:
        """True if ``key`` was used and has not expired (does not record anything)."""
        self._purge(now)
        return key in self._expiry

    def first_use(self, key: str, *, expires_at: int, now: int) -> bool:
        """True the first time ``key`` is seen (and remembers it until ``expires_at``)."""
        self._purge(now)
        if key in self._expiry:
            return False
        if len(self._expiry) >= self._max_entries:
            raise ReplayCacheFull
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True
