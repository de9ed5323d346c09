"""The DWP CIS adapter as a provider of a running scheme: joined through the operator's tools,
served by ``axb provider serve``'s builder (``reference = "dwp-cis"``) in front of the CIS stub,
answering free school meals from 2026-09-01 through the broker, and passing conformance. No
identifier, token or response body reaches a log line."""

from __future__ import annotations

from datetime import date

import pytest
import structlog

from broker.scheme import dev as devscheme
from broker.scheme.dwp_cis import CIS_FSM_CHECK, DWP_CIS, join_dwp_cis, scheme_lines
from connectors.conformance import run_conformance, target_from_scheme
from connectors.errors import ConfigError
from connectors.reference.dwp_cis_stub import CIS_STUB
from connectors.reference.population import subject_of
from connectors.reference.providers import build_reference_provider, build_stub
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.servers import RunningBroker, serve_on

CIS = DWP_CIS
CHECK = CIS_FSM_CHECK


async def test_free_school_meals_through_the_dwp_cis_adapter_and_it_passes_conformance(
    scheme: devscheme.DevScheme, broker: RunningBroker, schools_client: EligibilityClient
) -> None:
    folder, root = scheme.folder, scheme.root
    stub_socket, provider_socket = devscheme.bind_loopback(), devscheme.bind_loopback()
    stub_port, provider_port = stub_socket.getsockname()[1], provider_socket.getsockname()[1]

    # 1-2. the provider's key, registration and config, the stub's config; the operator admits
    # it and publishes a check answered by it from 2026-09-01
    joined = join_dwp_cis(scheme, stub_port=stub_port, provider_port=provider_port)
    endpoint = joined.endpoint
    stub_app, _, _ = build_stub(joined.stub_config)
    stub_runner = await serve_on(stub_app, stub_socket)
    await broker.wait_for_seq(joined.seq)
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
