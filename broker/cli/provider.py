"""``axb provider …``: what an attribute provider runs: serve, conformance, keygen, registration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import click

from broker.cli.common import CONFIG, LISTEN_FD, inherited_socket, serve_forever, use_uvloop
from broker.logging import configure_logging


@click.group("provider")
def provider() -> None:
    """Attribute provider tools."""


@provider.command("serve")
@click.option("--config", "config", type=CONFIG, required=True, help="providers/X.toml")
@LISTEN_FD
def provider_serve(config: Path, listen_fd: int | None) -> None:
    """Serve a reference provider (synthetic population) with the provider kit."""
    from connectors.reference.providers import build_reference_provider

    configure_logging(json=True)
    service = build_reference_provider(config)
    use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        at = (service.host, service.port) if listen_fd is None else inherited_socket(listen_fd)
        asyncio.run(serve_forever([(service.app, at)]))


@provider.command("conformance")
@click.argument("url")
@click.option(
    "--scheme",
    "scheme_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="A scheme folder (anchors/, registry.jwt, keys/) as `axb demo --keep` writes it.",
)
@click.option("--provider-id", required=True, help="The provider's member id in the registry.")
@click.option("--as-broker", default=None, help="Broker member to play (default: the broker).")
@click.option(
    "--other-member", default=None, help="Another member whose key must be refused (a council)."
)
@click.option(
    "--subject-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='{"known": {...}, "unknown": {...}, "attributes": [...]} (default: reference people).',
)
def provider_conformance(
    url: str,
    scheme_dir: Path,
    provider_id: str,
    as_broker: str | None,
    other_member: str | None,
    subject_json: Path | None,
) -> None:
    """Check a provider endpoint against the provider API, playing the broker."""
    from connectors.conformance import run_conformance, target_from_scheme
    from connectors.errors import ConfigError

    try:
        target = target_from_scheme(
            scheme_dir,
            endpoint=url,
            provider_id=provider_id,
            as_broker=as_broker,
            other_member=other_member,
            subjects=subject_json,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    report = asyncio.run(run_conformance(target))
    click.echo(report.render())
    sys.exit(0 if report.passed else 1)


@provider.command("keygen")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--id", "member_id", required=True)
def provider_keygen(out: Path, member_id: str) -> None:
    """Generate an ES256 key pair: OUT/ID.pem (keep it secret) and OUT/ID.jwk.json (public)."""
    from trust.keys import SigningKey

    key = SigningKey.generate()
    out.mkdir(parents=True, exist_ok=True)
    private = out / f"{member_id}.pem"
    private.write_bytes(key.to_pem())
    private.chmod(0o600)
    (out / f"{member_id}.jwk.json").write_text(json.dumps(dict(key.verifying_key.jwk)))
    click.echo(
        f"kid {key.kid}\nprivate key {private} (keep it secret)\n"
        f"public key  {out / (member_id + '.jwk.json')}"
    )


@provider.command("registration")
@click.option("--id", "member_id", required=True)
@click.option("--name", required=True)
@click.option("--endpoint", required=True, help="https URL of your POST /v1/attributes")
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    multiple=True,
)
@click.option(
    "--attributes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="TOML: [[attribute]] name, description, required, optional",
)
@click.option("--timeout-ms", default=2000, type=int, help="your declared latency bound")
@click.option("--max-concurrency", default=32, type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def provider_registration(
    member_id: str,
    name: str,
    endpoint: str,
    public_key: tuple[Path, ...],
    attributes: Path,
    timeout_ms: int,
    max_concurrency: int,
    out: Path,
) -> None:
    """Prepare the registration the scheme operator reviews and admits."""
    import tomllib

    from broker.scheme import admin as scheme_admin

    table = tomllib.loads(attributes.read_text())
    registration = {
        "id": member_id,
        "name": name,
        "roles": ["attribute-provider"],
        "status": "active",
        "keys": [
            {"jwk": json.loads(p.read_text()), "not_before": None, "not_after": None}
            for p in public_key
        ],
        "permissions": {"purposes": [], "grants": []},
        "provider": {
            "endpoint": endpoint,
            "timeout_ms": timeout_ms,
            "max_concurrency": max_concurrency,
            "attributes": [
                {
                    "name": a["name"],
                    "description": a["description"],
                    "matching": {
                        "required": a.get("required", []),
                        "optional": a.get("optional", []),
                    },
                }
                for a in table.get("attribute", [])
            ],
        },
    }
    try:
        lines = scheme_admin.review_registration(registration)
    except scheme_admin.SchemeAdminError as exc:
        raise click.ClickException(str(exc)) from exc
    out.write_text(json.dumps(registration, indent=2) + "\n")
    click.echo("\n".join(lines) + f"\nwrote {out}: send it to the scheme operator")
