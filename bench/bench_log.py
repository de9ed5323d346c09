"""Consent-log benchmark: durable appends per second, and offline verification of an export.

    .venv/bin/python bench/bench_log.py [--records N] [--single-records M] [--in-flight C]
                                        [--verify-records V] [--pg-dsn DSN] [--json PATH]

What it measures, all in this one run:

1. **Durable appends.** For SQLite (WAL, ``synchronous=FULL``, a file in a temporary folder)
   and PostgreSQL (``fsync`` and ``synchronous_commit`` as the server has them, reported), it
   opens a fresh log and drives it with C concurrent tasks (default 2,000 in flight), each
   awaiting ``append`` — which returns only once the record's transaction has committed. Once
   with group commit (the default ``max_batch``) over N records, once with one commit per
   record (``max_batch=1``) over M records. Records are built beforehand (the query's
   pseudonyms are computed up front); the canonical JSON, the salt, the digest and the row are
   the store's work and are timed. It reports records/s, commits, mean batch and the latency
   of one append (p50, p99); after the group-commit run, the mean time of one subject-access
   lookup over the log it wrote (the price of indexing pseudonyms per block of records).
2. **Verification.** It writes a V-record export (default 1,000,000) in exactly the format the
   broker's ``GET /v1/audit/export`` streams (it runs ``broker.audit.export.export_lines`` over a
   synthetic store): real ``entry_for`` records with fresh 32-byte salts, a real Merkle tree,
   and a checkpoint every 1,000 records signed with a fresh Ed25519 log key, as a broker with
   the default settings would. Then it times ``trust.log_verify.verify_export`` over the file
   in this process, and ``axb audit verify`` as a subprocess (interpreter start included).

It prints a markdown table and, with ``--json PATH``, writes every number as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from broker.audit.export import export_lines  # noqa: E402
from broker.scheme.dev import LOG_ORIGIN  # noqa: E402
from broker.stores.consent_log.base import StoredRecord  # noqa: E402
from broker.stores.consent_log.postgres import PostgresConsentLog  # noqa: E402
from broker.stores.consent_log.sqlite import SqliteConsentLog  # noqa: E402
from trust.checkpoint import (  # noqa: E402
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_signer,
    sign_checkpoint,
)
from trust.log_verify import verify_export  # noqa: E402
from trust.merkle import MerkleTree, leaf_hash  # noqa: E402
from trust.messages import ConsentReference, EligibilityQuery, Subject  # noqa: E402
from trust.pseudonym import PseudonymKey, SubjectPseudonyms, pseudonymise  # noqa: E402
from trust.records import ConsentRecord, entry_for, leaf_input, record_for  # noqa: E402

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_APPENDS = 20_000
TARGET_RATIO = 10.0
TARGET_VERIFY_S = 30.0
CHECKPOINT_EVERY = 1000
KEY = PseudonymKey("pk-bench-1", secrets.token_bytes(32))
REQUESTERS = ("council-warwickshire-blue-badge", "council-coventry-schools")
OUTCOMES = ("yes", "no", "no-match", "yes", "no", "undetermined", "refused")
FAMILY = ("Testwell", "Sampleton", "Fixturely", "Mockford", "Exampleby", "Specimen", "Okafor")


# --- records -------------------------------------------------------------------------------


def _queries(count: int) -> Iterator[EligibilityQuery]:
    for n in range(count):
        consent = n % 5 == 0
        yield EligibilityQuery(
            requester=REQUESTERS[n % 2],
            jti=secrets.token_urlsafe(24),
            issued_at=1_764_230_000 + n // 1000,
            expires_at=1_764_230_120 + n // 1000,
            check="blue-badge-automatic" if n % 2 == 0 else "free-school-meals",
            purpose="blue-badge-application" if n % 2 == 0 else "free-school-meals-application",
            lawful_basis="consent" if consent else "public-task",
            consent=ConsentReference(
                id=f"consent-{n:09d}",
                given_at="2026-11-20T10:15:00+00:00",
                method="online-form",
                notice_url="https://council.example/privacy/notice",
                notice_digest="sha256:" + "ab" * 32,
            )
            if consent
            else None,
            as_of=date(2026, 11, 27),
            assurance="P2",
            subject=Subject(
                {
                    "family_name": FAMILY[n % len(FAMILY)],
                    "date_of_birth": f"19{50 + n % 50}-0{1 + n % 9}-{10 + n % 18}",
                    "nino": f"ZX{n % 1_000_000:06d}A",
                }
            ),
        )


def build_records(count: int) -> list[ConsentRecord]:
    """What the pipeline hands the store: one record per query, pseudonyms already computed."""
    base_ms = 1_764_230_000_000
    records = []
    for n, query in enumerate(_queries(count)):
        outcome = OUTCOMES[n % len(OUTCOMES)]
        records.append(
            record_for(
                query,
                key=KEY,
                now_ms=base_ms + n,
                outcome=outcome,  # type: ignore[arg-type]
                check_version=1,
                refusal="purpose-not-permitted" if outcome == "refused" else None,
                providers=("dwp-reference",) if outcome != "refused" else (),
            )
        )
    return records


# --- appends -------------------------------------------------------------------------------


@dataclass
class AppendResult:
    backend: str
    mode: str
    max_batch: int
    records: int
    seconds: float
    cpu_seconds: float
    commits: int
    p50_ms: float
    p99_ms: float
    subject_access_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "mode": self.mode,
            "max_batch": self.max_batch,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.rate, 1),
            "bench_process_cpu_s": round(self.cpu_seconds, 3),
            "records_per_cpu_s": round(self.records / max(self.cpu_seconds, 1e-9), 1),
            "commits": self.commits,
            "mean_batch": round(self.records / max(self.commits, 1), 1),
            "append_latency_p50_ms": round(self.p50_ms, 2),
            "append_latency_p99_ms": round(self.p99_ms, 2),
            "subject_access_ms": None
            if self.subject_access_ms is None
            else round(self.subject_access_ms, 2),
        }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    log: SqliteConsentLog | PostgresConsentLog, records: list[ConsentRecord], in_flight: int
) -> tuple[float, float, list[float]]:
    """``in_flight`` tasks, each appending the next record and awaiting its commit."""
    pending = iter(records)
    latencies: list[float] = []

    async def task() -> None:
        for record in pending:
            started = time.perf_counter()
            await log.append(record)
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()  # CPU of every thread
    await asyncio.gather(*(task() for _ in range(in_flight)))
    return time.perf_counter() - started, time.process_time() - cpu, latencies


@contextlib.asynccontextmanager
async def open_log(
    backend: str, max_batch: int, folder: Path, dsn: str
) -> AsyncIterator[SqliteConsentLog | PostgresConsentLog]:
    log: SqliteConsentLog | PostgresConsentLog
    schema = f"axb_bench_{secrets.token_hex(4)}"
    if backend == "sqlite":
        log = SqliteConsentLog(folder / f"{schema}.sqlite3", max_batch=max_batch)
    else:
        log = PostgresConsentLog(dsn, schema=schema, max_batch=max_batch)
    await log.start()
    try:
        yield log
    finally:
        await log.close()
        if backend == "postgres":
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()


async def bench_appends(
    backend: str, mode: str, records: list[ConsentRecord], in_flight: int, folder: Path, dsn: str
) -> AppendResult:
    max_batch = 2048 if mode == "group commit" else 1
    async with open_log(backend, max_batch, folder, dsn) as log:
        await drive(log, build_records(50), 50)  # warm up: connections, statements, pages
        commits_before = log.commits
        seconds, cpu_seconds, latencies = await drive(log, records, in_flight)
        commits = log.commits - commits_before
        assert await log.size() == 50 + len(records)
        subject_access_ms = await time_subject_access(log, records) if max_batch > 1 else None
    return AppendResult(
        backend,
        mode,
        max_batch,
        len(records),
        seconds,
        cpu_seconds,
        commits,
        _percentile(latencies, 0.50) * 1000,
        _percentile(latencies, 0.99) * 1000,
        subject_access_ms,
    )


async def time_subject_access(
    log: SqliteConsentLog | PostgresConsentLog, records: list[ConsentRecord], people: int = 50
) -> float:
    """The price of the per-block pseudonym index: the mean time of one subject-access lookup
    (a person's pseudonym and NINO pseudonym) over the log just written."""
    step = max(1, len(records) // people)
    chosen = [record.subject for record in records[::step][:people]]
    started = time.perf_counter()
    for subject in chosen:
        found = await log.by_subject([subject.person], [subject.nino] if subject.nino else [])
        assert found, "every chosen subject has records"
    return (time.perf_counter() - started) / len(chosen) * 1000


async def durability_settings(folder: Path, dsn: str | None) -> dict[str, Any]:
    """The durability the stores really run with, read back from their own connections."""
    probe = SqliteConsentLog(folder / "probe.sqlite3")
    await probe.start()
    db = probe._connection()  # the store's own connection: synchronous is set per connection
    synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    settings: dict[str, Any] = {
        "sqlite_version": sqlite3.sqlite_version,
        "sqlite_journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
        "sqlite_synchronous": synchronous[db.execute("PRAGMA synchronous").fetchone()[0]],
    }
    await probe.close()
    if dsn:
        conn = await asyncpg.connect(dsn)
        try:
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
                settings[f"postgres_{name}"] = await conn.fetchval(f"SHOW {name}")
        finally:
            await conn.close()
    return settings


# --- verification --------------------------------------------------------------------------


class SyntheticStore:
    """Just enough of a consent-log store for ``export_lines``: records are made on demand, in
    order, with real salts and digests; checkpoints are signed over the real tree."""

    def __init__(self, size: int, signer: NoteSigner) -> None:
        self.size = size
        self.signer = signer
        self.tree = MerkleTree()
        people = [
            pseudonymise(
                Subject(
                    {
                        "family_name": FAMILY[n % len(FAMILY)],
                        "date_of_birth": f"19{50 + n % 50}-0{1 + n % 9}-{10 + n % 18}",
                        "nino": f"ZX{n:06d}A",
                    }
                ),
                KEY,
            )
            for n in range(5000)
        ]
        self._people: list[SubjectPseudonyms] = people

    def _record(self, n: int) -> ConsentRecord:
        outcome = OUTCOMES[n % len(OUTCOMES)]
        return ConsentRecord(
            recorded_at_ms=1_764_230_000_000 + n * 3,
            requester=REQUESTERS[n % 2],
            purpose="blue-badge-application" if n % 2 == 0 else "free-school-meals-application",
            check="blue-badge-automatic" if n % 2 == 0 else "free-school-meals",
            check_version=1,
            lawful_basis="public-task",
            consent=None,
            outcome=outcome,  # type: ignore[arg-type]
            refusal="purpose-not-permitted" if outcome == "refused" else None,
            query_jti=secrets.token_urlsafe(24),
            subject=self._people[(n * 7919) % len(self._people)],
            as_of="2026-11-27",
            assurance="P2",
            providers=("dwp-reference",) if outcome != "refused" else (),
        )

    async def entries(self, start: int, stop: int) -> list[StoredRecord]:
        assert start == self.tree.size, "export_lines reads the records in order"
        out = []
        for n in range(start, stop):
            entry = entry_for(self._record(n), n)
            self.tree.append(leaf_hash(leaf_input(entry.digest)))
            out.append(StoredRecord(n, entry.digest, entry.salt, entry.body))
        return out

    async def checkpoints(self) -> list[tuple[int, str]]:
        sizes = [*range(CHECKPOINT_EVERY, self.size, CHECKPOINT_EVERY), self.size]
        return [
            (size, sign_checkpoint(Checkpoint(LOG_ORIGIN, size, self.tree.root(size)), self.signer))
            for size in sizes
        ]


class SyntheticLog:
    """What ``export_lines`` reads (an ``ExportSource``): the log's origin, its records, its
    checkpoints and consistency proofs, from the synthetic store and its tree."""

    def __init__(self, store: SyntheticStore) -> None:
        self.store, self.origin, self.tree = store, LOG_ORIGIN, store.tree

    async def records(self, start: int, stop: int) -> list[StoredRecord]:
        return await self.store.entries(start, stop)

    async def checkpoints(self) -> list[tuple[int, str]]:
        return await self.store.checkpoints()

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.tree.consistency_proof(old_size, new_size)


async def write_export(path: Path, size: int) -> tuple[str, float]:
    skey, vkey = generate_signer(LOG_ORIGIN)
    store = SyntheticStore(size, NoteSigner(skey))
    started = time.perf_counter()
    with path.open("wb") as handle:
        async for line in export_lines(SyntheticLog(store), size):
            handle.write(line)
    return vkey, time.perf_counter() - started


def bench_verify(path: Path, vkey: str, folder: Path) -> dict[str, Any]:
    verifier = NoteVerifier(vkey)
    started, cpu = time.perf_counter(), time.process_time()
    with path.open("rb") as lines:
        report = verify_export(lines, verifier)
    in_process, in_process_cpu = time.perf_counter() - started, time.process_time() - cpu
    if not report.ok:
        raise SystemExit(f"the synthetic export does not verify: {report.problems[:5]}")

    key_file = folder / "log.vkey"
    key_file.write_text(vkey + "\n")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker.cli",
            "audit",
            "verify",
            str(path),
            "--log-key",
            str(key_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    cli = time.perf_counter() - started
    if done.returncode != 0 or "OK: the export verifies" not in done.stdout:
        raise SystemExit(f"axb audit verify failed: {done.stdout}{done.stderr}")
    max_rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "records": report.records,
        "checkpoints": report.checkpoints,
        "export_bytes": path.stat().st_size,
        "verify_export_s": round(in_process, 2),
        "verify_export_cpu_s": round(in_process_cpu, 2),
        "verify_records_per_s": round(report.records / in_process),
        "axb_audit_verify_s": round(cli, 2),
        "axb_audit_verify_max_rss_mib": round(max_rss_kib / 1024),
    }


# --- report --------------------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The file system type ``path`` is on (from /proc/mounts): tmpfs would make fsync free."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            point = fields[1]
            if str(path.resolve()).startswith(point) and len(point) > len(best):
                best, kind = point, f"{fields[2]} ({fields[0]} on {point})"
    return kind


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event_loop": type(asyncio.get_event_loop_policy()).__module__.split(".")[0],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| backend | mode | records | seconds | records/s | records per CPU-s | commits "
        "| mean batch | append p50 ms | append p99 ms | subject access ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results["appends"]:
        rows.append(
            f"| {r['backend']} | {r['mode']} | {r['records']:,} | {r['seconds']:.2f} "
            f"| {r['records_per_s']:,.0f} | {r['records_per_cpu_s']:,.0f} | {r['commits']:,} "
            f"| {r['mean_batch']:,.1f} | {r['append_latency_p50_ms']:.1f} "
            f"| {r['append_latency_p99_ms']:.1f} "
            f"| {'' if r['subject_access_ms'] is None else format(r['subject_access_ms'], '.1f')} |"
        )
    lines = ["\n".join(rows), ""]
    for backend, ratio in results["group_commit_ratio"].items():
        lines.append(f"- {backend}: group commit is {ratio:.0f}x one commit per record")
    verify = results.get("verify")
    if verify:
        lines.append(
            f"- verify_export of {verify['records']:,} records ({verify['checkpoints']:,} "
            f"checkpoints, {verify['export_bytes'] / 2**20:,.0f} MiB): "
            f"{verify['verify_export_s']:.1f} s, {verify['verify_export_cpu_s']:.1f} CPU-s "
            f"({verify['verify_records_per_s']:,} records/s); "
            f"`axb audit verify`: {verify['axb_audit_verify_s']:.1f} s, "
            f"max RSS {verify['axb_audit_verify_max_rss_mib']:,} MiB "
            f"(export written in {verify['write_export_s']:.1f} s)"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    backends = ["sqlite"] + ([] if args.skip_postgres else ["postgres"])
    pg_dsn = None if args.skip_postgres else args.pg_dsn
    results: dict[str, Any] = {
        "command": "python bench/bench_log.py " + " ".join(sys.argv[1:]),
        "machine": {**machine(), "log_folder_filesystem": filesystem(folder)},
        "durability": await durability_settings(folder, pg_dsn),
        "in_flight": args.in_flight,
        "appends": [],
        "group_commit_ratio": {},
    }
    many = build_records(args.records)
    few = many[: args.single_records]
    for backend in backends:
        rates = {}
        for mode, records in (("group commit", many), ("one commit per record", few)):
            result = await bench_appends(
                backend, mode, records, args.in_flight, folder, args.pg_dsn
            )
            results["appends"].append(result.as_json())
            rates[mode] = result.rate
            print(f"  {backend:8} {mode:22} {result.rate:>10,.0f} records/s", file=sys.stderr)
        results["group_commit_ratio"][backend] = round(
            rates["group commit"] / rates["one commit per record"], 1
        )
    del many, few
    if args.verify_records:
        export = args.export or folder / "export.jsonl"
        vkey, written = await write_export(export, args.verify_records)
        print(
            f"  export of {args.verify_records:,} records written in {written:.1f} s",
            file=sys.stderr,
        )
        verify = bench_verify(export, vkey, folder)
        verify["write_export_s"] = round(written, 1)
        results["verify"] = verify
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = {
        "appends_per_s": TARGET_APPENDS,
        "group_commit_ratio": TARGET_RATIO,
        "verify_1m_s": TARGET_VERIFY_S,
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="appends with group commit")
    parser.add_argument(
        "--single-records", type=int, default=5_000, help="appends with one commit per record"
    )
    parser.add_argument("--in-flight", type=int, default=2_000, help="concurrent appending tasks")
    parser.add_argument(
        "--verify-records", type=int, default=1_000_000, help="export size to verify (0: skip)"
    )
    parser.add_argument("--export", type=Path, default=None, help="write the export here")
    parser.add_argument("--pg-dsn", default=os.environ.get("AXB_BENCH_PG_DSN", DEFAULT_PG_DSN))
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true", help="the stock asyncio event loop")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the SQLite files")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    args.single_records = min(args.single_records, args.records)
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as `axb serve` does
    with tempfile.TemporaryDirectory(prefix="axb-bench-log-", dir=args.dir) as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
