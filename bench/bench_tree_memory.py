"""Memory benchmark of an in-memory Merkle tree: bytes per record, and 100 M records.

    .venv/bin/python bench/bench_tree_memory.py [--records N ...] [--how extend|append]
                                                [--json PATH]

Issue 9 item 10 (measure only). Until the log's tree moved into tiles (issue 11,
``bench_log_tiles.py`` measures the broker now), ``broker.transparency.TransparencyLog`` held
one ``trust.merkle.MerkleTree`` of every record's leaf hash for as long as the broker ran. The
offline verifier (``axb audit verify``, ``trust.log_verify``) still builds one over the export
it checks. This measures what such a tree costs.

For each N (default 100,000, 1,000,000 and 2,000,000) it starts two fresh interpreters, so
one size's garbage or fragmentation never counts against another and ``tracemalloc`` never
slows or inflates the RSS run:

1. **RSS.** Imports, then reads the resident set size (``/proc/self/statm``), appends N leaf
   hashes to an empty ``MerkleTree``, and reads it again; the difference over N is the cost
   the operating system sees (including the allocator's slack and the bytearrays' spare
   capacity).
2. **tracemalloc.** The same appends with ``tracemalloc`` tracing: Python-level bytes still
   allocated at the end (current) and at the worst moment (peak, as a ``bytearray`` grows by
   copying), over N.

Beside them, the packed payload (the sum of the tree's level lengths, about 64 bytes a leaf:
32 for the leaf, 32 for all the interior nodes above it) and the extrapolation of each measure
to 100 M records. Leaf hashes are random 32-byte strings, generated one chunk at a time so
that only one chunk of them ever counts (in the peak, as the broker's sync holds one chunk of
digests too). ``--how extend`` (default) appends in chunks of
50,000 through ``MerkleTree.extend``, as ``TransparencyLog.sync`` replays the log at start-up;
``--how append`` adds one leaf at a time. A default run takes about half a minute.

It prints a markdown table and, with ``--json PATH``, writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trust.merkle import HASH_SIZE, MerkleTree  # noqa: E402

DEFAULT_RECORDS: Final = (100_000, 1_000_000, 2_000_000)
EXTRAPOLATE_TO: Final = 100_000_000
CHUNK: Final = 50_000
"""Leaves per ``extend`` call: ``broker.transparency``'s sync chunk."""
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def _chunks(records: int) -> Iterator[list[bytes]]:
    """``records`` leaf hashes, ``CHUNK`` at a time: random 32-byte strings, which the tree
    cannot tell from ``leaf_hash`` output and which cost a slice each instead of a hash."""
    for start in range(0, records, CHUNK):
        block = os.urandom(HASH_SIZE * (min(records, start + CHUNK) - start))
        yield [block[i : i + HASH_SIZE] for i in range(0, len(block), HASH_SIZE)]


def _fill(tree: MerkleTree, records: int, how: str) -> None:
    for chunk in _chunks(records):
        if how == "extend":
            tree.extend(chunk)
        else:
            for leaf in chunk:
                tree.append(leaf)


def _payload(tree: MerkleTree) -> int:
    """Bytes of hashes the tree holds: what a perfect packing would need."""
    return sum(len(level) for level in tree._levels)  # the layout is what is measured


def measure(records: int, how: str, mode: str) -> dict[str, Any]:
    """One measurement in this process (which should be fresh): ``mode`` rss or tracemalloc."""
    list(_chunks(min(records, CHUNK)))  # warm up hashing and the allocator's small pools
    tree = MerkleTree()
    started = time.perf_counter()
    if mode == "rss":
        before = _rss_bytes()
        _fill(tree, records, how)
        used = _rss_bytes() - before
        result: dict[str, Any] = {"rss_delta_bytes": used}
    else:
        tracemalloc.start()
        _fill(tree, records, how)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result = {"traced_current_bytes": current, "traced_peak_bytes": peak}
    result["seconds"] = time.perf_counter() - started
    result["payload_bytes"] = _payload(tree)
    assert tree.size == records
    return result


def _child(records: int, how: str, mode: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--records", str(records)]
    done = subprocess.run(
        [*command, "--how", how], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(sizes: Sequence[int], how: str) -> list[dict[str, Any]]:
    rows = []
    for records in sizes:
        rss = _child(records, how, "rss")
        traced = _child(records, how, "tracemalloc")
        row = {"records": records, **rss, **traced, "rss_seconds": rss["seconds"]}
        row.pop("seconds")
        for name in ("rss_delta_bytes", "traced_current_bytes", "traced_peak_bytes"):
            row[name.removesuffix("_bytes") + "_per_record"] = row[name] / records
        row["payload_per_record"] = row["payload_bytes"] / records
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "page_size": PAGE_SIZE,
    }


def render(rows: Sequence[dict[str, Any]], how: str) -> str:
    about = machine()
    lines = [
        f"MerkleTree memory ({how}; {about['nproc']} CPUs, Python {about['python']})",
        "",
        "| records | payload B/rec | RSS delta B/rec | traced B/rec (current) "
        "| traced B/rec (peak) | fill time | RSS at 100 M (extrapolated) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        at_target = row["rss_delta_per_record"] * EXTRAPOLATE_TO / 2**30
        lines.append(
            f"| {row['records']:,} | {row['payload_per_record']:.1f} "
            f"| {row['rss_delta_per_record']:.1f} | {row['traced_current_per_record']:.1f} "
            f"| {row['traced_peak_per_record']:.1f} | {row['rss_seconds']:.1f} s "
            f"| {at_target:.1f} GiB |"
        )
    largest = rows[-1]
    lines += [
        "",
        f"At {EXTRAPOLATE_TO:,} records, from the largest run: payload "
        f"{largest['payload_per_record'] * EXTRAPOLATE_TO / 2**30:.1f} GiB, RSS "
        f"{largest['rss_delta_per_record'] * EXTRAPOLATE_TO / 2**30:.1f} GiB, traced peak "
        f"{largest['traced_peak_per_record'] * EXTRAPOLATE_TO / 2**30:.1f} GiB.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, nargs="+", default=list(DEFAULT_RECORDS), metavar="N"
    )
    parser.add_argument("--how", choices=("extend", "append"), default="extend")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--child", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(n <= 0 for n in args.records):
        parser.error("--records must be positive")
    if args.child is not None:
        print(json.dumps(measure(args.records[0], args.how, args.child)))
        return 0
    rows = run(args.records, args.how)
    print(render(rows, args.how))
    if args.json is not None:
        document = {"machine": machine(), "how": args.how, "runs": rows}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
