"""The ``axb`` command line: demo, serve, provider serve, check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import date
from pathlib import Path

import click
from aiohttp import web

from broker.logging import configure_logging

CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group()
def main() -> None:
    """ax-broker: signed eligibility checks between councils and attribute providers."""


@main.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the generated scheme (keys, registry, configs) in this folder.",
)
def demo(keep: Path | None) -> None:
    """Run the whole journey on embedded defaults and print every outcome."""
    from broker.demo import demo as run_demo

    sys.exit(run_demo(keep))


async def _serve_forever(apps: list[tuple[web.Application, str, int]]) -> None:
    runners = []
    try:
        for app, host, port in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            runners.append(runner)
            click.echo(f"listening on http://{host}:{port}", err=True)
        await asyncio.Event().wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


@main.command()
@click.option("--config", "config", type=CONFIG, required=True, help="broker.toml")
@click.option("--port", type=int, default=None, help="Override the port in the config.")
@click.option("--redis-url", default=None, help="Use Redis for replay and rate limits.")
@click.option(
    "--with-providers",
    is_flag=True,
    help="Also serve the reference providers listed in providers/ beside the config.",
)
def serve(config: Path, port: int | None, redis_url: str | None, with_providers: bool) -> None:
    """Serve the broker."""
    from broker.app import create_app
    from broker.settings import load_settings
    from connectors.reference.providers import build_reference_provider

    settings = load_settings(config, port=port, redis_url=redis_url)
    configure_logging(json=settings.log_json)
    apps = [(create_app(settings), settings.host, settings.port)]
    if with_providers:
        for provider_config in sorted((config.parent / "providers").glob("*.toml")):
            service = build_reference_provider(provider_config)
            apps.append((service.app, service.host, service.port))
    _event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(apps))


@main.group()
def provider() -> None:
    """Attribute provider tools."""


@provider.command("serve")
@click.option("--config", "config", type=CONFIG, required=True, help="providers/X.toml")
def provider_serve(config: Path) -> None:
    """Serve a reference provider (synthetic population) with the provider kit."""
    from connectors.reference.providers import build_reference_provider

    configure_logging(json=True)
    service = build_reference_provider(config)
    _event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever([(service.app, service.host, service.port)]))


@main.command()
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("check_name")
@click.option("--purpose", required=True)
@click.option("--family-name", required=True)
@click.option("--date-of-birth", required=True, help="YYYY-MM-DD")
@click.option("--given-names", default=None)
@click.option("--postcode", default=None)
@click.option("--nino", default=None)
@click.option("--as-of", default=None, help="YYYY-MM-DD (default: today)")
@click.option("--assurance", default=None, help="P0..P4")
@click.option("--lawful-basis", default="public-task")
def check(
    config: Path,
    check_name: str,
    purpose: str,
    family_name: str,
    date_of_birth: str,
    given_names: str | None,
    postcode: str | None,
    nino: str | None,
    as_of: str | None,
    assurance: str | None,
    lawful_basis: str,
) -> None:
    """Sign a query with a council key, send it, verify and print the answer."""
    from broker.client import CheckFailed, EligibilityClient

    subject = {"family_name": family_name, "date_of_birth": date_of_birth}
    optional = {"given_names": given_names, "postcode": postcode, "nino": nino}
    subject.update({k: v for k, v in optional.items() if v})

    async def run() -> int:
        async with EligibilityClient.from_config(config) as client:
            try:
                answer = await client.check(
                    check_name,
                    purpose=purpose,
                    subject=subject,
                    lawful_basis=lawful_basis,
                    as_of=date.fromisoformat(as_of) if as_of else None,
                    assurance=assurance,
                )
            except CheckFailed as failed:
                click.echo(json.dumps(failed.problem, indent=2))
                return 2
        click.echo(
            json.dumps(
                {
                    "outcome": answer.outcome,
                    "check": answer.check,
                    "check_version": answer.check_version,
                    "as_of": answer.as_of.isoformat(),
                    "log_index": answer.log_index,
                    "query_jti": answer.query_jti,
                    "verified": True,
                },
                indent=2,
            )
        )
        return 0

    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
