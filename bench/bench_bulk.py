"""Bulk jobs end to end: items/s from submission to the last result readable, against the
single-check throughput measured in the same run; the broker's RSS; status latency while a
job runs.

    .venv/bin/python bench/bench_bulk.py [--items 1000,100000] [--single-seconds 10]
        [--chunk 500] [--in-flight 250] [--worker] [--postgres DSN] [--kill-at F,F]
        [--json PATH]

All on 127.0.0.1: a development scheme in a temporary folder (rate limit raised so the
limiter never answers), the DWP- and HMRC-style reference providers and the broker
(``axb serve``) as their own processes, the council's side in this process.

1. **single checks** (the floor): free-school-meals checks, pre-signed, at concurrency 32 for
   ``--single-seconds``; checks/s answered;
2. **each job size**: distinct subjects (the synthetic population's people, then people no
   provider knows, so every item is a real check with a real provider round trip), submitted
   as one NDJSON job; the clock runs from the POST until the verified results file is
   downloaded; meanwhile a poller asks the job's status 20 times a second (each a signed
   request through the gate) and records its latency, and the broker's RSS is sampled every
   100 ms (``/proc/<pid>/status`` VmRSS, peak kept).

Items checked once each (no duplicates); the results manifest is verified and its count
checked.

3. **a killed job** (``--kill-at 0.3,0.99``): the largest size once more, the broker SIGKILLed
   each time the job's status says it has that share done and started again on the same socket;
   the job must still end ``completed`` with exactly one signed result a row, and the log must
   hold exactly one consent record for each item (counted in the log's database).

Prints a markdown table; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_checks import (  # noqa: E402
    axb_command,
    busy_cores,
    drive,
    machine,
    percentile,
    spawn,
    wait_up,
)

from broker.scheme import dev as devscheme  # noqa: E402
from connectors.reference.population import generate_population, subject_of  # noqa: E402
from members.bulk import BulkJobs, ItemsFile  # noqa: E402
from members.council import EligibilityClient  # noqa: E402
from trust import bulk  # noqa: E402

FSM = devscheme.FSM_CHECK
PURPOSE = "free-school-meals-application"
PROVIDERS = (devscheme.DWP, devscheme.HMRC)


def rss_mb(pid: int) -> float:
    """The process's resident set in MB (0 once it is gone: a broker killed mid-job)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def job_rows(n: int) -> list[dict[str, Any]]:
    people = generate_population()
    rows = []
    for i in range(n):
        person = people[i % len(people)]
        subject = dict(person.matching_fields().as_subject())
        if i >= len(people):  # beyond the population: someone no provider knows
            subject["family_name"] = f"{subject['family_name']} Resident{i}"
        rows.append({"ref": f"r{i}", "subject": subject})
    return rows


class Tokens:
    """Pre-signed free-school-meals queries, one per call."""

    def __init__(self, client: EligibilityClient, count: int) -> None:
        who = ("fsm-yes-income-support", "fsm-no", "no-match", "fsm-yes-pension-credit")
        self._tokens = [
            client.sign_query(FSM, purpose=PURPOSE, subject=subject_of(who[i % 4]), assurance="P2")[
                0
            ]
            for i in range(count)
        ]
        self._next = 0

    def __call__(self) -> str:
        token = self._tokens[self._next % len(self._tokens)]
        self._next += 1
        return token


Restart = Callable[[], Awaitable[int]]  # SIGKILL the process running jobs, start it again


async def run_job(
    client: EligibilityClient,
    n: int,
    broker_pid: int,
    *,
    kill_at: Sequence[float] = (),
    restart: Restart | None = None,
) -> dict[str, Any]:
    jobs = BulkJobs(client)
    kills = sorted(kill_at)
    killed_at: list[int] = []
    rows = job_rows(n)
    items = bulk.items_ndjson(rows)
    del rows
    peak = rss_mb(broker_pid)
    before = peak
    status_ms: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(broker_pid))
            await asyncio.sleep(0.1)

    started = time.perf_counter()
    job = await jobs.submit(
        items, ItemsFile("ndjson", n, bulk.digest_of(items)), check=FSM, purpose=PURPOSE,
        assurance="P2",
    )  # fmt: skip
    accepted = time.perf_counter() - started
    sampler = asyncio.create_task(sample())
    while True:
        asked = time.perf_counter()
        status = await jobs.status(job["id"])
        status_ms.append((time.perf_counter() - asked) * 1000)
        if status["status"] in bulk.TERMINAL:
            break
        if kills and restart is not None and status["processed"] >= kills[0] * n:
            kills.pop(0)
            killed_at.append(status["processed"])
            broker_pid = await restart()
        await asyncio.sleep(0.005 if kills else 0.05)
    signed, body = await jobs.results(job["id"], manifest_jti=job["manifest_jti"])
    elapsed = time.perf_counter() - started
    done.set()
    await sampler
    assert status["status"] == "completed", status
    assert signed.results == n == body.count(b"\n"), (signed.results, n)
    assert signed.records == status["subjects"] == n
    assert len(killed_at) == len(kill_at), f"the job ended before every kill: {killed_at}"
    return {
        "job_id": job["id"],
        "killed_at_processed": killed_at,
        "items": n,
        "seconds": round(elapsed, 2),
        "accepted_after_s": round(accepted, 2),
        "items_per_s": round(n / elapsed, 1),
        "counts": status["counts"],
        "rss_mb_before": round(before, 1),
        "rss_mb_peak": round(peak, 1),
        "status_requests": len(status_ms),
        "status_ms_p50": round(percentile(status_ms, 50), 2),
        "status_ms_p99": round(percentile(status_ms, 99), 2),
        "status_ms_max": round(max(status_ms), 2),
    }


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    background = await busy_cores(1.0)
    logs = root / "logs"
    logs.mkdir()
    listeners = devscheme.Listeners()
    scheme = devscheme.generate(root / "scheme", ports=listeners.ports)
    config = scheme.broker_config
    text = config.read_text().replace(
        "rate_limit_per_second = 50", "rate_limit_per_second = 1000000"
    )
    schema = f"axb_bench_{secrets.token_hex(4)}"  # a schema of its own, dropped after
    if args.postgres:
        text = text.replace(
            'consent_log = "log/consent-log.sqlite3"',
            f'consent_log = "{args.postgres}"\nconsent_log_schema = "{schema}"',
        )
    bulk_table = f"chunk_items = {args.chunk}\nitems_in_flight = {args.in_flight}\n"
    config.write_text(text + f"\n[bulk]\n{bulk_table}max_items = 200000\n")
    if args.worker:  # the broker taking traffic runs no jobs; a worker on its log does
        worker_config = config.with_name("broker-worker.toml")
        worker_config.write_text(config.read_text())
        config.write_text(config.read_text() + "run_jobs = false\n")
    services = []
    try:
        for provider in (devscheme.DWP, devscheme.HMRC):
            listener = listeners.providers[provider]
            serve = ["provider", "serve", "--config", str(scheme.provider_config(provider))]
            argv = [*axb_command(), *serve, "--listen-fd", str(listener.fileno())]
            services.append(spawn(provider, argv, listener, logs))
        kept = listeners.broker.dup()  # the broker's socket, for a restart after a kill

        def serve_broker(listener: Any) -> Any:
            serve = ["serve", "--config", str(config), "--listen-fd", str(listener.fileno())]
            return spawn("broker", [*axb_command(), *serve], listener, logs)

        broker = serve_broker(listeners.broker)
        services.append(broker)
        if args.worker:
            listener = devscheme.bind_loopback()
            serve = ["serve", "--config", str(worker_config), "--listen-fd", str(listener.fileno())]
            services.append(spawn("worker", [*axb_command(), *serve], listener, logs))
        for service in services:
            await wait_up(service, "/healthz" if service.name in PROVIDERS else "/readyz")
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_SCHOOLS)
        ) as client:
            tokens = Tokens(client, int(600 * (args.single_seconds + 2)))
            single = await drive(
                f"{scheme.broker_url}/v1/checks", tokens, concurrency=32, warmup_s=2.0,
                seconds=args.single_seconds, target_pid=broker.process.pid, other_pids={},
                keep_bodies=False,
            )  # fmt: skip
            single_per_s = single.ok / args.single_seconds
            runs_jobs = services[-1] if args.worker else broker  # whose RSS grows with a job
            jobs = [await run_job(client, n, runs_jobs.process.pid) for n in args.items]
            if args.kill_at:

                async def restart() -> int:
                    """SIGKILL the broker mid-job and start it again on the same socket."""
                    nonlocal broker
                    broker.process.send_signal(signal.SIGKILL)
                    broker.process.wait(10)
                    services.remove(broker)
                    broker = serve_broker(kept.dup())
                    services.append(broker)
                    await wait_up(broker, "/readyz")
                    return int(broker.process.pid)

                n = max(args.items)
                killed = await run_job(
                    client, n, broker.process.pid, kill_at=args.kill_at, restart=restart
                )
                killed["records_for_job"] = await job_records(args, config, schema, killed)
                jobs.append(killed)
    finally:
        for service in services:
            service.stop()
        if args.postgres:
            conn = await asyncpg.connect(args.postgres)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()
    for job in jobs:
        job["times_single"] = round(job["items_per_s"] / single_per_s, 2) if single_per_s else None
    return {
        "machine": machine(),
        "background_busy_cores": round(background, 2),
        "log": "postgresql" if args.postgres else "sqlite",
        "chunk_items": args.chunk,
        "items_in_flight": args.in_flight,
        "worker": args.worker,
        "single_checks_per_s": round(single_per_s, 1),
        "single_p99_ms": round(percentile(single.latencies_ms, 99), 1),
        "jobs": jobs,
    }


async def job_records(
    args: argparse.Namespace, config: Path, schema: str, job: dict[str, Any]
) -> dict[str, int]:
    """The consent records the log holds for ``job``: in all, and distinct items (each item's
    record carries ``query_jti`` = job id ``.`` item)."""
    sql = "SELECT COUNT(*), COUNT(DISTINCT query_jti) FROM records WHERE query_jti LIKE {}"
    pattern = job["job_id"] + ".%"
    if args.postgres:
        conn = await asyncpg.connect(args.postgres, server_settings={"search_path": schema})
        try:
            row = await conn.fetchrow(sql.format("$1"), pattern)
        finally:
            await conn.close()
        total, distinct = row[0], row[1]
    else:
        from broker.settings import load_settings

        path = load_settings(config).consent_log_path
        with contextlib.closing(sqlite3.connect(path)) as db:
            total, distinct = db.execute(sql.format("?"), (pattern,)).fetchone()
    return {"records": int(total), "distinct_items": int(distinct)}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"log: {result['log']}, chunk {result['chunk_items']}, "
        f"{result['items_in_flight']} items in flight"
        f"{', jobs run by a worker process' if result['worker'] else ''}; single checks: "
        f"{result['single_checks_per_s']}/s (p99 {result['single_p99_ms']} ms); the machine "
        f"was {result['background_busy_cores']} cores busy before the run",
        "",
        "| items | seconds | items/s | × single | undetermined | RSS before → peak (MB) "
        "| status p50 / p99 / max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for job in result["jobs"]:
        killed = job.get("killed_at_processed")
        kills = f" (SIGKILLed at {', '.join(f'{k:,}' for k in killed)} done)" if killed else ""
        lines.append(
            f"| {job['items']:,}{kills} | {job['seconds']} | {job['items_per_s']:,} | "
            f"{job['times_single']} | {job['counts']['undetermined']:,} | "
            f"{job['rss_mb_before']} → {job['rss_mb_peak']} | "
            f"{job['status_ms_p50']} / {job['status_ms_p99']} / {job['status_ms_max']} |"
        )
    for job in result["jobs"]:
        if "records_for_job" in job:
            found = job["records_for_job"]
            lines.append(
                f"\nkilled job {job['job_id']}: status completed, {job['items']:,} results "
                f"signed, {found['records']:,} consent records for it in the log "
                f"({found['distinct_items']:,} distinct items)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1000,100000", help="job sizes, comma-separated")
    parser.add_argument("--single-seconds", type=float, default=10.0)
    parser.add_argument("--chunk", type=int, default=500, help="the broker's bulk chunk_items")
    parser.add_argument("--in-flight", type=int, default=250, help="[bulk] items_in_flight")
    parser.add_argument(
        "--worker", action="store_true", help="jobs run by a second broker process (run_jobs)"
    )
    parser.add_argument("--postgres", default=None, help="a consent log DSN instead of SQLite")
    parser.add_argument(
        "--kill-at",
        default="",
        help="after the measured jobs, run the largest once more and SIGKILL the broker when "
        "the job is this far (fractions, comma-separated, e.g. 0.3,0.99), restarting it each "
        "time; then count the job's consent records in the log",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.items = [int(n) for n in args.items.split(",")]
    args.kill_at = [float(f) for f in args.kill_at.split(",") if f]
    if args.kill_at and args.worker:
        parser.error("--kill-at kills the broker that runs jobs: not with --worker")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with tempfile.TemporaryDirectory(prefix="axb-bench-bulk-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
