"""``axb identity …``: the reference identity provider, for development and scripts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from broker.cli.common import SCHEME_DIR
from broker.errors import BadInput


@click.group("identity")
def identity() -> None:
    """The reference identity provider (One Login-style) of a development scheme."""


def _client_id(scheme_dir: Path, council: str) -> str:
    """The council's client id at the reference identity provider, from the registry source."""
    from broker.scheme import admin as scheme_admin
    from broker.scheme import dev as devscheme

    for member in scheme_admin.load_source(scheme_dir)["members"]:
        if member.get("id") == council:
            client_id = (member.get("client_ids") or {}).get(devscheme.IDP)
            if isinstance(client_id, str):
                return client_id
            raise BadInput(f"{council} has no client id at {devscheme.IDP}")
    raise BadInput(f"no member {council!r} in the scheme")


@identity.command("issue")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.option("--identity", "label", required=True, help="a test identity, e.g. bb-yes-dla")
@click.option("--council", default=None, help="the council it is issued to (its client id)")
@click.option("--client-id", default=None, help="or the client id itself")
@click.option("--vot", default="P2", show_default=True, help="P1 or P2")
@click.option("--lifetime", default=1200, show_default=True, type=click.IntRange(min=1))
@click.option("--claims", "show_claims", is_flag=True, help="print the claims, not the JWS")
def identity_issue(
    scheme_dir: Path,
    label: str,
    council: str | None,
    client_id: str | None,
    vot: str,
    lifetime: int,
    show_claims: bool,
) -> None:
    """Print a core identity credential of a test identity, signed by the scheme's reference
    identity provider (pass it to 'axb check --credential FILE')."""
    from broker.scheme import dev as devscheme
    from connectors.reference.identity import load_reference_identity_provider
    from connectors.reference.population import TEST_IDENTITIES
    from connectors.scheme_folder import SchemeFolder

    if (council is None) == (client_id is None):
        raise BadInput("give exactly one of --council and --client-id")
    if label not in TEST_IDENTITIES:
        raise BadInput(f"no test identity {label!r} (see docs/test-identities.md)")
    audience = client_id if client_id is not None else _client_id(scheme_dir, str(council))
    folder = SchemeFolder(scheme_dir)
    try:
        provider = load_reference_identity_provider(folder, devscheme.IDP)
    except OSError as exc:
        where = folder.key(devscheme.IDP)
        raise BadInput(f"cannot read the identity provider's key {where}") from exc
    now = int(time.time())
    if show_claims:
        claims = provider.claims(label, client_id=audience, now=now, vot=vot, lifetime=lifetime)
        click.echo(json.dumps(claims, indent=2))
        return
    click.echo(provider.issue(label, client_id=audience, now=now, vot=vot, lifetime=lifetime))
