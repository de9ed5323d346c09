"""The DWP CIS adapter as a provider of a running scheme: joined through the operator's tools,
served by ``axb provider serve``'s builder (``reference = "dwp-cis"``) in front of the CIS stub,
answering free school meals from 2026-09-01 through the broker, and passing conformance. No
identifier, token or response body reaches a log line."""

from __future__ import annotations

import secrets
from datetime import date

import pytest
import structlog

from broker.scheme import admin
from broker.scheme import dev as devscheme
from connectors.conformance import run_conformance, target_from_scheme
from connectors.dwp_cis import CIS_ATTRIBUTES, CIS_PREDICATES
from connectors.errors import ConfigError
from connectors.reference.dwp_cis_stub import CIS_STUB, create_cis_stub_app
from connectors.reference.population import subject_of
from connectors.reference.providers import build_reference_provider
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.servers import RunningBroker, serve_on
from trust.keys import SigningKey
from trust.registry import member_document

CIS = "dwp-cis"
CLIENT_ID = "axb-dev-dwp-cis"
CHECK = "free-school-meals-from-dwp-cis"


def scheme_lines(scheme: devscheme.DevScheme) -> list[str]:
    """The scheme, operator, anchors and registry lines every provider config of the folder has."""
    config = scheme.folder.provider_config(devscheme.DWP).read_text()
    keys = ("scheme", "operator", "anchors", "registry")
    return [line for line in config.splitlines() if line.startswith(keys)]


async def test_free_school_meals_through_the_dwp_cis_adapter_and_it_passes_conformance(
    scheme: devscheme.DevScheme, broker: RunningBroker, schools_client: EligibilityClient
) -> None:
    folder, root = scheme.folder, scheme.root
    secret = secrets.token_urlsafe(24)
    folder.secret("dwp-cis-client.secret").write_text(secret + "\n")
    stub_socket, provider_socket = devscheme.bind_loopback(), devscheme.bind_loopback()
    stub_port, provider_port = stub_socket.getsockname()[1], provider_socket.getsockname()[1]
    stub_app = create_cis_stub_app(CLIENT_ID, secret)
    stub_runner = await serve_on(stub_app, stub_socket)

    # 1. the provider: a key, a registration with its parameterised attribute, a config
    key = SigningKey.generate()
    folder.key(CIS).write_bytes(key.to_pem())
    endpoint = f"http://127.0.0.1:{provider_port}/v1/attributes"
    registration = member_document(
        member_id=CIS,
        name="DWP Citizen Information API (adapter)",
        roles=["attribute-provider"],
        keys=[key.verifying_key],
        provider=devscheme.provider_metadata(
            endpoint,
            CIS_ATTRIBUTES,
            required=("family_name", "date_of_birth", "nino"),
            optional=(),
            parameterised=CIS_PREDICATES,
        ),
    )
    folder.provider_config(CIS).write_text(
        "\n".join(
            [
                f'provider_id = "{CIS}"',
                'reference = "dwp-cis"',
                'host = "127.0.0.1"',
                f"port = {provider_port}",
                f'signing_key = "../keys/{CIS}.pem"',
                *scheme_lines(scheme),
                f'cis_url = "http://127.0.0.1:{stub_port}"',
                f'cis_client_id = "{CLIENT_ID}"',
                'cis_client_secret_file = "../secrets/dwp-cis-client.secret"',
                'cis_policy_id = "free-school-meals"',
                "registry_poll_s = 0.2",
            ]
        )
        + "\n"
    )

    # 2. the operator admits it and publishes a check answered by it from 2026-09-01
    source = admin.add_member(admin.load_source(root), registration)
    legacy = ("income-support", "jsa-income-based", "esa-income-related")
    rule = {"any": [{"attribute": f"{CIS}/{name}"} for name in (*legacy, "universal-credit")]}
    check = {
        "name": CHECK,
        "description": "Free school meals (England) from 2026-09-01, through DWP's CIS",
        "versions": [
            {
                "version": 1,
                "effective_from": "2026-09-01",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": rule,
            }
        ],
    }
    source = admin.add_check(source, check)
    for purpose in source["purposes"]:
        if purpose["id"] == "free-school-meals-application":
            purpose["checks"].append(CHECK)
    seq = admin.publish(root, source)
    await broker.wait_for_seq(seq)
    service = build_reference_provider(folder.provider_config(CIS))
    provider_runner = await serve_on(service.app, provider_socket)
    try:
        # 3. councils ask; the broker fans out to the adapter, the adapter to CIS
        expected = {
            "fsm-yes-uc-any-only-after-2026-09": "yes",
            "fsm-yes-income-support": "yes",
            "fsm-no": "no",
            "no-match": "no-match",
        }
        with structlog.testing.capture_logs() as events:
            answers = {
                who: (
                    await schools_client.check(
                        CHECK,
                        purpose="free-school-meals-application",
                        subject=subject_of(who),
                        as_of=date(2026, 11, 27),
                        assurance="P2",
                    )
                ).outcome
                for who in expected
            }
        assert answers == expected
        # CIS matches on a NINO fragment: the registry says so, and a query without one is
        # refused before any provider is asked
        with pytest.raises(CheckFailed) as refused:
            await schools_client.check(
                CHECK,
                purpose="free-school-meals-application",
                subject=subject_of("fsm-yes-asylum-support"),
                assurance="P2",
            )
        assert refused.value.problem["type"].endswith(":subject-fields-missing")
        calls = stub_app[CIS_STUB].calls
        assert calls["token"] == 1  # one token for every enquiry
        assert calls["match"] == 4
        logged = repr(events)
        for who in expected:
            for value in subject_of(who).values():
                assert value not in logged
        assert "Bearer" not in logged
        assert "takeHomePay" not in logged

        # 4. conformance: the checker plays the broker against the adapter
        target = target_from_scheme(root, endpoint=endpoint, provider_id=CIS)
        assert {p.attribute for p in target.predicates} == {"uc-take-home-pay-below"}
        report = await run_conformance(target)
        assert report.passed, report.render()
    finally:
        await provider_runner.cleanup()
        await stub_runner.cleanup()


@pytest.mark.parametrize("missing", ["cis_url", "cis_client_id", "cis_client_secret_file"])
def test_a_dwp_cis_provider_config_missing_a_key_is_refused(
    scheme: devscheme.DevScheme, missing: str
) -> None:
    folder = scheme.folder
    folder.secret("s.secret").write_text("a-secret\n")
    lines = {
        "provider_id": f'"{CIS}"',
        "reference": '"dwp-cis"',
        "signing_key": f'"../keys/{devscheme.DWP}.pem"',
        "cis_url": '"http://127.0.0.1:9"',
        "cis_client_id": '"x"',
        "cis_client_secret_file": '"../secrets/s.secret"',
        "cis_policy_id": '"p"',
    }
    del lines[missing]
    config = folder.provider_config(CIS)
    body = [f"{k} = {v}" for k, v in lines.items()]
    config.write_text("\n".join([*body, *scheme_lines(scheme)]) + "\n")
    with pytest.raises(ConfigError, match=missing):
        build_reference_provider(config)
