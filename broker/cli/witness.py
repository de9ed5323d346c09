"""``axb witness …``: run a witness that cosigns a log's checkpoints, and make its key."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from broker.cli.common import CONFIG, LISTEN_FD, inherited_socket, serve_forever, use_uvloop
from broker.logging import configure_logging


@click.group("witness")
def witness() -> None:
    """A witness: cosigns checkpoints consistent with everything it has seen (C2SP)."""


@witness.command("keygen")
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example/w1.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the private signer key (mode 0600); not with --pkcs11.",
)
@click.option(
    "--pkcs11",
    "token_uri",
    default=None,
    metavar="URI",
    help="Generate the Ed25519 key inside this PKCS#11 token, under the URI's object= label; "
    "nothing private is written. The PIN comes from pin-source or AXB_PKCS11_PIN.",
)
def witness_keygen(name: str, out: Path | None, token_uri: str | None) -> None:
    """Make a witness key; print its verifier key, for the scheme operator's registry."""
    from broker.errors import BadInput
    from trust.cosignature import generate_cosigner
    from trust.errors import KeyFormatError

    if (out is None) == (token_uri is None):
        raise click.UsageError("give one of --out (a key file) or --pkcs11 (a key in a token)")
    if token_uri is not None:
        _token_keygen(name, token_uri)
        return
    assert out is not None
    try:
        skey, vkey = generate_cosigner(name)
    except KeyFormatError as exc:
        raise BadInput(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with out.open("x", encoding="utf-8") as handle:
            out.chmod(0o600)
            handle.write(skey + "\n")
    except FileExistsError:
        raise BadInput(f"{out} exists: a witness key is never overwritten") from None
    click.echo(vkey)


def _token_keygen(name: str, token_uri: str) -> None:
    from broker.errors import BadInput
    from connectors import pkcs11
    from trust.checkpoint import is_key_name

    if not is_key_name(name):
        raise BadInput(f"invalid witness key name {name!r}")
    if pkcs11.parse_pkcs11_uri(token_uri).object is None:
        raise click.UsageError("--pkcs11: name the new key with object=")
    named = pkcs11.generate_in_token(token_uri, "ed25519")
    cosigner = pkcs11.load_token_cosigner(named, name)
    click.echo(cosigner.vkey)
    click.echo(
        f"private key in the token, never exported\nin your witness config:\n"
        f'key = "{named}"\nname = "{name}"',
        err=True,
    )


@witness.command("serve")
@click.option("--config", "config", type=CONFIG, required=True, help="witness.toml")
@click.option("--port", type=int, default=None, help="Override the port in the config.")
@LISTEN_FD
def witness_serve(config: Path, port: int | None, listen_fd: int | None) -> None:
    """Serve the witness's add-checkpoint endpoint."""
    from broker.witness.app import create_witness_app
    from broker.witness.settings import load_witness_settings

    settings = load_witness_settings(config, port=port)
    configure_logging(json=True)
    where = (settings.host, settings.port) if listen_fd is None else inherited_socket(listen_fd)
    use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever([(create_witness_app(settings), where)]))
