"""``axb serve --workers N``: N broker processes on one port, under a supervisor.

The supervisor binds the port once and hands the listening socket to each worker
(``axb serve --listen-fd``): the kernel gives each connection to one of the processes waiting
on that socket, so no port is shared by luck (``SO_REUSEPORT``) and a restarted worker takes
the same socket. Workers share what must be shared through the engines built for it: the
replay store and rate limits in Redis; the consent log in PostgreSQL (each batch under an
advisory lock) or in one SQLite file on this machine (each batch in a ``BEGIN IMMEDIATE``
transaction, WAL): either way one log sequence, gap-free, the next index read inside the write
lock. The memory replay store is per process and would let a token be replayed on a second
worker, so the supervisor refuses to start workers without Redis (fail closed) rather than run
a replay store that only looks shared.

A worker that dies is restarted (after ``RESTART_DELAY_S``, so a worker that cannot start
does not spin); while it is down, the other workers keep answering on the socket, and their
``/readyz`` says so: the supervisor keeps ``{"expected": N, "alive": k, "restarts": r}`` in a
file of its own (named to the workers by ``AXB_WORKERS_STATUS``), which ``/readyz`` reports
as ``workers`` (still 200: the port is served). On SIGTERM or SIGINT the supervisor stops
accepting for every worker at once (each worker's own orderly stop: checks in flight answered,
log committed and checkpointed), waits up to ``shutdown_timeout_s``, kills what is left, and
exits 0 only if every worker did.

Metrics are the workers' together: each worker is started with ``PROMETHEUS_MULTIPROC_DIR``
naming a folder of the supervisor's, where prometheus-client's multiprocess mode keeps each
worker's counters and histograms (summed at a scrape, a dead worker's counts kept) and its
gauges (each live worker's, labelled ``pid``); a worker that dies has its live gauges removed.
Whichever worker a scrape reaches answers for all of them (:mod:`broker.metrics`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import click
from prometheus_client import multiprocess

from broker.errors import SettingsError
from broker.metrics import MULTIPROCESS_ENV
from broker.settings import Settings

RESTART_DELAY_S = 1.0
WORKERS_STATUS_ENV = "AXB_WORKERS_STATUS"
POLL_S = 0.1


def require_shared_stores(settings: Settings, workers: int) -> None:
    """Several workers need a replay store they share: refuse the per-process memory one. The
    consent log may be PostgreSQL or an SQLite file on this machine: both form one gap-free
    sequence across processes (the next index is read inside the write lock)."""
    if workers == 1:
        return
    if settings.redis_url is None:
        raise SettingsError(
            "--workers needs redis_url: the memory replay store is per process, so a token "
            "could be answered once by each worker"
        )


class Supervisor:
    """Runs and restarts ``workers`` copies of ``axb serve`` on one listening socket."""

    def __init__(
        self, argv: Sequence[str], sock: socket.socket, workers: int, shutdown_timeout_s: float
    ) -> None:
        self._argv = list(argv)
        self._sock = sock
        self._count = workers
        self._timeout_s = shutdown_timeout_s
        self._stopping = False
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._down_since: list[float] = [0.0] * workers
        self._status_dir = Path(tempfile.mkdtemp(prefix="axb-workers-"))
        self.status_file = self._status_dir / "workers.json"
        self.metrics_dir = self._status_dir / "metrics"
        self.metrics_dir.mkdir()
        self._restarts = 0
        self._reported: tuple[int, int] | None = None

    def _report(self) -> None:
        """Write how many workers are alive, if that changed (atomically: readers never see
        half a file)."""
        alive = sum(1 for p in self._procs if p is not None and p.poll() is None)
        if self._reported == (alive, self._restarts):
            return
        self._reported = (alive, self._restarts)
        status = {"expected": self._count, "alive": alive, "restarts": self._restarts}
        partial = self.status_file.with_suffix(".tmp")
        partial.write_text(json.dumps(status))
        partial.replace(self.status_file)

    def _start(self, slot: int) -> None:
        fd = self._sock.fileno()
        self._procs[slot] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "broker.cli", "serve", *self._argv, "--listen-fd", str(fd)],
            pass_fds=[fd],
            env={
                **os.environ,
                WORKERS_STATUS_ENV: str(self.status_file),
                MULTIPROCESS_ENV: str(self.metrics_dir),
            },
        )

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        self._sock.listen(1024)
        for slot in range(self._count):
            self._start(slot)
        click.echo(f"supervising {self._count} workers", err=True)
        while not self._stopping:
            now = time.monotonic()
            for slot, proc in enumerate(self._procs):
                if proc is not None and proc.poll() is not None:
                    click.echo(f"worker {proc.pid} exited {proc.returncode}: restarting", err=True)
                    multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
                    self._procs[slot], self._down_since[slot] = None, now
                elif proc is None and now - self._down_since[slot] >= RESTART_DELAY_S:
                    self._start(slot)
                    self._restarts += 1
            self._report()
            time.sleep(POLL_S)
        try:
            return self._shutdown()
        finally:
            shutil.rmtree(self._status_dir, ignore_errors=True)

    def _shutdown(self) -> int:
        running = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._timeout_s
        clean = True
        for proc in running:
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            # killed by the SIGTERM itself: a worker still starting, that had not yet set its
            # handler (set before it serves), so it had answered nothing
            if code not in (0, -signal.SIGTERM):
                click.echo(f"worker {proc.pid} stopped with exit code {code}", err=True)
                clean = False
        self._sock.close()
        return 0 if clean else 1
