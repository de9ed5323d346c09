"""The registry in force, replaced at run time without a restart.

The file named in the config is polled; a new document replaces the snapshot only if it
verifies against the pinned anchors with a higher ``seq``. In-flight checks keep the snapshot
they started with. Once the snapshot passes its ``exp``, ``current`` raises (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import structlog

from connectors.config import ConfigError, SchemeFiles
from trust.errors import RegistryError
from trust.registry import Registry, verify_registry

log = structlog.get_logger("connectors.registry")


class RegistrySource:
    def __init__(self, files: SchemeFiles, *, clock: Callable[[], float] = time.time) -> None:
        self._files = files
        self._clock = clock
        self._registry = verify_registry(files.read_registry(), files.anchors, now=int(clock()))

    @property
    def snapshot(self) -> Registry:
        """The last verified snapshot, fresh or not (for status pages)."""
        return self._registry

    def current(self) -> Registry:
        """The snapshot to decide with; raises RegistryError once it is stale."""
        registry = self._registry
        if not registry.fresh_at(int(self._clock())):
            raise RegistryError("the trust registry has expired")
        return registry

    def reload(self) -> bool:
        """Re-read the registry file; True if a newer registry is now in force."""
        try:
            document = self._files.read_registry()
            if hashlib.sha256(document).hexdigest() == self._registry.digest:
                return False  # unchanged: no need to verify again
            registry = verify_registry(
                document, self._files.anchors, now=int(self._clock()), current=self._registry
            )
        except (RegistryError, ConfigError) as exc:
            log.warning("registry_refused", reason=str(exc), seq_in_force=self._registry.seq)
            return False
        if registry is self._registry:
            return False
        log.info("registry_replaced", old_seq=self._registry.seq, new_seq=registry.seq)
        self._registry = registry
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.reload()
