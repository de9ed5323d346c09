"""An independent JOSE implementation talks to the live broker: the wire format is the standard.

Nothing of this project's ``trust`` package (nor PyJWT) signs the query or verifies the answer
here: jwcrypto does, with a council's key read from the scheme's PEM file, a ``kid`` it computes
itself (RFC 7638) and the broker's published ``/.well-known/jwks.json``. If Node.js and npm are
available, the ``jose`` package does the same from a small script written at test time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jwcrypto import jwk, jws, jwt
from jwcrypto.common import base64url_encode

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from tests.support.servers import RunningBroker

QUERY_TYP = "eligibility-query+jwt"
ANSWER_TYP = "eligibility-response+jwt"
OUTCOMES = {"yes", "no", "no-match", "undetermined"}

CASES = {
    devscheme.COUNCIL_BLUE_BADGE: (
        devscheme.BLUE_BADGE_CHECK,
        "blue-badge-application",
        "bb-yes-pip-moving",
        "yes",
    ),
    devscheme.COUNCIL_SCHOOLS: (
        devscheme.FSM_CHECK,
        "free-school-meals-application",
        "fsm-no",
        "no",
    ),
}


def council_jwk(scheme: devscheme.DevScheme, member: str) -> jwk.JWK:
    return jwk.JWK.from_pem(scheme.key_path(member).read_bytes())


def jwcrypto_query(key: jwk.JWK, member: str) -> tuple[str, str]:
    check, purpose, identity, _ = CASES[member]
    now = int(time.time())
    jti = secrets.token_urlsafe(24)
    claims = {
        "iss": member,
        "aud": devscheme.BROKER,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
        "check": check,
        "purpose": purpose,
        "lawful_basis": "public-task",
        "assurance": "P2",
        "subject": subject_of(identity),
    }
    header = {"alg": "ES256", "kid": key.thumbprint(), "typ": QUERY_TYP}
    token = jwt.JWT(header=header, claims=claims)
    token.make_signed_token(key)
    return token.serialize(), jti


async def fetch_jwks(session: aiohttp.ClientSession, url: str) -> jwk.JWKSet:
    async with session.get(url + "/.well-known/jwks.json") as response:
        assert response.status == 200
        return jwk.JWKSet.from_json(await response.text())


def jwcrypto_verify(
    answer: str, keys: jwk.JWKSet, member: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    verified = jwt.JWT(
        jwt=answer,
        key=keys,
        algs=["ES256"],
        expected_type="JWS",
        check_claims={"iss": devscheme.BROKER, "aud": member, "exp": None},
    )
    header = json.loads(verified.header)
    claims = json.loads(verified.claims)
    return header, claims


def assert_answer(
    header: dict[str, Any], claims: dict[str, Any], *, member: str, jti: str, keys: list[str]
) -> None:
    check, _, _, expected = CASES[member]
    assert header["alg"] == "ES256"
    assert header["typ"] == ANSWER_TYP
    assert header["kid"] in keys
    assert claims["iss"] == devscheme.BROKER
    assert claims["aud"] == member
    assert claims["query_jti"] == jti
    assert claims["check"] == check
    assert claims["outcome"] in OUTCOMES
    assert claims["outcome"] == expected
    assert type(claims["log_index"]) is int
    assert claims["log_index"] >= 0
    assert type(claims["iat"]) is int
    assert type(claims["exp"]) is int
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["jti"] != jti


@pytest.mark.parametrize("member", sorted(CASES))
async def test_jwcrypto_signs_a_query_and_verifies_the_answer(
    member: str, scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    key = council_jwk(scheme, member)
    registered = json.loads((scheme.root / "public" / f"{member}.jwk.json").read_text())
    assert key.thumbprint() == registered["kid"]  # RFC 7638, computed independently

    token, jti = jwcrypto_query(key, member)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            broker.url + "/v1/checks",
            data=token,
            headers={"Content-Type": "application/jwt", "Accept": "application/jwt"},
        ) as response:
            body = await response.text()
            assert response.status == 200, body
            assert response.content_type == "application/jwt"
        keys = await fetch_jwks(session, broker.url)

    kids = [k["kid"] for k in keys]
    header, claims = jwcrypto_verify(body, keys, member)
    assert_answer(header, claims, member=member, jti=jti, keys=kids)

    # The verification above is real: a tampered answer does not verify.
    head, _, signature = body.split(".")
    forged = {**claims, "outcome": "no" if claims["outcome"] == "yes" else "yes"}
    tampered = f"{head}.{base64url_encode(json.dumps(forged))}.{signature}"
    with pytest.raises(jws.InvalidJWSSignature):
        jwt.JWT(jwt=tampered, key=keys.get_key(header["kid"]), algs=["ES256"])
    with pytest.raises(jwt.JWTMissingKey):  # against the set: no key verifies it
        jwcrypto_verify(tampered, keys, member)
    with pytest.raises(jwt.JWTInvalidClaimValue):
        jwcrypto_verify(body, keys, devscheme.COUNCIL_SCHOOLS + "-x")


async def test_jwcrypto_query_replayed_is_refused(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    member = devscheme.COUNCIL_BLUE_BADGE
    token, _ = jwcrypto_query(council_jwk(scheme, member), member)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(2):
            async with session.post(
                broker.url + "/v1/checks", data=token, headers={"Content-Type": "application/jwt"}
            ) as response:
                statuses.append(response.status)
                if response.status != 200:
                    assert response.content_type == "application/problem+json"
    assert statuses == [200, 401]


# --- Node.js and the `jose` package -------------------------------------------------------------

NODE_SCRIPT = r"""
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import {
  SignJWT, importPKCS8, exportJWK, calculateJwkThumbprint, jwtVerify, createRemoteJWKSet,
} from "jose";

const [keyPath, member, brokerUrl, brokerId, check, purpose, subjectJson] = process.argv.slice(2);
const key = await importPKCS8(readFileSync(keyPath, "utf8"), "ES256", { extractable: true });
const { kty, crv, x, y } = await exportJWK(key);
const kid = await calculateJwkThumbprint({ kty, crv, x, y });
const jti = randomBytes(24).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const query = await new SignJWT({
  check, purpose, lawful_basis: "public-task", assurance: "P2", subject: JSON.parse(subjectJson),
})
  .setProtectedHeader({ alg: "ES256", kid, typ: "eligibility-query+jwt" })
  .setIssuer(member)
  .setAudience(brokerId)
  .setIssuedAt(now)
  .setExpirationTime(now + 120)
  .setJti(jti)
  .sign(key);

const response = await fetch(`${brokerUrl}/v1/checks`, {
  method: "POST",
  headers: { "content-type": "application/jwt", accept: "application/jwt" },
  body: query,
});
const text = await response.text();
if (response.status !== 200) {
  console.log(JSON.stringify({ status: response.status, body: text, kid, jti }));
  process.exit(0);
}
const jwks = createRemoteJWKSet(new URL(`${brokerUrl}/.well-known/jwks.json`));
const { payload, protectedHeader } = await jwtVerify(text, jwks, {
  algorithms: ["ES256"],
  issuer: brokerId,
  audience: member,
  typ: "eligibility-response+jwt",
});
let tamperedRefused = false;
try {
  const [h, p, s] = text.split(".");
  const forged = { ...payload, outcome: payload.outcome === "yes" ? "no" : "yes" };
  const forgedPart = Buffer.from(JSON.stringify(forged)).toString("base64url");
  await jwtVerify(`${h}.${forgedPart}.${s}`, jwks, { algorithms: ["ES256"] });
} catch (error) {
  tamperedRefused = error.code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED";
}
console.log(JSON.stringify({
  status: response.status, kid, jti, header: protectedHeader, payload, tamperedRefused,
}));
"""


async def run(*argv: str, cwd: Path, seconds: float) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, "", f"timed out after {seconds} s"
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def node_jose(tmp_path: Path) -> Path:
    """A temp folder with ``jose`` installed by npm; the test is skipped if that is impossible."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not both on PATH")
    folder = tmp_path / "node-client"
    folder.mkdir()
    code, _, err = await run(
        npm,
        "install",
        "--prefix",
        str(folder),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "jose@5",
        cwd=folder,
        seconds=120,
    )
    if code != 0 or not (folder / "node_modules" / "jose").is_dir():
        pytest.skip(f"npm could not install jose@5 (exit {code}): {err.strip()[-400:]}")
    return folder


@pytest.mark.parametrize("member", sorted(CASES))
async def test_node_jose_signs_a_query_and_verifies_the_answer(
    member: str, scheme: devscheme.DevScheme, broker: RunningBroker, node_jose: Path
) -> None:
    script = node_jose / "client.mjs"
    script.write_text(NODE_SCRIPT)
    check, purpose, identity, _ = CASES[member]
    node = shutil.which("node")
    assert node is not None
    code, out, err = await run(
        node,
        str(script),
        str(scheme.key_path(member)),
        member,
        broker.url,
        devscheme.BROKER,
        check,
        purpose,
        json.dumps(subject_of(identity)),
        cwd=node_jose,
        seconds=60,
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == 200, result
    registered = json.loads((scheme.root / "public" / f"{member}.jwk.json").read_text())
    assert result["kid"] == registered["kid"]
    assert result["tamperedRefused"] is True
    async with aiohttp.ClientSession() as session:
        kids = [k["kid"] for k in await fetch_jwks(session, broker.url)]
    assert_answer(result["header"], result["payload"], member=member, jti=result["jti"], keys=kids)


async def test_the_sdk_refuses_an_answer_that_is_not_the_brokers(
    broker: Any, blue_badge_client: Any
) -> None:
    from members.errors import AnswerNotTrusted

    token, jti = blue_badge_client.sign_query(
        "blue-badge-automatic",
        purpose="blue-badge-application",
        subject={"family_name": "Testwell", "date_of_birth": "2016-03-14"},
        assurance="P2",
    )
    for forged in (b"not a token", token.encode()):  # garbage, and the council's own query
        with pytest.raises(AnswerNotTrusted):
            await blue_badge_client.verify_answer(forged, jti)


async def test_jwcrypto_submits_a_bulk_job_polls_it_and_verifies_the_results_manifest(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    """Bulk jobs as an independent client sees them: a manifest it signs over the SHA-256 it
    computes itself, a CSV body, signed polls (``bulk-request+jwt``), and a results manifest
    it verifies against the JWKS before trusting the file whose digest it names."""
    member = devscheme.COUNCIL_SCHOOLS
    key = council_jwk(scheme, member)
    people = [subject_of(who) for who in ("fsm-yes-income-support", "fsm-no", "no-match")]
    csv = "ref,family_name,date_of_birth,nino\r\n" + "".join(
        f"p{i},{p['family_name']},{p['date_of_birth']},{p['nino']}\r\n"
        for i, p in enumerate(people)
    )
    items = csv.encode()

    def signed(typ: str, claims: dict[str, Any]) -> str:
        now = int(time.time())
        envelope = {"iss": member, "aud": devscheme.BROKER, "iat": now, "exp": now + 60}
        token = jwt.JWT(
            header={"alg": "ES256", "kid": key.thumbprint(), "typ": typ},
            claims={**envelope, "jti": secrets.token_urlsafe(24), **claims},
        )
        token.make_signed_token(key)
        return str(token.serialize())

    def request_token(method: str, path: str) -> str:
        empty = base64url_encode(hashlib.sha256(b"").digest())
        return signed("bulk-request+jwt", {"htm": method, "htu": path, "body_sha256": empty})

    manifest = signed(
        "bulk-manifest+jwt",
        {
            "check": devscheme.FSM_CHECK,
            "purpose": "free-school-meals-application",
            "lawful_basis": "public-task",
            "assurance": "P2",
            "items": 3,
            "format": "csv",
            "items_sha256": "sha256:" + hashlib.sha256(items).hexdigest(),
        },
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(
            broker.url + "/v1/bulk/jobs",
            data=items,
            headers={"Content-Type": "text/csv", "Bulk-Manifest": manifest},
        ) as response:
            assert response.status == 202, await response.text()
            job = await response.json()
        path = job["links"]["self"]
        while job["status"] not in ("completed", "failed", "cancelled"):
            await asyncio.sleep(0.1)
            headers = {"Authorization": "Bearer " + request_token("GET", path)}
            async with session.get(broker.url + path, headers=headers) as response:
                assert response.status == 200
                job = await response.json()
        fetched = {}
        for link in ("manifest", "results_csv"):
            target = job["links"][link]
            headers = {"Authorization": "Bearer " + request_token("GET", target)}
            async with session.get(broker.url + target, headers=headers) as response:
                assert response.status == 200
                fetched[link] = await response.read()
        keys = await fetch_jwks(session, broker.url)

    header, claims = jwcrypto_verify(fetched["manifest"].decode(), keys, member)
    assert header["typ"] == "bulk-results+jwt"
    assert (claims["job"], claims["status"], claims["results"]) == (job["id"], "completed", 3)
    results = fetched["results_csv"]
    assert claims["sha256"]["csv"] == "sha256:" + hashlib.sha256(results).hexdigest()
    assert results.decode().splitlines() == ["ref,outcome", "p0,yes", "p1,no", "p2,no-match"]
    first, last = claims["log_index_range"]
    assert 0 <= first <= last
