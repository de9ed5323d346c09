"""``axb demo``, ``axb serve`` and ``axb healthcheck``: the whole journey, the broker itself, and
the probe a container runs against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from aiohttp import web

from broker.cli.common import (
    CONFIG,
    HOST,
    LISTEN_FD,
    PORT,
    Endpoint,
    connection_limits,
    exit_after_orderly_stop,
    inherited_socket,
    run_server,
    serve_forever,
    use_uvloop,
)
from broker.logging import configure_logging

if TYPE_CHECKING:
    from broker.settings import ResidentPageSettings
    from connectors.scheme_folder import SchemeFolder


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the generated scheme (keys, registry, configs) in this folder.",
)
@click.option(
    "--pkcs11",
    "token",
    default=None,
    metavar="URI",
    help="Generate every signing key in this PKCS#11 token (pkcs11:token=...; the PIN from "
    "pin-source or AXB_PKCS11_PIN): no private key is written to disk.",
)
@click.option(
    "--for-compose",
    is_flag=True,
    help="With --keep: only write a scheme for deploy/compose.yaml (servers named by their "
    "compose services, the shared PostgreSQL log and Redis), without running the journey.",
)
def demo(keep: Path | None, token: str | None, for_compose: bool) -> None:
    """Run the whole journey on embedded defaults and print every outcome."""
    from broker.cli.demo import demo as run_demo
    from broker.cli.demo import write_compose_scheme

    if for_compose:
        if keep is None:
            raise click.UsageError("--for-compose needs --keep DIR")
        sys.exit(write_compose_scheme(keep))
    sys.exit(run_demo(keep, token))


@click.command()
@click.option("--config", "config", type=CONFIG, required=True, help="broker.toml")
@HOST
@PORT
@click.option(
    "--redis-url",
    envvar="AXB_REDIS_URL",
    default=None,
    help="Use Redis for replay and rate limits [env AXB_REDIS_URL].",
)
@click.option(
    "--consent-log",
    envvar="AXB_CONSENT_LOG",
    default=None,
    help="Override the config's consent_log: a postgresql:// URL or an SQLite file "
    "[env AXB_CONSENT_LOG].",
)
@click.option(
    "--with-providers",
    is_flag=True,
    help="Also serve the reference providers listed in providers/ beside the config.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    envvar="AXB_WORKERS",
    default=1,
    show_default=True,
    help="Broker processes on the one port, under a supervisor that restarts a dead one; "
    "more than one needs Redis and a PostgreSQL consent log [env AXB_WORKERS].",
)
@LISTEN_FD
def serve(
    config: Path,
    host: str | None,
    port: int | None,
    redis_url: str | None,
    consent_log: str | None,
    with_providers: bool,
    workers: int,
    listen_fd: int | None,
) -> None:
    """Serve the broker."""
    from broker.app import create_app
    from broker.app_keys import STOPPING, WORKERS_FILE
    from broker.cli.workers import WORKERS_STATUS_ENV
    from broker.errors import ShutdownIncomplete
    from broker.settings import load_settings
    from connectors.reference.providers import build_reference_provider, build_stub
    from connectors.scheme_folder import SchemeFolder

    settings = load_settings(
        config, host=host, port=port, redis_url=redis_url, consent_log=consent_log
    )
    configure_logging(json=settings.log_json)
    broker_at = (settings.host, settings.port) if listen_fd is None else inherited_socket(listen_fd)
    if workers > 1:
        from broker.cli.workers import Supervisor, require_shared_stores

        if with_providers:
            raise click.UsageError("--workers serves the broker only: drop --with-providers")
        require_shared_stores(settings, workers)
        if not isinstance(broker_at, socket.socket):
            family = socket.AF_INET6 if ":" in broker_at[0] else socket.AF_INET
            broker_at = socket.create_server(broker_at, family=family)
        passed = {"--redis-url": redis_url, "--consent-log": consent_log}
        argv = ["--config", str(config), "--workers", "1"]
        argv += [arg for flag, value in passed.items() if value for arg in (flag, value)]
        host_bound, port_bound = broker_at.getsockname()[:2]
        click.echo(f"listening on http://{host_bound}:{port_bound}", err=True)
        sys.exit(Supervisor(argv, broker_at, workers, settings.shutdown_timeout_s).run())
    broker_app = create_app(settings)
    if status_file := os.environ.get(WORKERS_STATUS_ENV):  # a worker of axb serve --workers
        broker_app[WORKERS_FILE] = Path(status_file)
    apps: list[tuple[web.Application, Endpoint]] = [(broker_app, broker_at)]
    if with_providers:
        folder = SchemeFolder.of_config(config)
        for provider_config in sorted(folder.providers_dir.glob("*.toml")):
            service = build_reference_provider(provider_config)
            apps.append((service.app, (service.host, service.port)))
        for stub_config in sorted(folder.stubs_dir.glob("*.toml")):
            stub, host, stub_port = build_stub(stub_config)
            apps.append((stub, (host, stub_port)))
        if settings.resident is not None:  # the reference identity provider's sign-in
            apps.append(_reference_identity_provider(folder, settings.resident))
    use_uvloop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_server(
                serve_forever(
                    apps,
                    connection_limits(settings),
                    on_stopping=broker_app[STOPPING].set,
                    drain_s=settings.drain_s,
                )
            )
    except ShutdownIncomplete as exc:  # steps abandoned at the shutdown timeout, logged
        click.echo(f"axb: the stop was not orderly: {exc}", err=True)
        exit_after_orderly_stop(1)
    exit_after_orderly_stop()


@click.command()
@click.option(
    "--url",
    default=None,
    help="What to ask (default: http://127.0.0.1:$AXB_PORT/healthz, port 8080 when unset).",
)
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
def healthcheck(url: str | None, timeout_s: float) -> None:
    """Exit 0 when the server here answers its health check, 1 when not: the image's
    HEALTHCHECK, and an exec probe for a compose file or Kubernetes."""
    import os

    import aiohttp

    target = url or f"http://127.0.0.1:{os.environ.get('AXB_PORT') or 8080}/healthz"

    async def status() -> int:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(target) as response,
        ):
            return response.status

    code = asyncio.run(status())
    if code != 200:
        raise click.ClickException(f"{target} answered {code}")


def _reference_identity_provider(
    folder: SchemeFolder, resident: ResidentPageSettings
) -> tuple[web.Application, Endpoint]:
    """The development scheme's reference identity provider, where ``[resident]`` signs in."""
    from urllib.parse import urlsplit

    from broker.errors import BadInput
    from broker.scheme import dev as devscheme
    from connectors.reference.identity import identity_app, load_reference_identity_provider

    key = folder.key(devscheme.IDP)
    if not key.exists() and not folder.identity_config(devscheme.IDP).exists():
        raise BadInput(f"[resident] is set but there is no reference identity provider key {key}")
    at = urlsplit(resident.authorize_url)
    callback = resident.public_url.rstrip("/") + "/resident/callback"
    provider = load_reference_identity_provider(folder, devscheme.IDP)
    app = identity_app(provider, redirect_uris={devscheme.RESIDENT_PAGE_CLIENT_ID: callback})
    return app, (at.hostname or "127.0.0.1", at.port or 80)
