"""deploy/compose.yaml as shipped, brought up with podman-compose on the images
deploy/build-images makes, with the scheme ``axb demo --keep DIR --for-compose`` writes: two
brokers behind nginx, Redis, PostgreSQL and every reference provider (DWP, HMRC, the DVLA
keeper register, the DVLA VES adapter and its stand-in). Checks of every outcome pass through
nginx; with one broker container killed the other still answers; the auditor exports the
shared PostgreSQL log through nginx and verifies it; the stack comes down in at most 10 s.

nginx is published on 127.0.0.1 on a port podman chooses (``AXB_LB_PUBLISH=127.0.0.1:``):
the test reaches the stack through loopback only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from broker.cli.demo import CASES, DOWN_CASE, run_case
from broker.scheme import dev as devscheme
from connectors.reference.identity import ReferenceIdentityProvider
from members.council import EligibilityClient
from tests.support.cli import run_axb
from tests.support.containers import (
    BUILD_TIMEOUT_S,
    ROOT,
    built_images,
    container_logs,
    podman,
    podman_env,
)

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 240)
COMPOSE = ROOT / "deploy" / "compose.yaml"


class Stack:
    """One compose project of deploy/compose.yaml."""

    def __init__(self, scheme: Path) -> None:
        self.project = f"axbt{secrets.token_hex(4)}"
        self.env = {**podman_env(), "AXB_SCHEME": str(scheme), "AXB_LB_PUBLISH": "127.0.0.1:"}

    def compose(self, *args: str, timeout_s: float = 120) -> float:
        """``podman-compose ARGS`` for this project; how long it took."""
        started = time.monotonic()
        done = subprocess.run(
            ["podman-compose", "-p", self.project, "-f", str(COMPOSE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert done.returncode == 0, f"podman-compose {args}: {done.stderr[-3000:]}"
        return time.monotonic() - started

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def ready(self, service: str) -> bool:
        """The service's /readyz answers 200 inside its container (``axb healthcheck``)."""
        url = "http://127.0.0.1:8080/readyz"
        done = subprocess.run(
            ["podman", "exec", self.container(service), "axb", "healthcheck", "--url", url],
            env=podman_env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def names(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        return podman("ps", "-a", "--format", "{{.Names}}", "--filter", label).split()

    def exit_codes(self) -> dict[str, int]:
        """Each service's container's exit code (the stack stopped)."""
        inspected = json.loads(podman("inspect", *self.names()))
        return {
            c["Config"]["Labels"]["com.docker.compose.service"]: c["State"]["ExitCode"]
            for c in inspected
        }

    def cleanup(self) -> None:
        names = self.names()
        if names:
            podman("rm", "--force", "--volumes", "--time", "1", *names, check=False)
        podman("volume", "rm", "--force", f"{self.project}_pg-data", check=False)
        podman("network", "rm", "--force", f"{self.project}_default", check=False)


async def until_ready(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
    pytest.fail(f"{url} never became ready")


def wait_pg_ready(stack: Stack, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = ["exec", stack.container("postgres"), "pg_isready", "-h", "127.0.0.1", "-q"]
        done = subprocess.run(
            ["podman", *probe], env=podman_env(), capture_output=True, timeout=30, check=False
        )
        if done.returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"PostgreSQL never became ready:\n{container_logs(stack.container('postgres'))}")


@pytest.fixture
def compose_scheme(tmp_path: Path) -> Path:
    keep = tmp_path / "scheme"
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "demo", "--keep", str(keep), "--for-compose"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return keep


@pytest.fixture
def stack(compose_scheme: Path) -> Iterator[Stack]:
    built_images()
    running = Stack(compose_scheme)
    try:
        yield running
    finally:
        running.cleanup()


def point_members_at(scheme: Path, url: str) -> None:
    """The councils' and auditor's configs name nginx at 127.0.0.1:8080; this stack's nginx
    is on the port podman chose."""
    for config in [*scheme.glob("councils/*.toml"), *scheme.glob("auditors/*.toml")]:
        text = config.read_text()
        assert devscheme.COMPOSE_BROKER_URL in text
        config.write_text(text.replace(devscheme.COMPOSE_BROKER_URL, url))


async def test_the_compose_stack_answers_every_outcome_through_nginx_survives_a_killed_broker_and_comes_down_in_10_s(  # noqa: E501
    stack: Stack, compose_scheme: Path, tmp_path: Path
) -> None:
    stack.compose("up", "-d", "redis", "postgres")
    wait_pg_ready(stack)
    stack.compose("up", "-d")
    published = podman("port", stack.container("lb"), "8080").strip().splitlines()[0]
    assert published.startswith("127.0.0.1:")
    url = f"http://{published}"
    point_members_at(compose_scheme, url)
    for broker in ("broker-1", "broker-2"):
        deadline = time.monotonic() + 90
        while not stack.ready(broker):
            assert time.monotonic() < deadline, container_logs(stack.container(broker))
            await asyncio.sleep(0.5)
    await until_ready(f"{url}/readyz")

    clients = {
        member: EligibilityClient.from_config(compose_scheme / "councils" / f"{member}.toml")
        for member in devscheme.COUNCILS
    }
    idp = ReferenceIdentityProvider.from_pem(
        (compose_scheme / "keys" / f"{devscheme.IDP}.pem").read_bytes()
    )
    outcomes: list[str] = []
    try:
        for client in clients.values():
            await client.__aenter__()
        for case in CASES:
            outcome, _, _, answer = await run_case(clients[case.council], case, idp)
            assert answer is not None, f"{case.label}: {outcome}"
            outcomes.append(outcome)
        assert {"yes", "no", "no-match"} <= set(outcomes)
        # the resident parking permit was answered through both DVLA providers and the stub
        parking = {
            outcome
            for case, outcome in zip(CASES, outcomes, strict=True)
            if case.check == devscheme.PARKING_CHECK
        }
        assert {"yes", "no"} <= parking

        podman("kill", stack.container("broker-1"))
        for case in CASES[:4]:
            outcome, _, _, answer = await run_case(clients[case.council], case, idp)
            assert answer is not None, f"with broker-1 killed, {case.label}: {outcome}"

        podman("stop", "--time", "5", stack.container("dwp-reference"))
        outcome, _, _, answer = await run_case(clients[DOWN_CASE.council], DOWN_CASE, idp)
        assert answer is not None
        assert outcome == "undetermined"
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)

    auditor = compose_scheme / "auditors" / f"{devscheme.AUDITOR}.toml"
    export = tmp_path / "export.jsonl"
    code, _, err = await run_axb("audit", "export", "--config", str(auditor), "--out", str(export))
    assert code == 0, err
    log_key = compose_scheme / "public" / "log.vkey"
    code, out, err = await run_axb("audit", "verify", str(export), "--log-key", str(log_key))
    assert code == 0, out + err
    records = export.read_text().count('"log_index"')
    assert records >= len(CASES) + 5, export.read_text()[:2000]

    # podman-compose stops and removes one container after another (two podman commands each,
    # most of the time spent starting podman); the containers' own stop is what is bounded.
    # In dependency order, as `compose down` does: the brokers' orderly stop commits and
    # checkpoints the log, so PostgreSQL (and Redis) stop after them. (Stopped all at once,
    # a broker's final checkpoint can find PostgreSQL gone: its stop is then still bounded by
    # shutdown_timeout_s, but it exits 1, as tests/integration/test_sigterm.py shows.)
    stores = {stack.container("redis"), stack.container("postgres")}
    started = time.monotonic()
    podman("stop", "--time", "10", *[n for n in stack.names() if n not in stores], timeout_s=30)
    podman("stop", "--time", "10", *sorted(stores), timeout_s=30)
    stopped_in = time.monotonic() - started
    codes = stack.exit_codes()
    assert stopped_in <= 10.0, f"the stack took {stopped_in:.1f} s to stop: {codes}"
    axb_services = ["broker-2", *devscheme.PROVIDERS, devscheme.VES_STUB]
    assert {service: codes[service] for service in axb_services} == dict.fromkeys(axb_services, 0)
    stack.compose("down", "-t", "10", "-v")
    assert stack.names() == []
