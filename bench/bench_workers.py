"""``axb serve --workers 2`` ÷ ``--workers 1``: checks per second, same run, same machine.

    .venv/bin/python bench/bench_workers.py [--seconds N] [--concurrency C] [--json PATH]

All on 127.0.0.1, with the processes of ``bench_checks.py``: a development scheme (rate limit
raised so the limiter never answers), the DWP- and HMRC-style reference providers as their own
processes, and the load generator in this process. The brokers share Redis
(``--redis-url``, default database 13; keys expire by themselves) and a PostgreSQL log (a
schema of its own in ``--pg-dsn``, dropped afterwards), as workers must. Each of the two runs
starts ``axb serve --workers N`` on a fresh socket, warms up, and measures: checks answered per
second, the workers' CPU (cores busy), the providers' and the load generator's, and the whole
machine's. The providers and the load generator share the same 2 cores: the second worker
can add only what they leave free, which the report says beside the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
from bench_checks import (  # the same processes and queries as the end-to-end benchmark
    Service,
    Tokens,
    axb_command,
    drive,
    machine,
    spawn,
    wait_up,
)

from broker.scheme import dev as devscheme
from members.council import EligibilityClient

ROOT = Path(__file__).resolve().parents[1]


def worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


async def one_run(
    args: argparse.Namespace,
    scheme: devscheme.DevScheme,
    config: Path,
    workers: int,
    providers: dict[str, int],
    logs: Path,
) -> dict[str, Any]:
    listener = devscheme.bind_loopback()
    serve = ["serve", "--config", str(config), "--workers", str(workers)]
    serve += ["--redis-url", args.redis_url, "--listen-fd", str(listener.fileno())]
    broker: Service = spawn(f"broker-{workers}", [*axb_command(), *serve], listener, logs)
    try:
        await wait_up(broker, "/readyz")
        pids = [broker.process.pid]  # --workers 1 is the broker itself, no supervisor
        for _ in range(100 if workers > 1 else 0):
            pids = worker_pids(broker.process.pid)
            if len(pids) == workers:
                break
            await asyncio.sleep(0.1)
        assert len(pids) == workers, f"{len(pids)} workers running, not {workers}"
        await asyncio.sleep(1.0)  # every worker ready, not only the first to answer
        client = EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))
        tokens = Tokens(client, args.presign)
        watched = {**providers, **{f"worker-{n}": pid for n, pid in enumerate(pids)}}
        load = await drive(
            f"{broker.url}/v1/checks",
            tokens,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            seconds=args.seconds,
            target_pid=broker.process.pid,
            other_pids=watched,
            keep_bodies=False,
        )
    finally:
        broker.stop()
    workers_cpu = sum(v for k, v in load.other_cpu_s.items() if k.startswith("worker-"))
    return {
        "workers": workers,
        "checks_per_second": load.ok / args.seconds,
        "answered": load.ok,
        "not_200": load.completed - load.ok,
        "errors": dict(load.errors),
        "broker_cores_busy": workers_cpu / args.seconds,
        "providers_cores_busy": sum(load.other_cpu_s[name] for name in providers) / args.seconds,
        "loadgen_cores_busy": load.loadgen_cpu_s / args.seconds,
        "machine_cores_busy": load.machine_busy_cores,
        "supervisor_exit": broker.process.returncode,
    }


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    logs = root / "logs"
    logs.mkdir()
    listeners = devscheme.Listeners()
    scheme = devscheme.generate(root / "scheme", ports=listeners.ports)
    schema = f"axb_bench_{secrets.token_hex(4)}"
    text = scheme.broker_config.read_text()
    text = text.replace("rate_limit_per_second = 50", "rate_limit_per_second = 1000000")
    text = text.replace(
        'consent_log = "log/consent-log.sqlite3"',
        f'consent_log = "{args.pg_dsn}"\nconsent_log_schema = "{schema}"',
    )
    config = scheme.root / "broker-bench.toml"
    config.write_text(text)
    services: list[Service] = []
    try:
        for name in (devscheme.DWP, devscheme.HMRC):
            listener = listeners.providers[name]
            argv = ["provider", "serve", "--config", str(scheme.provider_config(name))]
            argv += ["--listen-fd", str(listener.fileno())]
            services.append(spawn(name, [*axb_command(), *argv], listener, logs))
        for service in services:
            await wait_up(service, "/healthz")
        providers = {s.name: s.process.pid for s in services}
        runs = [await one_run(args, scheme, config, n, providers, logs) for n in (1, 2)]
    finally:
        for service in services:
            service.stop()
        listeners.close()
        db = await asyncpg.connect(args.pg_dsn)
        try:
            await db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await db.close()
    one, two = runs
    return {
        "runs": runs,
        "workers_2_over_1": two["checks_per_second"] / one["checks_per_second"],
        "second_worker_adds": two["checks_per_second"] / one["checks_per_second"] - 1,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "machine": machine(),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| workers | checks/s | broker cores | providers cores | load generator cores | "
        "machine cores busy |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        rows.append(
            f"| {r['workers']} | {r['checks_per_second']:.0f} | {r['broker_cores_busy']:.2f} | "
            f"{r['providers_cores_busy']:.2f} | {r['loadgen_cores_busy']:.2f} | "
            f"{r['machine_cores_busy']:.2f} |"
        )
    rows.append(
        f"\n--workers 2 ÷ --workers 1 = {result['workers_2_over_1']:.2f} "
        f"(the second worker adds {result['second_worker_adds']:.0%})"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--presign", type=int, default=None, help="queries to sign first")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("AXB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.presign is None:
        args.presign = int(600 * (args.seconds + args.warmup))
    with tempfile.TemporaryDirectory(prefix="axb-bench-workers-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["supervisor_exit"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
