"""Benchmark of the consent log's tree in tiles: broker memory as the log grows, proof latency,
and a restart, at millions of records.

    .venv/bin/python bench/bench_log_tiles.py [--records N ...] [--backend sqlite|postgres]
                                              [--proofs P] [--pg-dsn DSN] [--json PATH]

Issue 11 item 4. The broker's ``TransparencyLog`` keeps the Merkle tree as C2SP tiles in the
consent-log store and holds only the right edge and a bounded cache of tiles. This measures it
through the broker's own classes (``broker.transparency.TransparencyLog`` over the real
``SqliteConsentLog`` or ``PostgresConsentLog``), in a fresh interpreter:

1. **Growth.** An empty log is opened and the log is started. Then, for each N (default
   1,000,000 and 10,000,000), records are written into the store's ``records`` table behind
   the broker (one row per record with a random 32-byte digest, in transactions of 100,000:
   the broker's own append path is measured by ``bench_log.py``; here only the tree matters)
   and the log is synced, which reads every new digest, hashes it into the tree and writes
   each tile it fills, then signs a checkpoint. After each N it reads the process's resident
   set size (``/proc/self/statm``, after a ``gc.collect()``), the tiles kept, and the sync's
   time.
2. **Proofs at N.** P inclusion proofs (default 2,000) of uniformly random indices at size N
   through ``TransparencyLog.inclusion_proof``, each timed alone (p50, p99, max): random
   indices over millions of records mostly miss the 256-tile cache, so most read their tiles
   from the store. The first 100 are verified against the signed checkpoint's root. The same
   for P consistency proofs from a random older size to N.
3. **Restart.** A second fresh interpreter opens the log at the largest N and starts it as a
   broker does (restore from tiles, read the records past the last full tile, check the
   latest signed checkpoint): the time and the RSS it ends with.

Every measurement is in this run; the in-memory tree it replaced cost 64 payload bytes a
record (``bench_tree_memory.py``), 640 MB at 10 M. It prints a markdown table and, with
``--json PATH``, writes every number as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from broker.scheme.dev import LOG_ORIGIN  # noqa: E402
from broker.stores.consent_log import ConsentLog  # noqa: E402
from broker.stores.consent_log.postgres import PostgresConsentLog  # noqa: E402
from broker.stores.consent_log.sqlite import SqliteConsentLog  # noqa: E402
from broker.transparency import TransparencyLog  # noqa: E402
from trust.checkpoint import (  # noqa: E402
    NoteSigner,
    generate_signer,
    note_signatures,
    parse_checkpoint,
)
from trust.merkle import leaf_hash, verify_consistency, verify_inclusion  # noqa: E402
from trust.records import leaf_input  # noqa: E402

DEFAULT_RECORDS: Final = (1_000_000, 10_000_000)
BATCH: Final = 100_000
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
SCHEMA: Final = "bench_tiles"
VERIFIED: Final = 100


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def open_store(backend: str, folder: Path, dsn: str) -> ConsentLog:
    if backend == "sqlite":
        return SqliteConsentLog(folder / "log.sqlite3")
    return PostgresConsentLog(dsn, schema=SCHEMA)


class Filler:
    """Writes synthetic records (index, time, kind, requester, digest) behind the broker."""

    def __init__(self, backend: str, folder: Path, dsn: str) -> None:
        self._backend, self._folder, self._dsn = backend, folder, dsn
        self.digests: dict[int, bytes] = {}  # a sample, to check proofs against real leaves

    def _rows(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        rows = []
        for index in range(start, stop):
            digest = os.urandom(32)
            if index % 100_003 == 0:
                self.digests[index] = digest
            rows.append((index, 1_800_000_000_000 + index, "withdrawal", "council-a", digest))
        return rows

    async def fill(self, start: int, stop: int) -> None:
        if self._backend == "sqlite":
            await asyncio.to_thread(self._fill_sqlite, start, stop)
            return
        db = await asyncpg.connect(self._dsn, server_settings={"search_path": SCHEMA})
        try:
            for at in range(start, stop, BATCH):
                await db.copy_records_to_table(
                    "records",
                    records=self._rows(at, min(stop, at + BATCH)),
                    columns=["log_index", "recorded_at_ms", "kind", "requester", "digest"],
                )
        finally:
            await db.close()

    def _fill_sqlite(self, start: int, stop: int) -> None:
        db = sqlite3.connect(self._folder / "log.sqlite3")
        try:
            for at in range(start, stop, BATCH):
                with db:
                    db.executemany(
                        "INSERT INTO records (log_index, recorded_at_ms, kind, requester, digest)"
                        " VALUES (?, ?, ?, ?, ?)",
                        self._rows(at, min(stop, at + BATCH)),
                    )
        finally:
            db.close()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def proofs(
    log: TransparencyLog, size: int, count: int, signed: dict[int, bytes]
) -> dict[str, Any]:
    """``count`` timed inclusion and consistency proofs at ``size``; the first inclusion proofs,
    and the consistency proof from each size signed earlier, verified against signed roots."""
    root = signed[size]
    rng = random.Random(size)
    inclusion: list[float] = []
    for n in range(count):
        index = rng.randrange(size)
        started = time.perf_counter()
        path = await log.inclusion_proof(index, size)
        inclusion.append(time.perf_counter() - started)
        if n < VERIFIED:
            verify_inclusion(await log.leaf(index), index, size, path, root)
    consistency: list[float] = []
    for _ in range(count):
        old = rng.randrange(1, size)
        started = time.perf_counter()
        await log.consistency_proof(old, size)
        consistency.append(time.perf_counter() - started)
    for old, old_root in signed.items():
        if old < size:
            path = await log.consistency_proof(old, size)
            verify_consistency(old, size, old_root, root, path)
    return {"inclusion": percentiles(inclusion), "consistency": percentiles(consistency)}


async def grow(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    skey, _ = generate_signer(LOG_ORIGIN)
    (folder / "log.skey").write_text(skey)
    store = open_store(args.backend, folder, args.pg_dsn)
    await store.start()
    log = TransparencyLog(store, NoteSigner(skey))
    await log.start()
    out: dict[str, Any] = {"rss_start_bytes": rss_bytes(), "sizes": []}
    size = 0
    signed: dict[int, bytes] = {}
    try:
        for target in sorted(args.records):
            started = time.perf_counter()
            await asyncio.to_thread(fill_apart, args, folder, size, target)
            filled = time.perf_counter() - started
            started = time.perf_counter()
            await log.sync()
            synced = time.perf_counter() - started
            _, note = await log.checkpoint()
            size = target
            signed[size] = parse_checkpoint(note_signatures(note)[0]).root_hash
            for index, digest in json.loads((folder / "sample.json").read_text()).items():
                if await log.leaf(int(index)) != leaf_hash(leaf_input(bytes.fromhex(digest))):
                    raise AssertionError(f"leaf {index} is not its record's")
            row: dict[str, Any] = {
                "records": size,
                "fill_s": filled,
                "sync_s": synced,
                "rss_bytes": rss_bytes(),
                "level0_tiles": await store.tile_count(0),
                **await proofs(log, size, args.proofs, signed),
            }
            row["rss_after_proofs_bytes"] = rss_bytes()
            out["sizes"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        await store.close()
    return out


async def restart(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    before = rss_bytes()
    store = open_store(args.backend, folder, args.pg_dsn)
    started = time.perf_counter()
    await store.start()
    log = TransparencyLog(store, NoteSigner((folder / "log.skey").read_text()))
    await log.start()
    took = time.perf_counter() - started
    try:
        return {
            "records": log.size,
            "start_s": took,
            "rss_before_bytes": before,
            "rss_bytes": rss_bytes(),
        }
    finally:
        await store.close()


def child(args: argparse.Namespace, phase: str, folder: Path, *records: int) -> dict[str, Any]:
    """Run ``phase`` in a fresh interpreter; its result is the last line it prints."""
    command = [sys.executable, __file__, "--phase", phase, "--folder", str(folder)]
    command += ["--backend", args.backend, "--pg-dsn", args.pg_dsn, "--proofs", str(args.proofs)]
    command += ["--records", *map(str, records or args.records)]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fill_apart(args: argparse.Namespace, folder: Path, start: int, stop: int) -> None:
    """Fill in another process, so the rows built never count in the broker's memory."""
    child(args, "fill", folder, start, stop)


async def fill(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    start, stop = args.records
    filler = Filler(args.backend, folder, args.pg_dsn)
    await filler.fill(start, stop)
    sample = folder / "sample.json"
    kept = json.loads(sample.read_text()) if sample.exists() else {}
    kept.update({str(index): digest.hex() for index, digest in filler.digests.items()})
    sample.write_text(json.dumps(kept))
    return {"filled": stop - start}


async def drop_schema(dsn: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await db.close()


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def report(result: dict[str, Any]) -> str:
    lines = [
        f"backend {result['backend']}, {result['proofs']} proofs of each kind per size",
        "",
        "| records | RSS | RSS − RSS at start | level-0 tiles | sync | inclusion p50 / p99 / max "
        "| consistency p50 / p99 / max |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    start = result["grow"]["rss_start_bytes"]
    for row in result["grow"]["sizes"]:
        inc, con = row["inclusion"], row["consistency"]
        lines.append(
            f"| {row['records']:,} | {mb(row['rss_bytes'])} | {mb(row['rss_bytes'] - start)} "
            f"| {row['level0_tiles']:,} | {row['sync_s']:.1f} s "
            f"| {inc['p50_ms']:.2f} / {inc['p99_ms']:.2f} / {inc['max_ms']:.2f} ms "
            f"| {con['p50_ms']:.2f} / {con['p99_ms']:.2f} / {con['max_ms']:.2f} ms |"
        )
    sizes = result["grow"]["sizes"]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        lines.append("")
        lines.append(
            f"RSS at {last['records']:,} ÷ RSS at {first['records']:,}: "
            f"{last['rss_bytes'] / first['rss_bytes']:.3f}"
        )
    again = result["restart"]
    lines.append(
        f"restart at {again['records']:,} records: {again['start_s']:.2f} s to start, "
        f"RSS {mb(again['rss_bytes'])}"
    )
    return "\n".join(lines)


PHASES: Final = {"grow": grow, "restart": restart, "fill": fill}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=list(DEFAULT_RECORDS))
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        print(json.dumps(asyncio.run(PHASES[args.phase](args, args.folder))))
        return 0

    with tempfile.TemporaryDirectory(prefix="axb-tiles-") as tmp:
        folder = Path(tmp)
        if args.backend == "postgres":
            asyncio.run(drop_schema(args.pg_dsn))
        try:
            result = {
                "backend": args.backend,
                "proofs": args.proofs,
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "grow": child(args, "grow", folder),
                "restart": child(args, "restart", folder),
            }
        finally:
            if args.backend == "postgres":
                asyncio.run(drop_schema(args.pg_dsn))
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
