"""The ``axb`` command line: demo, serve, provider serve, check."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

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
    from broker.cli.demo import demo as run_demo

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
    from connectors.reference.providers import build_reference_provider, build_ves_stub

    settings = load_settings(config, port=port, redis_url=redis_url)
    configure_logging(json=settings.log_json)
    apps = [(create_app(settings), settings.host, settings.port)]
    if with_providers:
        for provider_config in sorted((config.parent / "providers").glob("*.toml")):
            service = build_reference_provider(provider_config)
            apps.append((service.app, service.host, service.port))
        for stub_config in sorted((config.parent / "stubs").glob("*.toml")):
            apps.append(build_ves_stub(stub_config))
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
    from connectors.config import ConfigError
    from connectors.conformance import run_conformance, target_from_scheme

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


@main.command()
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("check_name")
@click.option("--purpose", required=True)
@click.option("--family-name", required=True)
@click.option("--date-of-birth", required=True, help="YYYY-MM-DD")
@click.option("--given-names", default=None)
@click.option("--postcode", default=None)
@click.option("--nino", default=None)
@click.option("--vehicle-registration", default=None, help="for resident-parking-permit")
@click.option("--as-of", default=None, help="YYYY-MM-DD (default: today)")
@click.option("--assurance", default=None, help="P0..P4")
@click.option("--lawful-basis", default="public-task")
@click.option(
    "--prove-receipt",
    is_flag=True,
    help="then prove the answer's consent record is in the log (needs log_key in the config)",
)
def check(
    config: Path,
    check_name: str,
    purpose: str,
    family_name: str,
    date_of_birth: str,
    given_names: str | None,
    postcode: str | None,
    nino: str | None,
    vehicle_registration: str | None,
    as_of: str | None,
    assurance: str | None,
    lawful_basis: str,
    prove_receipt: bool,
) -> None:
    """Sign a query with a council key, send it, verify and print the answer."""
    from members.council import EligibilityClient
    from members.errors import CheckFailed
    from trust.messages import encode_digest
    from trust.receipts import ReceiptNotProven

    subject = {"family_name": family_name, "date_of_birth": date_of_birth}
    optional = {
        "given_names": given_names,
        "postcode": postcode,
        "nino": nino,
        "vehicle_registration": vehicle_registration,
    }
    subject.update({k: v for k, v in optional.items() if v})

    async def run() -> int:
        async with EligibilityClient.from_config(config) as client:
            try:
                query, jti = client.sign_query(
                    check_name,
                    purpose=purpose,
                    subject=subject,
                    lawful_basis=lawful_basis,
                    as_of=date.fromisoformat(as_of) if as_of else None,
                    assurance=assurance,
                )
                answer, answer_token = await client.exchange(query, jti)
            except CheckFailed as failed:
                click.echo(json.dumps(failed.problem, indent=2))
                return 2
            shown: dict[str, object] = {
                "outcome": answer.outcome,
                "check": answer.check,
                "check_version": answer.check_version,
                "as_of": answer.as_of.isoformat(),
                "log_index": answer.log_index,
                "record_digest": encode_digest(answer.record_digest),
                "query_jti": answer.query_jti,
                "verified": True,
                "answer_token": answer_token,  # keep it: the evidence `axb audit receipt` checks
            }
            status = 0
            if prove_receipt:
                try:
                    receipt = await client.prove_receipt(answer)
                    shown["receipt"] = {
                        "proven": True,
                        "checkpoint_size": receipt.checkpoint.size,
                        "checkpoint_root": base64.b64encode(receipt.checkpoint.root_hash).decode(),
                    }
                except ReceiptNotProven as exc:
                    shown["receipt"] = {"proven": False, "reason": str(exc)}
                    status = 3
        click.echo(json.dumps(shown, indent=2))
        return status

    sys.exit(asyncio.run(run()))


SCHEME_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@main.group()
def scheme() -> None:
    """Scheme operator tools: review and admit members, change them, publish the registry."""


def _admin(action: str, scheme_dir: Path, change: object) -> None:
    from broker.scheme import admin as scheme_admin

    try:
        source = scheme_admin.load_source(scheme_dir)
        changed = change(source)  # type: ignore[operator]
        scheme_admin.save_source(scheme_dir, changed)
    except scheme_admin.SchemeAdminError as exc:
        raise click.ClickException(f"{action} refused: {exc}") from exc
    click.echo(f"{action}: done (not yet published; run 'axb scheme publish')")


@scheme.command("review")
@click.argument("registration", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scheme_review(registration: Path) -> None:
    """Show what a registration asks for, refusing a bad one with the reason."""
    from broker.scheme import admin as scheme_admin

    try:
        lines = scheme_admin.review_registration(json.loads(registration.read_text()))
    except (scheme_admin.SchemeAdminError, ValueError) as exc:
        raise click.ClickException(f"registration refused: {exc}") from exc
    click.echo("\n".join(lines))


@scheme.command("add-member")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("registration", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scheme_add_member(scheme_dir: Path, registration: Path) -> None:
    """Admit a member from its registration file."""
    from broker.scheme import admin as scheme_admin

    document = json.loads(registration.read_text())
    _admin("add-member", scheme_dir, lambda s: scheme_admin.add_member(s, document))


@scheme.command("add-purpose")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scheme_add_purpose(scheme_dir: Path, document: Path) -> None:
    """Add a purpose (JSON: id, description, checks, lawful_bases, consent_required)."""
    from broker.scheme import admin as scheme_admin

    body = json.loads(document.read_text())
    _admin("add-purpose", scheme_dir, lambda s: scheme_admin.add_named(s, "purposes", body))


@scheme.command("add-check")
@click.option("--scheme", "scheme_dir", type=SCHEME_DIR, required=True)
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scheme_add_check(scheme_dir: Path, document: Path) -> None:
    """Add a named check (JSON: name, description, versions with rules)."""
    from broker.scheme import admin as scheme_admin

    body = json.loads(document.read_text())
    _admin("add-check", scheme_dir, lambda s: scheme_admin.add_named(s, "checks", body))


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
@click.argument("jwk_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scheme_add_key(scheme_dir: Path, member_id: str, jwk_file: Path) -> None:
    """Add a member's new public key beside its current ones (rotation overlap begins)."""
    from broker.scheme import admin as scheme_admin

    jwk = json.loads(jwk_file.read_text())
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
@click.option("--lifetime-days", default=30, type=int)
def scheme_publish(scheme_dir: Path, lifetime_days: int) -> None:
    """Sign the registry source as the next registry and replace the registry file."""
    from broker.scheme import admin as scheme_admin

    try:
        seq = scheme_admin.publish(
            scheme_dir, scheme_admin.load_source(scheme_dir), lifetime=lifetime_days * 86400
        )
    except scheme_admin.SchemeAdminError as exc:
        raise click.ClickException(f"publish refused: {exc}") from exc
    click.echo(f"published registry seq {seq} to {scheme_dir / 'registry.jwt'}")


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


@main.group()
def audit() -> None:
    """Auditor tools: verify an export offline, fetch records, subject access, prune."""


@audit.command("verify")
@click.argument("export", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--log-key", required=True, help="The log's verifier key (name+hash+key), or a file holding it."
)
@click.option(
    "--held",
    "held",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint note you kept earlier: the export must extend it.",
)
def audit_verify(export: Path, log_key: str, held: tuple[Path, ...]) -> None:
    """Verify an export offline, trusting only the log's public key."""
    from trust.checkpoint import NoteVerifier, split_notes
    from trust.errors import CheckpointError, KeyFormatError
    from trust.log_verify import verify_export

    key_text = Path(log_key).read_text().strip() if Path(log_key).is_file() else log_key
    try:
        verifier = NoteVerifier(key_text)
    except (CheckpointError, KeyFormatError) as exc:
        raise click.ClickException(f"bad log key: {exc}") from exc
    with export.open("rb") as lines:
        notes = [note for path in held for note in split_notes(path.read_text())]
        report = verify_export(lines, verifier, held=notes)
    click.echo(
        f"records: {report.records}   checkpoints verified: {report.checkpoints}   "
        f"verified up to size: {report.verified_size}"
    )
    for start, end in report.pruned:
        click.echo(f"pruned (bodies deleted after retention, proofs intact): {start}-{end}")
    for problem in report.problems:
        click.echo(f"PROBLEM {problem}")
    click.echo("OK: the export verifies" if report.ok else "FAILED: the export does not verify")
    sys.exit(0 if report.ok else 1)


@audit.command("export")
@click.option("--config", "config", type=CONFIG, required=True, help="auditors/X.toml")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def audit_export(config: Path, out: Path) -> None:
    """Download the whole log (records and checkpoints) as JSONL for offline verification."""
    from members.auditor import AuditClient

    async def run() -> int:
        count = 0
        async with AuditClient.from_config(config) as client:
            with out.open("wb") as handle:
                async for line in client.export():
                    handle.write(line)
                    count += 1
        return count

    click.echo(f"wrote {asyncio.run(run())} lines to {out}")


@audit.command("subject-access")
@click.option("--config", "config", type=CONFIG, required=True, help="auditors/X.toml")
@click.option("--family-name", required=True)
@click.option("--date-of-birth", required=True)
@click.option("--nino", default=None)
def audit_subject_access(
    config: Path, family_name: str, date_of_birth: str, nino: str | None
) -> None:
    """Who checked this resident's data, when and why (UK GDPR Art. 15)."""
    from members.auditor import AuditClient

    identifiers = {"family_name": family_name, "date_of_birth": date_of_birth}
    if nino:
        identifiers["nino"] = nino

    async def run() -> dict[str, object]:
        async with AuditClient.from_config(config) as client:
            return await client.subject_access(identifiers)

    click.echo(json.dumps(asyncio.run(run()), indent=2))


@audit.command("records")
@click.option("--config", "config", type=CONFIG, required=True, help="auditors/X.toml")
@click.option("--requester", default=None)
@click.option("--purpose", default=None)
@click.option("--check", "check_name", default=None)
@click.option("--outcome", default=None)
@click.option("--since", default=None)
@click.option("--until", default=None)
@click.option("--limit", default=100, type=int)
def audit_records(
    config: Path,
    requester: str | None,
    purpose: str | None,
    check_name: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """List consent records matching filters."""
    from members.auditor import AuditClient

    async def run() -> dict[str, object]:
        async with AuditClient.from_config(config) as client:
            return await client.records(
                requester=requester,
                purpose=purpose,
                check=check_name,
                outcome=outcome,
                since=since,
                until=until,
                limit=limit,
            )

    click.echo(json.dumps(asyncio.run(run()), indent=2))


@audit.command("receipt")
@click.option("--config", "config", type=CONFIG, required=True, help="auditors/X.toml")
@click.argument("answer", type=click.File("r"))
def audit_receipt(config: Path, answer: Any) -> None:
    """Check a council's answer token (a file, or - for stdin) against the log."""
    from connectors.config import member_log_key
    from members.auditor import AuditClient

    token = answer.read().strip()

    async def run() -> int:
        async with AuditClient.from_config(config) as auditor:
            audit = await auditor.audit_receipt(token, member_log_key(config))
        if audit.answer is not None:
            a = audit.answer
            click.echo(f"answer: {a.outcome} for {a.requester}, {a.check}, record {a.log_index}")
        for problem in audit.problems:
            click.echo(f"PROBLEM {problem}")
        if audit.ok:
            click.echo(
                f"OK: record {audit.answer.log_index if audit.answer else '?'} is the record "
                f"this answer was given on, in the checkpoint of size {audit.checkpoint_size}"
            )
        return 0 if audit.ok else 1

    sys.exit(asyncio.run(run()))


@audit.command("console")
@click.option("--config", "config", type=CONFIG, required=True, help="auditors/X.toml")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
def audit_console(config: Path, port: int) -> None:
    """Serve the auditor's console on 127.0.0.1: records, proofs, subject access, verify."""
    from members.console.app import login_url, start_console

    async def run() -> None:
        runner, console = await start_console(config, port=port)
        click.echo(f"audit console for {console.client.member_id}: open {login_url(console)}")
        click.echo("(the link signs you in; keep it to yourself. Ctrl-C stops the console.)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@audit.command("prune")
@click.option("--config", "config", type=CONFIG, required=True, help="broker.toml")
@click.option("--before", required=True, help="YYYY-MM-DD: delete bodies recorded before it")
def audit_prune(config: Path, before: str) -> None:
    """Delete record bodies (and salts) past the retention period; proofs stay valid."""
    from datetime import UTC, datetime

    from broker.settings import load_settings
    from broker.stores.consent_log import open_consent_log

    cutoff = datetime.fromisoformat(before).replace(tzinfo=UTC)
    settings = load_settings(config)

    async def run() -> int:
        store = open_consent_log(settings.consent_log, schema=settings.consent_log_schema)
        await store.start()
        try:
            return await store.prune(int(cutoff.timestamp() * 1000))
        finally:
            await store.close()

    click.echo(f"pruned {asyncio.run(run())} record bodies recorded before {before}")


@main.group()
def consent() -> None:
    """Council tools for consents."""


@consent.command("withdraw")
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("consent_id")
@click.option("--withdrawn-at", default=None, help="RFC 3339 time (default: now)")
def consent_withdraw(config: Path, consent_id: str, withdrawn_at: str | None) -> None:
    """Record that a resident withdrew a consent; later checks citing it are refused."""
    from datetime import UTC, datetime

    from members.council import EligibilityClient
    from members.errors import CheckFailed

    when = withdrawn_at or datetime.now(UTC).isoformat(timespec="seconds")

    async def run() -> int:
        async with EligibilityClient.from_config(config) as client:
            return await client.withdraw_consent(consent_id, withdrawn_at=when)

    try:
        click.echo(f"withdrawal recorded at log index {asyncio.run(run())}")
    except CheckFailed as failed:
        raise click.ClickException(json.dumps(failed.problem)) from failed


if __name__ == "__main__":
    main()
