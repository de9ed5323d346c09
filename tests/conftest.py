"""Shared fixtures: a development scheme on disk, reference providers and a broker on loopback.

Integration tests run real HTTP servers bound to 127.0.0.1 with real keys and a real SQLite
consent log; nothing is mocked. The helpers these fixtures use, and that tests import, live in
``tests.support``: this file holds fixtures only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.app import create_app
from broker.scheme import dev as devscheme
from broker.settings import load_settings
from connectors import pkcs11
from connectors.reference.identity import identity_app, load_reference_identity_provider
from connectors.reference.providers import build_reference_provider, build_ves_stub
from members.council import EligibilityClient
from tests.support.councils import CouncilKey
from tests.support.logdb import LOG_BACKENDS, log_backend
from tests.support.redis_server import PrivateRedis
from tests.support.servers import RunningBroker, RunningProvider, StartBroker, serve_on
from tests.support.services import database_of_its_own
from tests.support.tokens import SoftToken, make_token
from trust.keys import SigningKey


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (its consent log in schema 'axb'), dropped after."""
    async with database_of_its_own() as dsn:
        yield dsn


@pytest.fixture(params=LOG_BACKENDS)
async def each_log_backend(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, object]]:
    async with log_backend(request.param) as overrides:
        yield overrides


@pytest.fixture
def consent_log_overrides() -> dict[str, object]:
    """The settings that choose a test broker's consent log: by default the scheme's SQLite
    file."""
    return {}


@pytest.fixture
def listeners() -> Iterator[devscheme.Listeners]:
    """The scheme's servers' sockets, bound before the scheme names their ports; whatever a
    test did not serve is closed after it."""
    with devscheme.Listeners() as held:
        yield held


@pytest.fixture
def soft_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftToken]:
    """A SoftHSM2 token of the test's own (its store in tmp_path), found by this process."""
    made = make_token(tmp_path / "hsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(made.conf))
    monkeypatch.delenv(pkcs11.PIN_ENV, raising=False)
    monkeypatch.setattr(pkcs11, "RESCAN_EVERY_S", 0.0)  # a token put back is found at once
    pkcs11.reset()  # the module reads SOFTHSM2_CONF when (re)initialised
    yield made
    pkcs11.reset()


@pytest.fixture
def scheme(
    tmp_path: Path, listeners: devscheme.Listeners, request: pytest.FixtureRequest
) -> devscheme.DevScheme:
    """The development scheme; with ``@pytest.mark.keys_in_token``, every signing key in it is
    generated in ``soft_token``."""
    token = None
    if request.node.get_closest_marker("keys_in_token") is not None:
        token = request.getfixturevalue("soft_token").base()
    return devscheme.generate(tmp_path / "scheme", ports=listeners.ports, token=token)


@pytest.fixture
async def providers(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners
) -> AsyncIterator[dict[str, RunningProvider]]:
    stub_app, _, _ = build_ves_stub(scheme.folder.stub_config(devscheme.VES_STUB))
    stub = await serve_on(stub_app, listeners.ves_stub)
    running = {}
    for pid in scheme.provider_ports:
        service = build_reference_provider(scheme.provider_config(pid))
        running[pid] = RunningProvider(
            service, await serve_on(service.app, listeners.providers[pid])
        )
    yield running
    for provider in running.values():
        await provider.stop()
    await stub.cleanup()


@pytest.fixture
async def start_broker(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    consent_log_overrides: dict[str, object],
) -> AsyncIterator[StartBroker]:
    started: list[RunningBroker] = []
    unserved = [listeners.broker]

    async def start(
        *, public_checkpoint_every_seconds: float = 0.0, **overrides: object
    ) -> RunningBroker:
        """A broker on the scheme's config with ``overrides``. Unlike the default (one fresh
        checkpoint a second), GET /v1/log/checkpoint here always covers every record, so
        tests can prove what they just did.

        On the scheme's broker port it serves the socket held for it (or, once a broker there
        has stopped, binds the port again); ``port=0`` gives it a port of its own."""
        settings = load_settings(scheme.broker_config, **{**consent_log_overrides, **overrides})
        if settings.port == scheme.broker_port and unserved:
            sock = unserved.pop()
        else:
            sock = devscheme.bind_loopback(settings.port)
        settings = dataclasses.replace(
            settings,
            port=sock.getsockname()[1],
            public_checkpoint_every_seconds=public_checkpoint_every_seconds,
        )
        try:
            app = create_app(settings)
        except BaseException:  # refused at start: the socket is not left open
            sock.close()
            raise
        runner = await serve_on(app, sock)
        broker = RunningBroker(f"http://{settings.host}:{settings.port}", settings, app, runner)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        await broker.runner.cleanup()


@pytest.fixture
async def broker(start_broker: StartBroker, providers: object) -> RunningBroker:
    return await start_broker()


@pytest.fixture
def council_key(scheme: devscheme.DevScheme) -> CouncilKey:
    def key(member_id: str) -> SigningKey:
        return SigningKey.from_pem(scheme.key_path(member_id).read_bytes())

    return key


@pytest.fixture
async def blue_badge_client(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[EligibilityClient]:
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as client:
        yield client


@pytest.fixture
async def schools_client(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[EligibilityClient]:
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        yield client


@pytest.fixture
async def identity_provider(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners
) -> AsyncIterator[str]:
    """The reference identity provider serving its sign-in on the scheme's port; its URL."""
    provider = load_reference_identity_provider(scheme.folder, devscheme.IDP)
    callback = f"{scheme.broker_url}/resident/callback"
    app = identity_app(provider, redirect_uris={devscheme.RESIDENT_PAGE_CLIENT_ID: callback})
    runner = await serve_on(app, listeners.identity)  # its sign-in, for the resident page
    assert scheme.identity_url is not None
    yield scheme.identity_url
    await runner.cleanup()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A throwaway ``redis-server`` of the test's own, killed after it."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()
