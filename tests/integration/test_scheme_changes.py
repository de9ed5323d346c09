"""Joining and changing the scheme while brokers run: a provider from nothing to live checks,
and a suspension plus a key rotation under load that fail no check but the suspended
member's."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from broker.app_keys import REGISTRY
from broker.scheme import dev as devscheme
from connectors.config import scheme_files
from connectors.provider_kit import LookupRequest, ProviderKit, create_provider_app
from connectors.reference.population import subject_of
from connectors.registry_source import RegistrySource
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.servers import RunningBroker, StartBroker, serve_on, start_app
from trust.keys import SigningKey


def axb(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


async def wait_for_seq(broker: RunningBroker, seq: int) -> None:
    for _ in range(100):
        if broker.app[REGISTRY].snapshot.seq >= seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"broker never reached registry seq {seq}")


@pytest.fixture
def new_provider_socket() -> Iterator[socket.socket]:
    """The new provider's socket, bound before its registration names the port."""
    with devscheme.bind_loopback() as sock:
        yield sock


async def test_a_new_provider_goes_from_nothing_to_answering_live_checks(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    new_provider_socket: socket.socket,
    tmp_path: Path,
) -> None:
    root = scheme.root
    provider_id = "council-revenues"
    port = new_provider_socket.getsockname()[1]
    # 1. The provider makes its keys and its registration.
    axb("provider", "keygen", "--out", str(tmp_path / "keys"), "--id", provider_id)
    (tmp_path / "attributes.toml").write_text(
        '[[attribute]]\nname = "single-person-discount"\n'
        'description = "Council tax single person discount in payment"\n'
        'required = ["family_name", "date_of_birth", "postcode"]\n'
    )
    axb(
        "provider",
        "registration",
        "--id",
        provider_id,
        "--name",
        "Revenues (test council)",
        "--endpoint",
        f"http://127.0.0.1:{port}/v1/attributes",
        "--public-key",
        str(tmp_path / "keys" / f"{provider_id}.jwk.json"),
        "--attributes",
        str(tmp_path / "attributes.toml"),
        "--timeout-ms",
        "1000",
        "--out",
        str(tmp_path / "registration.json"),
    )
    # 2. The operator reviews, admits, adds a purpose and a check, permits a council, publishes.
    review = axb("scheme", "review", str(tmp_path / "registration.json"))
    assert "single-person-discount" in review.stdout
    axb("scheme", "add-member", "--scheme", str(root), str(tmp_path / "registration.json"))
    (tmp_path / "check.json").write_text(
        json.dumps(
            {
                "name": "single-person-discount",
                "description": "Is the discount in payment?",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2020-01-01",
                        "effective_to": None,
                        "rule": {"attribute": f"{provider_id}/single-person-discount"},
                    }
                ],
            }
        )
    )
    (tmp_path / "purpose.json").write_text(
        json.dumps(
            {
                "id": "discount-review",
                "description": "Reviewing discounts",
                "checks": ["single-person-discount"],
                "lawful_bases": ["public-task"],
            }
        )
    )
    axb("scheme", "add-check", "--scheme", str(root), str(tmp_path / "check.json"))
    axb("scheme", "add-purpose", "--scheme", str(root), str(tmp_path / "purpose.json"))
    axb("scheme", "permit", "--scheme", str(root), devscheme.COUNCIL_BLUE_BADGE, "discount-review")
    published = axb("scheme", "publish", "--scheme", str(root))
    assert "seq 2" in published.stdout
    # 3. The provider runs the kit around its own lookup.
    registry = RegistrySource(
        scheme_files(
            root,
            {
                "scheme": devscheme.SCHEME,
                "operator": devscheme.OPERATOR,
                "anchors": [f"anchors/{devscheme.OPERATOR}-1.jwk.json"],
                "registry": "registry.jwt",
            },
        )
    )

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        if request.subject.family_name != "Testwell":
            return None
        return {"single-person-discount": True}

    kit = ProviderKit(
        provider_id=provider_id,
        key=SigningKey.from_pem((tmp_path / "keys" / f"{provider_id}.pem").read_bytes()),
        registry=registry.current,
        lookup=lookup,
    )
    runner = await serve_on(create_provider_app(kit), new_provider_socket)
    try:
        # 4. The running broker picks the registry up without a restart.
        await wait_for_seq(broker, 2)
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client:
            subject = subject_of("bb-yes-dla")
            answer = await client.check(
                "single-person-discount", purpose="discount-review", subject=subject
            )
            assert answer.outcome == "yes"
            other = await client.check(
                "single-person-discount",
                purpose="discount-review",
                subject=subject_of("bb-no"),
            )
            assert other.outcome == "no-match"
        assert kit.answered == 2
    finally:
        await runner.cleanup()


def test_a_registration_with_a_private_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    key = SigningKey.generate()
    jwk = {**dict(key.verifying_key.jwk), "d": "AAAA"}
    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "id": "x",
                "name": "x",
                "roles": ["auditor"],
                "status": "active",
                "keys": [{"jwk": jwk}],
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "broker.cli", "scheme", "review", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "private key material" in result.stderr


async def test_suspension_and_key_rotation_under_load_fail_only_the_suspended_member(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: object
) -> None:
    from broker.scheme import admin as scheme_admin

    broker: RunningBroker = await start_broker(rate_limit_per_second=100_000)
    root = scheme.root
    rotating = devscheme.COUNCIL_SCHOOLS
    suspended = devscheme.COUNCIL_BLUE_BADGE
    old_key = SigningKey.from_pem(scheme.key_path(rotating).read_bytes())
    new_key = SigningKey.generate()
    current = {"key": old_key}
    results: dict[str, list[str]] = {rotating: [], suspended: []}
    stop = asyncio.Event()

    async def load(member: str, check: str, purpose: str, identity: str) -> None:
        async with EligibilityClient.from_config(scheme.council_config(member)) as base:
            while not stop.is_set():
                key = current["key"] if member == rotating else base._key
                client = EligibilityClient(
                    member_id=member,
                    key=key,
                    broker_url=broker.url,
                    broker_id=devscheme.BROKER,
                    session=base.session,
                )
                try:
                    answer = await client.check(
                        check, purpose=purpose, subject=subject_of(identity), assurance="P2"
                    )
                    results[member].append(answer.outcome)
                except CheckFailed as failed:
                    results[member].append(str(failed.problem["type"]).rsplit(":", 1)[1])

    tasks = [
        asyncio.create_task(
            load(
                rotating,
                devscheme.FSM_CHECK,
                "free-school-meals-application",
                "fsm-yes-income-support",
            )
        ),
        asyncio.create_task(
            load(suspended, devscheme.BLUE_BADGE_CHECK, "blue-badge-application", "bb-yes-dla")
        ),
    ]
    await asyncio.sleep(0.5)
    # Rotation, step 1: the new key is published beside the old one (overlap window).
    source = scheme_admin.add_key(
        scheme_admin.load_source(root), rotating, dict(new_key.verifying_key.jwk)
    )
    scheme_admin.publish(root, source)
    await wait_for_seq(broker, 2)
    await asyncio.sleep(0.3)
    current["key"] = new_key  # the council switches to the new key
    await asyncio.sleep(0.3)
    # Rotation, step 2, and the suspension, in one publication.
    source = scheme_admin.retire_key(scheme_admin.load_source(root), rotating, old_key.kid)
    source = scheme_admin.set_status(source, suspended, "suspended")
    scheme_admin.publish(root, source)
    await wait_for_seq(broker, 3)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    assert len(results[rotating]) > 20
    assert set(results[rotating]) == {"yes"}, "the rotating council never failed a check"
    outcomes = results[suspended]
    assert outcomes[0] == "yes"
    assert outcomes[-1] == "member-suspended"
    first_refusal = outcomes.index("member-suspended")
    assert set(outcomes[:first_refusal]) == {"yes"}
    assert set(outcomes[first_refusal:]) == {"member-suspended"}, "suspension holds once seen"


@pytest.mark.parametrize("field", ["not_after"])
def test_a_retired_key_is_refused_after_its_window(field: str) -> None:
    from trust import jws
    from trust.keys import SigningKey as Key

    key = Key.generate()
    trusted = jws.TrustedKey("council", key.verifying_key, not_after=1000)
    assert trusted.valid_at(1000)
    assert not trusted.valid_at(1001)


async def test_brokers_converge_on_a_new_registry_by_file_and_by_url(
    scheme: devscheme.DevScheme, broker: RunningBroker, start_broker: StartBroker, tmp_path: Path
) -> None:
    import shutil
    import time as clock

    # A second broker keeps its own copy of the registry file and polls the first one's URL.
    copy = tmp_path / "registry-copy.jwt"
    shutil.copy(scheme.registry_path, copy)
    second: RunningBroker = await start_broker(
        port=0,
        registry=str(copy),
        registry_url=f"{broker.url}/v1/registry",
        consent_log=str(tmp_path / "second.sqlite3"),
    )
    assert second.app[REGISTRY].snapshot.seq == 1
    published_at = clock.monotonic()
    devscheme.publish_registry(scheme, seq=2, suspended=[devscheme.COUNCIL_BLUE_BADGE])
    await wait_for_seq(broker, 2)
    await wait_for_seq(second, 2)
    converged = clock.monotonic() - published_at
    poll = broker.settings.registry_poll_s
    assert converged < 2 * poll + 1.0, f"took {converged:.2f}s; bound is two polls plus a fetch"
    assert copy.read_text() != scheme.registry_path.read_text(), "the second learnt it by URL"


async def test_a_check_in_flight_finishes_on_the_registry_it_started_with(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, Any],
    blue_badge_client: EligibilityClient,
) -> None:
    from aiohttp import web

    real = providers[devscheme.DWP]
    await real.stop()
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        body = await request.read()
        arrived.set()
        await asyncio.sleep(0.8)  # the registry changes while this check is in flight
        return web.Response(
            text=await real.service.kit.answer(body), content_type="application/jwt"
        )

    app = web.Application()
    app.router.add_post("/v1/attributes", slow)
    runner = await start_app(app, real.service.port)  # the port the real one released
    try:
        in_flight = asyncio.create_task(
            blue_badge_client.check(
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=subject_of("bb-yes-dla"),
                assurance="P2",
            )
        )
        await arrived.wait()
        devscheme.publish_registry(scheme, seq=2, suspended=[devscheme.COUNCIL_BLUE_BADGE])
        assert broker.app[REGISTRY].reload()
        answer = await in_flight
        assert answer.outcome == "yes"  # decided, fanned out and answered on seq 1
        with pytest.raises(CheckFailed) as refused:
            await blue_badge_client.check(
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=subject_of("bb-yes-dla"),
                assurance="P2",
            )
        assert refused.value.problem["type"] == "urn:ax-broker:problem:member-suspended"
    finally:
        await runner.cleanup()
