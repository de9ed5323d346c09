"""The identity commands as an operator and a council developer run them: admit an identity
provider from its DID document, issue a reference credential, check with it."""

from __future__ import annotations

import json
from pathlib import Path

from broker.scheme import dev as devscheme
from connectors.reference import identity as reference_identity
from tests.support.cli import run_axb
from tests.support.servers import RunningBroker
from trust.keys import SigningKey


async def test_an_identity_provider_is_admitted_with_the_key_ids_its_did_document_publishes(
    scheme: devscheme.DevScheme, tmp_path: Path
) -> None:
    did = "did:web:idp.example.gov.uk"
    key = reference_identity.did_signing_key(SigningKey.generate(), did)
    document = reference_identity.did_document(did, (key.verifying_key,))
    (tmp_path / "did.json").write_text(json.dumps(document))
    registration = {
        "id": "idp-example",
        "name": "An example identity provider",
        "roles": ["identity-provider"],
        "status": "active",
        "identity_provider": {"issuer": "https://idp.example.gov.uk/", "did": did},
    }
    (tmp_path / "idp.json").write_text(json.dumps(registration))
    root = str(scheme.root)
    code, _, err = await run_axb(
        "scheme", "add-member", "--scheme", root, "--did-document",
        str(tmp_path / "did.json"), str(tmp_path / "idp.json"),
    )  # fmt: skip
    assert code == 0, err
    source = json.loads(scheme.folder.registry_source.read_text())
    admitted = next(m for m in source["members"] if m["id"] == "idp-example")
    assert [k["jwk"]["kid"] for k in admitted["keys"]] == [key.kid]
    assert key.kid.startswith(did + "#")
    # a DID document of another DID is refused, with the reason
    (tmp_path / "idp.json").write_text(json.dumps({**registration, "id": "idp-other"}))
    stranger = reference_identity.did_signing_key(SigningKey.generate(), "did:web:other.example")
    other = reference_identity.did_document("did:web:other.example", (stranger.verifying_key,))
    (tmp_path / "did.json").write_text(json.dumps(other))
    code, _, err = await run_axb(
        "scheme", "add-member", "--scheme", root, "--did-document",
        str(tmp_path / "did.json"), str(tmp_path / "idp.json"),
    )  # fmt: skip
    assert code == 2
    assert "another DID" in err


async def test_a_credential_from_axb_identity_issue_drives_axb_check(
    scheme: devscheme.DevScheme, broker: RunningBroker, tmp_path: Path
) -> None:
    code, token, err = await run_axb(
        "identity", "issue", "--scheme", str(scheme.root), "--identity", "bb-yes-pip-moving",
        "--council", devscheme.COUNCIL_BLUE_BADGE,
    )  # fmt: skip
    assert code == 0, err
    (tmp_path / "credential.jwt").write_text(token)
    config = str(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))
    code, out, err = await run_axb(
        "check", "--config", config, devscheme.BLUE_BADGE_CHECK,
        "--purpose", devscheme.BLUE_BADGE_ONLINE, "--credential", str(tmp_path / "credential.jwt"),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["outcome"] == "yes"
    # the same command without a credential, on the purpose that needs one
    code, out, _ = await run_axb(
        "check", "--config", config, devscheme.BLUE_BADGE_CHECK,
        "--purpose", devscheme.BLUE_BADGE_ONLINE,
        "--family-name", "Sampleton", "--date-of-birth", "1961-07-02",
    )  # fmt: skip
    assert code == 2
    assert json.loads(out)["type"] == "urn:ax-broker:problem:credential-required"
