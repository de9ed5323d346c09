"""Signing keys in a real SoftHSM2 token: they sign what verifiers accept, hostile set-ups are
refused by name, and a token that goes away fails closed — in the SDK, the provider kit and the
broker (503)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import aiohttp
import pkcs11 as p11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.util.ec import encode_named_curve_parameters

from broker.errors import SettingsError
from broker.scheme import admin as scheme_admin
from broker.scheme import dev as devscheme
from broker.witness.settings import load_witness_settings
from connectors import pkcs11
from connectors.conformance import run_conformance, target_from_scheme
from connectors.conformance.target import load_scheme_registry
from connectors.errors import ConfigError
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.cli import run_axb
from tests.support.councils import blue_badge
from tests.support.servers import RunningBroker, RunningProvider
from tests.support.tokens import PIN, SOFTHSM_MODULE, SoftToken
from tests.support.witnesses import standalone_witness
from trust import jws, testing
from trust.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_signer,
    open_checkpoint,
    sign_checkpoint,
)
from trust.cosignature import CosignatureVerifier, verified_cosignatures
from trust.errors import CheckpointError, KeyUnavailable, VerificationError
from trust.keys import VerifyingKey
from trust.messages import AttributeRequest, Subject, attribute_request_claims, new_jti

LOG_VKEY = NoteSigner(generate_signer("example.test/log")[0]).vkey


@pytest.fixture
def token(soft_token: SoftToken) -> SoftToken:
    return soft_token


def test_a_token_es256_signature_verifies_under_the_profile_and_independently(
    token: SoftToken,
) -> None:
    key = pkcs11.load_token_signing_key(pkcs11.generate_in_token(token.uri("k"), "es256"))
    message = jws.sign({"iss": "x"}, key, jws.ATTRIBUTE_REQUEST)
    assert jws.verify_compact(message, key.verifying_key, jws.ATTRIBUTE_REQUEST.typ) == (
        b'{"iss":"x"}'
    )
    signing_input = message.rpartition(".")[0]
    raw = key.sign(signing_input.encode("ascii"))  # the same key, independently checked
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verifying_key.public_key.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert VerifyingKey.from_jwk(dict(key.verifying_key.jwk)).kid == key.kid
    other = pkcs11.load_token_signing_key(pkcs11.generate_in_token(token.uri("o"), "es256"))
    header = {"alg": "ES256", "kid": key.kid, "typ": jws.ATTRIBUTE_REQUEST.typ}
    forged = testing.forge(header, {"iss": "x"}, other)  # the token's other key, this kid
    with pytest.raises(VerificationError):  # another key of the token is not this key
        jws.verify_compact(forged, key.verifying_key)


def test_a_checkpoint_signed_in_the_token_opens_with_the_published_verifier_key(
    token: SoftToken,
) -> None:
    named = pkcs11.generate_in_token(token.uri("log"), "ed25519")
    signer = pkcs11.load_token_note_signer(named, "example.org/log")
    note = sign_checkpoint(Checkpoint("example.org/log", 3, b"\x07" * 32), signer)
    opened = open_checkpoint(note, NoteVerifier(signer.vkey), "example.org/log")
    assert (opened.size, opened.root_hash) == (3, b"\x07" * 32)
    tampered = note.replace("\n3\n", "\n4\n")
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(tampered, NoteVerifier(signer.vkey), "example.org/log")


def test_a_wrong_pin_is_refused_and_never_echoed(token: SoftToken) -> None:
    named = pkcs11.generate_in_token(token.uri("k"), "es256")
    pkcs11.reset()  # log out, so the next session has to log in again
    token.pin_file.write_text("11112222\n")
    with pytest.raises(ConfigError, match="refused the PIN") as refused:
        pkcs11.load_token_signing_key(named)
    assert "11112222" not in str(refused.value)
    assert PIN not in str(refused.value)


def test_an_unknown_token_and_a_missing_object_are_refused_by_name(token: SoftToken) -> None:
    with pytest.raises(ConfigError, match="no such token"):
        pkcs11.load_token_signing_key(token.uri("k").replace("token=axb-test", "token=nope"))
    with pytest.raises(ConfigError, match="no private_key object"):
        pkcs11.load_token_signing_key(token.uri("never-made"))


def test_the_pin_comes_from_the_environment_when_the_uri_names_no_source(
    token: SoftToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkcs11.generate_in_token(token.uri("k"), "es256")
    bare = token.uri("k", pin_source=False)
    pkcs11.reset()
    with pytest.raises(ConfigError, match="no PIN"):
        pkcs11.load_token_signing_key(bare)
    monkeypatch.setenv(pkcs11.PIN_ENV, PIN)
    assert pkcs11.load_token_signing_key(bare).kid


def test_a_key_of_the_wrong_kind_or_one_the_token_would_export_is_refused(
    token: SoftToken,
) -> None:
    pkcs11.generate_in_token(token.uri("edwards"), "ed25519")
    with pytest.raises(ConfigError, match="not an es256 key pair"):
        pkcs11.load_token_signing_key(token.uri("edwards"))
    pkcs11.reset()
    session = p11.lib(SOFTHSM_MODULE).get_token(token_label=token.label).open(rw=True, user_pin=PIN)
    try:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(
            label="exportable",
            store=True,
            mechanism=Mechanism.EC_KEY_PAIR_GEN,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
    finally:
        session.close()
    with pytest.raises(ConfigError, match="extractable"):
        pkcs11.load_token_signing_key(token.uri("exportable"))


def test_keygen_never_replaces_a_key_already_in_the_token(token: SoftToken) -> None:
    first = pkcs11.load_token_signing_key(pkcs11.generate_in_token(token.uri("k"), "es256"))
    with pytest.raises(ConfigError, match="already holds"):
        pkcs11.generate_in_token(token.uri("k"), "es256")
    assert pkcs11.load_token_signing_key(token.uri("k")).kid == first.kid


def test_a_token_that_goes_away_refuses_to_sign_and_signs_again_when_back(
    token: SoftToken, tmp_path: Path
) -> None:
    key = pkcs11.load_token_signing_key(pkcs11.generate_in_token(token.uri("k"), "es256"))
    key.sign(b"before")
    token.remove(tmp_path / "pulled")
    with pytest.raises(KeyUnavailable):
        key.sign(b"while away")
    with pytest.raises(KeyUnavailable):
        jws.sign({}, key, jws.ATTRIBUTE_REQUEST)
    token.restore(tmp_path / "pulled")
    raw = key.sign(b"after")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verifying_key.public_key.verify(der, b"after", ec.ECDSA(hashes.SHA256()))


def test_keygen_in_a_token_writes_only_the_public_key(token: SoftToken, tmp_path: Path) -> None:
    out = tmp_path / "out"
    keygen = [sys.executable, "-m", "broker.cli", "provider", "keygen", "--out", str(out)]
    result = subprocess.run(
        [*keygen, "--id", "council-revenues", "--pkcs11", token.uri()],
        capture_output=True,
        text=True,
        env=token.env(),
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["council-revenues.jwk.json"]
    jwk = json.loads((out / "council-revenues.jwk.json").read_text())
    assert "d" not in jwk
    pkcs11.reset()  # the child made the key: read the token afresh
    assert pkcs11.load_token_signing_key(token.uri("council-revenues")).kid == jwk["kid"]
    assert 'signing_key = "pkcs11:token=axb-test;object=council-revenues' in result.stdout
    assert PIN not in result.stdout + result.stderr


@pytest.mark.keys_in_token
async def test_a_broker_whose_token_goes_away_answers_503_and_recovers_when_it_is_back(
    token: SoftToken,
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    tmp_path: Path,
) -> None:
    assert pkcs11.is_pkcs11_uri(
        (scheme.broker_config.read_text().split('signing_key = "')[1]).split('"')[0]
    )
    assert await blue_badge(blue_badge_client) == "yes"  # every key here is in the token
    query, jti = blue_badge_client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-yes-dla"),
        assurance="P2",
    )  # signed by the council before the token goes
    token.remove(tmp_path / "pulled")
    with pytest.raises(CheckFailed) as failed:
        await blue_badge_client.exchange(query, jti)
    assert failed.value.status == 503
    assert failed.value.problem["type"] == "urn:ax-broker:problem:key-unavailable"
    token.restore(tmp_path / "pulled")
    assert await blue_badge(blue_badge_client) == "yes"


@pytest.mark.keys_in_token
async def test_a_provider_whose_token_goes_away_refuses_with_a_problem_and_signs_nothing(
    token: SoftToken,
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    broker_key = pkcs11.load_token_signing_key(token.uri(devscheme.BROKER))
    request = AttributeRequest(
        broker=devscheme.BROKER,
        provider=devscheme.DWP,
        jti=new_jti(),
        purpose="blue-badge-application",
        attributes=("dla-higher-rate-mobility",),
        as_of=date.today(),
        subject=Subject(
            {
                k: v
                for k, v in subject_of("bb-yes-dla").items()
                if k not in ("given_names", "postcode")
            }
        ),
    )
    body = jws.sign(
        attribute_request_claims(request, now=int(time.time())), broker_key, jws.ATTRIBUTE_REQUEST
    )  # signed while the token is there; the provider's own key is in it too
    token.remove(tmp_path / "pulled")
    url = f"http://127.0.0.1:{scheme.provider_ports[devscheme.DWP]}/v1/attributes"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": jws.JWT_MEDIA_TYPE}) as response,
    ):
        problem = await response.json(content_type=None)
        assert response.status == 503, problem
    assert problem["type"].endswith("key-unavailable")
    assert providers[devscheme.DWP].service.kit.answered == 1  # looked up, but not signed


@pytest.mark.keys_in_token
async def test_the_conformance_checker_plays_the_broker_with_its_key_in_the_token(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider]
) -> None:
    assert not (scheme.root / "keys").exists()  # no key file at all: every key is in the token
    endpoint = f"http://127.0.0.1:{scheme.provider_ports[devscheme.DWP]}/v1/attributes"
    target = target_from_scheme(scheme.root, endpoint=endpoint, provider_id=devscheme.DWP)
    assert isinstance(target.broker_key, pkcs11.TokenSigningKey)
    report = await run_conformance(target)
    assert report.passed, report.render()


@pytest.mark.keys_in_token
def test_the_scheme_operator_publishes_with_the_registry_key_in_the_token(
    token: SoftToken, scheme: devscheme.DevScheme, tmp_path: Path
) -> None:
    assert not scheme.operator_key_path.exists()  # operator/operator.toml names the token
    seq = scheme_admin.publish(scheme.root, scheme_admin.load_source(scheme.root))
    assert load_scheme_registry(scheme.root).seq == seq == 2  # verifies under the anchor
    token.remove(tmp_path / "pulled")
    with pytest.raises(scheme_admin.SchemeAdminError, match="object=scheme-operator"):
        scheme_admin.publish(scheme.root, scheme_admin.load_source(scheme.root))
    assert load_scheme_registry(scheme.root).seq == 2  # nothing was published


async def test_a_witness_cosigns_with_its_key_in_the_token_and_fails_closed_without_it(
    token: SoftToken, tmp_path: Path
) -> None:
    """``axb witness keygen --pkcs11`` makes the cosigning key inside the token (nothing
    private on disk); the witness cosigns with it; with the token gone it answers 503 and
    its state is unchanged, so the same checkpoint is cosigned once the token is back."""
    root = tmp_path / "witness"
    status, printed, err = await run_axb(
        "witness", "keygen", "--name", "w.test/hsm", "--pkcs11", token.uri("witness-hsm")
    )
    assert status == 0, err
    assert PIN not in printed + err
    vkey = CosignatureVerifier(printed.strip())
    assert 'key = "pkcs11:' in err
    assert 'name = "w.test/hsm"' in err
    witness = standalone_witness(root, name="w.test/hsm")
    (root / "witness.skey").unlink()  # the file the helper writes: this witness has none
    witness.vkey = vkey.vkey
    body = witness.config.read_text().replace('key_file = "witness.skey"\n', "")
    witness.config.write_text(f'key = "{token.uri("witness-hsm")}"\nname = "w.test/hsm"\n{body}')
    pkcs11.reset()  # the child made the key: read the token afresh
    await witness.start()
    try:
        async with aiohttp.ClientSession() as session:
            first = witness.log.request(0, 5)
            status_code, _, lines = await witness.post(session, first)
            assert status_code == 200
            found = verified_cosignatures(first.note + lines, [vkey], now=2**40)
            assert list(found) == ["w.test/hsm"]
            token.remove(tmp_path / "pulled")
            later = witness.log.request(5, 9)
            status_code, _, text = await witness.post(session, later)
            assert (status_code, text) == (503, "the witness's key is unavailable\n")
            token.restore(tmp_path / "pulled")
            status_code, _, lines = await witness.post(session, later)  # still from size 5
            assert status_code == 200
            assert list(verified_cosignatures(later.note + lines, [vkey], now=2**40))
    finally:
        await witness.stop()
    assert not [p for p in root.rglob("*") if p.is_file() and b"PRIVATE+KEY" in p.read_bytes()]


@pytest.mark.parametrize(
    ("lines", "refusal"),
    [
        ('key = "secrets/w.skey"\nname = "w.test/x"\n', "must be a pkcs11: URI"),
        ('key = "{uri}"\n', "needs its name"),
        ('key = "{uri}"\nname = "w.test/x"\nkey_file = "w.skey"\n', "one of key_file or key"),
        ('key = "{missing}"\nname = "w.test/x"\n', "witness-nowhere"),
    ],
    ids=["a-path-as-key", "no-name", "both", "no-such-object"],
)
def test_a_witness_key_setting_that_is_not_a_token_key_is_refused_by_name(
    token: SoftToken, tmp_path: Path, lines: str, refusal: str
) -> None:
    pkcs11.generate_in_token(token.uri("witness-x"), "ed25519")
    config = tmp_path / "witness.toml"
    body = lines.format(uri=token.uri("witness-x"), missing=token.uri("witness-nowhere"))
    config.write_text(body + 'state = "s.sqlite3"\n[[logs]]\nvkey = "' + LOG_VKEY + '"\n')
    with pytest.raises(SettingsError, match=refusal):
        load_witness_settings(config)
