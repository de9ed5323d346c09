"""The spine end to end: a council asks, real providers answer, the broker signs a yes/no."""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

import pytest

from broker.scheme import dev as devscheme
from connectors.reference.attributes import EXPECTED_OUTCOMES
from connectors.reference.keepers import PARKING_TEST_CASES
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.cli import run_axb
from tests.support.servers import RunningBroker, RunningProvider

BB, FSM = devscheme.BLUE_BADGE_CHECK, devscheme.FSM_CHECK


@pytest.mark.parametrize("identity", sorted(EXPECTED_OUTCOMES))
async def test_every_test_identity_gets_its_documented_outcome(
    identity: str, blue_badge_client: EligibilityClient, schools_client: EligibilityClient
) -> None:
    expected = EXPECTED_OUTCOMES[identity]
    bb = await blue_badge_client.check(
        BB, purpose="blue-badge-application", subject=subject_of(identity), assurance="P2"
    )
    fsm = await schools_client.check(
        FSM, purpose="free-school-meals-application", subject=subject_of(identity), assurance="P2"
    )
    assert bb.outcome == expected[BB]
    assert fsm.outcome == expected[FSM]


async def test_free_school_meals_answers_by_the_rule_in_force_on_as_of(
    schools_client: EligibilityClient,
) -> None:
    subject = subject_of("fsm-yes-uc-any-only-after-2026-09")
    before = await schools_client.check(
        FSM,
        purpose="free-school-meals-application",
        subject=subject,
        as_of=date(2026, 8, 31),
        assurance="P2",
    )
    after = await schools_client.check(
        FSM,
        purpose="free-school-meals-application",
        subject=subject,
        as_of=date(2026, 9, 1),
        assurance="P2",
    )
    assert (before.outcome, before.check_version) == ("no", 1)
    assert (after.outcome, after.check_version) == ("yes", 2)


async def test_unknown_person_is_no_match(blue_badge_client: EligibilityClient) -> None:
    answer = await blue_badge_client.check(
        BB, purpose="blue-badge-application", subject=subject_of("no-match"), assurance="P2"
    )
    assert answer.outcome == "no-match"


async def test_provider_down_gives_undetermined_and_is_recorded(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    await providers[devscheme.DWP].stop()
    answer = await blue_badge_client.check(
        BB, purpose="blue-badge-application", subject=subject_of("bb-yes-dla"), assurance="P2"
    )
    assert answer.outcome == "undetermined"
    db = sqlite3.connect(broker.settings.consent_log_path)
    (outcome,) = db.execute(
        "SELECT outcome FROM records WHERE log_index = ?", (answer.log_index,)
    ).fetchone()
    assert outcome == "undetermined"


async def test_every_answer_has_its_consent_record_before_it_leaves(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    answers = [
        await blue_badge_client.check(
            BB, purpose="blue-badge-application", subject=subject_of(i), assurance="P2"
        )
        for i in ("bb-yes-dla", "bb-no", "no-match")
    ]
    db = sqlite3.connect(broker.settings.consent_log_path)
    rows = dict(db.execute("SELECT query_jti, outcome FROM records").fetchall())
    for answer in answers:
        assert rows[answer.query_jti] == answer.outcome
    assert [a.log_index for a in answers] == sorted(a.log_index for a in answers)


async def test_policy_refusal_is_recorded_and_carries_its_log_index(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    with pytest.raises(CheckFailed) as refused:
        await blue_badge_client.check(
            FSM,
            purpose="free-school-meals-application",
            subject=subject_of("fsm-no"),
            assurance="P2",
        )
    assert refused.value.status == 403
    assert refused.value.problem["type"] == "urn:ax-broker:problem:purpose-not-permitted"
    index = refused.value.problem["log_index"]
    db = sqlite3.connect(broker.settings.consent_log_path)
    (outcome,) = db.execute("SELECT outcome FROM records WHERE log_index = ?", (index,)).fetchone()
    assert outcome == "refused"


@pytest.mark.parametrize(
    ("label", "subject", "expected"), PARKING_TEST_CASES, ids=[c[0] for c in PARKING_TEST_CASES]
)
async def test_resident_parking_permit_through_the_broker(
    label: str,
    subject: dict[str, str],
    expected: str,
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
) -> None:
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_PARKING)
    ) as client:
        answer = await client.check(
            devscheme.PARKING_CHECK,
            purpose="resident-parking-permit-application",
            subject=subject,
            assurance="P2",
        )
    assert answer.outcome == expected, label


async def test_each_dvla_provider_sees_only_the_fields_it_declared(
    scheme: devscheme.DevScheme, broker: RunningBroker, providers: dict[str, RunningProvider]
) -> None:
    seen: dict[str, set[str]] = {}
    for provider_id in (devscheme.DVLA_KEEPER, devscheme.DVLA_VES):
        kit = providers[provider_id].service.kit
        original = kit._lookup

        async def spy(
            request: Any, original: Any = original, provider_id: str = provider_id
        ) -> Any:
            seen[provider_id] = set(request.subject.fields)
            return await original(request)

        kit._lookup = spy
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_PARKING)
    ) as client:
        subject = {**subject_of("bb-yes-pip-moving"), "vehicle_registration": "AA19AAA"}
        answer = await client.check(
            devscheme.PARKING_CHECK,
            purpose="resident-parking-permit-application",
            subject=subject,
            assurance="P2",
        )
    assert answer.outcome == "yes"
    assert seen[devscheme.DVLA_VES] == {"vehicle_registration"}
    assert seen[devscheme.DVLA_KEEPER] == {"family_name", "date_of_birth", "vehicle_registration"}


async def test_no_vehicle_registration_or_identifier_reaches_any_log(
    scheme: devscheme.DevScheme, broker: RunningBroker, capfd: pytest.CaptureFixture[str]
) -> None:
    import structlog

    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_PARKING)
    ) as client:
        with structlog.testing.capture_logs() as events:
            for _, subject, expected in PARKING_TEST_CASES:
                answer = await client.check(
                    devscheme.PARKING_CHECK,
                    purpose="resident-parking-permit-application",
                    subject=subject,
                    assurance="P2",
                )
                assert answer.outcome == expected
    captured = repr(events) + capfd.readouterr().err
    assert len([e for e in events if e.get("event") == "check"]) == len(PARKING_TEST_CASES)
    for _, subject, _ in PARKING_TEST_CASES:
        registration = subject["vehicle_registration"]
        for form in {registration, registration.replace(" ", "").upper()}:
            assert form not in captured
        assert subject["family_name"] not in captured
        assert subject["date_of_birth"] not in captured


async def test_axb_check_on_the_command_line_prints_a_verified_answer(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    import json

    status, out, err = await run_axb(
        "check",
        "--config",
        str(scheme.council_config(devscheme.COUNCIL_PARKING)),
        devscheme.PARKING_CHECK,
        "--purpose",
        "resident-parking-permit-application",
        "--family-name",
        "Sampleton",
        "--date-of-birth",
        "1961-07-02",
        "--vehicle-registration",
        "AA19AAA",
        "--assurance",
        "P2",
    )
    assert status == 0, err
    printed = json.loads(out)
    assert printed["outcome"] == "yes"
    assert printed["verified"] is True
