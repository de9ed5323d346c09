"""``axb scheme …``: the scheme operator's tools: review, admit, change, publish."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import INPUT_FILE, SCHEME_DIR, read_json_document


@click.group("scheme")
def scheme() -> None:
    """Scheme operator tools: review and admit members, change them, publish the registry."""


def _admin(action: str, scheme_dir: Path, change: object) -> None:
    from broker.scheme import admin as scheme_admin

    changed = change(scheme_admin.load_source(scheme_dir))  # type: ignore[operator]
    scheme_admin.save_source(scheme_dir, changed)
    click.echo(f"{action}: done (not yet published; run 'axb scheme publish')")


@scheme.command("review")
@click.argument("registration", type=INPUT_FILE, required=False)
@click.option(
    "--scheme",
    "scheme_dir",
    type=SCHEME_DIR,
    default=None,
    help="Instead: what publishing this scheme's source would change, for whom, from when",
)
def scheme_review(registration: Path | None, scheme_dir: Path | None) -> None:
    """Show what a registration asks for, refusing a bad one with the reason; or, with
    --scheme, what publishing the registry source would change in its checks."""
    from broker.scheme import admin as scheme_admin

    if scheme_dir is not None and registration is None:
        lines = scheme_admin.review_source(scheme_dir, scheme_admin.load_source(scheme_dir))
    elif registration is not None and scheme_dir is None:
        document = read_json_document(registration, "registration")
        lines = scheme_admin.review_registration(document)
    else:
        raise click.UsageError("give a REGISTRATION file or --scheme DIR, not both")
    click.echo("\n".join(lines))


@scheme.command("add-member")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.option(
    "--did-document",
    type=INPUT_FILE,
    default=None,
    help="An identity provider's DID document (did.json): its assertionMethod keys are "
    "imported with their published ids",
)
@click.argument("registration", type=INPUT_FILE)
def scheme_add_member(scheme_dir: Path, registration: Path, did_document: Path | None) -> None:
    """Admit a member from its registration file."""
    from broker.scheme import admin as scheme_admin

    document = read_json_document(registration, "registration")
    if did_document is None:
        _admin("add-member", scheme_dir, lambda s: scheme_admin.add_member(s, document))
        return
    did = read_json_document(did_document, "DID document")
    _admin(
        "add-member",
        scheme_dir,
        lambda s: scheme_admin.add_identity_provider(s, document, did),
    )


@scheme.command("import-did-document")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
@click.argument("did_document", type=INPUT_FILE)
def scheme_import_did_document(scheme_dir: Path, member_id: str, did_document: Path) -> None:
    """Rotate an identity provider's keys to its current DID document: keys it newly lists
    are added, keys it no longer lists end their validity now."""
    from broker.scheme import admin as scheme_admin

    did = read_json_document(did_document, "DID document")
    _admin(
        "import-did-document",
        scheme_dir,
        lambda s: scheme_admin.import_did_document(s, member_id, did),
    )


@scheme.command("add-purpose")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("document", type=INPUT_FILE)
def scheme_add_purpose(scheme_dir: Path, document: Path) -> None:
    """Add a purpose (JSON: id, description, checks, lawful_bases, consent_required)."""
    from broker.scheme import admin as scheme_admin

    body = read_json_document(document, "purpose")
    _admin("add-purpose", scheme_dir, lambda s: scheme_admin.add_named(s, "purposes", body))


@scheme.command("add-check")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.option(
    "--for",
    "councils",
    multiple=True,
    metavar="COUNCIL",
    help="Scope the document's versions to this council (repeatable); to an existing check, "
    "they are added beside its versions",
)
@click.option("--owner", default=None, help="A new check that is this council's local scheme")
@click.argument("document", type=INPUT_FILE)
def scheme_add_check(
    scheme_dir: Path, councils: tuple[str, ...], owner: str | None, document: Path
) -> None:
    """Add a named check (JSON: name, description, versions with rules, optional bands), or
    local versions of one (--for)."""
    from broker.scheme import admin as scheme_admin

    body = read_json_document(document, "check")
    _admin(
        "add-check",
        scheme_dir,
        lambda s: scheme_admin.add_check(s, body, councils=councils, owner=owner),
    )


@scheme.command("permit")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
@click.argument("purpose")
def scheme_permit(scheme_dir: Path, member_id: str, purpose: str) -> None:
    """Let a relying party use a purpose."""
    from broker.scheme import admin as scheme_admin

    _admin("permit", scheme_dir, lambda s: scheme_admin.permit(s, member_id, purpose))


@scheme.command("suspend")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
def scheme_suspend(scheme_dir: Path, member_id: str) -> None:
    """Suspend a member: refused from the next query after publication."""
    from broker.scheme import admin as scheme_admin

    _admin("suspend", scheme_dir, lambda s: scheme_admin.set_status(s, member_id, "suspended"))


@scheme.command("reinstate")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
def scheme_reinstate(scheme_dir: Path, member_id: str) -> None:
    """Make a suspended member active again."""
    from broker.scheme import admin as scheme_admin

    _admin("reinstate", scheme_dir, lambda s: scheme_admin.set_status(s, member_id, "active"))


@scheme.command("add-key")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
@click.argument("jwk_file", type=INPUT_FILE)
def scheme_add_key(scheme_dir: Path, member_id: str, jwk_file: Path) -> None:
    """Add a member's new public key beside its current ones (rotation overlap begins)."""
    from broker.scheme import admin as scheme_admin

    jwk = read_json_document(jwk_file, "public key")
    _admin("add-key", scheme_dir, lambda s: scheme_admin.add_key(s, member_id, jwk))


@scheme.command("retire-key")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("member_id")
@click.argument("kid")
@click.option("--not-after", default=None, help="RFC 3339 end of validity (default: now)")
def scheme_retire_key(scheme_dir: Path, member_id: str, kid: str, not_after: str | None) -> None:
    """End a key's validity (rotation overlap ends)."""
    from broker.scheme import admin as scheme_admin

    _admin(
        "retire-key",
        scheme_dir,
        lambda s: scheme_admin.retire_key(s, member_id, kid, not_after=not_after),
    )


@scheme.command("publish")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.option("--lifetime-days", default=30, type=click.IntRange(min=1))
def scheme_publish(scheme_dir: Path, lifetime_days: int) -> None:
    """Sign the registry source as the next registry and replace the registry file."""
    from broker.scheme import admin as scheme_admin

    seq = scheme_admin.publish(
        scheme_dir, scheme_admin.load_source(scheme_dir), lifetime=lifetime_days * 86400
    )
    click.echo(f"published registry seq {seq} to {scheme_dir / 'registry.jwt'}")
