"""The broker at three times its sustainable rate: does it shed load fast and keep serving?

    .venv/bin/python bench/bench_overload.py [--seconds N] [--clients C] [--factor F] [--no-pin]

All on 127.0.0.1, with the processes of ``bench_checks.py`` (two reference providers and
``axb serve``, the rate limiter lifted):

1. **sustainable rate**: 16 closed-loop clients for N seconds; their throughput is the floor
   every other figure is a ratio of, measured in the same run;
2. **overload**: an open-loop arrival of F times that rate (default 3), from up to C
   concurrent clients (default 500), each giving up after 2 s, for N seconds. Refusals
   (503 ``overloaded``) and accepted checks are timed apart;
3. **soak** (``--soak-seconds S``): half the sustainable rate for S seconds, sampling the
   broker's RSS and open files each second;
4. **records**: the consent log's records written during the overload are counted against
   the answers received in it, so a record for a check nobody waited for would show.

It prints a markdown table and, with ``--json PATH``, writes every number as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from bench_checks import (  # the same processes and queries as the end-to-end benchmark
    JWT,
    Service,
    Tokens,
    drive,
    machine,
    percentile,
    spawn,
    wait_up,
)

from broker.scheme import dev as devscheme
from members.council import EligibilityClient

AXB = [sys.executable, "-m", "broker.cli"]
PROVIDERS = (devscheme.DWP, devscheme.HMRC)  # this checkout's code (run from its root)


async def overload(
    url: str, tokens: Tokens, *, rate: float, clients: int, seconds: float, timeout_s: float
) -> dict[str, Any]:
    """Open-loop arrivals at ``rate`` per second: a query leaves on schedule whether or not
    earlier ones were answered (as councils' traffic does), at most ``clients`` at once."""
    accepted_ms: list[float] = []
    refused_ms: list[float] = []
    statuses: Counter[str] = Counter()
    places = asyncio.Semaphore(clients)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:

        async def one(token: str) -> None:
            sent = time.monotonic()
            try:
                async with session.post(
                    url, data=token, headers={"Content-Type": JWT, "Accept": JWT}
                ) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                statuses["client-timeout"] += 1
                return
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
                return
            finally:
                places.release()
            elapsed = (time.monotonic() - sent) * 1000
            statuses[str(status)] += 1
            (accepted_ms if status == 200 else refused_ms).append(elapsed)

        tasks = []
        started = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < started + seconds:
            due = int((now - started) * rate)
            while sent < due:
                if places.locked():  # every client is busy: this arrival is lost
                    statuses["no-free-client"] += 1
                else:
                    await places.acquire()
                    tasks.append(asyncio.create_task(one(tokens())))
                sent += 1
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        window = time.monotonic() - started
    return {
        "offered_per_s": rate,
        "seconds": window,
        "statuses": dict(statuses),
        "accepted_per_s": len(accepted_ms) / seconds,
        "accepted_p50_ms": percentile(accepted_ms, 50),
        "accepted_p99_ms": percentile(accepted_ms, 99),
        "refused_p50_ms": percentile(refused_ms, 50),
        "refused_p99_ms": percentile(refused_ms, 99),
        "answered": len(accepted_ms),
    }


def count_records(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
    return int(count)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def soak(
    url: str, tokens: Tokens, *, rate: float, seconds: float, pid: int
) -> dict[str, Any]:
    """Half load for ``seconds``: errors, and the broker's RSS and open files sampled each
    second after the first fifth (the warm-up)."""
    samples: list[tuple[int, int]] = []

    async def sample() -> None:
        while True:
            samples.append((rss_kib(pid), open_fds(pid)))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    try:
        load = await overload(url, tokens, rate=rate, clients=64, seconds=seconds, timeout_s=2.0)
    finally:
        sampler.cancel()
    warm = samples[len(samples) // 5 :] or samples
    rss = [r for r, _ in warm]
    fds = [f for _, f in warm]
    return {
        "seconds": seconds,
        "offered_per_s": rate,
        "statuses": load["statuses"],
        "p99_ms": load["accepted_p99_ms"],
        "rss_kib_after_warmup": rss[0],
        "rss_kib_at_end": rss[-1],
        "rss_growth": (rss[-1] - rss[0]) / rss[0] if rss[0] else 0.0,
        "fds_min_max": [min(fds), max(fds)],
    }


@dataclass(frozen=True)
class Stack:
    scheme: devscheme.DevScheme
    broker: Service
    front_url: str | None = None  # --nginx: where the load goes instead of the broker

    @property
    def checks_url(self) -> str:
        return f"{self.front_url or self.scheme.broker_url}/v1/checks"

    def council(self) -> EligibilityClient:
        return EligibilityClient.from_config(
            self.scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        )


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {root}/nginx-body;
  proxy_temp_path {root}/nginx-proxy;
  limit_conn_zone $server_name zone=checks:1m;
  upstream broker {{ server 127.0.0.1:{broker_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    client_max_body_size 16k;
    location = /v1/checks {{
      limit_conn checks {limit};    # checks in the broker at once: the rest refused here
      limit_conn_status 503;
      error_page 503 = @overloaded;
      proxy_pass http://broker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location @overloaded {{
      default_type application/problem+json;
      add_header Retry-After 1 always;
      return 503 '{{"type":"urn:ax-broker:problem:overloaded","status":503}}';
    }}
    location / {{
      proxy_pass http://broker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def start_nginx(root: Path, broker_port: int, limit: int) -> Service:
    """Debian's nginx in front of the broker, refusing checks beyond ``limit`` in flight
    before they reach Python (``limit_conn``: a 503 problem with ``Retry-After``)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    probe = devscheme.bind_loopback()  # nginx binds its own port: one the kernel chose
    port = probe.getsockname()[1]
    probe.close()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, broker_port=broker_port, port=port, limit=limit))
    with (root / "nginx.log").open("ab") as log:
        process = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(root)], stdout=log, stderr=log
        )
    return Service("nginx", process, f"http://127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def stack(
    root: Path, settings: dict[str, object], *, pin: bool = False, nginx_limit: int = 0
) -> AsyncIterator[Stack]:
    """Two reference providers and ``axb serve`` as processes on 127.0.0.1, the broker with
    the rate limiter lifted and ``settings`` as top-level keys of its config. With ``pin``
    (and two CPUs or more) the broker gets CPU 0 to itself and everything else — providers,
    this load generator — shares the rest, as if the clients were on other machines: the
    broker's own work under overload is then what is measured, not a fight for its core."""
    logs = root / "logs"
    logs.mkdir()
    listeners = devscheme.Listeners()
    scheme = devscheme.generate(root / "scheme", ports=listeners.ports)
    config = scheme.broker_config
    text = config.read_text().replace(
        "rate_limit_per_second = 50", "rate_limit_per_second = 1000000"
    )
    top = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    config.write_text(top + text)  # top-level keys: before the first [table]
    services: list[Service] = []
    try:
        for provider in (devscheme.DWP, devscheme.HMRC):
            listener = listeners.providers[provider]
            argv = [*AXB, "provider", "serve", "--config"]
            argv += [str(scheme.provider_config(provider)), "--listen-fd", str(listener.fileno())]
            services.append(spawn(provider, argv, listener, logs))
        argv = [*AXB, "serve", "--config", str(config)]
        broker = spawn("broker", [*argv, "--listen-fd", str(listeners.broker.fileno())],
                       listeners.broker, logs)  # fmt: skip
        services.append(broker)
        cpus = sorted(os.sched_getaffinity(0))
        if pin and len(cpus) >= 2:
            os.sched_setaffinity(broker.process.pid, cpus[:1])
            for pid in [0] + [s.process.pid for s in services if s is not broker]:
                os.sched_setaffinity(pid, cpus[1:])
        front = start_nginx(root, scheme.broker_port, nginx_limit) if nginx_limit else None
        if front is not None:
            services.append(front)
            if pin and len(cpus) >= 2:
                os.sched_setaffinity(front.process.pid, cpus[1:])
        for service in services:
            await wait_up(service, "/healthz" if service.name in PROVIDERS else "/readyz")
        yield Stack(scheme, broker, None if front is None else front.url)
    finally:
        for service in reversed(services):
            service.stop()
        listeners.close()


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    settings = {
        "max_checks_in_flight": args.max_in_flight,
        "max_check_wait_ms": args.max_wait_ms,
        "max_loop_lag_ms": args.max_lag_ms,
    }
    async with stack(root, settings, pin=args.pin, nginx_limit=args.nginx) as running:
        scheme, broker = running.scheme, running.broker
        client = running.council()
        tokens = Tokens(client, args.presign)
        url = running.checks_url
        print(f"sustainable rate: 16 clients for {args.seconds}s", file=sys.stderr)
        floor = await drive(
            url,
            tokens,
            concurrency=16,
            warmup_s=1.0,
            seconds=args.seconds,
            target_pid=broker.process.pid,
            other_pids={},
            keep_bodies=False,
        )
        sustainable = floor.ok / args.seconds
        print(
            f"overload: {args.factor} x {sustainable:.0f}/s, {args.clients} clients",
            file=sys.stderr,
        )
        log_db = scheme.root / "log" / "consent-log.sqlite3"
        before = count_records(log_db)
        over = await overload(
            url,
            tokens,
            rate=args.factor * sustainable,
            clients=args.clients,
            seconds=args.seconds,
            timeout_s=2.0,
        )
        await asyncio.sleep(1.0)  # the last checks in flight commit
        over["records"] = count_records(log_db) - before
        soaked = None
        if args.soak_seconds > 0:
            print(f"soak: half load for {args.soak_seconds}s", file=sys.stderr)
            soaked = await soak(
                url,
                tokens,
                rate=sustainable / 2,
                seconds=args.soak_seconds,
                pid=broker.process.pid,
            )
    return {
        "machine": machine(),
        "settings": {**settings, "pinned": args.pin, "nginx_limit_conn": args.nginx},
        "sustainable": {
            "checks_per_s": sustainable,
            "p50_ms": percentile(floor.latencies_ms, 50),
            "p99_ms": percentile(floor.latencies_ms, 99),
        },
        "overload": over,
        "accepted_over_sustainable": over["accepted_per_s"] / sustainable if sustainable else 0,
        "records_beyond_answers_seen": over["records"] - over["answered"],
        "soak": soaked,
    }


def markdown(result: dict[str, Any]) -> str:
    over, floor = result["overload"], result["sustainable"]
    share = result["accepted_over_sustainable"]
    rows = [
        (
            "sustainable rate (16 clients)",
            f"{floor['checks_per_s']:.0f} checks/s, p99 {floor['p99_ms']:.1f} ms",
        ),
        ("offered in overload", f"{over['offered_per_s']:.0f} checks/s"),
        (
            "accepted in overload",
            f"{over['accepted_per_s']:.0f} checks/s = {share:.0%} of sustainable",
        ),
        ("accepted p50 / p99", f"{over['accepted_p50_ms']:.1f} / {over['accepted_p99_ms']:.1f} ms"),
        ("refused p50 / p99", f"{over['refused_p50_ms']:.1f} / {over['refused_p99_ms']:.1f} ms"),
        ("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(over["statuses"].items()))),
        (
            "overload: records beyond the answers received",
            str(result["records_beyond_answers_seen"]),
        ),
    ]
    soaked = result.get("soak")
    if soaked:
        rows += [
            (
                f"soak, half load, {soaked['seconds']:.0f} s",
                ", ".join(f"{k}: {v}" for k, v in sorted(soaked["statuses"].items())),
            ),
            ("soak p99", f"{soaked['p99_ms']:.1f} ms"),
            (
                "soak RSS after warm-up → end",
                f"{soaked['rss_kib_after_warmup']} → {soaked['rss_kib_at_end']} KiB "
                f"({soaked['rss_growth']:+.1%})",
            ),
            ("soak open files min / max", "{} / {}".format(*soaked["fds_min_max"])),
        ]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--presign", type=int, default=30000)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=int, default=100)
    parser.add_argument("--max-lag-ms", type=int, default=50)
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="then half load")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the broker on a CPU of its own, the rest on the others (default: on)",
    )
    parser.add_argument(
        "--nginx",
        type=int,
        default=0,
        metavar="N",
        help="put Debian's nginx in front, refusing checks beyond N in flight (limit_conn)",
    )
    parser.add_argument("--json", type=Path, default=None)
    return report(run, parser.parse_args(argv), "axb-overload-", markdown)


def report(
    run: Callable[[argparse.Namespace, Path], Awaitable[dict[str, Any]]],
    args: argparse.Namespace,
    prefix: str,
    markdown: Callable[[dict[str, Any]], str],
) -> int:
    """Run a benchmark in a temporary folder; print its table, and its JSON to ``--json``."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
