"""``axb check`` and ``axb consent …``: what a council service runs."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from datetime import date
from pathlib import Path

import click

from broker.cli.common import CONFIG, DATE


@click.command()
@click.option("--config", "config", type=CONFIG, required=True, help="councils/X.toml")
@click.argument("check_name")
@click.option("--purpose", required=True)
@click.option("--family-name", default=None, help="required unless --credential gives it")
@click.option("--date-of-birth", type=DATE, default=None, help="required unless --credential")
@click.option("--given-names", default=None)
@click.option("--postcode", default=None)
@click.option("--nino", default=None)
@click.option("--vehicle-registration", default=None, help="for resident-parking-permit")
@click.option("--as-of", type=DATE, default=None, help="default: today")
@click.option("--assurance", default=None, help="P0..P4")
@click.option("--lawful-basis", default="public-task")
@click.option(
    "--credential",
    "credential_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a file holding the resident's core identity credential (compact JWS), e.g. from "
    "'axb identity issue'",
)
@click.option(
    "--prove-receipt",
    is_flag=True,
    help="then prove the answer's consent record is in the log (needs log_key in the config)",
)
def check(
    config: Path,
    check_name: str,
    purpose: str,
    family_name: str | None,
    date_of_birth: date | None,
    given_names: str | None,
    postcode: str | None,
    nino: str | None,
    vehicle_registration: str | None,
    as_of: date | None,
    assurance: str | None,
    lawful_basis: str,
    credential_file: Path | None,
    prove_receipt: bool,
) -> None:
    """Sign a query with a council key, send it, verify and print the answer."""
    from broker.cli.common import read_text_file
    from broker.errors import BadInput
    from members.council import EligibilityClient
    from members.errors import CheckFailed
    from trust.messages import encode_digest
    from trust.receipts import ReceiptNotProven

    credential = None
    if credential_file is not None:
        credential = read_text_file(credential_file, "credential").strip()
    elif family_name is None or date_of_birth is None:
        raise BadInput("give --family-name and --date-of-birth, or a --credential")
    subject: dict[str, str] = {}
    optional = {
        "family_name": family_name,
        "date_of_birth": None if date_of_birth is None else date_of_birth.isoformat(),
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
                    as_of=as_of,
                    assurance=assurance,
                    credential=credential,
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


@click.group("consent")
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

    when = withdrawn_at or datetime.now(UTC).isoformat(timespec="seconds")

    async def run() -> int:
        async with EligibilityClient.from_config(config) as client:
            return await client.withdraw_consent(consent_id, withdrawn_at=when)

    click.echo(f"withdrawal recorded at log index {asyncio.run(run())}")
