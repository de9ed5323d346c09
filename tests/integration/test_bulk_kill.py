"""A bulk job survives its broker: ``axb serve`` is SIGKILLed with the job at 30 % and again at
99 %, restarted on the same socket each time, and the job still ends ``completed`` with exactly
one result a row, exactly one consent record a distinct subject (no item checked twice, none
lost), results that verify against the signed results manifest, and a log export that
verifies offline."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.scheme import dev as devscheme
from broker.settings import load_settings
from connectors.provider_kit import LookupRequest
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.bulk import BulkJobs
from members.council import EligibilityClient
from tests.support.bulk import strangers, submit_fsm
from tests.support.processes import until_answers
from tests.support.servers import RunningProvider
from trust import bulk
from trust.checkpoint import NoteVerifier
from trust.keys import SigningKey
from trust.log_verify import verify_export

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
ITEMS = 400
CHUNK = 4  # 99 % of the rows (396) is a chunk boundary


@pytest.fixture
async def slow_providers(
    providers: dict[str, RunningProvider],
) -> dict[str, RunningProvider]:
    """The reference providers, each lookup taking 5 ms more: a chunk lasts long enough for the
    test to kill the broker inside it."""
    for provider in providers.values():
        kit: Any = provider.service.kit
        fast = kit._lookup

        async def slow(request: LookupRequest, fast: Any = fast) -> Mapping[str, bool] | None:
            await asyncio.sleep(0.005)
            result: Mapping[str, bool] | None = await fast(request)
            return result

        kit._lookup = slow
    return providers


class Broker:
    """``axb serve`` as its own process on the scheme's broker socket (held by the test)."""

    def __init__(self, config: Path, sock_fd: int, log: Path) -> None:
        self.config, self.fd, self.log = config, sock_fd, log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, url: str) -> None:
        self.spawn()
        assert self.process is not None
        await until_answers(url + "/healthz", self.process, self.log)

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "serve", "--config", str(self.config),
                 "--listen-fd", str(self.fd)],
                cwd=ROOT, stdout=out, stderr=out, pass_fds=[self.fd],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(20)


class Progress:
    """The job's row in the broker's database, read behind its back (read-only, off the
    event loop: the providers serve on it)."""

    def __init__(self, db: Path, job_id: str) -> None:
        self._conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
        self._job_id = job_id

    def _read(self) -> tuple[str, int]:
        status, done = self._conn.execute(
            "SELECT status, done_rows FROM bulk_jobs WHERE job_id = ?", (self._job_id,)
        ).fetchone()
        return str(status), int(done)

    async def kill_at(self, broker: Broker, share: float) -> int:
        """SIGKILL the broker once the job has at least ``share`` of its rows done, not all."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, done = await asyncio.to_thread(self._read)
            assert status in ("queued", "running"), "the job ended before the kill"
            if done >= share * ITEMS:
                broker.kill()
                return done
            await asyncio.sleep(0.003)
        raise AssertionError("the job never got there")

    def close(self) -> None:
        self._conn.close()


async def test_a_job_killed_at_30_and_99_percent_ends_with_exact_counts_and_records(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    slow_providers: object,
    tmp_path: Path,
) -> None:
    config = scheme.root / "broker-bulk.toml"  # beside the scheme: its paths are relative
    config.write_text(
        scheme.broker_config.read_text().replace(
            "rate_limit_per_second = 50", "rate_limit_per_second = 500"
        )
        + f"\n[bulk]\nlease_s = 1.0\nchunk_items = {CHUNK}\npoll_s = 0.05\n"
    )
    db = load_settings(config).consent_log_path
    url = f"http://127.0.0.1:{scheme.broker_port}"
    broker = Broker(config, listeners.broker.fileno(), tmp_path / "broker.log")
    # distinct subjects (every name its own: the providers find none of them), a few known
    rows = strangers(ITEMS)
    for i in range(0, ITEMS, 100):
        rows[i]["subject"] = subject_of("fsm-yes-income-support")
    await broker.start(url)
    try:
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_SCHOOLS)
        ) as client:
            jobs = BulkJobs(client)
            job = await submit_fsm(jobs, rows)
            progress = Progress(db, job["id"])
            at_30 = await progress.kill_at(broker, 0.30)
            await broker.start(url)
            at_99 = await progress.kill_at(broker, 0.99)
            progress.close()
            await broker.start(url)
            ended = await jobs.wait(job["id"], poll_s=0.1)
            signed, body = await jobs.results(job["id"], manifest_jti=job["manifest_jti"])
        auditor_key = SigningKey.from_pem(scheme.key_path(devscheme.AUDITOR).read_bytes())
        async with AuditClient(
            member_id=devscheme.AUDITOR,
            key=auditor_key,
            broker_url=url,
            broker_id=devscheme.BROKER,
        ) as auditor:
            export = [line async for line in auditor.export()]
    finally:
        broker.stop()

    assert 0.30 * ITEMS <= at_30 < ITEMS
    assert 0.99 * ITEMS <= at_99 < ITEMS
    assert ended["status"] == "completed"
    assert ended["processed"] == ITEMS == signed.results
    assert sum(ended["counts"].values()) == ITEMS
    assert ended["counts"]["yes"] == ITEMS // 100
    results = list(bulk.read_results_ndjson(body))
    assert [ref for ref, _ in results] == [row["ref"] for row in rows]
    # one record per distinct subject, none twice, none missing
    records = [orjson.loads(line) for line in export]
    bodies = [r["body"] for r in records if r["type"] == "record"]
    jtis = Counter(
        b["query_jti"] for b in bodies if str(b.get("query_jti")).startswith(job["id"] + ".")
    )
    assert max(jtis.values()) == 1
    assert len(jtis) == ended["subjects"] == signed.records == ITEMS - ITEMS // 100 + 1
    assert set(jtis) == {f"{job['id']}.{n}" for n in range(1, ITEMS + 1) if n % 100 != 1 or n == 1}
    verifier = NoteVerifier((scheme.root / "public" / "log.vkey").read_text().strip())
    report = verify_export(export, verifier)
    assert report.ok, report.problems
