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
    required=True,
    help="Where to write the private signer key (mode 0600).",
)
def witness_keygen(name: str, out: Path) -> None:
    """Make a witness key; print its verifier key, for the scheme operator's registry."""
    from broker.errors import BadInput
    from trust.cosignature import generate_cosigner
    from trust.errors import KeyFormatError

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
