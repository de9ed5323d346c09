"""``axb demo`` and ``axb serve``: the whole journey, and the broker itself."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from aiohttp import web

from broker.cli.common import (
    CONFIG,
    LISTEN_FD,
    Endpoint,
    connection_limits,
    inherited_socket,
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
def demo(keep: Path | None) -> None:
    """Run the whole journey on embedded defaults and print every outcome."""
    from broker.cli.demo import demo as run_demo

    sys.exit(run_demo(keep))


@click.command()
@click.option("--config", "config", type=CONFIG, required=True, help="broker.toml")
@click.option("--port", type=int, default=None, help="Override the port in the config.")
@click.option("--redis-url", default=None, help="Use Redis for replay and rate limits.")
@click.option(
    "--with-providers",
    is_flag=True,
    help="Also serve the reference providers listed in providers/ beside the config.",
)
@LISTEN_FD
def serve(
    config: Path,
    port: int | None,
    redis_url: str | None,
    with_providers: bool,
    listen_fd: int | None,
) -> None:
    """Serve the broker."""
    from broker.app import create_app
    from broker.settings import load_settings
    from connectors.reference.providers import build_reference_provider, build_ves_stub
    from connectors.scheme_folder import SchemeFolder

    settings = load_settings(config, port=port, redis_url=redis_url)
    configure_logging(json=settings.log_json)
    broker_at = (settings.host, settings.port) if listen_fd is None else inherited_socket(listen_fd)
    apps: list[tuple[web.Application, Endpoint]] = [(create_app(settings), broker_at)]
    if with_providers:
        folder = SchemeFolder.of_config(config)
        for provider_config in sorted(folder.providers_dir.glob("*.toml")):
            service = build_reference_provider(provider_config)
            apps.append((service.app, (service.host, service.port)))
        for stub_config in sorted(folder.stubs_dir.glob("*.toml")):
            stub, host, stub_port = build_ves_stub(stub_config)
            apps.append((stub, (host, stub_port)))
        if settings.resident is not None:  # the reference identity provider's sign-in
            apps.append(_reference_identity_provider(folder, settings.resident))
    use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(apps, connection_limits(settings)))


def _reference_identity_provider(
    folder: SchemeFolder, resident: ResidentPageSettings
) -> tuple[web.Application, Endpoint]:
    """The development scheme's reference identity provider, where ``[resident]`` signs in."""
    from urllib.parse import urlsplit

    from broker.errors import BadInput
    from broker.scheme import dev as devscheme
    from connectors.reference.identity import ReferenceIdentityProvider, identity_app

    key = folder.key(devscheme.IDP)
    if not key.exists():
        raise BadInput(f"[resident] is set but there is no reference identity provider key {key}")
    at = urlsplit(resident.authorize_url)
    callback = resident.public_url.rstrip("/") + "/resident/callback"
    provider = ReferenceIdentityProvider.from_pem(key.read_bytes())
    app = identity_app(provider, redirect_uris={devscheme.RESIDENT_PAGE_CLIENT_ID: callback})
    return app, (at.hostname or "127.0.0.1", at.port or 80)
