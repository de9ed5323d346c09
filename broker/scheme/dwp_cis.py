"""The DWP CIS adapter joined to a development scheme, the way a scheme operator joins any new
provider: a key, a registration, a config in front of the CIS stub, and a check answered
through it — free school meals from 2026-09-01 (``free-school-meals-from-dwp-cis``) — added to
the free-school-meals purpose (issue 13). ``axb demo`` does it at start, the suite does it too.

It sits beside the reference ``free-school-meals`` check, not in its place: CIS takes one
citizen a request (it has no batch API), and the reference check stays batched for bulk jobs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from broker.scheme import admin
from broker.scheme import dev as devscheme
from connectors.dwp_cis import CIS_ATTRIBUTES, CIS_PREDICATES
from trust.keys import SigningKey
from trust.registry import member_document

if TYPE_CHECKING:
    from connectors.pkcs11 import Pkcs11Uri

DWP_CIS = "dwp-cis"
CIS_STUB = "dwp-cis-stub"
CIS_CLIENT_ID = "axb-dev-dwp-cis"
CIS_FSM_CHECK = "free-school-meals-from-dwp-cis"
FSM_PURPOSE = "free-school-meals-application"
_SECRET_FILE = "dwp-cis-client.secret"  # noqa: S105 - a file name
_LEGACY = ("income-support", "jsa-income-based", "esa-income-related")


@dataclass(frozen=True)
class JoinedCis:
    """What joining wrote: the registry's new ``seq`` and the adapter's and stub's configs."""

    seq: int
    endpoint: str
    provider_config: Path
    stub_config: Path


def scheme_lines(scheme: devscheme.DevScheme) -> list[str]:
    """The scheme, operator, anchors and registry lines every provider config of it has."""
    config = scheme.folder.provider_config(devscheme.DWP).read_text()
    keys = ("scheme", "operator", "anchors", "registry")
    return [line for line in config.splitlines() if line.startswith(keys)]


def fsm_from_cis_check() -> dict[str, object]:
    """Free school meals from 2026-09-01 through CIS: a legacy income benefit, or Universal
    Credit (the threshold sits in the adapter's policy, ``cis_policy_id``)."""
    rule = {"any": [{"attribute": f"{DWP_CIS}/{name}"} for name in (*_LEGACY, "universal-credit")]}
    return {
        "name": CIS_FSM_CHECK,
        "description": "Free school meals (England) from 2026-09-01, through DWP's CIS",
        "versions": [
            {
                "version": 1,
                "effective_from": devscheme.UC_RULE_CHANGE,
                "effective_to": None,
                "min_assurance": "P1",
                "rule": rule,
            }
        ],
    }


def join_dwp_cis(
    scheme: devscheme.DevScheme,
    *,
    stub_port: int,
    provider_port: int,
    token: Pkcs11Uri | None = None,
) -> JoinedCis:
    """Admit the adapter to ``scheme`` (its key in ``token`` when given, as every key of a
    ``--pkcs11`` scheme is), write its config and the stub's, and publish the registry with the
    check. The caller serves the stub on ``stub_port`` and the adapter on ``provider_port``."""
    folder, root = scheme.folder, scheme.root
    folder.secret(_SECRET_FILE).write_text(secrets.token_urlsafe(24) + "\n")
    if token is None:
        key = SigningKey.generate()
        folder.key(DWP_CIS).write_bytes(key.to_pem())
        verifying, key_line = key.verifying_key, f"../keys/{DWP_CIS}.pem"
    else:
        from connectors.pkcs11 import generate_in_token, load_token_signing_key

        uri = str(token.with_object(DWP_CIS))
        verifying = load_token_signing_key(generate_in_token(uri, "es256")).verifying_key
        key_line = uri
    endpoint = f"http://127.0.0.1:{provider_port}/v1/attributes"
    registration = member_document(
        member_id=DWP_CIS,
        name="DWP Citizen Information API (adapter)",
        roles=["attribute-provider"],
        keys=[verifying],
        provider=devscheme.provider_metadata(
            endpoint,
            CIS_ATTRIBUTES,
            required=("family_name", "date_of_birth", "nino"),
            optional=(),
            parameterised=CIS_PREDICATES,
        ),
    )
    provider_config = folder.provider_config(DWP_CIS)
    provider_config.write_text(
        "\n".join(
            [
                f'provider_id = "{DWP_CIS}"',
                'reference = "dwp-cis"',
                'host = "127.0.0.1"',
                f"port = {provider_port}",
                f'signing_key = "{key_line}"',
                *scheme_lines(scheme),
                f'cis_url = "http://127.0.0.1:{stub_port}"',
                f'cis_client_id = "{CIS_CLIENT_ID}"',
                f'cis_client_secret_file = "../secrets/{_SECRET_FILE}"',
                'cis_policy_id = "free-school-meals"',
            ]
        )
        + "\n"
    )
    stub_config = folder.stub_config(CIS_STUB)
    stub_config.write_text(
        "# A local stand-in for DWP's Citizen Information API\n"
        f'host = "127.0.0.1"\nport = {stub_port}\n'
        f'client_id = "{CIS_CLIENT_ID}"\nclient_secret_file = "../secrets/{_SECRET_FILE}"\n'
    )
    source = admin.add_member(admin.load_source(root), registration)
    source = admin.add_check(source, fsm_from_cis_check())
    for purpose in source["purposes"]:
        if purpose["id"] == FSM_PURPOSE:
            purpose["checks"].append(CIS_FSM_CHECK)
    return JoinedCis(admin.publish(root, source), endpoint, provider_config, stub_config)
