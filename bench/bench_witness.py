"""Witness cosigning must not add to a check's latency: p99 with two witnesses against none.

    .venv/bin/python bench/bench_witness.py [--seconds N] [--concurrency C] [--rounds R]

All on 127.0.0.1, with the processes of ``bench_checks.py`` (the DWP-style reference provider
and ``axb serve``, the rate limiter lifted), in R alternating rounds of two set-ups:

- **none**: a development scheme whose registry declares no witnesses;
- **two witnesses**: the same scheme with two witnesses (each ``axb witness serve``, its own
  process and state file) and a 2-of-2 policy; the broker checkpoints every 0.5 s, so it
  submits a checkpoint to both witnesses twice a second throughout the measured window.

Each round drives C closed-loop clients for N seconds after a warm-up and records every
check's latency. Rounds alternate (none, witnesses, none, ...) so that load from elsewhere on
the machine falls on both alike; the figure is the ratio of the p99 with witnesses to the p99
without, pooled over the rounds. It checks that the witnesses did cosign: after each witnessed
round the broker's ``/v1/log/checkpoint/cosigned`` must carry both witnesses' lines (its size
is printed beside the number of checks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_checks import (  # the same processes and queries as the end-to-end benchmark
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

AXB = [sys.executable, "-m", "broker.cli"]  # this checkout's code (run from its root)


def serve_command(role: str, config: Path, listener: socket.socket) -> list[str]:
    return [*AXB, *role.split(), "--config", str(config), "--listen-fd", str(listener.fileno())]


async def one_round(args: argparse.Namespace, root: Path, *, witnesses: bool) -> dict[str, Any]:
    logs = root / "logs"
    logs.mkdir(parents=True)
    listeners = devscheme.Listeners(witnesses=devscheme.WITNESSES if witnesses else ())
    scheme = devscheme.generate(root / "scheme", ports=listeners.ports)
    config = scheme.broker_config
    config.write_text(
        config.read_text()
        .replace("rate_limit_per_second = 50", "rate_limit_per_second = 1000000")
        .replace("checkpoint_every_seconds = 5.0", "checkpoint_every_seconds = 0.5")
    )
    services: list[Service] = []
    try:
        provider = listeners.providers[devscheme.DWP]
        services.append(
            spawn(
                "dwp",
                serve_command("provider serve", scheme.provider_config(devscheme.DWP), provider),
                provider,
                logs,
            )
        )
        for wid, sock in listeners.witnesses.items():
            services.append(
                spawn(
                    wid,
                    serve_command("witness serve", scheme.witness_config(wid), sock),
                    sock,
                    logs,
                )
            )
        broker = spawn(
            "broker", serve_command("serve", config, listeners.broker), listeners.broker, logs
        )
        services.append(broker)
        for service in services:
            await wait_up(service, "/readyz" if service is broker else "/healthz", 120)
        client = EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))
        tokens = Tokens(client, args.presign)
        load = await drive(
            f"{scheme.broker_url}/v1/checks",
            tokens,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            seconds=args.seconds,
            target_pid=broker.process.pid,
            other_pids={},
            keep_bodies=False,
        )
        cosigned_size, cosigners = 0, 0
        if witnesses:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{scheme.broker_url}/v1/log/checkpoint/cosigned") as response,
            ):
                note = await response.text()
            if response.status == 200:
                cosigned_size = int(note.split("\n")[1])
                cosigners = note.count("— witness.dev/")
    finally:
        for service in reversed(services):
            service.stop()
        listeners.close()
    return {
        "witnesses": witnesses,
        "latencies_ms": load.latencies_ms,
        "checks": load.ok,
        "errors": sum(load.errors.values()) + load.completed - load.ok,
        "statuses": {str(status): n for status, n in load.statuses.items()},
        "machine_busy_cores": load.machine_busy_cores,
        "cosigned_size": cosigned_size,
        "cosigners": cosigners,
    }


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rounds = []
    for number in range(args.rounds):
        for witnesses in (False, True):
            started = time.monotonic()
            result = await one_round(args, root / f"{number}-{int(witnesses)}", witnesses=witnesses)
            label = "two witnesses" if witnesses else "none"
            print(
                f"round {number + 1} {label}: {result['checks']} checks, p99 "
                f"{percentile(result['latencies_ms'], 99):.1f} ms "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
            )
            rounds.append(result)

    def pooled(witnesses: bool) -> list[float]:
        return [ms for r in rounds if r["witnesses"] == witnesses for ms in r["latencies_ms"]]

    none, two = pooled(False), pooled(True)
    summary = {
        name: {
            "checks": len(values),
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "checks_per_s": len(values) / (args.seconds * args.rounds),
        }
        for name, values in (("none", none), ("two_witnesses", two))
    }
    return {
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "p99_ratio": summary["two_witnesses"]["p99_ms"] / summary["none"]["p99_ms"],
        "per_round": [
            {
                "witnesses": r["witnesses"],
                "checks": r["checks"],
                "errors": r["errors"],
                "statuses": r["statuses"],
                "p99_ms": percentile(r["latencies_ms"], 99),
                "machine_busy_cores": r["machine_busy_cores"],
                "cosigned_size": r["cosigned_size"],
                "cosigners": r["cosigners"],
            }
            for r in rounds
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "| set-up | checks | checks/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("none", "no witnesses"), ("two_witnesses", "two witnesses, 2 of 2")):
        lines.append(
            f"| {label} | {s[name]['checks']} | {s[name]['checks_per_s']:.0f} | "
            f"{s[name]['p50_ms']:.1f} | {s[name]['p99_ms']:.1f} |"
        )
    lines.append(f"\np99 with two witnesses / p99 without: {result['p99_ratio']:.2f}")
    for r in result["per_round"]:
        if r["witnesses"]:
            lines.append(
                f"witnessed round: largest cosigned checkpoint {r['cosigned_size']} "
                f"with {r['cosigners']} witness lines; {r['errors']} not answered 200 "
                f"(statuses {r['statuses']})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--presign", type=int, default=6000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="axb-witness-bench-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    ok = all(r["cosigners"] == 2 for r in result["per_round"] if r["witnesses"])
    if not ok:
        print("the witnesses did not cosign: the figure proves nothing", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
