"""deploy/nginx.conf as shipped, in front of two brokers sharing Redis and one PostgreSQL log.

The config is rendered for loopback and nothing else: the upstream names become 127.0.0.1
ports, and ``listen`` binds 127.0.0.1. A real nginx then runs it. Checks pass through it and
spread over both brokers. A token replayed through it is refused whichever broker gets it,
and nginx's own X-Request-Id reaches the broker. Oversized bodies stop at nginx, and nothing
is written to an access log. With one broker stopped, checks still get answers.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from broker.scheme import dev as devscheme
from connectors.config import member_identity
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.logdb import log_backend
from tests.support.ports import BIND_FAILED, CANDIDATES, start_on_some_port
from tests.support.servers import RunningBroker, StartBroker
from tests.support.services import REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx.conf"


def render(upstreams: list[int], listen: int, prefix: Path) -> str:
    """The shipped config with loopback addresses, and paths under ``prefix``."""
    text = SHIPPED.read_text()
    for name, port in zip(("broker-1:8080", "broker-2:8080"), upstreams, strict=True):
        assert name in text
        text = text.replace(f"server {name}", f"server 127.0.0.1:{port}")
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    paths = "".join(
        f"  {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + paths, 1)
    return f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n" + text


@pytest.fixture
async def flushed_redis() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def two_brokers(
    start_broker: StartBroker, providers: object, flushed_redis: str
) -> AsyncIterator[list[RunningBroker]]:
    async with log_backend("postgres") as shared_log:
        brokers = [
            await start_broker(redis_url=flushed_redis, port=0, **shared_log) for _ in range(2)
        ]
        yield brokers
        for broker in brokers:
            await broker.stop()


@pytest.fixture
def nginx(two_brokers: list[RunningBroker], tmp_path: Path) -> Any:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is needed: .ci/tools installs it")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    upstreams = [broker.settings.port for broker in two_brokers]  # bound already
    config = prefix / "nginx.conf"
    config.write_text(render(upstreams, CANDIDATES[0], prefix))
    checked = subprocess.run(
        [binary, "-t", "-c", str(config), "-p", str(prefix)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr

    def launch(port: int) -> tuple[subprocess.Popen[bytes], int] | None:
        """nginx listening on ``port``, or None when it could not bind it."""
        config.write_text(render(upstreams, port, prefix))
        for stale in ("nginx.pid", "error.log"):  # what an attempt before this one left
            (prefix / stale).unlink(missing_ok=True)
        with (prefix / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [binary, "-c", str(config), "-p", str(prefix), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + 10
        while True:  # nginx writes its pid file once its listening socket is bound
            pid = prefix / "nginx.pid"
            if pid.exists() and pid.read_text().strip() == str(process.pid):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        return process, port
            if process.poll() is not None:
                said = "".join(log.read_text() for log in prefix.glob("*.log"))
                if BIND_FAILED in said:
                    return None
                raise RuntimeError(said)
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError((prefix / "stderr.log").read_text())
            time.sleep(0.05)

    process, port = start_on_some_port(launch)
    yield f"http://127.0.0.1:{port}", prefix
    process.terminate()
    process.wait(timeout=10)


def client_via(scheme: devscheme.DevScheme, url: str) -> EligibilityClient:
    identity = member_identity(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))
    return EligibilityClient(**{**identity, "broker_url": url})


async def served_checks(broker: RunningBroker) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{broker.url}/metrics") as r:
        text = await r.text()
    return sum(
        float(value) for value in re.findall(r"^axb_checks_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    )


async def test_checks_through_the_shipped_nginx_config(
    scheme: devscheme.DevScheme, two_brokers: list[RunningBroker], nginx: Any
) -> None:
    url, prefix = nginx
    async with client_via(scheme, url) as client:
        outcomes = [
            (
                await client.check(
                    devscheme.BLUE_BADGE_CHECK,
                    purpose="blue-badge-application",
                    subject=subject_of(who),
                    assurance="P2",
                )
            ).outcome
            for who in ("bb-yes-dla", "bb-no", "no-match") * 4
        ]
        assert outcomes == ["yes", "no", "no-match"] * 4
        served = [await served_checks(broker) for broker in two_brokers]
        assert all(count > 0 for count in served), served  # least_conn used both

        # one token, sent twice through nginx: the second is refused, whichever broker gets it
        for _ in range(4):
            token, jti = client.sign_query(
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=subject_of("bb-yes-dla"),
                assurance="P2",
            )
            await client.send(token, jti)
            with pytest.raises(CheckFailed) as replay:
                await client.send(token, jti)
            assert replay.value.status == 401

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as response:
            request_id = response.headers["X-Request-Id"]
            assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id, kept
        big = b"x" * (17 * 1024)
        headers = {"Content-Type": "application/jwt"}
        async with session.post(f"{url}/v1/checks", data=big, headers=headers) as response:
            assert response.status == 413
            assert response.headers.get("Server", "").startswith("nginx")  # stopped at nginx
    assert not list(prefix.rglob("*access*"))  # access_log off: no bodies, no tokens on disk


async def test_a_stopped_broker_behind_nginx_loses_no_check(
    scheme: devscheme.DevScheme, two_brokers: list[RunningBroker], nginx: Any
) -> None:
    url, _ = nginx
    await two_brokers[0].stop()
    async with client_via(scheme, url) as client:
        answers = await asyncio.gather(
            *(
                client.check(
                    devscheme.BLUE_BADGE_CHECK,
                    purpose="blue-badge-application",
                    subject=subject_of("bb-yes-dla"),
                    assurance="P2",
                )
                for _ in range(10)
            )
        )
    assert [a.outcome for a in answers] == ["yes"] * 10
    assert sorted(a.log_index for a in answers) == sorted({a.log_index for a in answers})
