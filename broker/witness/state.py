"""The witness's state: for each log, the latest checkpoint it cosigned, in its own SQLite file.

``add_checkpoint`` reads the latest state, judges the request (:func:`trust.witnessing.judge`),
cosigns and writes the new state inside one ``BEGIN IMMEDIATE`` transaction, committed
(``synchronous=FULL``) before the cosignature is returned. Two requests that were both checked
against size N can therefore never both be cosigned, and a smaller one can never overwrite a
larger one (the rollback race of C2SP tlog-witness): the second waits for the first's commit,
then finds the size changed and gets 409. The lock is SQLite's, so it holds across processes
sharing the file as well as across threads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

from trust.checkpoint import NoteVerifier
from trust.cosignature import Cosignature, Cosigner
from trust.witnessing import AddCheckpoint, judge

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin  TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    root    BLOB NOT NULL,
    note    TEXT NOT NULL
) STRICT;
"""


class WitnessState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one connection: one transaction at a time on it

    def latest(self, origin: str) -> tuple[int, bytes, str] | None:
        """The latest cosigned ``(size, root hash, cosigned note)`` for ``origin``."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, root, note FROM latest WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    def add_checkpoint(
        self,
        request: AddCheckpoint,
        *,
        log_keys: Mapping[str, NoteVerifier],
        cosigner: Cosigner,
        now: int,
    ) -> Cosignature:
        """Check ``request`` against the state and cosign it, atomically; raises
        ``WitnessRefusal`` and leaves the state as it was."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT size, root FROM latest WHERE origin = ?", (request.origin,)
                ).fetchone()
                latest = None if row is None else (int(row[0]), bytes(row[1]))
                checkpoint, text = judge(request, log_keys=log_keys, latest=latest)
                cosignature = cosigner.cosign(text, now)
                self._db.execute(
                    "INSERT INTO latest (origin, size, root, note) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
                    "root = excluded.root, note = excluded.note",
                    (
                        checkpoint.origin,
                        checkpoint.size,
                        checkpoint.root_hash,
                        request.note + cosignature.line,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cosignature

    def close(self) -> None:
        with self._lock:
            self._db.close()
