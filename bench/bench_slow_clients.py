"""A thousand slow connections against the broker: are they closed in time, and do real
checks still get through at their usual speed?

    .venv/bin/python bench/bench_slow_clients.py [--seconds N] [--slow C] [--timeout-s T]

All on 127.0.0.1, with the processes of ``bench_overload.py`` (two reference providers and
``axb serve``, the rate limiter lifted, the default ``max_connections`` of 1,000):

1. **baseline**: 16 closed-loop clients send checks for N seconds; their p99 is the floor;
2. **under attack**: the same 16 clients for another N seconds while C slow connections are
   held open (a third each): *silent* ones that connect and send nothing, *slow heads* that
   send a request head a byte a second, and *slow bodies* that send a complete head of a
   check and then its body a byte a second. Each attacker reconnects as soon as the broker
   closes it, so C are always trying. The broker runs with head and body timeouts of T
   seconds;
3. it reports, per kind, how long the broker let a slow connection live (it must close each
   within its timeout, plus scheduling slack), how many the connection limit displaced, and
   the ratio of the checks' p99 under attack to the baseline (the issue asks ≤ 1.2).

It prints a markdown table and, with ``--json PATH``, writes every number as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_checks import Tokens, drive, machine, percentile
from bench_overload import open_fds, report, stack

KINDS = ("silent", "slow-head", "slow-body")


async def attacker(
    port: int, kind: str, stop_at: float, lifetimes: list[float], outcomes: Counter[str]
) -> None:
    """One slow client of ``kind``, reconnecting until ``stop_at``; records how long the
    broker kept each of its connections open."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    body_head = (
        b"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\n"
        b"Content-Length: 2000\r\n\r\n"
    )
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            outcomes["connect-failed"] += 1
            await asyncio.sleep(0.1)
            continue
        opened = time.monotonic()
        closed_by_broker = False
        try:
            if kind == "slow-body":
                writer.write(body_head)
            trickle = {"silent": b"", "slow-head": head, "slow-body": b"x" * 2000}[kind]
            position = 0
            while time.monotonic() < stop_at:
                if position < len(trickle):
                    writer.write(trickle[position : position + 1])
                    position += 1
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(4096), 1.0) == b"":
                        closed_by_broker = True
                        break
                    # a 408 arrives before the close: keep reading until the close
        except ConnectionError:
            closed_by_broker = True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if closed_by_broker:
            lifetimes.append(time.monotonic() - opened)
            outcomes["closed-by-broker"] += 1
        else:
            outcomes["still-open-at-end"] += 1


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    settings = {
        "header_timeout_s": args.timeout_s,
        "body_timeout_s": args.timeout_s,
        "max_checks_in_flight": 64,
    }
    async with stack(root, settings, pin=args.pin) as running:
        tokens = Tokens(running.council(), args.presign)
        port = int(running.scheme.broker_url.rsplit(":", 1)[1])
        pid = running.broker.process.pid

        async def load() -> Any:
            return await drive(
                running.checks_url,
                tokens,
                concurrency=16,
                warmup_s=1.0,
                seconds=args.seconds,
                target_pid=pid,
                other_pids={},
                keep_bodies=False,
            )

        print(f"baseline: 16 clients for {args.seconds}s", file=sys.stderr)
        baseline = await load()
        fds_before = open_fds(pid)
        print(f"under attack: {args.slow} slow connections", file=sys.stderr)
        # the attack lasts the warm-up, the measured window and a timeout more, so that every
        # connection opened in the window has had the time to be closed; it runs in a process
        # of its own, as an attacker would, so that it takes nothing from this one's clients
        duration = 1.0 + args.seconds + args.timeout_s + 2.0
        attack = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--attack", str(port), "--slow", str(args.slow),
            "--seconds", str(duration), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(min(2.0, args.timeout_s / 2))  # let the attackers get in
        attacked = await load()
        fds_during = open_fds(pid)
        out, _ = await attack.communicate()
        slow = json.loads(out)
        await asyncio.sleep(args.timeout_s + 1.0)
        fds_after = open_fds(pid)
    base_p99 = percentile(baseline.latencies_ms, 99)
    attack_p99 = percentile(attacked.latencies_ms, 99)
    return {
        "machine": machine(),
        "settings": {**settings, "max_connections": 1000},
        "slow_connections": args.slow,
        "baseline": {
            "checks_per_s": baseline.ok / args.seconds,
            "p50_ms": percentile(baseline.latencies_ms, 50),
            "p99_ms": base_p99,
            "errors": dict(baseline.errors),
        },
        "under_attack": {
            "checks_per_s": attacked.ok / args.seconds,
            "p50_ms": percentile(attacked.latencies_ms, 50),
            "p99_ms": attack_p99,
            "errors": dict(attacked.errors),
            "statuses": {str(k): v for k, v in attacked.statuses.items()},
        },
        "p99_ratio": attack_p99 / base_p99 if base_p99 else float("nan"),
        "slow": slow,
        "broker_fds": {"before": fds_before, "during": fds_during, "after": fds_after},
    }


def markdown(result: dict[str, Any]) -> str:
    base, attack = result["baseline"], result["under_attack"]
    rows = [
        (
            "baseline (16 clients)",
            f"{base['checks_per_s']:.0f} checks/s, p99 {base['p99_ms']:.1f} ms",
        ),
        (
            f"with {result['slow_connections']} slow connections",
            f"{attack['checks_per_s']:.0f} checks/s, p99 {attack['p99_ms']:.1f} ms",
        ),
        ("p99 under attack ÷ baseline", f"{result['p99_ratio']:.2f}"),
        (
            "checks/s under attack ÷ baseline",
            f"{attack['checks_per_s'] / base['checks_per_s']:.2f}" if base["checks_per_s"] else "-",
        ),
        ("check errors under attack", str(attack["errors"] or 0)),
    ]
    timeout = result["settings"]["header_timeout_s"]
    for kind, slow in result["slow"].items():
        rows.append(
            (
                f"{kind}: connections closed by the broker (timeout {timeout} s)",
                f"{slow['connections']}, lifetime p50 {slow['lifetime_p50_s']:.2f} s, "
                f"max {slow['lifetime_max_s']:.2f} s; "
                + ", ".join(f"{k}: {v}" for k, v in sorted(slow["outcomes"].items())),
            )
        )
    fds = result["broker_fds"]
    rows.append(
        (
            "broker open files before / during / after",
            f"{fds['before']} / {fds['during']} / {fds['after']}",
        )
    )
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


async def attack(port: int, count: int, seconds: float) -> dict[str, Any]:
    """``count`` slow clients, a third of each kind, for ``seconds``: what became of them."""
    stop_at = time.monotonic() + seconds
    lifetimes: dict[str, list[float]] = {kind: [] for kind in KINDS}
    outcomes: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    await asyncio.gather(
        *(attacker(port, kind, stop_at, lifetimes[kind], outcomes[kind]) for kind in kinds)
    )
    return {
        kind: {
            "connections": len(lifetimes[kind]),
            "lifetime_p50_s": percentile(lifetimes[kind], 50),
            "lifetime_max_s": max(lifetimes[kind], default=float("nan")),
            "outcomes": dict(outcomes[kind]),
        }
        for kind in KINDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--timeout-s", type=float, default=3.0)
    parser.add_argument("--presign", type=int, default=12000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="as bench_overload"
    )
    parser.add_argument("--attack", type=int, default=0, help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.attack:
        print(json.dumps(asyncio.run(attack(args.attack, args.slow, args.seconds))))
        return 0
    return report(run, args, "axb-slow-", markdown)


if __name__ == "__main__":
    sys.exit(main())
