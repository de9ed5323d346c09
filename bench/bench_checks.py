"""End-to-end load benchmark of ``POST /v1/checks``, with the cost of ES256 beside it.

    .venv/bin/python bench/bench_checks.py [--seconds N] [--concurrency C] [--json PATH]

What it does, all on 127.0.0.1:

1. generates a development scheme in a temporary folder, with the broker's
   ``rate_limit_per_second`` raised to 1,000,000 so that the limiter never answers;
2. starts the two reference providers and the broker (``axb serve``) as their own processes;
3. in this process (the load generator), pre-signs Blue Badge queries for the documented test
   identities (a mix of ``yes``, ``no`` and ``no-match``), then drives the broker with C
   concurrent aiohttp clients: a warm-up, then N measured seconds;
4. reads the broker's CPU time (``/proc/<pid>/stat`` utime + stime, all threads) before and
   after the measured window and divides by the checks answered in it;
5. times, in this same process, the four ES256 operations one check costs the broker (verify
   the query, sign the attribute request, verify the attribute answer, sign the answer) with
   ``trust.jws`` in tight loops, so that the broker's CPU per check can be read as a multiple
   of its unavoidable cryptography;
6. as a floor for "an HTTP request through aiohttp", runs a bare aiohttp hello-world server as
   its own process under the same load and measures its CPU per request.

It checks what it measures: every answer's outcome is compared with the documented outcome of
the identity its query named, and a sample of answers is verified as a council would.
``--redis-url redis://127.0.0.1:6379/13`` puts admission in Redis (its keys expire by
themselves); ``--profile PATH`` runs the broker under cProfile (thread CPU clock). It prints a
markdown table and, with ``--json PATH``, writes every number as JSON.

``--full`` measures every row of issue 11's targets in one run and prints them as a table of
their own: ``--compare`` with Redis (memory and Redis admission, coalescing off and on); on the
memory-admission broker with coalescing on, a closed-loop sweep over 1–64 concurrent clients
(checks/s, p50, p99) and open-loop arrivals at half the best rate (p99 at half of max); then,
each in its own processes, ``bench_log_tiles.py`` (broker RSS after 1 M and 10 M records,
inclusion proof p99 at 10 M) and ``bench_log.py`` (``axb audit verify`` of 1 M records).
``--plot PATH`` draws checks/s and p99 against concurrency as a PNG (the ``bench`` extra:
matplotlib). About eight minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from broker.scheme import dev as devscheme  # noqa: E402
from connectors.reference.population import subject_of  # noqa: E402
from members.council import EligibilityClient  # noqa: E402
from trust import jws  # noqa: E402
from trust.keys import SigningKey, b64url_decode  # noqa: E402
from trust.messages import new_jti  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JWT = "application/jwt"
PURPOSE = "blue-badge-application"
# Five "yes", four "no", one "no-match" in every ten queries.
IDENTITIES = (
    "bb-yes-dla",
    "bb-no",
    "bb-yes-pip-moving",
    "no-match",
    "bb-no-pip-journeys-d",
    "bb-yes-registered-blind",
    "bb-no-dla-lower",
    "bb-yes-wpms",
    "bb-no-afcs-tariff-9",
    "bb-yes-afcs",
)
EXPECTED = {
    "?": "unknown query",
    "bb-yes-dla": "yes",
    "bb-yes-pip-moving": "yes",
    "bb-yes-registered-blind": "yes",
    "bb-yes-wpms": "yes",
    "bb-yes-afcs": "yes",
    "bb-no": "no",
    "bb-no-pip-journeys-d": "no",
    "bb-no-dla-lower": "no",
    "bb-no-afcs-tariff-9": "no",
    "no-match": "no-match",
}
HELLO_SERVER = textwrap.dedent(
    """
    import asyncio, socket, sys
    from aiohttp import web
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    async def hello(request):
        await request.read()
        return web.Response(text="hello", content_type="application/jwt")

    app = web.Application()
    app.router.add_post("/v1/checks", hello)
    app.router.add_get("/healthz", hello)
    sock = socket.socket(fileno=int(sys.argv[1]))  # bound by the parent, handed down
    web.run_app(app, sock=sock, access_log=None, print=None)
    """
)

# cProfile with the thread's CPU clock, not wall time: on a busy machine wall time charges a
# function for the time the process spent descheduled.
PROFILER = textwrap.dedent(
    """
    import cProfile, sys, time
    out = sys.argv[1]
    sys.argv = ["axb", *sys.argv[2:]]
    from broker.cli import main
    profile = cProfile.Profile(time.thread_time)
    try:
        profile.runcall(main)
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)
    """
)


# --- processes ----------------------------------------------------------------------------


def _stat_cpu(path: Path) -> tuple[str, float]:
    """(comm, utime + stime in seconds) from a stat file of proc(5)."""
    stat = path.read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))[1]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of the main thread of ``pid`` and of all its other threads together
    (Python 3.11 does not name OS threads; in the broker the others are the consent-log
    writer and any executor threads)."""
    totals = {"main (event loop)": 0.0, "other threads (consent-log writer)": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            seconds = _stat_cpu(task / "stat")[1]
            key = (
                "main (event loop)"
                if task.name == str(pid)
                else "other threads (consent-log writer)"
            )
            totals[key] += seconds
    return totals


def machine_ticks() -> tuple[int, int]:
    """(all ticks, busy ticks) of every CPU, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return total, total - values[3] - values[4]  # minus idle and iowait


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn(name: str, argv: list[str], listener: socket.socket, log_dir: Path) -> Service:
    """``argv`` as its own process, serving ``listener``: a socket bound here (so its port is
    never up for grabs) whose file descriptor ``argv`` names. The child inherits it; this
    process closes its own copy."""
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with listener, (log_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            cwd=ROOT,
            pass_fds=[listener.fileno()],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Service(name, process, url)


async def wait_up(service: Service, path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise SystemExit(f"{service.name} exited with {service.process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(service.url + path) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise SystemExit(f"{service.name} did not come up at {service.url}{path}")


def axb_command() -> list[str]:
    script = Path(sys.executable).parent / "axb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker.cli"]


# --- load ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bodies: list[bytes] = field(default_factory=list)
    target_cpu_s: float = 0.0
    target_threads_cpu_s: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_s: float = 0.0
    other_cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_cores: float = 0.0

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


async def drive(
    url: str,
    bodies: Callable[[], str],
    *,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    target_pid: int,
    other_pids: dict[str, int],
    keep_bodies: bool,
) -> LoadResult:
    """C workers POST back to back; only the window after the warm-up is measured."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    result = LoadResult(seconds)
    measuring = False
    start = time.monotonic()
    window_start = start + warmup_s
    window_end = window_start + seconds
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while True:
                sent = time.monotonic()
                if sent >= window_end:
                    return
                token = bodies()
                try:
                    async with session.post(
                        url, data=token, headers={"Content-Type": JWT, "Accept": JWT}
                    ) as response:
                        body = await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    done = time.monotonic()
                    if measuring and done <= window_end:
                        result.errors[type(exc).__name__] += 1
                    continue
                done = time.monotonic()
                if measuring and sent >= window_start and done <= window_end:
                    result.latencies_ms.append((done - sent) * 1000)
                    result.statuses[status] += 1
                    if keep_bodies and status == 200:
                        result.bodies.append(body)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        measuring = True
        cpu0 = cpu_seconds(target_pid)
        threads0 = thread_cpu_seconds(target_pid)
        own0 = own_cpu_seconds()
        ticks0 = machine_ticks()
        others0 = {name: cpu_seconds(pid) for name, pid in other_pids.items()}
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        result.target_cpu_s = cpu_seconds(target_pid) - cpu0
        threads1 = thread_cpu_seconds(target_pid)
        result.target_threads_cpu_s = {
            name: seconds - threads0.get(name, 0.0) for name, seconds in threads1.items()
        }
        ticks1 = machine_ticks()
        all_ticks = ticks1[0] - ticks0[0]
        busy = (ticks1[1] - ticks0[1]) / all_ticks if all_ticks else 0.0
        result.machine_busy_cores = busy * (os.cpu_count() or 1)
        result.loadgen_cpu_s = own_cpu_seconds() - own0
        result.other_cpu_s = {
            name: cpu_seconds(pid) - others0[name] for name, pid in other_pids.items()
        }
        await asyncio.gather(*workers)
    return result


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Tokens:
    """Pre-signed queries, handed out once each; signs more on demand if they run out or
    grow stale (a query lives 120 s: a long soak must not send expired ones)."""

    FRESH_FOR_S = 60.0

    def __init__(self, client: EligibilityClient, count: int) -> None:
        self._client = client
        self._made = 0
        self.signed_during_run = 0
        self.identity_of: dict[str, str] = {}  # query jti -> test identity
        self._signed_at = time.monotonic()
        self._tokens: list[str] = [self._sign() for _ in range(count)]
        self._next = 0

    def _sign(self) -> str:
        identity = IDENTITIES[self._made % len(IDENTITIES)]
        self._made += 1
        token, jti = self._client.sign_query(
            devscheme.BLUE_BADGE_CHECK,
            purpose=PURPOSE,
            subject=subject_of(identity),
            lawful_basis="public-task",
            assurance="P2",
        )
        self.identity_of[jti] = identity
        return token

    @property
    def sample(self) -> str:
        return self._tokens[0]

    def __call__(self) -> str:
        fresh = time.monotonic() - self._signed_at < self.FRESH_FOR_S
        if fresh and self._next < len(self._tokens):
            token = self._tokens[self._next]
            self._next += 1
            return token
        self.signed_during_run += 1
        return self._sign()


# --- ES256 micro-benchmark -----------------------------------------------------------------


def time_loop(operation: Callable[[], object], budget_s: float) -> tuple[float, int]:
    """CPU seconds per call of ``operation``, run for about ``budget_s`` of CPU time."""
    for _ in range(50):
        operation()
    calls = 0
    started = time.process_time()
    deadline = started + budget_s
    while True:
        for _ in range(100):
            operation()
        calls += 100
        now = time.process_time()
        if now >= deadline or calls >= 1_000_000:
            return (now - started) / calls, calls


def es256_costs(scheme: devscheme.DevScheme, budget_s: float) -> dict[str, float]:
    """The four ES256 operations of one check, as the broker performs them (trust.jws)."""
    key = lambda member: SigningKey.from_pem(scheme.key_path(member).read_bytes())  # noqa: E731
    broker, council, dwp = (
        key(devscheme.BROKER),
        key(devscheme.COUNCIL_BLUE_BADGE),
        key(devscheme.DWP),
    )
    now = int(time.time())
    client = EligibilityClient(
        member_id=devscheme.COUNCIL_BLUE_BADGE,
        key=council,
        broker_url="http://127.0.0.1:1",
        broker_id=devscheme.BROKER,
    )
    subject = subject_of("bb-yes-pip-moving")
    query, query_jti = client.sign_query(
        devscheme.BLUE_BADGE_CHECK, purpose=PURPOSE, subject=subject, assurance="P2"
    )
    trusted = {
        council.kid: jws.TrustedKey(devscheme.COUNCIL_BLUE_BADGE, council.verifying_key),
        dwp.kid: jws.TrustedKey(devscheme.DWP, dwp.verifying_key),
    }
    request_claims = {
        "iss": devscheme.BROKER,
        "aud": devscheme.DWP,
        "iat": now,
        "exp": now + 60,
        "jti": new_jti(),
        "purpose": PURPOSE,
        "attributes": [
            "dla-higher-rate-mobility",
            "pip-moving-around-8-plus",
            "pip-planning-journeys-10",
            "registered-blind",
            "war-pensioners-mobility-supplement",
            "afcs-tariff-1-8-walking-disability",
        ],
        "as_of": time.strftime("%Y-%m-%d"),
        "subject": subject,
    }
    provider_answer = jws.sign(
        {
            "iss": devscheme.DWP,
            "aud": devscheme.BROKER,
            "iat": now,
            "exp": now + 60,
            "jti": new_jti(),
            "request": request_claims["jti"],
            "result": "match",
            "attributes": dict.fromkeys(request_claims["attributes"], False)
            | {"pip-moving-around-8-plus": True},
        },
        dwp,
        jws.ATTRIBUTE_RESPONSE,
    )
    answer_claims = {
        "iss": devscheme.BROKER,
        "aud": devscheme.COUNCIL_BLUE_BADGE,
        "iat": now,
        "exp": now + 300,
        "jti": new_jti(),
        "query_jti": query_jti,
        "check": devscheme.BLUE_BADGE_CHECK,
        "check_version": 1,
        "as_of": time.strftime("%Y-%m-%d"),
        "outcome": "yes",
        "log_index": 123456,
    }
    operations: dict[str, Callable[[], object]] = {
        "verify query": lambda: jws.verify(
            query,
            jws.ELIGIBILITY_QUERY,
            keys=trusted.get,
            audience=devscheme.BROKER,
            now=now,
        ),
        "sign attribute request": lambda: jws.sign(request_claims, broker, jws.ATTRIBUTE_REQUEST),
        "verify attribute answer": lambda: jws.verify(
            provider_answer,
            jws.ATTRIBUTE_RESPONSE,
            keys=trusted.get,
            audience=devscheme.BROKER,
            now=now,
        ),
        "sign answer": lambda: jws.sign(answer_claims, broker, jws.ELIGIBILITY_RESPONSE),
    }
    return {name: time_loop(op, budget_s)[0] for name, op in operations.items()}


def ecdsa_primitive_costs(budget_s: float) -> dict[str, float]:
    """The bare P-256 curve operations (cryptography/OpenSSL, DER signatures, no JOSE at all):
    the floor under the four trust.jws operations."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    message = b"." * 700  # about the size of a signing input
    signature = private.sign(message, ec.ECDSA(hashes.SHA256()))
    operations: dict[str, Callable[[], object]] = {
        "sign": lambda: private.sign(message, ec.ECDSA(hashes.SHA256())),
        "verify": lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())),
    }
    return {name: time_loop(op, budget_s)[0] for name, op in operations.items()}


# --- the run ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import cryptography

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "cryptography": cryptography.__version__,
    }


def outcome_of(body: bytes) -> tuple[str, str]:
    """(outcome, query_jti) of an answer, read without verifying it."""
    claims = orjson.loads(b64url_decode(body.split(b".")[1].decode("ascii")))
    return str(claims["outcome"]), str(claims["query_jti"])


def verify_sample(scheme: devscheme.DevScheme, bodies: list[bytes], sample: int = 200) -> int:
    """Verify some of the answers as a council would (signature, typ, aud, lifetime)."""
    broker = SigningKey.from_pem(scheme.key_path(devscheme.BROKER).read_bytes())
    keys = {broker.kid: jws.TrustedKey(devscheme.BROKER, broker.verifying_key)}
    step = max(1, len(bodies) // sample)
    checked = 0
    for body in bodies[::step]:
        jws.verify(
            body,
            jws.ELIGIBILITY_RESPONSE,
            keys=keys.get,
            audience=devscheme.COUNCIL_BLUE_BADGE,
            now=int(time.time()),
        )
        checked += 1
    return checked


async def busy_cores(seconds: float) -> float:
    """How many cores the whole machine keeps busy over ``seconds`` (everything running)."""
    before = machine_ticks()
    await asyncio.sleep(seconds)
    after = machine_ticks()
    total = after[0] - before[0]
    return (after[1] - before[1]) / total * (os.cpu_count() or 1) if total else 0.0


@dataclass
class BrokerRun:
    """One broker configuration under load: its scheme, queries and what was measured."""

    label: str
    window_ms: float
    redis_url: str | None
    scheme: devscheme.DevScheme
    tokens: Tokens
    load: LoadResult
    batches: int  # batch requests the DWP-style provider answered in the run
    sweep: dict[str, Any] | None = None  # --full: load against concurrency, and at half max


async def broker_run(
    args: argparse.Namespace,
    root: Path,
    label: str,
    *,
    window_ms: float,
    redis_url: str | None,
    profile: Path | None = None,
    sweep: bool = False,
) -> BrokerRun:
    """A fresh scheme, the two reference providers and the broker with ``window_ms``
    coalescing and ``redis_url`` admission, driven at ``args.concurrency``."""
    logs = root / f"logs-{label}"
    logs.mkdir()
    listeners = devscheme.Listeners()
    scheme = devscheme.generate(root / f"scheme-{label}", ports=listeners.ports)
    config = scheme.broker_config
    config.write_text(
        config.read_text().replace(
            "rate_limit_per_second = 50",
            f"rate_limit_per_second = 1000000\ncoalesce_window_ms = {window_ms}",
        )
    )
    assert "rate_limit_per_second = 1000000" in config.read_text()
    services: list[Service] = []
    try:
        # The two reference providers; the Blue Badge rule asks only the DWP-style one.
        for pid_name in (devscheme.DWP, devscheme.HMRC):
            listener = listeners.providers[pid_name]
            services.append(
                spawn(
                    pid_name,
                    [
                        *axb_command(),
                        "provider",
                        "serve",
                        "--config",
                        str(scheme.provider_config(pid_name)),
                        "--listen-fd",
                        str(listener.fileno()),
                    ],
                    listener,
                    logs,
                )
            )
        serve = ["serve", "--config", str(config), "--listen-fd", str(listeners.broker.fileno())]
        if redis_url:
            serve += ["--redis-url", redis_url]
        if profile is not None:  # cProfile the broker's main thread (slows it down)
            command = [sys.executable, "-c", PROFILER, str(profile), *serve]
        else:
            command = [*axb_command(), *serve]
        broker = spawn("broker", command, listeners.broker, logs)
        services.append(broker)
        for service in services:
            await wait_up(service, "/readyz" if service is broker else "/healthz")

        client = EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))
        signing_started = time.perf_counter()
        tokens = Tokens(client, args.presign)
        signing_s = time.perf_counter() - signing_started

        print(
            f"[{label}] broker pid {broker.process.pid}; {args.presign} queries pre-signed in "
            f"{signing_s:.1f}s; warm-up {args.warmup}s, then {args.seconds}s "
            f"at concurrency {args.concurrency}",
            file=sys.stderr,
        )
        providers = {s.name: s.process.pid for s in services if s is not broker}
        load = await drive(
            f"{scheme.broker_url}/v1/checks",
            tokens,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            seconds=args.seconds,
            target_pid=broker.process.pid,
            other_pids=providers,
            keep_bodies=True,
        )
        batches = await provider_batches(services[0].url)
        swept = None
        if sweep:
            swept = await sweep_load(args, scheme.broker_url, client, broker.process.pid)
    finally:
        for service in reversed(services):
            service.stop()
        listeners.close()
    return BrokerRun(label, window_ms, redis_url, scheme, tokens, load, batches, swept)


SWEEP_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)


async def sweep_load(
    args: argparse.Namespace, url: str, client: EligibilityClient, pid: int
) -> dict[str, Any]:
    """``--full``: the same broker driven closed-loop at each of ``SWEEP_CONCURRENCY`` clients
    (checks/s, p50, p99), then by open-loop arrivals at half the best rate seen (p50, p99 at
    half of the maximum throughput). Queries are signed fresh for it, before it starts."""
    from bench_overload import overload  # it imports this module: import it only here

    per_level = args.sweep_seconds + 1.0
    tokens = Tokens(client, int(1500 * (per_level * len(SWEEP_CONCURRENCY) + args.sweep_seconds)))
    points = []
    for concurrency in SWEEP_CONCURRENCY:
        load = await drive(
            f"{url}/v1/checks",
            tokens,
            concurrency=concurrency,
            warmup_s=1.0,
            seconds=args.sweep_seconds,
            target_pid=pid,
            other_pids={},
            keep_bodies=False,
        )
        points.append(
            {
                "concurrency": concurrency,
                "per_second": load.ok / load.seconds,
                "latency_ms_p50": percentile(load.latencies_ms, 50),
                "latency_ms_p99": percentile(load.latencies_ms, 99),
                "not_200": sum(n for status, n in load.statuses.items() if status != 200)
                + sum(load.errors.values()),
            }
        )
        print(
            f"[sweep] concurrency {concurrency}: {points[-1]['per_second']:.0f}/s", file=sys.stderr
        )
    best = max(point["per_second"] for point in points)
    half = await overload(
        f"{url}/v1/checks",
        tokens,
        rate=best / 2,
        clients=256,
        seconds=args.sweep_seconds * 2,
        timeout_s=10.0,
    )
    return {"points": points, "max_per_second": best, "half_max": half}


def log_rows(root: Path) -> dict[str, Any]:
    """``--full``: the consent log's rows, each by its own benchmark in its own processes:
    broker RSS after 1 M and 10 M records and the inclusion proof p99 at 10 M
    (``bench_log_tiles.py``), and ``axb audit verify`` of 1 M records (``bench_log.py``)."""
    tiles, verify = root / "tiles.json", root / "verify.json"
    bench = ROOT / "bench"
    print("the log's tiles at 1 M and 10 M records (about 2 minutes)...", file=sys.stderr)
    subprocess.run(
        [sys.executable, str(bench / "bench_log_tiles.py"), "--records", "1000000", "10000000",
         "--json", str(tiles)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    print("axb audit verify of 1 M records (about a minute)...", file=sys.stderr)
    subprocess.run(
        [sys.executable, str(bench / "bench_log.py"), "--records", "20000", "--single-records",
         "1000", "--skip-postgres", "--json", str(verify)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    grown = json.loads(tiles.read_text())["grow"]["sizes"]
    first, last = grown[0], grown[-1]
    verified = json.loads(verify.read_text())["verify"]
    return {
        "rss_1m_bytes": first["rss_bytes"],
        "rss_10m_bytes": last["rss_bytes"],
        "rss_10m_over_1m": last["rss_bytes"] / first["rss_bytes"],
        "inclusion_p99_ms_at_10m": last["inclusion"]["p99_ms"],
        "audit_verify_1m_s": verified["axb_audit_verify_s"],
    }


def plot(sweep: dict[str, Any], path: Path) -> None:
    """checks/s and p99 against concurrency (PNG; needs matplotlib: pip install matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sweep["points"]
    levels = [p["concurrency"] for p in points]
    figure, rate_axis = plt.subplots(figsize=(7, 4), dpi=120)
    rate_axis.plot(levels, [p["per_second"] for p in points], "o-", color="#1d70b8")
    rate_axis.set_xscale("log", base=2)
    rate_axis.set_xticks(levels, [str(c) for c in levels])
    rate_axis.set_xlabel("concurrent clients")
    rate_axis.set_ylabel("checks / second", color="#1d70b8")
    p99_axis = rate_axis.twinx()
    p99_axis.plot(levels, [p["latency_ms_p99"] for p in points], "s--", color="#d4351c")
    p99_axis.set_ylabel("p99 latency (ms)", color="#d4351c")
    rate_axis.set_title("ax-broker POST /v1/checks, one process, 2-core machine")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


async def provider_batches(url: str) -> int:
    """How many batch requests a reference provider answered (``answered`` counts items)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/v1/status") as response:
        return int((await response.json()).get("batches_answered", 0))


def configurations(args: argparse.Namespace) -> list[tuple[str, float, str | None]]:
    """(label, coalescing window, Redis URL) of each broker run; the last is the main one."""
    main = ("main", args.coalesce_window_ms, args.redis_url)
    if not args.compare:
        return [main]
    window = args.coalesce_window_ms or 1.0
    runs: list[tuple[str, float, str | None]] = [
        ("memory-off", 0.0, None),
        ("memory-on", window, None),
    ]
    if args.redis_url:
        runs += [("redis-off", 0.0, args.redis_url), ("redis-on", window, args.redis_url)]
    return runs


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    background = await busy_cores(1.0)
    if background > 0.2:
        print(
            f"warning: the machine is already {background:.2f} cores busy; "
            "throughput and latency will suffer (CPU per check much less so)",
            file=sys.stderr,
        )
    logs = root / "logs"
    logs.mkdir()
    runs = [
        await broker_run(
            args,
            root,
            label,
            window_ms=window,
            redis_url=redis_url,
            profile=args.profile,
            sweep=args.full and label == "memory-on",
        )
        for label, window, redis_url in configurations(args)
    ]
    main = runs[-1]
    scheme, tokens, load = main.scheme, main.tokens, main.load
    answers = [outcome_of(body) for body in load.bodies]
    outcomes = Counter(outcome for outcome, _ in answers)
    wrong = sum(
        1 for outcome, jti in answers if EXPECTED[tokens.identity_of.get(jti, "?")] != outcome
    )
    verified = verify_sample(scheme, load.bodies)

    hello: LoadResult | None = None
    if args.hello_seconds > 0:
        listener = devscheme.bind_loopback()
        server = spawn(
            "hello", [sys.executable, "-c", HELLO_SERVER, str(listener.fileno())], listener, logs
        )
        try:
            await wait_up(server, "/healthz")
            body = tokens.sample
            hello = await drive(
                f"{server.url}/v1/checks",
                lambda: body,
                concurrency=args.concurrency,
                warmup_s=1.0,
                seconds=args.hello_seconds,
                target_pid=server.process.pid,
                other_pids={},
                keep_bodies=False,
            )
        finally:
            server.stop()

    print(f"timing the four ES256 operations ({args.es256_budget}s each)...", file=sys.stderr)
    es256 = es256_costs(scheme, args.es256_budget)
    primitive = ecdsa_primitive_costs(args.es256_budget)
    result = report(args, load, hello, es256, outcomes, verified, tokens)
    floor = 2 * primitive["sign"] + 2 * primitive["verify"]
    result["ecdsa_p256_primitive_us"] = {name: value * 1e6 for name, value in primitive.items()}
    result["ecdsa_p256_four_ops_us"] = floor * 1e6
    result["broker_cpu_per_check_over_four_primitive_ops"] = (
        result["checks"]["broker_cpu_ms_per_check"] / 1000 / floor
    )
    result["machine"]["busy_cores_before_start"] = background
    result["checks"]["outcomes_not_as_documented"] = wrong
    result["settings"]["coalesce_window_ms"] = main.window_ms
    result["checks"]["provider_batch_requests"] = main.batches
    if len(runs) > 1:
        result["comparison"] = compare(runs, floor)
    swept = next((r.sweep for r in runs if r.sweep is not None), None)
    if swept is not None:
        result["sweep"] = swept
        result["log"] = log_rows(root)
        if args.plot is not None:
            plot(swept, args.plot)
        result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's table, every row from this run: (measure, measured, target)."""
    rows = result["comparison"]
    on, off = rows["memory-on"], rows["memory-off"]
    hello = result.get("hello_world", {}).get("per_second", float("nan"))
    sweep, log = result["sweep"], result["log"]
    half = sweep["half_max"]
    table = [
        (
            "broker CPU per check ÷ four bare P-256 operations, coalescing on, concurrency 16",
            f"{on['broker_cpu_per_check_over_four_primitive_ops']:.1f} ×",
            "≤ 3 ×",
        ),
        (
            "same, coalescing off",
            f"{off['broker_cpu_per_check_over_four_primitive_ops']:.1f} ×",
            "≤ 5 ×",
        ),
        (
            "checks/s of one broker process ÷ hello-world aiohttp requests/s",
            f"{on['per_second'] / hello:.3f} ({on['per_second']:.0f} ÷ {hello:.0f})",
            "≥ 0.25",
        ),
        (
            "p99 at half of max throughput",
            f"{half['accepted_p99_ms']:.1f} ms at {half['offered_per_s']:.0f}/s "
            f"(max {sweep['max_per_second']:.0f}/s)",
            "≤ 10 ms",
        ),
    ]
    if "redis_over_memory_cpu_coalescing_on" in rows:
        table.append(
            (
                "Redis admission CPU ÷ memory admission CPU per check (coalescing on)",
                f"{rows['redis_over_memory_cpu_coalescing_on']:.2f} ×",
                "≤ 1.1 ×",
            )
        )
    table += [
        (
            "broker RSS after 10 M records vs after 1 M",
            f"{log['rss_10m_over_1m']:.3f}",
            "within 10 %",
        ),
        (
            "inclusion proof at 10 M records, p99",
            f"{log['inclusion_p99_ms_at_10m']:.2f} ms",
            "≤ 5 ms",
        ),
        ("`axb audit verify` of 1 M records", f"{log['audit_verify_1m_s']:.1f} s", "≤ 8 s"),
    ]
    for point in sweep["points"]:
        if point["concurrency"] in (1, 16):
            table.append(
                (
                    f"p50 / p99 at concurrency {point['concurrency']}",
                    f"{point['latency_ms_p50']:.1f} / {point['latency_ms_p99']:.1f} ms",
                    "",
                )
            )
    return table


def compare(runs: list[BrokerRun], floor_s: float) -> dict[str, Any]:
    """The same load through each configuration: CPU per check (and ÷ the four bare P-256
    operations), throughput, latency, batches; Redis ÷ memory admission at equal coalescing."""
    rows: dict[str, Any] = {}
    for broker in runs:
        load = broker.load
        cpu = load.target_cpu_s / load.ok if load.ok else float("nan")
        rows[broker.label] = {
            "coalesce_window_ms": broker.window_ms,
            "admission_store": "redis" if broker.redis_url else "memory",
            "answered": load.ok,
            "statuses": dict(load.statuses),
            "per_second": load.ok / load.seconds,
            "latency_ms_p50": percentile(load.latencies_ms, 50),
            "latency_ms_p99": percentile(load.latencies_ms, 99),
            "broker_cpu_ms_per_check": cpu * 1000,
            "broker_cpu_per_check_over_four_primitive_ops": cpu / floor_s,
            "provider_batch_requests": broker.batches,
            "wrong_outcomes": sum(
                1
                for body in load.bodies
                for outcome, jti in [outcome_of(body)]
                if EXPECTED[broker.tokens.identity_of.get(jti, "?")] != outcome
            ),
        }
    for window in ("off", "on"):
        redis, memory = rows.get(f"redis-{window}"), rows.get(f"memory-{window}")
        if redis and memory:
            rows[f"redis_over_memory_cpu_coalescing_{window}"] = (
                redis["broker_cpu_ms_per_check"] / memory["broker_cpu_ms_per_check"]
            )
    return rows


def report(
    args: argparse.Namespace,
    load: LoadResult,
    hello: LoadResult | None,
    es256: dict[str, float],
    outcomes: Counter[str],
    verified: int,
    tokens: Tokens,
) -> dict[str, Any]:
    ok = load.ok
    four = sum(es256.values())
    cpu_per_check = load.target_cpu_s / ok if ok else float("nan")
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "check": devscheme.BLUE_BADGE_CHECK,
            "admission_store": "redis" if args.redis_url else "memory",
        },
        "checks": {
            "answered": ok,
            "statuses": dict(load.statuses),
            "client_errors": dict(load.errors),
            "outcomes": dict(outcomes),
            "answers_verified": verified,
            "queries_signed_during_run": tokens.signed_during_run,
            "per_second": ok / load.seconds,
            "latency_ms": {
                "p50": percentile(load.latencies_ms, 50),
                "p95": percentile(load.latencies_ms, 95),
                "p99": percentile(load.latencies_ms, 99),
                "max": max(load.latencies_ms, default=float("nan")),
            },
            "broker_cpu_seconds": load.target_cpu_s,
            "broker_cores_busy": load.target_cpu_s / load.seconds,
            "broker_cpu_ms_per_check_by_thread": {
                name: seconds / ok * 1000 if ok else None
                for name, seconds in sorted(load.target_threads_cpu_s.items())
                if seconds > 0
            },
            "broker_cpu_ms_per_check": cpu_per_check * 1000,
            "provider_cpu_ms_per_check": {
                name: seconds / ok * 1000 if ok else None
                for name, seconds in load.other_cpu_s.items()
            },
            "loadgen_cpu_ms_per_check": load.loadgen_cpu_s / ok * 1000 if ok else None,
            "machine_busy_cores": load.machine_busy_cores,
            "cores_outside_the_benchmark": load.machine_busy_cores
            - (load.target_cpu_s + load.loadgen_cpu_s + sum(load.other_cpu_s.values()))
            / load.seconds,
        },
        "es256_us": {name: seconds * 1e6 for name, seconds in es256.items()},
        "es256_four_ops_us": four * 1e6,
        "broker_cpu_per_check_over_four_es256_ops": cpu_per_check / four,
    }
    if hello is not None and hello.ok:
        hello_cpu = hello.target_cpu_s / hello.ok
        result["hello_world"] = {
            "requests": hello.ok,
            "per_second": hello.ok / hello.seconds,
            "latency_ms_p50": percentile(hello.latencies_ms, 50),
            "latency_ms_p99": percentile(hello.latencies_ms, 99),
            "server_cpu_us_per_request": hello_cpu * 1e6,
            "loadgen_cpu_us_per_request": hello.loadgen_cpu_s / hello.ok * 1e6,
        }
        result["broker_cpu_per_check_over_hello_cpu_per_request"] = cpu_per_check / hello_cpu
    return result


def markdown(result: dict[str, Any]) -> str:
    checks = result["checks"]
    lat = checks["latency_ms"]
    es = result["es256_us"]
    settings = result["settings"]
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| check, concurrency, admission store | {settings['check']}, "
        f"{settings['concurrency']}, {settings['admission_store']} |",
        f"| checks answered (200) in {result['settings']['seconds']} s | {checks['answered']} |",
        f"| other statuses / client errors | "
        f"{ {k: v for k, v in checks['statuses'].items() if k != 200} or '-' } / "
        f"{checks['client_errors'] or '-'} |",
        f"| outcomes (not as documented for the identity) | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(checks['outcomes'].items()))} "
        f"({checks.get('outcomes_not_as_documented', '?')}) |",
        f"| checks / second | {checks['per_second']:.0f} |",
        f"| latency p50 / p95 / p99 / max | {lat['p50']:.1f} / {lat['p95']:.1f} / "
        f"{lat['p99']:.1f} / {lat['max']:.1f} ms |",
        f"| broker CPU per check | {checks['broker_cpu_ms_per_check']:.3f} ms |",
        f"| broker cores busy | {checks['broker_cores_busy']:.2f} |",
    ]
    for name, value in checks["broker_cpu_ms_per_check_by_thread"].items():
        lines.append(f"| … of which the broker's {name} | {value:.3f} ms |")
    for name, value in checks["provider_cpu_ms_per_check"].items():
        lines.append(f"| {name} CPU per check | {value:.3f} ms |")
    lines.append(f"| load generator CPU per check | {checks['loadgen_cpu_ms_per_check']:.3f} ms |")
    lines.append(
        f"| machine cores busy during the window (all processes) | "
        f"{checks['machine_busy_cores']:.2f} of {result['machine']['nproc']}, of which "
        f"{max(0.0, checks['cores_outside_the_benchmark']):.2f} outside the benchmark |"
    )
    for name, value in es.items():
        lines.append(f"| ES256 {name} (trust.jws) | {value:.1f} µs |")
    lines.append(f"| the four ES256 operations | {result['es256_four_ops_us']:.1f} µs |")
    lines.append(
        f"| **broker CPU per check ÷ four ES256 ops** | "
        f"**{result['broker_cpu_per_check_over_four_es256_ops']:.1f} ×** |"
    )
    primitive = result.get("ecdsa_p256_primitive_us")
    if primitive:
        lines += [
            f"| bare P-256 sign / verify (cryptography, no JOSE) | "
            f"{primitive['sign']:.1f} / {primitive['verify']:.1f} µs |",
            f"| broker CPU per check ÷ four bare P-256 ops | "
            f"{result['broker_cpu_per_check_over_four_primitive_ops']:.1f} × |",
        ]
    for label, row in result.get("comparison", {}).items():
        if isinstance(row, dict):
            lines.append(
                f"| {label} ({row['admission_store']}, coalescing "
                f"{row['coalesce_window_ms']:g} ms): checks/s, p50/p99, CPU per check, "
                f"÷ four bare P-256 ops, batch requests | {row['per_second']:.0f}, "
                f"{row['latency_ms_p50']:.1f}/{row['latency_ms_p99']:.1f} ms, "
                f"{row['broker_cpu_ms_per_check']:.3f} ms, "
                f"**{row['broker_cpu_per_check_over_four_primitive_ops']:.1f} ×**, "
                f"{row['provider_batch_requests']} |"
            )
        else:
            lines.append(f"| **{label.replace('_', ' ')}** | **{row:.2f} ×** |")
    for point in result.get("sweep", {}).get("points", []):
        lines.append(
            f"| concurrency {point['concurrency']}: checks/s, p50 / p99 | "
            f"{point['per_second']:.0f}, {point['latency_ms_p50']:.1f} / "
            f"{point['latency_ms_p99']:.1f} ms |"
        )
    hello = result.get("hello_world")
    if hello:
        lines += [
            f"| hello-world aiohttp: requests / second | {hello['per_second']:.0f} |",
            f"| hello-world server CPU per request | {hello['server_cpu_us_per_request']:.1f} µs |",
            f"| hello-world load generator CPU per request | "
            f"{hello['loadgen_cpu_us_per_request']:.1f} µs |",
            f"| **broker CPU per check ÷ hello-world CPU per request** | "
            f"**{result['broker_cpu_per_check_over_hello_cpu_per_request']:.1f} ×** |",
        ]
    if "targets" in result:
        lines += ["", "| measure | measured | target |", "|---|--:|--:|"]
        lines += [
            f"| {measure} | {measured} | {target} |"
            for measure, measured, target in result["targets"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (<= 90)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--hello-seconds", type=float, default=5.0, help="0 to skip")
    parser.add_argument("--es256-budget", type=float, default=0.5, help="CPU seconds per op")
    parser.add_argument(
        "--presign", type=int, default=None, help="queries to sign first (default: enough)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--keep", type=Path, default=None, help="keep scheme and logs here")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="admission in Redis, e.g. redis://127.0.0.1:6379/13 (keys expire by themselves)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="run the broker under cProfile, stats here"
    )
    parser.add_argument(
        "--coalesce-window-ms",
        type=float,
        default=1.0,
        help="the broker's coalesce_window_ms (0 = off, at most 2)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run the broker with coalescing off and on (and with Redis, given --redis-url)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="every row of issue 11's table in one run: --compare (with Redis), a concurrency "
        "sweep and half-max load on the memory-admission, coalescing-on broker, the log's "
        "tiles at 1 M and 10 M records and axb audit verify of 1 M",
    )
    parser.add_argument("--sweep-seconds", type=float, default=3.0, help="--full: per level")
    parser.add_argument(
        "--plot", type=Path, default=None, help="--full: checks/s and p99 against concurrency, PNG"
    )
    args = parser.parse_args(argv)
    if args.full:
        args.compare = True
        args.redis_url = args.redis_url or "redis://127.0.0.1:6379/13"
    if not 0 < args.seconds <= 90 or args.warmup + args.seconds > 100:
        parser.error("queries live 120 s: keep --warmup + --seconds under 100")
    if args.redis_url and not args.redis_url.startswith("redis://127.0.0.1:"):
        parser.error("--redis-url must be on 127.0.0.1 (redis://127.0.0.1:PORT/DB)")
    if args.profile is not None:
        args.profile = args.profile.resolve()
    if not 0 <= args.coalesce_window_ms <= 2:
        parser.error("--coalesce-window-ms must be 0..2")
    if not 1 <= args.concurrency <= 512:
        parser.error("--concurrency must be 1..512")
    if args.presign is None:
        args.presign = int(800 * (args.seconds + args.warmup))

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args, args.keep.resolve()))
    else:
        with tempfile.TemporaryDirectory(prefix="axb-bench-") as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
