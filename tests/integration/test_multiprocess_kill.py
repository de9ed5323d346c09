"""Several broker processes on one consent log, a load generator, and SIGKILL.

Three ``axb serve`` processes share one log: a PostgreSQL database of its own (dropped
afterwards), or one SQLite file (WAL, each batch under ``BEGIN IMMEDIATE``). A
load generator sends checks to all of them at once; mid-load one broker is SIGKILLed and
restarted, then another. Afterwards every answer a council actually received (verified, with
its receipt) must have its record in the store at that index with that query's jti and outcome;
the log's indices must be gap-free; and an export from one broker must verify offline against
the log's public key and extend the checkpoint every broker now serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import asyncpg
import pytest

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.council import EligibilityClient
from members.errors import AnswerNotTrusted, CheckFailed
from tests.support.servers import RunningProvider
from tests.support.services import database_of_its_own
from trust.checkpoint import NoteVerifier
from trust.keys import SigningKey
from trust.log_verify import verify_export

pytestmark = [pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("bb-yes-dla", "bb-no", "no-match", "bb-yes-pip-moving", "bb-no-pip-ended")
WORKERS = 24
PHASE_S = 3.0


@dataclass
class BrokerProcess:
    """``axb serve`` as its own process, on a socket bound here and handed down: the first
    spawn's is on a port the kernel chooses, a respawn's on the port the killed one released."""

    config: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.log_file = self.log_path.open("ab")
        with devscheme.bind_loopback(self.port) as listener:
            self.port = listener.getsockname()[1]
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--listen-fd",
                    str(listener.fileno()),
                ],
                cwd=ROOT,
                stdout=self.log_file,
                stderr=self.log_file,
                pass_fds=[listener.fileno()],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"broker on {self.port} exited: {self.log_path.read_text()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/readyz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"broker on {self.port} never became ready")
            await asyncio.sleep(0.05)

    async def _reap(self, timeout_s: float) -> None:
        assert self.process is not None
        await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout=timeout_s)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self._reap(10)

    async def stop(self) -> None:
        """Graceful: SIGINT lets the broker drain its writer and sign a final checkpoint."""
        if self.process is None or self.process.poll() is not None:
            if self.log_file is not None:
                self.log_file.close()
                self.log_file = None
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await self._reap(15)
        except TimeoutError:
            await self.kill()


@dataclass(frozen=True)
class Receipt:
    broker: int
    index: int
    jti: str
    outcome: str
    digest: bytes


@dataclass
class Load:
    receipts: list[Receipt] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_broker: Counter[int] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def worker(n: int, clients: list[EligibilityClient], load: Load) -> None:
    rng = random.Random(n)
    while not load.stop.is_set():
        which = rng.randrange(len(clients))
        client = clients[which]
        token, jti = client.sign_query(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of(rng.choice(LABELS)),
            assurance="P2",
        )
        try:
            answer = await client.send(token, jti)
        except CheckFailed as failed:
            load.failures[f"http-{failed.status}"] += 1
            load.failures_by_broker[which] += 1
            await asyncio.sleep(0.01)
            continue
        except AnswerNotTrusted:
            load.failures["answer-not-trusted"] += 1
            continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.failures[type(exc).__name__] += 1
            load.failures_by_broker[which] += 1
            await asyncio.sleep(0.01)
            continue
        assert answer.query_jti == jti
        load.receipts.append(
            Receipt(which, answer.log_index, jti, answer.outcome, answer.record_digest)
        )


def broker_config(scheme: devscheme.DevScheme, dsn: str | None) -> Path:
    """The scheme's config for brokers sharing one log: PostgreSQL at ``dsn``, or (``None``)
    the scheme's SQLite file."""
    text = scheme.broker_config.read_text()
    log_line = 'consent_log = "log/consent-log.sqlite3"'
    for old, new in (
        (log_line, log_line if dsn is None else f'consent_log = "{dsn}"'),
        ("rate_limit_per_second = 50", "rate_limit_per_second = 1000000"),
        ("checkpoint_every_records = 1000", "checkpoint_every_records = 100"),
        ("checkpoint_every_seconds = 5.0", "checkpoint_every_seconds = 1.0"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = scheme.root / "broker-shared.toml"
    path.write_text(text)
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared_log(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The DSN of a PostgreSQL database of the test's own, or ``None``: the SQLite file."""
    if request.param == "sqlite":
        yield None
        return
    async with database_of_its_own() as dsn:
        yield dsn


async def stored_records(
    scheme: devscheme.DevScheme, dsn: str | None
) -> tuple[list[tuple[int, str, str, bytes]], int]:
    """Every record's (index, jti, outcome, digest) and the number of checkpoints."""
    if dsn is None:
        with sqlite3.connect(scheme.root / "log" / "consent-log.sqlite3") as db:
            rows = db.execute("SELECT log_index, query_jti, outcome, digest FROM records")
            found = [(r[0], r[1], r[2], bytes(r[3])) for r in rows.fetchall()]
            (checkpoints,) = db.execute("SELECT count(*) FROM checkpoints").fetchone()
        return found, checkpoints
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "axb"})
    try:
        rows = await conn.fetch("SELECT log_index, query_jti, outcome, digest FROM records")
        checkpoints = await conn.fetchval("SELECT count(*) FROM checkpoints")
    finally:
        await conn.close()
    return [(r[0], r[1], r[2], bytes(r[3])) for r in rows], checkpoints


async def test_sigkilled_brokers_never_leave_an_answer_without_its_record(
    shared_log: str | None,
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    config = broker_config(scheme, shared_log)
    brokers = [BrokerProcess(config, tmp_path / f"broker-{i}.log") for i in range(3)]
    broker_key = SigningKey.from_pem(scheme.key_path(devscheme.BROKER).read_bytes())
    council_key = SigningKey.from_pem(scheme.key_path(devscheme.COUNCIL_BLUE_BADGE).read_bytes())
    load = Load()
    connector = aiohttp.TCPConnector(limit=WORKERS * 2, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        try:
            brokers[0].spawn()  # the first creates the log's tables ...
            await brokers[0].wait_ready(session)
            for broker in brokers[1:]:  # ... then the others join it
                broker.spawn()
            for broker in brokers[1:]:
                await broker.wait_ready(session)

            clients = [
                EligibilityClient(
                    member_id=devscheme.COUNCIL_BLUE_BADGE,
                    key=council_key,
                    broker_url=broker.url,
                    broker_id=devscheme.BROKER,
                    broker_keys=(broker_key.verifying_key,),
                    session=session,
                )
                for broker in brokers
            ]
            tasks = [asyncio.create_task(worker(n, clients, load)) for n in range(WORKERS)]
            try:
                for victim in (0, 1):
                    await asyncio.sleep(PHASE_S)
                    await brokers[victim].kill()  # mid-load: requests are in flight
                    await asyncio.sleep(0.5)  # the others carry on alone for a while
                    brokers[victim].spawn()
                    await brokers[victim].wait_ready(session)
                await asyncio.sleep(PHASE_S)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)

            # Every broker now serves a checkpoint; the export must extend each of them.
            notes = []
            for broker in brokers:
                async with session.get(f"{broker.url}/v1/log/checkpoint") as response:
                    assert response.status == 200
                    notes.append(await response.text())
            async with AuditClient(
                member_id=devscheme.AUDITOR,
                key=SigningKey.from_pem(scheme.key_path(devscheme.AUDITOR).read_bytes()),
                broker_url=brokers[2].url,
                broker_id=devscheme.BROKER,
            ) as auditor:
                export = [line async for line in auditor.export()]
        finally:
            for broker in brokers:
                await broker.stop()

    rows, checkpoints = await stored_records(scheme, shared_log)
    stored = {index: (jti, outcome, digest) for index, jti, outcome, digest in rows}

    # The load really ran on every broker, and the kills really cut requests short.
    assert len(load.receipts) >= 200, (len(load.receipts), load.failures)
    assert {r.broker for r in load.receipts} == {0, 1, 2}
    assert brokers[0].starts == brokers[1].starts == 2
    assert load.failures_by_broker[0] + load.failures_by_broker[1] > 0, load.failures
    assert load.failures["answer-not-trusted"] == 0
    assert not any(k.startswith("http-") for k in load.failures), load.failures

    # Gap-free: the indices are exactly 0..N-1.
    assert sorted(stored) == list(range(len(stored)))
    # No answer without its record: each receipt names the record of its own query, and the
    # digest the broker signed into the answer is that record's (so the export proves it).
    assert len({r.index for r in load.receipts}) == len(load.receipts)
    for receipt in load.receipts:
        assert stored.get(receipt.index) == (receipt.jti, receipt.outcome, receipt.digest), receipt
    unanswered = len(stored) - len(load.receipts)
    assert unanswered >= 0  # records whose answers died with a killed broker

    print(  # shown with -rP: what the run did
        f"receipts={len(load.receipts)} records={len(stored)} unanswered={unanswered} "
        f"failures={dict(load.failures)} checkpoints={checkpoints}"
    )
    verifier = NoteVerifier((scheme.root / "public" / "log.vkey").read_text().strip())
    report = verify_export(export, verifier, held=notes)
    assert report.ok, report.problems
    assert report.records == report.verified_size == len(stored)
    assert report.checkpoints >= 3
    assert checkpoints >= report.checkpoints
