"""Hostile queries against the live broker, over real HTTP.

Every token here is forged with ``trust.testing`` (header and payload bytes of the test's
choosing, ES256 as raw r||s over exactly that signing input), so each attack carries exactly
the defect it is named after; a positive control built with the same helpers is answered (200),
which is what makes each refusal attributable to its defect.

Whatever the attack, the broker must answer with a 4xx (or 503 when no registry is in force)
``application/problem+json`` document carrying ``type``, ``title`` and ``status``, never with a
signed answer. Every verification failure looks the same: 401 ``invalid-token`` with no detail.
Nothing that failed before verification may write a consent record or burn a ``jti``.

Most tests share one broker (module scope, its own event loop) to keep the battery fast; the
tests that re-publish the registry or measure rate limits get a broker of their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import sqlite3
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from multidict import CIMultiDict

from broker.app import create_app
from broker.app_keys import REGISTRY
from broker.scheme import dev as devscheme
from broker.settings import Settings, load_settings
from connectors.reference.population import subject_of
from connectors.reference.providers import build_reference_provider
from tests.support.servers import RunningBroker, RunningProvider, serve_on
from trust import jws
from trust.keys import SigningKey, b64url_decode, b64url_encode
from trust.messages import new_jti
from trust.registry import sign_registry
from trust.testing import (
    der_signature,
    encode_part,
    es256_signature,
    hs256,
    malleate,
    public_pem,
    to_json,
)
from trust.testing import forge as forge_token

BB_COUNCIL = devscheme.COUNCIL_BLUE_BADGE
SCHOOLS = devscheme.COUNCIL_SCHOOLS
BROKER = devscheme.BROKER
DWP, HMRC, AUDITOR = devscheme.DWP, devscheme.HMRC, devscheme.AUDITOR
MEMBERS = devscheme.MEMBERS
TYP = jws.ELIGIBILITY_QUERY.typ
JWT = "application/jwt"
PROBLEM = "application/problem+json"
INVALID_TOKEN = {
    "type": "urn:ax-broker:problem:invalid-token",
    "title": "The query could not be verified",
    "status": 401,
}
STRANGER = SigningKey.generate()  # a well-formed P-256 key that no registry lists
DROP = object()  # Lab.claims(name=DROP) / Lab.header(name=DROP) removes that member

ON_SHARED = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def problem(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class Lab:
    """A live broker, the scheme's keys and an HTTP session: everything an attacker needs."""

    scheme: devscheme.DevScheme
    settings: Settings
    url: str
    session: aiohttp.ClientSession
    keys: Mapping[str, SigningKey] = field(default_factory=dict)

    @property
    def checks_url(self) -> str:
        return self.url + "/v1/checks"

    def claims(self, member: str = BB_COUNCIL, **changes: Any) -> dict[str, Any]:
        """Claims that the broker answers when ``member`` is a council; edited by ``changes``."""
        now = int(time.time())
        schools = member == SCHOOLS
        claims: dict[str, Any] = {
            "iss": member,
            "aud": BROKER,
            "iat": now,
            "exp": now + 120,
            "jti": new_jti(),
            "check": devscheme.FSM_CHECK if schools else devscheme.BLUE_BADGE_CHECK,
            "purpose": "free-school-meals-application" if schools else "blue-badge-application",
            "lawful_basis": "public-task",
            "assurance": "P2",
            "subject": subject_of("fsm-yes-income-support" if schools else "bb-yes-dla"),
        }
        for name, value in changes.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def header(self, signer: str = BB_COUNCIL, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "ES256", "kid": self.keys[signer].kid, "typ": TYP}
        for name, value in changes.items():
            if value is DROP:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def token(
        self,
        claims: Mapping[str, Any] | bytes | None = None,
        *,
        signer: str = BB_COUNCIL,
        header: Mapping[str, Any] | bytes | None = None,
        key: SigningKey | None = None,
    ) -> str:
        return forge_token(
            self.header(signer) if header is None else header,
            self.claims(signer) if claims is None else claims,
            key or self.keys[signer],
        )

    async def post(
        self,
        body: bytes | str | Any,
        content_type: str | None = JWT,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> Reply:
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        data = body.encode("utf-8") if isinstance(body, str) else body
        async with self.session.request(
            method, self.checks_url, data=data, headers=sent, skip_auto_headers={"Content-Type"}
        ) as response:
            return Reply(
                response.status,
                response.content_type,
                CIMultiDict(response.headers),
                await response.read(),
            )

    def consent_rows(self) -> int:
        with contextlib.closing(sqlite3.connect(self.settings.consent_log_path)) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(count)

    def record(self, index: int) -> dict[str, Any]:
        with contextlib.closing(sqlite3.connect(self.settings.consent_log_path)) as db:
            row = db.execute("SELECT body FROM records WHERE log_index = ?", (index,)).fetchone()
        assert row is not None, f"no consent record at log index {index}"
        value = json.loads(row[0])
        assert isinstance(value, dict)
        return value


def scheme_keys(scheme: devscheme.DevScheme) -> dict[str, SigningKey]:
    return {m: SigningKey.from_pem(scheme.key_path(m).read_bytes()) for m in MEMBERS}


def assert_problem(reply: Reply, status: int | None = None, slug: str | None = None) -> None:
    """A refusal: 4xx (or ``status``), problem+json with type, title, status; never an answer."""
    assert reply.status != 200
    assert not reply.body.startswith(b"eyJ"), "a signed answer left the broker"
    if status is None:
        assert 400 <= reply.status < 500, reply.status
    else:
        assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.content_type == PROBLEM, reply.content_type
    problem = reply.problem
    assert {"type", "title", "status"} <= set(problem), problem
    assert problem["status"] == reply.status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert problem["type"].startswith("urn:ax-broker:problem:")
    if slug is not None:
        assert problem["type"] == "urn:ax-broker:problem:" + slug, problem


def assert_invalid_token(reply: Reply) -> None:
    """401, and byte for byte the same document whichever check failed: no detail at all."""
    assert_problem(reply, 401, "invalid-token")
    assert reply.problem == INVALID_TOKEN


def assert_answered(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.content_type == JWT
    header = json.loads(base64.urlsafe_b64decode(reply.body.split(b".")[0] + b"=="))
    assert header["typ"] == jws.ELIGIBILITY_RESPONSE.typ
    claims = json.loads(base64.urlsafe_b64decode(reply.body.split(b".")[1] + b"=="))
    assert isinstance(claims, dict)
    return claims


# --- fixtures -----------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    """One broker and its providers for the whole battery (rate limit lifted so that only the
    defect under test can refuse a query)."""
    with devscheme.Listeners() as listeners:
        scheme = devscheme.generate(
            tmp_path_factory.mktemp("hostile") / "scheme", ports=listeners.ports
        )
        providers = []
        for pid in scheme.provider_ports:
            service = build_reference_provider(scheme.provider_config(pid))
            providers.append(
                RunningProvider(service, await serve_on(service.app, listeners.providers[pid]))
            )
        settings = load_settings(scheme.broker_config, rate_limit_per_second=1_000_000)
        app = create_app(settings)
        runner = await serve_on(app, listeners.broker)
        try:
            async with aiohttp.ClientSession() as session:
                yield Lab(scheme, settings, scheme.broker_url, session, scheme_keys(scheme))
        finally:
            await runner.cleanup()
            for provider in providers:
                await provider.stop()


@pytest.fixture
async def lab(scheme: devscheme.DevScheme, broker: RunningBroker) -> AsyncIterator[Lab]:
    """A broker of this test's own (for registry changes and rate limits)."""
    async with aiohttp.ClientSession() as session:
        yield Lab(scheme, broker.settings, broker.url, session, scheme_keys(scheme))


# --- the battery: every one of these is a verification failure (401, no detail) -----------------

Forge = Callable[[Lab], str | bytes]


def _claims_token(**changes: Any) -> Forge:
    return lambda lab: lab.token(lab.claims(**changes))


def _header_token(**changes: Any) -> Forge:
    return lambda lab: lab.token(header=lab.header(**changes))


def _alg_none(alg: str, *, with_signature: bool = False) -> Forge:
    def forge(lab: Lab) -> str:
        header = lab.header(alg=alg)
        if with_signature:
            return lab.token(header=header)
        return forge_token(header, lab.claims(), None)

    return forge


def _hs256_pem(lab: Lab) -> str:
    pem = public_pem(lab.keys[BB_COUNCIL].verifying_key)
    return hs256(lab.header(alg="HS256"), lab.claims(), pem)


def _hs256_jwk_file(lab: Lab) -> str:
    published = lab.scheme.root / "public" / f"{BB_COUNCIL}.jwk.json"
    return hs256(lab.header(alg="HS256"), lab.claims(), published.read_bytes())


def _hs256_jwk_compact(lab: Lab) -> str:
    secret = to_json(dict(lab.keys[BB_COUNCIL].verifying_key.jwk))
    return hs256(lab.header(alg="HS256"), lab.claims(), secret)


def _signed_by(signer_key: str, *, kid_of: str, iss: str = BB_COUNCIL) -> Forge:
    """Claims naming ``iss``, header naming ``kid_of``'s key, signature by ``signer_key``."""

    def forge(lab: Lab) -> str:
        return forge_token(lab.header(kid_of), lab.claims(iss=iss), lab.keys[signer_key])

    return forge


def _unknown_kid(lab: Lab) -> str:
    return forge_token({"alg": "ES256", "kid": STRANGER.kid, "typ": TYP}, lab.claims(), STRANGER)


def _stranger_with_council_kid(lab: Lab) -> str:
    return forge_token(lab.header(), lab.claims(), STRANGER)


def _operator_signed(lab: Lab) -> str:
    operator = SigningKey.from_pem(lab.scheme.operator_key_path.read_bytes())
    header = {"alg": "ES256", "kid": operator.kid, "typ": TYP}
    return forge_token(header, lab.claims(iss=devscheme.OPERATOR), operator)


def _time_claims(iat: Any, exp: Any) -> Forge:
    def forge(lab: Lab) -> str:
        now = int(time.time())
        value = {k: (v(now) if callable(v) else v) for k, v in (("iat", iat), ("exp", exp))}
        return lab.token(lab.claims(**value))

    return forge


def _raw_payload(render: Callable[[Lab], bytes]) -> Forge:
    return lambda lab: lab.token(render(lab))


def _json_with_tail(lab: Lab, tail: str) -> bytes:
    """Good claims serialised by hand with ``tail`` spliced in before the closing brace."""
    text = to_json(lab.claims()).decode("utf-8")
    return (text[:-1] + "," + tail + "}").encode("utf-8")


def _duplicate_header_alg(lab: Lab) -> str:
    kid = lab.keys[BB_COUNCIL].kid
    header = f'{{"alg":"none","kid":"{kid}","typ":"{TYP}","alg":"ES256"}}'.encode()
    return lab.token(header=header)


def _duplicate_header_typ(lab: Lab) -> str:
    kid = lab.keys[BB_COUNCIL].kid
    header = f'{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"{TYP}"}}'.encode()
    return lab.token(header=header)


def _duplicate_in_subject(lab: Lab) -> bytes:
    text = to_json(lab.claims()).decode("utf-8")
    return text.replace('"subject":{', '"subject":{"family_name":"Decoy",', 1).encode("utf-8")


def _nested_jwt(*, with_cty: bool) -> Forge:
    def forge(lab: Lab) -> str:
        inner = lab.token()
        header = lab.header(cty="JWT") if with_cty else lab.header()
        return forge_token(header, inner.encode("ascii"), lab.keys[BB_COUNCIL])

    return forge


def _flip_signature_bit(lab: Lab) -> str:
    head, payload, signature = lab.token().split(".")
    raw = bytearray(b64url_decode(signature))
    raw[17] ^= 0x40
    return f"{head}.{payload}.{b64url_encode(bytes(raw))}"


def _der_signature(lab: Lab) -> str:
    header, claims = lab.header(), lab.claims()
    signing_input = f"{encode_part(header)}.{encode_part(claims)}".encode()
    der = der_signature(lab.keys[BB_COUNCIL], signing_input)
    return forge_token(header, claims, None, signature=der)


def _truncated_signature(lab: Lab) -> str:
    head, payload, signature = lab.token().split(".")
    return f"{head}.{payload}.{b64url_encode(b64url_decode(signature)[:63])}"


def _zero_signature(lab: Lab) -> str:
    return forge_token(lab.header(), lab.claims(), None, signature=bytes(64))


def _signature_of_other_message(lab: Lab) -> str:
    head, payload, _ = lab.token().split(".")
    _, _, other = lab.token().split(".")
    return f"{head}.{payload}.{other}"


def _non_canonical_b64(lab: Lab) -> str:
    head, payload, signature = lab.token().split(".")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(signature[-1])
    # 64 bytes → 86 characters: the last one carries 2 unused bits; setting one keeps the
    # decoded bytes but changes the string.
    return f"{head}.{payload}.{signature[:-1]}{alphabet[last ^ 0b01]}"


def _padded(lab: Lab) -> str:
    head, payload, signature = lab.token().split(".")
    return f"{head}=.{payload}.{signature}"


def _standard_base64(lab: Lab) -> str:
    header = lab.header()
    claims = lab.claims()
    head = base64.b64encode(to_json(header)).decode()
    body = base64.b64encode(to_json(claims)).decode()
    signing_input = f"{head}.{body}".encode()
    signature = base64.b64encode(es256_signature(lab.keys[BB_COUNCIL], signing_input)).decode()
    return f"{signing_input.decode()}.{signature}"


def _inside_whitespace(separator: str) -> Forge:
    def forge(lab: Lab) -> str:
        head, payload, signature = lab.token().split(".")
        return f"{head}.{payload[:40]}{separator}{payload[40:]}.{signature}"

    return forge


def _parts(count: int) -> Forge:
    def forge(lab: Lab) -> str:
        token = lab.token()
        if count == 4:
            return token + "." + token.split(".")[2]
        if count == 2:
            return token.rsplit(".", 1)[0]
        return token + "."

    return forge


def _two_tokens(lab: Lab) -> str:
    return lab.token() + "\n" + lab.token()


def _registry_document(lab: Lab) -> str:
    """A registry document signed by the operator's real key (typ trust-registry+jwt). The
    development scheme's own registry is now larger than a query may be (a 413 before any
    verification), so one that fits within 16 KiB tests the typ substitution."""
    operator = SigningKey.from_pem(lab.scheme.operator_key_path.read_bytes())
    now = int(time.time())
    claims = {
        "iss": devscheme.OPERATOR,
        "aud": devscheme.SCHEME,
        "iat": now,
        "exp": now + 3600,
        "jti": new_jti(),
        "seq": 99,
        "members": [],
        "purposes": [],
        "checks": [],
    }
    return jws.sign(claims, operator, jws.TRUST_REGISTRY)


def _utf16(lab: Lab) -> bytes:
    return lab.token().encode("utf-16")


def _deep_header(lab: Lab) -> str:
    header = b'{"alg":"ES256","kid":"' + lab.keys[BB_COUNCIL].kid.encode() + b'","typ":"'
    header += TYP.encode() + b'","x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    return lab.token(header=header)


def _deep_payload(depth: int) -> Forge:
    return _raw_payload(lambda lab: _json_with_tail(lab, '"x":' + "[" * depth + "]" * depth))


# id → forge; each is a verification failure and must read exactly INVALID_TOKEN.
VERIFICATION_FAILURES: dict[str, Forge] = {
    # the algorithm
    "alg-none-empty-signature": _alg_none("none"),
    "alg-None-empty-signature": _alg_none("None"),
    "alg-NONE-with-es256-signature": _alg_none("NONE", with_signature=True),
    "alg-missing": _header_token(alg=DROP),
    "alg-HS256-secret-is-council-public-pem": _hs256_pem,
    "alg-HS256-secret-is-published-jwk-file": _hs256_jwk_file,
    "alg-HS256-secret-is-jwk-json": _hs256_jwk_compact,
    "alg-ES384-label": _header_token(alg="ES384"),
    "alg-RS256-label": _header_token(alg="RS256"),
    "alg-EdDSA-label": _header_token(alg="EdDSA"),
    "alg-lowercase-es256": _header_token(alg="es256"),
    # the key
    "kid-unknown": _unknown_kid,
    "kid-council-but-signed-by-stranger": _stranger_with_council_kid,
    "kid-of-other-member-iss-council-a": _signed_by(SCHOOLS, kid_of=SCHOOLS, iss=BB_COUNCIL),
    "kid-council-a-signed-by-council-b": _signed_by(SCHOOLS, kid_of=BB_COUNCIL),
    "kid-of-provider-signed-by-provider-iss-council": _signed_by(DWP, kid_of=DWP),
    "kid-of-provider-signed-by-council": _signed_by(BB_COUNCIL, kid_of=DWP),
    "kid-of-broker-signed-by-council-iss-broker": _signed_by(BB_COUNCIL, kid_of=BROKER, iss=BROKER),
    "iss-broker-signed-by-council": _signed_by(BB_COUNCIL, kid_of=BB_COUNCIL, iss=BROKER),
    "signed-by-scheme-operator-anchor": _operator_signed,
    "kid-missing": _header_token(kid=DROP),
    "kid-empty": _header_token(kid=""),
    "kid-not-a-string": _header_token(kid=["x"]),
    # typ
    "typ-missing": _header_token(typ=DROP),
    "typ-JWT": _header_token(typ="JWT"),
    "typ-of-the-answer": _header_token(typ=jws.ELIGIBILITY_RESPONSE.typ),
    "typ-of-an-attribute-request": _header_token(typ=jws.ATTRIBUTE_REQUEST.typ),
    "typ-with-application-prefix": _header_token(typ="application/" + TYP),
    "typ-upper-case": _header_token(typ=TYP.upper()),
    "typ-homoglyph-hyphen-u2010": _header_token(typ=TYP.replace("-", "\u2010")),
    "typ-homoglyph-cyrillic-e": _header_token(typ=TYP.replace("e", "\u0435", 1)),
    "typ-trailing-space": _header_token(typ=TYP + " "),
    # header members outside the allow-list
    **{
        f"header-{name}": _header_token(**{name: value})
        for name, value in {
            "jku": "https://attacker.example/jwks.json",
            "jwk": dict(STRANGER.verifying_key.jwk),
            "x5u": "https://attacker.example/cert.pem",
            "x5c": ["MIIBszCCAVmgAwIBAgIUJ"],
            "crit": ["exp"],
            "b64": False,
            "zip": "DEF",
            "cty": "JWT",
        }.items()
    },
    # audience
    "aud-list": _claims_token(aud=[BROKER]),
    "aud-list-with-two": _claims_token(aud=[BROKER, DWP]),
    "aud-other-value": _claims_token(aud="some-other-broker"),
    "aud-provider": _claims_token(aud=DWP),
    "aud-missing": _claims_token(aud=DROP),
    "aud-trailing-space": _claims_token(aud=BROKER + " "),
    # issuer
    "iss-missing": _claims_token(iss=DROP),
    "iss-list": _claims_token(iss=[BB_COUNCIL]),
    "iss-other-council": _claims_token(iss=SCHOOLS),
    # time
    "expired": _time_claims(lambda now: now - 400, lambda now: now - 100),
    "iat-in-the-future": _time_claims(lambda now: now + 120, lambda now: now + 200),
    "lifetime-301s": _time_claims(lambda now: now, lambda now: now + 301),
    "lifetime-zero": _time_claims(lambda now: now, lambda now: now),
    "exp-before-iat": _time_claims(lambda now: now, lambda now: now - 1),
    "exp-float": _time_claims(lambda now: now, lambda now: now + 120.0),
    "iat-float": _time_claims(lambda now: now + 0.0, lambda now: now + 120),
    "exp-string": _time_claims(lambda now: now, lambda now: str(now + 120)),
    "iat-true": _time_claims(True, lambda now: now + 120),
    "exp-missing": _claims_token(exp=DROP),
    "iat-missing": _claims_token(iat=DROP),
    "exp-huge-integer": _time_claims(lambda now: now, 10**30),
    "iat-and-exp-huge": _time_claims(10**30, 10**30 + 60),
    "iat-negative": _time_claims(-100, 20),
    "exp-exponent-notation": _raw_payload(
        lambda lab: to_json(lab.claims(exp=DROP)).replace(b"{", b'{"exp":1e10,', 1)
    ),
    "nbf-in-the-future": _claims_token(nbf=int(time.time()) + 3600),
    "nbf-float": _claims_token(nbf=1.5),
    # jti
    "jti-missing": _claims_token(jti=DROP),
    "jti-21-chars": _claims_token(jti="A" * 21),
    "jti-129-chars": _claims_token(jti="A" * 129),
    "jti-with-slash": _claims_token(jti="abcdefghijklmnopqrstuv/w"),
    "jti-non-ascii": _claims_token(jti="ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ"),
    "jti-integer": _claims_token(jti=2**130),
    # JSON
    "duplicate-header-alg": _duplicate_header_alg,
    "duplicate-header-typ": _duplicate_header_typ,
    "duplicate-claim-aud": _raw_payload(lambda lab: _json_with_tail(lab, '"aud":"elsewhere"')),
    "duplicate-claim-iss": _raw_payload(lambda lab: _json_with_tail(lab, f'"iss":"{SCHOOLS}"')),
    "duplicate-member-inside-subject": _raw_payload(_duplicate_in_subject),
    "payload-json-array": _raw_payload(lambda lab: to_json([lab.claims()])),
    "payload-not-json": _raw_payload(lambda lab: b"iss=council&aud=axb-broker"),
    "payload-nan": _raw_payload(lambda lab: _json_with_tail(lab, '"x":NaN')),
    "payload-lone-surrogate": _raw_payload(lambda lab: _json_with_tail(lab, '"x":"\\ud800"')),
    "payload-byte-order-mark": _raw_payload(lambda lab: b"\xef\xbb\xbf" + to_json(lab.claims())),
    "payload-invalid-utf8": _raw_payload(
        lambda lab: _json_with_tail(lab, '"x":"\xff"').replace("\xff".encode(), b"\xff")
    ),
    "payload-5000-deep": _deep_payload(5000),
    "header-json-array": lambda lab: lab.token(header=to_json([lab.header()])),
    "header-3000-deep": _deep_header,
    "nested-jwt-with-cty": _nested_jwt(with_cty=True),
    "nested-jwt-without-cty": _nested_jwt(with_cty=False),
    # signature
    "signature-bit-flipped": _flip_signature_bit,
    "signature-der-encoded": _der_signature,
    "signature-63-bytes": _truncated_signature,
    "signature-all-zero": _zero_signature,
    "signature-of-another-message": _signature_of_other_message,
    # compact form
    "base64url-non-canonical-trailing-bits": _non_canonical_b64,
    "base64url-padded": _padded,
    "standard-base64-alphabet": _standard_base64,
    "newline-inside-token": _inside_whitespace("\n"),
    "space-inside-token": _inside_whitespace(" "),
    "four-parts": _parts(4),
    "two-parts": _parts(2),
    "trailing-dot": _parts(0),
    "two-tokens-on-two-lines": _two_tokens,
    "registry-document-as-query": _registry_document,
    "utf16-encoded-token": _utf16,
    "invalid-utf8-body": lambda lab: b"\xff\xfe\xfd" + lab.token().encode(),
    "empty-body": lambda lab: b"",
    "whitespace-only-body": lambda lab: b" \r\n\t ",
    "just-dots": lambda lab: b"..",
}


@ON_SHARED
@pytest.mark.parametrize("name", sorted(VERIFICATION_FAILURES))
async def test_verification_failure_is_a_bare_401(name: str, shared: Lab) -> None:
    body = VERIFICATION_FAILURES[name](shared)
    before = shared.consent_rows()
    reply = await shared.post(body)
    assert_invalid_token(reply)
    assert shared.consent_rows() == before, "an unverified query wrote a consent record"


@ON_SHARED
async def test_positive_control_built_with_the_same_forging_helpers_is_answered(
    shared: Lab,
) -> None:
    for member in (BB_COUNCIL, SCHOOLS):
        claims = shared.claims(member)
        reply = await shared.post(shared.token(claims, signer=member))
        answer = assert_answered(reply)
        assert answer["aud"] == member
        assert answer["query_jti"] == claims["jti"]


@ON_SHARED
async def test_every_verification_failure_reads_the_same(shared: Lab) -> None:
    """Not a byte of body or a header name tells an attacker which check failed."""
    seen = set()
    for name in ("kid-unknown", "expired", "aud-list", "alg-none-empty-signature", "empty-body"):
        reply = await shared.post(VERIFICATION_FAILURES[name](shared))
        seen.add((reply.body, tuple(sorted(reply.headers.keys() - {"Date"}))))
    assert len(seen) == 1


# --- replay -------------------------------------------------------------------------------------


@ON_SHARED
async def test_replayed_token_is_refused(shared: Lab) -> None:
    token = shared.token()
    assert_answered(await shared.post(token))
    before = shared.consent_rows()
    assert_invalid_token(await shared.post(token))
    assert_invalid_token(await shared.post("\n  " + token + "\r\n"))  # padded copy
    assert shared.consent_rows() == before


@ON_SHARED
async def test_same_claims_signed_again_is_a_replay(shared: Lab) -> None:
    claims = shared.claims()
    first, second = shared.token(claims), shared.token(claims)
    assert first.split(".")[2] != second.split(".")[2]  # ECDSA: a fresh signature
    assert_answered(await shared.post(first))
    assert_invalid_token(await shared.post(second))


@ON_SHARED
async def test_malleated_signature_of_a_used_token_is_a_replay(shared: Lab) -> None:
    token = shared.token()
    copy = malleate(token)
    assert copy != token
    # Sanity: (r, n - s) really is a valid signature, so only the replay check can stop it.
    head, payload, signature = copy.split(".")
    raw = b64url_decode(signature)
    shared.keys[BB_COUNCIL].verifying_key.public_key.verify(
        encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
        f"{head}.{payload}".encode(),
        ec.ECDSA(hashes.SHA256()),
    )
    assert_answered(await shared.post(token))
    assert_invalid_token(await shared.post(copy))


@ON_SHARED
async def test_concurrent_copies_of_one_token_are_answered_once(shared: Lab) -> None:
    token = shared.token()
    replies = await asyncio.gather(*(shared.post(token) for _ in range(12)))
    answered = [r for r in replies if r.status == 200]
    assert len(answered) == 1
    for reply in replies:
        if reply.status != 200:
            assert_invalid_token(reply)


@ON_SHARED
async def test_a_jti_burnt_by_a_refused_query_cannot_be_used_again(shared: Lab) -> None:
    jti = new_jti()
    refused = await shared.post(shared.token(shared.claims(check="no-such-check", jti=jti)))
    assert_problem(refused, 403, "unknown-check")
    assert_invalid_token(await shared.post(shared.token(shared.claims(jti=jti))))


def _spoil_signature(lab: Lab, claims: dict[str, Any]) -> str:
    head, payload, _ = lab.token(claims).split(".")
    return f"{head}.{payload}.{lab.token(lab.claims()).split('.')[2]}"


# Unverified tokens carrying a jti X: none may leave X in the replay cache.
UNVERIFIED_WITH_JTI: dict[str, Callable[[Lab, str], tuple[str, str | None]]] = {
    "bad-signature": lambda lab, jti: (_spoil_signature(lab, lab.claims(jti=jti)), JWT),
    "stranger-key": lambda lab, jti: (
        forge_token(lab.header(), lab.claims(jti=jti), STRANGER),
        JWT,
    ),
    "other-members-key": lambda lab, jti: (
        forge_token(lab.header(SCHOOLS), lab.claims(jti=jti), lab.keys[SCHOOLS]),
        JWT,
    ),
    "alg-none": lambda lab, jti: (
        forge_token(lab.header(alg="none"), lab.claims(jti=jti), None),
        JWT,
    ),
    "well-signed-wrong-aud": lambda lab, jti: (lab.token(lab.claims(jti=jti, aud=DWP)), JWT),
    "well-signed-expired": lambda lab, jti: (
        lab.token(lab.claims(jti=jti, iat=int(time.time()) - 500, exp=int(time.time()) - 400)),
        JWT,
    ),
    "well-signed-wrong-typ": lambda lab, jti: (
        lab.token(lab.claims(jti=jti), header=lab.header(typ="JWT")),
        JWT,
    ),
    "well-signed-sent-as-json": lambda lab, jti: (
        lab.token(lab.claims(jti=jti)),
        "application/json",
    ),
}


@ON_SHARED
@pytest.mark.parametrize("spoiler", sorted(UNVERIFIED_WITH_JTI))
async def test_an_unverified_token_leaves_no_replay_entry(spoiler: str, shared: Lab) -> None:
    jti = new_jti()
    token, media = UNVERIFIED_WITH_JTI[spoiler](shared, jti)
    assert_problem(await shared.post(token, content_type=media))
    claims = shared.claims(jti=jti)
    answer = assert_answered(await shared.post(shared.token(claims)))
    assert answer["query_jti"] == jti


# --- verified, but the trust framework refuses: 403 and a consent record ------------------------

CONSENT = {
    "id": "consent-2026-0001",
    "given_at": "2026-11-01T10:00:00+00:00",
    "method": "online-form",
    "notice_url": "https://council.example/privacy/fsm",
    "notice_digest": "sha256:" + "ab" * 32,
}

POLICY_REFUSALS: dict[str, tuple[str, dict[str, Any], str]] = {
    "purpose-not-permitted": (
        BB_COUNCIL,
        {"purpose": "free-school-meals-application", "check": devscheme.FSM_CHECK},
        "purpose-not-permitted",
    ),
    "purpose-unknown": (BB_COUNCIL, {"purpose": "curiosity"}, "purpose-not-permitted"),
    "purpose-of-the-other-council": (
        SCHOOLS,
        {"purpose": "blue-badge-application", "check": devscheme.BLUE_BADGE_CHECK},
        "purpose-not-permitted",
    ),
    "check-not-permitted-for-purpose": (
        BB_COUNCIL,
        {"check": devscheme.FSM_CHECK},
        "check-not-permitted",
    ),
    "unknown-check": (BB_COUNCIL, {"check": "no-such-check"}, "unknown-check"),
    "consent-required-but-missing": (
        SCHOOLS,
        {"purpose": "school-uniform-grant", "lawful_basis": "consent"},
        "consent-required",
    ),
    "consent-basis-without-consent": (
        BB_COUNCIL,
        {"lawful_basis": "consent"},
        "consent-required",
    ),
    "lawful-basis-missing": (BB_COUNCIL, {"lawful_basis": DROP}, "lawful-basis-missing"),
    "lawful-basis-not-permitted": (
        BB_COUNCIL,
        {"lawful_basis": "vital-interests"},
        "lawful-basis-not-permitted",
    ),
    "consent-purpose-with-public-task": (
        SCHOOLS,
        {"purpose": "school-uniform-grant", "consent": CONSENT},
        "lawful-basis-not-permitted",
    ),
    "assurance-P0": (BB_COUNCIL, {"assurance": "P0"}, "assurance-too-low"),
    "assurance-missing": (BB_COUNCIL, {"assurance": DROP}, "assurance-too-low"),
    "check-not-in-force-on-as-of": (BB_COUNCIL, {"as_of": "2019-08-29"}, "check-not-in-force"),
    "auditor-asks": (AUDITOR, {}, "role-not-permitted"),
    "provider-asks": (DWP, {}, "role-not-permitted"),
    "broker-key-asks-itself": (BROKER, {}, "role-not-permitted"),
}


@ON_SHARED
@pytest.mark.parametrize("name", sorted(POLICY_REFUSALS))
async def test_policy_refusal_is_403_and_recorded(name: str, shared: Lab) -> None:
    member, changes, slug = POLICY_REFUSALS[name]
    claims = shared.claims(member, **changes)
    token = shared.token(claims, signer=member)
    before = shared.consent_rows()
    reply = await shared.post(token)
    assert_problem(reply, 403, slug)
    index = reply.problem["log_index"]
    assert type(index) is int
    assert shared.consent_rows() == before + 1
    record = shared.record(index)
    assert (record["outcome"], record["refusal"]) == ("refused", slug)
    assert record["requester"] == member
    assert record["query_jti"] == claims["jti"]
    assert_invalid_token(await shared.post(token))  # the jti is spent


# --- verified, but the claims are malformed: 400 invalid-query ---------------------------------

MALFORMED: dict[str, dict[str, Any]] = {
    "subject-unknown-field": {"subject": {**subject_of("bb-yes-dla"), "benefit_type": "PIP"}},
    "subject-dob-in-the-future": {
        "subject": {**subject_of("bb-yes-dla"), "date_of_birth": "2999-01-01"}
    },
    "subject-dob-impossible-date": {
        "subject": {**subject_of("bb-yes-dla"), "date_of_birth": "2020-02-30"}
    },
    "subject-dob-uk-format": {
        "subject": {**subject_of("bb-yes-dla"), "date_of_birth": "14/03/2016"}
    },
    "subject-missing": {"subject": DROP},
    "subject-is-a-string": {"subject": "Testwell 2016-03-14"},
    "subject-family-name-control-char": {
        "subject": {**subject_of("bb-yes-dla"), "family_name": "Test\nwell"}
    },
    "subject-family-name-101-chars": {
        "subject": {**subject_of("bb-yes-dla"), "family_name": "A" * 101}
    },
    "subject-family-name-number": {"subject": {**subject_of("bb-yes-dla"), "family_name": 7}},
    "subject-nino-invalid": {"subject": {**subject_of("bb-yes-pip-moving"), "nino": "QQ123456Z"}},
    "subject-postcode-invalid": {"subject": {**subject_of("bb-yes-dla"), "postcode": "NOT A PC"}},
    "as-of-in-the-future": {"as_of": "2999-01-01"},
    "as-of-not-a-date": {"as_of": "tomorrow"},
    "assurance-P9": {"assurance": "P9"},
    "assurance-list": {"assurance": ["P2"]},
    "unknown-top-level-claim": {"outcome": "yes"},
    "check-not-a-slug": {"check": "Blue Badge"},
    "purpose-not-a-string": {"purpose": {"id": "blue-badge-application"}},
    "lawful-basis-upper-case": {"lawful_basis": "PUBLIC-TASK"},
    "consent-extra-member": {"consent": {**CONSENT, "scope": "everything"}},
    "consent-http-notice": {"consent": {**CONSENT, "notice_url": "http://council.example/"}},
    "consent-naive-time": {"consent": {**CONSENT, "given_at": "2026-11-01T10:00:00"}},
}


@ON_SHARED
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_claims_are_400_invalid_query(name: str, shared: Lab) -> None:
    claims = shared.claims(**MALFORMED[name])
    reply = await shared.post(shared.token(claims))
    assert_problem(reply, 400, "invalid-query")
    detail = reply.problem["detail"]  # verified, so the caller may learn what is wrong...
    subject = claims.get("subject")
    values = subject.values() if isinstance(subject, dict) else [subject]
    for value in values:  # ...but the broker never repeats personal data back
        assert not (isinstance(value, str) and len(value) > 3 and value in detail), detail


@ON_SHARED
async def test_nesting_just_under_the_parser_limit_is_refused_cleanly(shared: Lab) -> None:
    for depth in (1000, 1020, 1023, 1030):
        reply = await shared.post(_deep_payload(depth)(shared))
        assert_problem(reply)
        assert reply.status in (400, 401)


# --- the HTTP envelope --------------------------------------------------------------------------


@ON_SHARED
@pytest.mark.parametrize(
    "media",
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jose",
        "application/jose+json",
        "application/octet-stream",
        "application/jwt+json",
        None,
    ],
)
async def test_wrong_media_type_is_415(media: str | None, shared: Lab) -> None:
    token = shared.token()
    before = shared.consent_rows()
    reply = await shared.post(token, content_type=media)
    assert_problem(reply, 415, "unsupported-media-type")
    assert shared.consent_rows() == before
    # the refused token is untouched: sent properly, it is answered
    assert_answered(await shared.post(token))


@ON_SHARED
@pytest.mark.parametrize("size", [16 * 1024 + 1, 17 * 1024, 70 * 1024, 1024 * 1024])
async def test_oversize_body_is_413(size: int, shared: Lab) -> None:
    token = shared.token()
    body = (token + "A" * size)[:size]
    before = shared.consent_rows()
    reply = await shared.post(body)
    assert_problem(reply, 413, "too-large")
    assert shared.consent_rows() == before


@ON_SHARED
async def test_exactly_16_kib_is_read_and_refused_as_a_token(shared: Lab) -> None:
    token = shared.token()
    reply = await shared.post((token + "A" * 16384)[:16384])
    assert_invalid_token(reply)


@ON_SHARED
async def test_oversize_chunked_body_is_413(shared: Lab) -> None:
    async def one_piece() -> AsyncIterator[bytes]:
        yield b"A" * (20 * 1024)

    assert_problem(await shared.post(one_piece()), 413, "too-large")


@ON_SHARED
async def test_ten_thousand_deep_json_is_bounded_before_parsing(shared: Lab) -> None:
    deep = _json_with_tail(shared, '"x":' + "[" * 10_000 + "]" * 10_000)
    reply = await shared.post(shared.token(deep))
    assert_problem(reply, 413, "too-large")


@ON_SHARED
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_problems(method: str, shared: Lab) -> None:
    reply = await shared.post(shared.token(), method=method)
    assert_problem(reply, 405, "method-not-allowed")


@ON_SHARED
@pytest.mark.parametrize(
    "supplied",
    ['{"evil":true}', "a" * 65, "short", "../../etc/passwd", "id with spaces", "eyJhbGciOi.x"],
)
async def test_a_hostile_request_id_is_not_echoed(supplied: str, shared: Lab) -> None:
    reply = await shared.post(b"x.y.z", headers={"X-Request-Id": supplied})
    assert_invalid_token(reply)
    echoed = reply.headers["X-Request-Id"]
    assert echoed != supplied
    assert len(echoed) == 32
    assert set(echoed) <= set("0123456789abcdef")


@ON_SHARED
async def test_the_brokers_own_answer_reflected_back_is_refused(shared: Lab) -> None:
    reply = await shared.post(shared.token())
    answer = assert_answered(reply)
    assert_invalid_token(await shared.post(reply.body))
    assert answer["iss"] == BROKER


@ON_SHARED
async def test_gzip_encoded_bomb_is_bounded(shared: Lab) -> None:
    bomb = gzip.compress(b"A" * (10 * 1024 * 1024))
    assert len(bomb) < 16 * 1024
    started = time.perf_counter()
    reply = await shared.post(bomb, headers={"Content-Encoding": "gzip"})
    assert_problem(reply, 415, "unsupported-media-type")  # refused before inflating a byte
    assert time.perf_counter() - started < 5


@ON_SHARED
async def test_a_valid_query_arriving_in_two_pieces_is_answered(shared: Lab) -> None:
    token = shared.token().encode("ascii")

    async def pieces() -> AsyncIterator[bytes]:
        yield token[:300]
        await asyncio.sleep(0.2)
        yield token[300:]

    assert_answered(await shared.post(pieces()))


@ON_SHARED
async def test_an_oversize_body_streamed_in_pieces_is_413(shared: Lab) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"A" * 8000
        await asyncio.sleep(0.2)
        yield b"A" * 12000

    assert_problem(await shared.post(pieces()), 413, "too-large")


# --- regressions: bugs found by this battery and fixed ------------------------------------------


@ON_SHARED
async def test_a_corrupt_gzip_body_is_a_client_error(shared: Lab) -> None:
    reply = await shared.post(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert_problem(reply)


# --- one broker per test: rate limit and registry changes ---------------------------------------


async def test_rate_limit_answers_429_and_records_nothing_for_the_excess(
    lab: Lab, broker: RunningBroker
) -> None:
    """A registry that holds the blue badge council to 2 queries a second; 12 at once."""
    operator = SigningKey.from_pem(lab.scheme.operator_key_path.read_bytes())
    registry = _registry(lab.scheme, operator, seq=2, rate_limits={BB_COUNCIL: 2})
    lab.scheme.registry_path.write_text(registry + "\n")
    broker.app[REGISTRY].reload()
    assert broker.app[REGISTRY].snapshot.members[BB_COUNCIL].rate_limit_per_second == 2

    tokens = [lab.token(lab.claims(check="no-such-check")) for _ in range(12)]
    before = lab.consent_rows()
    replies = await asyncio.gather(*(lab.post(token) for token in tokens))
    limited = [r for r in replies if r.status == 429]
    refused = [r for r in replies if r.status == 403]
    assert limited, "the member's rate limit was not enforced"
    assert len(limited) + len(refused) == len(replies)
    for reply in limited:
        assert_problem(reply, 429, "rate-limited")
        assert int(reply.headers["Retry-After"]) >= 1
    assert lab.consent_rows() == before + len(refused)
    # the limit is the member's own: the other council is answered meanwhile
    assert_answered(await lab.post(lab.token(lab.claims(SCHOOLS), signer=SCHOOLS)))


async def test_suspended_member_is_refused_at_once_and_recorded(
    lab: Lab, broker: RunningBroker
) -> None:
    assert_answered(await lab.post(lab.token()))
    devscheme.publish_registry(lab.scheme, seq=2, suspended=[BB_COUNCIL])
    broker.app[REGISTRY].reload()
    assert broker.app[REGISTRY].snapshot.seq == 2

    before = lab.consent_rows()
    claims = lab.claims()
    reply = await lab.post(lab.token(claims))
    assert_problem(reply, 403, "member-suspended")
    record = lab.record(reply.problem["log_index"])
    assert (record["outcome"], record["refusal"]) == ("refused", "member-suspended")
    assert record["query_jti"] == claims["jti"]
    assert lab.consent_rows() == before + 1
    # the other council is untouched
    assert_answered(await lab.post(lab.token(lab.claims(SCHOOLS), signer=SCHOOLS)))

    devscheme.publish_registry(lab.scheme, seq=3)
    broker.app[REGISTRY].reload()
    assert broker.app[REGISTRY].snapshot.seq == 3
    assert_answered(await lab.post(lab.token()))


async def test_stale_registry_fails_closed(lab: Lab, broker: RunningBroker) -> None:
    devscheme.publish_registry(lab.scheme, seq=2, lifetime=2)
    broker.app[REGISTRY].reload()
    assert broker.app[REGISTRY].snapshot.seq == 2
    assert_answered(await lab.post(lab.token()))
    await asyncio.sleep(2.5)

    before = lab.consent_rows()
    for token in (lab.token(), lab.token(lab.claims(SCHOOLS), signer=SCHOOLS), "x.y.z"):
        reply = await lab.post(token)
        assert_problem(reply, 503, "registry-unavailable")
    assert lab.consent_rows() == before
    async with lab.session.get(lab.url + "/readyz") as ready:
        assert ready.status == 503


async def test_rolled_back_or_forged_registry_is_refused(lab: Lab, broker: RunningBroker) -> None:
    source = broker.app[REGISTRY]
    devscheme.publish_registry(lab.scheme, seq=3)
    source.reload()
    assert source.snapshot.seq == 3
    digest = source.snapshot.digest

    devscheme.publish_registry(lab.scheme, seq=2, suspended=[SCHOOLS])
    assert source.reload() is False
    assert (source.snapshot.seq, source.snapshot.digest) == (3, digest)

    devscheme.publish_registry(lab.scheme, seq=3, suspended=[SCHOOLS])  # same seq, new content
    assert source.reload() is False
    assert source.snapshot.digest == digest

    # a registry with a higher seq but signed by a member's key, not a pinned anchor
    forged = _registry(lab.scheme, lab.keys[BB_COUNCIL], seq=99)
    lab.scheme.registry_path.write_text(forged + "\n")
    assert source.reload() is False
    assert source.snapshot.digest == digest

    # the registry in force still answers, and still lets the schools council in
    assert_answered(await lab.post(lab.token(lab.claims(SCHOOLS), signer=SCHOOLS)))


def _registry(
    scheme: devscheme.DevScheme,
    key: SigningKey,
    *,
    seq: int,
    rate_limits: Mapping[str, int] | None = None,
) -> str:
    members = devscheme.registry_members(scheme_keys(scheme), scheme.provider_ports, suspended=())
    for member in members:
        if member["id"] in (rate_limits or {}):
            member["rate_limit_per_second"] = (rate_limits or {})[member["id"]]
    return sign_registry(
        members=members,
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=seq,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=key,
        now=int(time.time()),
    )
