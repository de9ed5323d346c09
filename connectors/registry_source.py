"""The registry in force, replaced at run time without a restart.

A participant starts from its registry file and then watches for newer documents: the file
(re-read every ``interval_s``) and, if configured, a URL serving the signed registry (for
example another broker's ``GET /v1/registry`` or the scheme operator's publication point). A
new document replaces the snapshot only if it verifies against the pinned anchors with a higher
``seq``. Processes polling every ``interval_s`` converge within ``interval_s`` plus one fetch.
In-flight checks keep the snapshot they started with. Once the snapshot passes its ``exp``,
``current`` raises (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import aiohttp
import structlog

from connectors.base import read_limited
from connectors.config import SchemeFiles
from connectors.errors import ConfigError
from trust.errors import RegistryError
from trust.jws import MAX_REGISTRY_BYTES
from trust.registry import Registry, verify_registry

log = structlog.get_logger("connectors.registry")


class RegistrySource:
    def __init__(
        self,
        files: SchemeFiles,
        *,
        url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._files = files
        self._url = url
        self._clock = clock
        self._document = files.read_registry()
        self._registry = verify_registry(self._document, files.anchors, now=int(clock()))

    @property
    def snapshot(self) -> Registry:
        """The last verified snapshot, fresh or not (for status pages)."""
        return self._registry

    @property
    def document(self) -> bytes:
        """The signed registry in force, as read (served to others at /v1/registry)."""
        return self._document

    def current(self) -> Registry:
        """The snapshot to decide with; raises RegistryError once it is stale."""
        registry = self._registry
        if not registry.fresh_at(int(self._clock())):
            raise RegistryError("the trust registry has expired")
        return registry

    def consider(self, document: bytes, origin: str) -> bool:
        """Verify ``document``; True if it is newer and now in force."""
        if hashlib.sha256(document).hexdigest() == self._registry.digest:
            return False  # unchanged: no need to verify again
        try:
            registry = verify_registry(
                document, self._files.anchors, now=int(self._clock()), current=self._registry
            )
        except RegistryError as exc:
            log.warning(
                "registry_refused", origin=origin, reason=str(exc), seq_in_force=self._registry.seq
            )
            return False
        if registry is self._registry:
            return False
        log.info(
            "registry_replaced", origin=origin, old_seq=self._registry.seq, new_seq=registry.seq
        )
        self._registry = registry
        self._document = document
        return True

    def reload(self) -> bool:
        """Re-read the registry file; True if a newer registry is now in force."""
        try:
            document = self._files.read_registry()
        except ConfigError as exc:
            log.warning("registry_unreadable", reason=str(exc))
            return False
        return self.consider(document, "file")

    async def fetch(self, session: aiohttp.ClientSession) -> bool:
        """Poll the registry URL once; True if a newer registry is now in force."""
        if self._url is None:
            return False
        try:
            async with session.get(self._url, allow_redirects=False) as response:
                if response.status != 200:
                    log.warning("registry_fetch_failed", status=response.status)
                    return False
                document = await read_limited(response.content, MAX_REGISTRY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("registry_fetch_failed", error=type(exc).__name__)
            return False
        if len(document) > MAX_REGISTRY_BYTES:
            log.warning("registry_fetch_failed", error="too large")
            return False
        return self.consider(document.strip(), "url")

    async def watch(self, interval_s: float) -> None:
        """Poll the file and the URL every ``interval_s`` until cancelled. A round that fails
        in any way (out of file descriptors, say: "Too many open files") keeps the snapshot
        in force, is logged, and the next round tries again: the watcher never dies."""
        timeout = aiohttp.ClientTimeout(total=max(1.0, interval_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    self.reload()
                    await self.fetch(session)
                except Exception as exc:  # one failed round, not the end of the watcher
                    log.warning(
                        "registry_poll_failed",
                        error=type(exc).__name__,
                        errno=getattr(exc, "errno", None),
                        seq_in_force=self._registry.seq,
                    )
