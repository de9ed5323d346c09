"""``axb audit …``: the auditor's tools: verify offline, export, records, subject access,
receipts, the console; and the operator's prune."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import date
from pathlib import Path

import click

from broker.cli.common import (
    CONFIG,
    DATE,
    INPUT_FILE,
    open_binary_input,
    read_text_file,
    until_stopped,
)


@click.group("audit")
def audit() -> None:
    """Auditor tools: verify an export offline, fetch records, subject access, prune."""


@audit.command("verify")
@click.argument("export", type=INPUT_FILE)
@click.option(
    "--log-key", required=True, help="The log's verifier key (name+hash+key), or a file holding it."
)
@click.option(
    "--held",
    "held",
    multiple=True,
    type=INPUT_FILE,
    help="A checkpoint note you kept earlier: the export must extend it.",
)
@click.option(
    "--config",
    "config",
    type=CONFIG,
    default=None,
    help="auditors/X.toml pinning the scheme: enforce the registry's witness policy.",
)
def audit_verify(export: Path, log_key: str, held: tuple[Path, ...], config: Path | None) -> None:
    """Verify an export offline, trusting only the log's public key (and, with --config,
    only checkpoints a quorum of the scheme's witnesses cosigned)."""
    import time

    from broker.errors import BadInput
    from connectors.config import member_witness_policy
    from trust.checkpoint import NoteVerifier, split_notes
    from trust.errors import CheckpointError, KeyFormatError
    from trust.log_verify import verify_export

    key_file = Path(log_key)
    key_text = read_text_file(key_file, "log key").strip() if key_file.is_file() else log_key
    try:
        verifier = NoteVerifier(key_text)
    except (CheckpointError, KeyFormatError) as exc:
        raise BadInput(f"bad log key: {exc}") from exc
    notes = [note for path in held for note in split_notes(read_text_file(path, "held checkpoint"))]
    with open_binary_input(export, "export") as lines:
        now = int(time.time())
        policy = None if config is None else member_witness_policy(config, now=now)
        report = verify_export(lines, verifier, held=notes, policy=policy, now=now)
    click.echo(
        f"records: {report.records}   checkpoints verified: {report.checkpoints}   "
        f"verified up to size: {report.verified_size}"
    )
    if policy is not None:
        click.echo(
            f"witness policy: {policy.describe()}   "
            f"checkpoints without a quorum (not yet proven): {len(report.unwitnessed)}"
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
@click.option("--date-of-birth", type=DATE, required=True)
@click.option("--nino", default=None)
def audit_subject_access(
    config: Path, family_name: str, date_of_birth: date, nino: str | None
) -> None:
    """Who checked this resident's data, when and why (UK GDPR Art. 15)."""
    from members.auditor import AuditClient

    identifiers = {"family_name": family_name, "date_of_birth": date_of_birth.isoformat()}
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
@click.argument("answer", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def audit_receipt(config: Path, answer: Path) -> None:
    """Check a council's answer token (a file, or - for stdin) against the log."""
    from connectors.config import member_log_key
    from members.auditor import AuditClient

    kept = sys.stdin.read() if str(answer) == "-" else read_text_file(answer, "answer token")
    token = kept.strip()

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
            await until_stopped()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@audit.command("prune")
@click.option("--config", "config", type=CONFIG, required=True, help="broker.toml")
@click.option("--before", type=DATE, required=True, help="delete bodies recorded before it")
def audit_prune(config: Path, before: date) -> None:
    """Delete record bodies (and salts) past the retention period; proofs stay valid."""
    from datetime import UTC, datetime, time

    from broker.settings import load_settings
    from broker.stores.consent_log import open_consent_log

    cutoff = datetime.combine(before, time(), tzinfo=UTC)
    settings = load_settings(config)

    async def run() -> int:
        store = open_consent_log(settings.consent_log)
        await store.start()
        try:
            return await store.prune(int(cutoff.timestamp() * 1000))
        finally:
            await store.close()

    click.echo(f"pruned {asyncio.run(run())} record bodies recorded before {before}")
