"""Provider conformance: the reference providers pass every check, and deliberately broken
providers (the provider kit with one fault each) fail exactly the checks they break."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from broker.scheme import dev as devscheme
from connectors.conformance import (
    CHECK_IDS,
    CHECKS,
    ConformanceTarget,
    load_scheme_registry,
    run_conformance,
    target_from_scheme,
)
from connectors.errors import ConfigError
from connectors.provider_kit import ProviderKit, create_provider_app
from connectors.reference.attributes import DWP_ATTRIBUTES
from connectors.reference.population import TEST_IDENTITIES, PopulationIndex
from connectors.reference.providers import reference_lookup
from tests.support.servers import RunningProvider, serve_on
from trust import jws
from trust.errors import InvalidMessage, VerificationError
from trust.keys import SigningKey
from trust.messages import AttributeRequest, new_jti, parse_attribute_request
from trust.registry import Registry, sign_registry
from trust.replay import ReplayCache

REPO = Path(__file__).resolve().parents[2]
FAST_MS = 600  # the declared latency of the broken providers' registry entry


def endpoint(scheme: devscheme.DevScheme, provider_id: str) -> str:
    return f"http://127.0.0.1:{scheme.provider_ports[provider_id]}/v1/attributes"


def test_there_are_at_least_25_named_checks_in_four_groups() -> None:
    assert len(CHECK_IDS) >= 25
    assert len(set(CHECK_IDS)) == len(CHECK_IDS)
    assert {spec.group for spec in CHECKS} == {"ACCEPTS", "ANSWER", "REFUSES", "HYGIENE"}
    for spec in CHECKS:
        assert spec.id.split("-")[0] == spec.group.lower()


@pytest.mark.parametrize("provider_id", devscheme.PROVIDERS)
async def test_every_reference_provider_passes_every_check_with_default_samples(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider], provider_id: str
) -> None:
    """Issue 9 item 9: the default samples must suit every reference provider, the vehicle
    ones (keeper register, VES adapter behind the VES stub) as well as DWP and HMRC."""
    target = target_from_scheme(
        scheme.root, endpoint=endpoint(scheme, provider_id), provider_id=provider_id
    )
    assert target.broker_id == devscheme.BROKER
    assert target.other_member_id.startswith("council-")
    offered = scheme_registry(scheme).members[provider_id].provider
    assert offered is not None
    asked = {*target.attributes, *(p.attribute for p in target.predicates)}
    assert asked == set(offered.attributes)  # the parameterised ones as predicates
    assert not any(offered.attributes[name].parameters for name in target.attributes)
    report = await run_conformance(target)
    assert report.passed, report.render()
    assert report.failures == ()
    assert [r.id for r in report.results] == list(CHECK_IDS)
    assert report.render().splitlines()[-1].endswith(": CONFORMANT")


async def test_cli_checks_a_reference_provider(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider]
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "provider",
        "conformance",
        f"http://127.0.0.1:{scheme.provider_ports[devscheme.HMRC]}",  # bare origin is accepted
        "--scheme",
        str(scheme.root),
        "--provider-id",
        devscheme.HMRC,
        "--as-broker",
        devscheme.BROKER,
        "--other-member",
        devscheme.COUNCIL_SCHOOLS,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    output = stdout.decode()
    assert process.returncode == 0, output + stderr.decode()
    assert f"Provider conformance: {devscheme.HMRC}" in output
    for check_id in CHECK_IDS:
        assert any(
            line.split()[1:3] == [check_id, "PASS"] for line in output.splitlines() if line
        ), check_id
    assert output.rstrip().endswith(f"{len(CHECK_IDS)} passed, 0 failed: CONFORMANT")


def test_subject_json_and_bad_settings(scheme: devscheme.DevScheme, tmp_path: Path) -> None:
    subjects = tmp_path / "subjects.json"
    subjects.write_text(
        json.dumps(
            {
                "known": {"family_name": "Sampleton", "date_of_birth": "1961-07-02"},
                "unknown": {"family_name": "Nobody", "date_of_birth": "1970-01-01"},
                "attributes": ["registered-blind"],
            }
        )
    )
    target = target_from_scheme(
        scheme.root,
        endpoint=endpoint(scheme, devscheme.DWP),
        provider_id=devscheme.DWP,
        subjects=subjects,
    )
    assert target.attributes == ("registered-blind",)
    assert dict(target.known) == {"family_name": "Sampleton", "date_of_birth": "1961-07-02"}
    assert target.timeout_ms == 2000

    subjects.write_text(
        json.dumps(
            {
                "known": {"family_name": "Sampleton", "vehicle_registration": "AB12CDE"},
                "unknown": {"family_name": "Nobody"},
            }
        )
    )
    with pytest.raises(ConfigError, match="did not declare"):
        target_from_scheme(
            scheme.root, endpoint="http://127.0.0.1:1", provider_id=devscheme.DWP, subjects=subjects
        )
    with pytest.raises(ConfigError, match="not an attribute provider"):
        target_from_scheme(scheme.root, endpoint="http://127.0.0.1:1", provider_id="nobody")
    scheme.key_path(devscheme.COUNCIL_SCHOOLS).write_bytes(SigningKey.generate().to_pem())
    with pytest.raises(ConfigError, match="not a key the registry gives"):
        target_from_scheme(
            scheme.root,
            endpoint="http://127.0.0.1:1",
            provider_id=devscheme.DWP,
            other_member=devscheme.COUNCIL_SCHOOLS,
        )


# --- deliberately broken providers ---------------------------------------------------------


def scheme_registry(scheme: devscheme.DevScheme) -> Registry:
    return load_scheme_registry(scheme.root)


def publish_fast_registry(scheme: devscheme.DevScheme) -> Registry:
    """Re-publish the scheme's registry (seq 2) with a short declared latency for DWP, so the
    slow provider is caught in well under a second per answer."""
    keys = {
        member: SigningKey.from_pem(scheme.key_path(member).read_bytes())
        for member in devscheme.MEMBERS
    }
    members = devscheme.registry_members(keys, scheme.provider_ports, suspended=())
    for member in members:
        if member["id"] == devscheme.DWP:
            member["provider"]["timeout_ms"] = FAST_MS
    token = sign_registry(
        members=members,
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=2,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=SigningKey.from_pem(scheme.operator_key_path.read_bytes()),
        now=int(time.time()),
    )
    scheme.registry_path.write_text(token + "\n")
    registry = scheme_registry(scheme)
    assert registry.seq == 2
    return registry


def claims_of(token: str | bytes) -> dict[str, Any]:
    return jws.parse_json_object(jws.decode_compact(token).payload)


class TamperingKit(ProviderKit):
    """The provider kit, but every signed answer passes through ``tamper`` and is re-signed
    (with ``answer_key`` when one is given)."""

    def __init__(self, *, key: SigningKey, answer_key: SigningKey | None = None, **kw: Any):
        super().__init__(key=key, **kw)
        self.signing_key = answer_key or key

    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        return claims

    async def answer(self, body: bytes) -> str:
        token = await super().answer(body)
        claims = self.tamper(claims_of(token), claims_of(body))
        return jws.sign(claims, self.signing_key, jws.ATTRIBUTE_RESPONSE)


class UnboundAnswers(TamperingKit):
    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        return {**claims, "request": new_jti()}


class ExtraAttribute(TamperingKit):
    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        if claims["result"] == "match":
            claims["attributes"] = {**claims["attributes"], "vehicle-taxed": True}
        return claims


class ExtraClaim(TamperingKit):
    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        return {**claims, "debug": "matched on surname and date of birth"}


class SaysNoForStrangers(TamperingKit):
    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        if claims["result"] == "no-match":
            claims["result"] = "match"
            claims["attributes"] = dict.fromkeys(request["attributes"], False)
        return claims


class AnswersAmounts(TamperingKit):
    """Answers each predicate with the amount behind it (what a provider must never do)."""

    def tamper(self, claims: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        if claims["result"] == "match" and "predicates" in claims:
            claims["predicates"] = [61_666 for _ in claims["predicates"]]
        return claims


class IgnoresParameterSchemas(ProviderKit):
    """Answers any predicate, whatever its parameters: the schema it declared checks nothing."""

    def _check_predicates(self, request: AttributeRequest, offered: Mapping[str, Any]) -> None:
        return None


class Slow(ProviderKit):
    async def answer(self, body: bytes) -> str:
        token = await super().answer(body)
        await asyncio.sleep(FAST_MS / 1000 + 0.2)
        return token


class _Forgetful(ReplayCache):
    def first_use(self, key: str, *, expires_at: int, now: int) -> bool:
        return True


class AcceptsReplays(ProviderKit):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._replay = _Forgetful()


class IgnoresAudience(ProviderKit):
    """Verifies the signature against whatever ``aud`` the request names."""

    def _verify(self, body: bytes, registry: Registry, now: int) -> AttributeRequest:
        try:
            aud = claims_of(body).get("aud")
            if isinstance(aud, str) and aud != self.provider_id:
                verified = jws.verify(
                    body,
                    jws.ATTRIBUTE_REQUEST,
                    keys=self._broker_keys(registry),
                    audience=aud,
                    now=now,
                )
                return parse_attribute_request(verified, provider=self.provider_id)
        except (VerificationError, InvalidMessage, ValueError):
            pass
        return super()._verify(body, registry, now)


class PlainTextErrors(ProviderKit):
    async def handle_attributes(self, request: web.Request) -> web.Response:
        response = await super().handle_attributes(request)
        if response.status >= 400:
            return web.Response(status=response.status, text="refused", content_type="text/plain")
        return response


KitFactory = Callable[..., ProviderKit]

BROKEN: Mapping[str, tuple[KitFactory, frozenset[str]]] = {
    "signs-with-unregistered-key": (
        lambda **kw: TamperingKit(answer_key=SigningKey.generate(), **kw),
        frozenset({"answer-signature"}),
    ),
    "does-not-bind-answer": (UnboundAnswers, frozenset({"answer-bound"})),
    "accepts-replays": (AcceptsReplays, frozenset({"refuses-replay"})),
    "adds-extra-attribute": (ExtraAttribute, frozenset({"answer-attributes"})),
    "adds-extra-claim": (ExtraClaim, frozenset({"answer-claims"})),
    "too-slow": (Slow, frozenset({"answer-latency"})),
    "says-no-for-strangers": (SaysNoForStrangers, frozenset({"answer-unknown-no-match"})),
    "ignores-audience": (IgnoresAudience, frozenset({"refuses-wrong-aud"})),
    "plain-text-errors": (PlainTextErrors, frozenset({"hygiene-problem-json"})),
    "answers-amounts": (AnswersAmounts, frozenset({"answer-predicates"})),
    "ignores-parameter-schemas": (
        IgnoresParameterSchemas,
        frozenset({"refuses-parameter-out-of-bounds", "refuses-undeclared-parameter"}),
    ),
}


@pytest.fixture
async def broken_provider(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners, request: pytest.FixtureRequest
) -> AsyncIterator[ConformanceTarget]:
    factory, _ = BROKEN[request.param]
    registry = publish_fast_registry(scheme)
    kit = factory(
        provider_id=devscheme.DWP,
        key=SigningKey.from_pem(scheme.key_path(devscheme.DWP).read_bytes()),
        registry=lambda: registry,
        lookup=reference_lookup(DWP_ATTRIBUTES, PopulationIndex(TEST_IDENTITIES.values())),
    )
    runner = await serve_on(create_provider_app(kit), listeners.providers[devscheme.DWP])
    try:
        yield target_from_scheme(
            scheme.root, endpoint=endpoint(scheme, devscheme.DWP), provider_id=devscheme.DWP
        )
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("broken_provider", sorted(BROKEN), indirect=True)
async def test_a_broken_provider_fails_exactly_the_checks_it_breaks(
    broken_provider: ConformanceTarget, request: pytest.FixtureRequest
) -> None:
    fault = request.node.callspec.params["broken_provider"]
    assert broken_provider.timeout_ms == FAST_MS
    report = await run_conformance(broken_provider)
    _, expected = BROKEN[fault]
    assert report.failed_ids == expected, report.render()
    assert not report.passed
    summary = report.render().splitlines()[-1]
    assert summary.endswith("NOT CONFORMANT")
    assert f"{len(CHECK_IDS) - len(expected)} passed, {len(expected)} failed" in summary
