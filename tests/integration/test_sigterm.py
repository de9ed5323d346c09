"""SIGTERM, as containers and systemd stop a service, is an orderly stop for ``axb serve``,
``axb provider serve`` and ``axb audit console``: checks in flight are answered, every answer
has its record, the log's last checkpoint covers them all, and the process exits 0. (Before,
SIGTERM killed ``axb serve`` at once: 32 of 32 checks in flight were dropped.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.councils import blue_badge
from tests.support.logdb import log_backend
from tests.support.processes import tail, until_answers
from tests.support.servers import RunningProvider, start_app
from tests.support.services import PG_ADMIN_DSN

REPO = Path(__file__).resolve().parents[2]
IN_FLIGHT = 32


def spawn(args: list[str], sock_fd: int | None, log: Path) -> subprocess.Popen[bytes]:
    fds = [] if sock_fd is None else [sock_fd]
    listen = [] if sock_fd is None else ["--listen-fd", str(sock_fd)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *args, *listen],
            stdout=out,
            stderr=out,
            pass_fds=fds,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def exit_code(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    for _ in range(int(timeout_s / 0.05)):
        if process.poll() is not None:
            return process.returncode
        await asyncio.sleep(0.05)
    process.kill()
    pytest.fail("the process did not exit after SIGTERM")


async def test_sigterm_answers_every_check_in_flight_then_exits_0_with_a_final_checkpoint(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    real = providers[devscheme.DWP]
    await real.stop()

    async def slow(request: web.Request) -> web.Response:  # DWP, answering in 1.5 s
        body = await request.read()
        await asyncio.sleep(1.5)
        return web.Response(
            text=await real.service.kit.answer(body), content_type="application/jwt"
        )

    slow_app = web.Application()
    slow_app.router.add_post("/v1/attributes", slow)
    slow_dwp = await start_app(slow_app, real.service.port)
    log = tmp_path / "broker.log"
    broker = spawn(["serve", "--config", str(scheme.broker_config)], listeners.broker.fileno(), log)
    listeners.broker.close()  # the child has it now
    try:
        await until_answers(scheme.broker_url + "/healthz", broker, log)
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client:
            first = await client.check(  # the council now holds the broker's keys, too
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=subject_of("bb-yes-dla"),
                assurance="P2",
            )
            checks = [
                asyncio.create_task(
                    client.check(
                        devscheme.BLUE_BADGE_CHECK,
                        purpose="blue-badge-application",
                        subject=subject_of("bb-yes-dla"),
                        assurance="P2",
                    )
                )
                for _ in range(IN_FLIGHT)
            ]
            await asyncio.sleep(0.7)  # all of them are waiting on DWP now
            assert not any(task.done() for task in checks)
            broker.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*checks)
        assert [a.outcome for a in answers] == ["yes"] * IN_FLIGHT
        assert await exit_code(broker) == 0, tail(log)
    finally:
        if broker.poll() is None:
            broker.kill()
        await slow_dwp.cleanup()
    with sqlite3.connect(scheme.root / "log" / "consent-log.sqlite3") as db:
        indices = {row[0] for row in db.execute("SELECT log_index FROM records")}
        (latest,) = db.execute("SELECT MAX(size) FROM checkpoints").fetchone()
    assert {first.log_index} | {a.log_index for a in answers} == indices
    assert indices == set(range(IN_FLIGHT + 1))
    assert latest == IN_FLIGHT + 1, "the last checkpoint covers every record"
    assert "Traceback" not in log.read_text(errors="replace")


async def test_sigterm_stops_a_provider_and_the_console_cleanly(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners, tmp_path: Path
) -> None:
    provider_log, console_log = tmp_path / "provider.log", tmp_path / "console.log"
    provider = spawn(
        ["provider", "serve", "--config", str(scheme.provider_config(devscheme.HMRC))],
        listeners.providers[devscheme.HMRC].fileno(),
        provider_log,
    )
    listeners.providers[devscheme.HMRC].close()
    console = spawn(
        ["audit", "console", "--config", str(scheme.folder.auditor_config(devscheme.AUDITOR))],
        None,
        console_log,
    )
    try:
        hmrc_url = f"http://127.0.0.1:{scheme.provider_ports[devscheme.HMRC]}/healthz"
        await until_answers(hmrc_url, provider, provider_log)
        for _ in range(200):
            if "open http://" in tail(console_log):
                break
            await asyncio.sleep(0.05)
        for process in (provider, console):
            process.send_signal(signal.SIGTERM)
        assert await exit_code(provider) == 0, tail(provider_log)
        assert await exit_code(console) == 0, tail(console_log)
    finally:
        for process in (provider, console):
            if process.poll() is None:
                process.kill()


def ports_to_postgres(pid: int) -> set[int]:
    """The local ports of process ``pid``'s TCP connections to 5432 (its sockets, from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and remote.endswith(":1538"):  # 5432
            ports.add(int(local.split(":")[1], 16))
    return ports


async def postgres_sessions_of(pid: int) -> list[int]:
    """The PostgreSQL backend processes serving process ``pid``'s connections."""
    ports = ports_to_postgres(pid)
    if not ports:
        return []
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(ports)
        )
    finally:
        await conn.close()
    return [int(row[0]) for row in rows]


@pytest.mark.postgres
async def test_sigterm_stops_within_the_shutdown_timeout_when_postgresql_goes_silent(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    """Stopping a whole stack at once (a machine shutdown, ``podman stop`` of every container)
    can take the database away before the broker's orderly stop has closed its pools: every
    step of that stop is bounded by ``shutdown_timeout_s``, so the process still exits, in
    time, rather than waiting on a silent database until it is SIGKILLed. The database goes
    silent here as a torn-down container does from the broker's side — no FIN, no RST, no
    reply: the backends serving the broker are stopped (SIGSTOP), and resumed afterwards."""
    stopped: list[int] = []
    async with log_backend("postgres") as settings:
        text = scheme.broker_config.read_text().replace(
            'consent_log = "log/consent-log.sqlite3"\n',
            f'consent_log = "{settings["consent_log"]}"\n'
            f'consent_log_schema = "{settings["consent_log_schema"]}"\n'
            "shutdown_timeout_s = 3.0\n",
        )
        assert "shutdown_timeout_s" in text
        scheme.broker_config.write_text(text)
        log = tmp_path / "broker.log"
        args = ["serve", "--config", str(scheme.broker_config)]
        broker = spawn(args, listeners.broker.fileno(), log)
        listeners.broker.close()
        try:
            await until_answers(scheme.broker_url + "/healthz", broker, log)
            async with EligibilityClient.from_config(
                scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
            ) as client:
                answer = await client.check(
                    devscheme.BLUE_BADGE_CHECK,
                    purpose="blue-badge-application",
                    subject=subject_of("bb-yes-dla"),
                    assurance="P2",
                )
            assert answer.outcome == "yes"
            sessions = await postgres_sessions_of(broker.pid)
            assert len(sessions) >= 2  # the consent log's pool and the bulk job store's
            for backend in sessions:
                os.kill(backend, signal.SIGSTOP)
                stopped.append(backend)
            started = asyncio.get_running_loop().time()
            broker.send_signal(signal.SIGTERM)
            code = await exit_code(broker, timeout_s=15)
            took = asyncio.get_running_loop().time() - started
        finally:
            if broker.poll() is None:
                broker.kill()
            for backend in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(backend, signal.SIGCONT)
    assert took < 3.0 + 2.0, f"stopped in {took:.1f} s: {tail(log)}"
    assert code != 0  # the final checkpoint could not be written: not a clean stop, and said
    assert "shutdown_step_timed_out" in log.read_text(errors="replace"), tail(log)


async def test_on_sigterm_readyz_answers_503_first_while_checks_are_still_answered(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    """``drain_s``: after SIGTERM the broker tells load balancers first (/readyz 503
    ``stopping``) and keeps answering what still reaches it for that long, then stops in order
    and exits 0."""
    text = scheme.broker_config.read_text()
    scheme.broker_config.write_text("drain_s = 1.5\n" + text)
    log = tmp_path / "broker.log"
    broker = spawn(["serve", "--config", str(scheme.broker_config)], listeners.broker.fileno(), log)
    listeners.broker.close()
    try:
        await until_answers(scheme.broker_url + "/readyz", broker, log)
        async with (
            EligibilityClient.from_config(
                scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
            ) as client,
            aiohttp.ClientSession() as session,
        ):
            assert await blue_badge(client) == "yes"
            broker.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with session.get(scheme.broker_url + "/readyz") as response:
                assert response.status == 503
                assert (await response.json())["status"] == "stopping"
            assert broker.poll() is None  # still draining
            assert await blue_badge(client) == "yes"  # what still comes is answered
        assert await exit_code(broker) == 0, tail(log)
    finally:
        if broker.poll() is None:
            broker.kill()
