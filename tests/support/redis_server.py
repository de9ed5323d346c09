"""A private ``redis-server`` for tests that kill, restart or reconfigure Redis (Cluster,
replicas, Sentinel), which the shared server must never be put through."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tests.support.ports import BIND_FAILED, start_on_some_port


class PrivateRedis:
    """A throwaway ``redis-server`` on its own port, which tests may kill and restart.

    Its port is chosen when it first starts (``redis-server`` binds it itself, so it is
    started on candidate ports until one binds); a restart after ``kill`` binds the same port
    again, the one the killed server just released."""

    def __init__(self, workdir: Path, *, config: str = "", args: Sequence[str] = ()) -> None:
        """``config`` (redis.conf text) and ``args`` set a mode: Cluster, replica, Sentinel."""
        self._port: int | None = None
        self.workdir = workdir
        self.config = config
        self.args = tuple(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started yet: its port is the one its first start binds")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = start_on_some_port(
                lambda port: port if self._launch(port, timeout_s) else None
            )
        elif not self._launch(self._port, timeout_s):
            raise RuntimeError(f"port {self._port} was taken while the server was down")

    def _launch(self, port: int, timeout_s: float) -> bool:
        """Start ``redis-server`` on ``port``: True once it answers there as itself, False
        when it could not bind ``port``."""
        config = self.workdir / "redis.conf"
        config.write_text(self.config)
        before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = process = subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    str(config),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                    *self.args,
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                try:  # the server on this port must be this process, not someone else's
                    if int(probe.info("server")["process_id"]) == process.pid:
                        return True
                except redis.RedisError:
                    pass
                if process.poll() is not None:
                    self.process = None
                    said = self.log.read_bytes()[before:].decode(errors="replace")
                    if BIND_FAILED in said:
                        return False
                    raise RuntimeError(said[-2000:])
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(self.log.read_text(errors="replace")[-2000:])
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)
