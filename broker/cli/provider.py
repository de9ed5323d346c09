"""``axb provider …``: what an attribute provider runs: serve, conformance, keygen, registration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from broker.cli.common import (
    CONFIG,
    HOST,
    INPUT_FILE,
    LISTEN_FD,
    PORT,
    SCHEME_DIR,
    exit_after_orderly_stop,
    inherited_socket,
    read_json_object,
    read_toml_document,
    serve_forever,
    use_uvloop,
)
from broker.logging import configure_logging


@click.group("provider")
def provider() -> None:
    """Attribute provider tools."""


@provider.command("serve")
@click.option("--config", "config", type=CONFIG, required=True, help="providers/X.toml")
@HOST
@PORT
@LISTEN_FD
def provider_serve(config: Path, host: str | None, port: int | None, listen_fd: int | None) -> None:
    """Serve a reference provider (synthetic population) with the provider kit."""
    from connectors.config import read_toml, server_tls
    from connectors.reference.providers import build_reference_provider

    configure_logging(json=True)
    service = build_reference_provider(config)
    tls = server_tls(config.parent, read_toml(config))
    at = (host or service.host, service.port if port is None else port)
    _serve_one(service.app, at, listen_fd, tls)


@provider.command("stub")
@click.option("--config", "config", type=CONFIG, required=True, help="stubs/X.toml")
@HOST
@PORT
@LISTEN_FD
def provider_stub(config: Path, host: str | None, port: int | None, listen_fd: int | None) -> None:
    """Serve a stand-in for an outside service a provider adapter calls (DVLA's VES test
    environment), as `axb serve --with-providers` does, on its own."""
    from connectors.reference.providers import build_ves_stub

    configure_logging(json=True)
    app, stub_host, stub_port = build_ves_stub(config)
    _serve_one(app, (host or stub_host, stub_port if port is None else port), listen_fd)


def _serve_one(
    app: web.Application,
    at: tuple[str, int],
    listen_fd: int | None,
    tls: ssl.SSLContext | None = None,
) -> None:
    use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        endpoint = at if listen_fd is None else inherited_socket(listen_fd)
        asyncio.run(serve_forever([(app, endpoint)], tls=tls))
    exit_after_orderly_stop()


@provider.command("conformance")
@click.argument("url")
@click.option(
    "--scheme",
    "scheme_dir",
    type=SCHEME_DIR,
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
    type=INPUT_FILE,
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

    target = target_from_scheme(
        scheme_dir,
        endpoint=url,
        provider_id=provider_id,
        as_broker=as_broker,
        other_member=other_member,
        subjects=subject_json,
    )
    report = asyncio.run(run_conformance(target))
    click.echo(report.render())
    sys.exit(0 if report.passed else 1)


@provider.command("keygen")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--id", "member_id", required=True)
@click.option(
    "--pkcs11",
    "token_uri",
    default=None,
    metavar="URI",
    help="Generate the key inside this PKCS#11 token (object= defaults to ID); only the "
    "public key is written. The PIN comes from pin-source or AXB_PKCS11_PIN.",
)
@click.option(
    "--log-origin",
    default=None,
    help="With --pkcs11: generate the consent log's Ed25519 checkpoint key named ORIGIN "
    "instead, and write its verifier key OUT/ID.vkey.",
)
def provider_keygen(
    out: Path, member_id: str, token_uri: str | None, log_origin: str | None
) -> None:
    """Generate an ES256 key pair: OUT/ID.pem (keep it secret) and OUT/ID.jwk.json (public);
    with --pkcs11, inside the token, and only OUT/ID.jwk.json is written."""
    from trust.keys import SigningKey

    if token_uri is not None:
        _token_keygen(out, member_id, token_uri, log_origin)
        return
    if log_origin is not None:
        raise click.UsageError("--log-origin needs --pkcs11 (axb demo writes file log keys)")
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


def _token_keygen(out: Path, member_id: str, token_uri: str, log_origin: str | None) -> None:
    from connectors import pkcs11

    uri = pkcs11.parse_pkcs11_uri(token_uri)
    if uri.object is None and uri.id is None:
        uri = uri.with_object(member_id)
    kind: pkcs11.KeyKind = "es256" if log_origin is None else "ed25519"
    named = pkcs11.generate_in_token(str(uri), kind)
    out.mkdir(parents=True, exist_ok=True)
    if log_origin is not None:
        vkey = pkcs11.load_token_note_signer(named, log_origin).vkey
        public = out / f"{member_id}.vkey"
        public.write_text(vkey + "\n")
        setting = f'[log]\nsigning_key = "{named}"\norigin = "{log_origin}"'
        click.echo(f"verifier key {vkey}\n")
    else:
        key = pkcs11.load_token_signing_key(named)
        public = out / f"{member_id}.jwk.json"
        public.write_text(json.dumps(dict(key.verifying_key.jwk)))
        setting = f'signing_key = "{named}"'
        click.echo(f"kid {key.kid}")
    click.echo(
        f"private key in the token, never exported: {uri.shown}\n"
        f"public key  {public}\nin your config:\n{setting}"
    )


@provider.command("registration")
@click.option("--id", "member_id", required=True)
@click.option("--name", required=True)
@click.option("--endpoint", required=True, help="https URL of your POST /v1/attributes")
@click.option("--public-key", type=INPUT_FILE, required=True, multiple=True)
@click.option(
    "--attributes",
    type=INPUT_FILE,
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
    from broker.scheme import admin as scheme_admin

    offered = offered_attributes(read_toml_document(attributes, "attributes"), attributes)
    registration = {
        "id": member_id,
        "name": name,
        "roles": ["attribute-provider"],
        "status": "active",
        "keys": [
            {
                "jwk": read_json_object(p, "public key"),
                "not_before": None,
                "not_after": None,
            }
            for p in public_key
        ],
        "permissions": {"purposes": [], "grants": []},
        "provider": {
            "endpoint": endpoint,
            "timeout_ms": timeout_ms,
            "max_concurrency": max_concurrency,
            "attributes": offered,
        },
    }
    lines = scheme_admin.review_registration(registration)
    out.write_text(json.dumps(registration, indent=2) + "\n")
    click.echo("\n".join(lines) + f"\nwrote {out}: send it to the scheme operator")


def offered_attributes(table: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The registration's attribute offers from the provider's ``[[attribute]]`` tables (name,
    description, and the matching fields it requires and may use)."""
    from broker.errors import BadInput

    entries = table.get("attribute", [])
    if not isinstance(entries, list):
        raise BadInput(f"attributes {path}: attribute must be an array of tables")
    offered = []
    for number, entry in enumerate(entries, start=1):
        where = f"attributes {path}: attribute {number}"
        if not isinstance(entry, dict):
            raise BadInput(f"{where} is not a table")
        for name in ("name", "description"):
            if not isinstance(entry.get(name), str):
                raise BadInput(f"{where} has no {name} string")
        matching = {field: entry.get(field, []) for field in ("required", "optional")}
        for field, names in matching.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadInput(f"{where}: {field} must be a list of field names")
        offered.append(
            {"name": entry["name"], "description": entry["description"], "matching": matching}
        )
    return offered
