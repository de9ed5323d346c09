"""The synthetic DVLA keeper register, its ``registered-keeper`` lookup and the parking cases."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.scheme import dev as devscheme
from connectors.dvla_ves import MOT_STATUSES, TAX_STATUSES
from connectors.provider_kit import LookupRequest
from connectors.reference.dvla_stub import VES_TEST_ERRORS, VES_TEST_STATUSES
from connectors.reference.keepers import (
    KEEPER_ATTRIBUTES,
    PARKING_TEST_CASES,
    TEST_KEEPERS,
    VES_ATTRIBUTES,
    Keeper,
    generate_keepers,
    keeper_fleet,
    keeper_lookup,
    keeper_register,
)
from connectors.reference.population import REFERENCE_DATE, TEST_IDENTITIES
from connectors.reference.providers import build_reference_provider
from trust.messages import OUTCOMES, parse_subject

CURRENT_FORMAT = re.compile(r"[A-HK-PR-WY][A-HJ-PR-Y](0[2-9]|[1-6][0-9]|7[0-6])[A-HJ-PR-Z]{3}")
TEST_REGISTRATIONS = frozenset(VES_TEST_STATUSES) | frozenset(VES_TEST_ERRORS)


@pytest.fixture(autouse=True)
def nothing_personal_in_logs(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        yield
    out, err = capfd.readouterr()
    text = "\n".join([repr(events), out, err, caplog.text]).upper()
    squeezed = "".join(text.split())
    for registration in [*TEST_REGISTRATIONS, *list(keeper_fleet())[:200]]:
        assert registration not in squeezed
    for person in TEST_IDENTITIES.values():
        assert person.family_name.upper() not in text
        assert person.date_of_birth.isoformat() not in text


def request(subject: dict[str, str], *attributes: str) -> LookupRequest:
    parsed = parse_subject(subject, required=("vehicle_registration",))
    return LookupRequest(attributes or ("registered-keeper",), parsed, REFERENCE_DATE, "parking")


def subject_of(label: str, registration: str) -> dict[str, str]:
    person = TEST_IDENTITIES[label]
    return {
        "vehicle_registration": registration,
        "family_name": person.family_name,
        "date_of_birth": person.date_of_birth.isoformat(),
    }


# --- the register ----------------------------------------------------------------------------


def test_register_size_and_format() -> None:
    register = keeper_register()
    generated = generate_keepers()
    assert len(generated) == 2000
    assert len(register) == 2000 + len(TEST_KEEPERS)
    for vehicle in generated:
        assert CURRENT_FORMAT.fullmatch(vehicle.registration), "not a current-format VRN"
        assert vehicle.registration not in TEST_REGISTRATIONS
        assert vehicle.keeper.keeper_id.startswith("P")
        assert vehicle.tax_status in TAX_STATUSES
        assert vehicle.mot_status in MOT_STATUSES
    assert len({v.registration for v in generated}) == len(generated)
    assert set(keeper_fleet()) == {v.registration for v in generated}
    taxes = {v.tax_status for v in generated}
    mots = {v.mot_status for v in generated}
    assert taxes == set(TAX_STATUSES)
    assert mots == set(MOT_STATUSES)


def test_register_is_deterministic() -> None:
    uncached = generate_keepers.__wrapped__
    assert uncached(300, 7) == uncached(300, 7)
    assert uncached(300, 7) != uncached(300, 8)
    assert generate_keepers() == uncached()


def test_generated_keepers_are_adults_of_the_population() -> None:
    for vehicle in generate_keepers():
        born = vehicle.keeper.date_of_birth
        assert born + timedelta(days=17 * 365) < REFERENCE_DATE


def test_test_keepers_are_documented_identities() -> None:
    register = keeper_register()
    assert set(TEST_KEEPERS) <= TEST_REGISTRATIONS
    assert 4 <= len(set(TEST_KEEPERS.values())) <= 6
    for registration, label in TEST_KEEPERS.items():
        person = TEST_IDENTITIES[label]
        keeper = register[registration]
        assert keeper == Keeper(
            person.person_id, person.family_name, person.date_of_birth, person.postcode
        )
    for registration in ("AA19AMP", "ER19BAD", "ER19NFD"):
        assert registration not in register


def test_keeper_repr_hides_personal_data() -> None:
    keeper = keeper_register()["AA19AAA"]
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    assert repr(keeper) == f"Keeper(keeper_id='{person.person_id}')"
    vehicle = generate_keepers()[0]
    assert vehicle.registration not in repr(vehicle)


def test_exports() -> None:
    assert set(KEEPER_ATTRIBUTES) == {"registered-keeper"}
    assert set(VES_ATTRIBUTES) == {"vehicle-taxed", "vehicle-mot-valid"}
    assert all(description for description in [*KEEPER_ATTRIBUTES.values()])


# --- the lookup ------------------------------------------------------------------------------


@pytest.mark.parametrize(("registration", "label"), TEST_KEEPERS.items())
async def test_every_test_keeper_is_the_keeper(registration: str, label: str) -> None:
    lookup = keeper_lookup()
    assert await lookup(request(subject_of(label, registration))) == {"registered-keeper": True}


@pytest.mark.parametrize(
    ("registration", "family_name"),
    [
        ("L2WPS", "ofakery"),  # O'Fakery: apostrophe and case
        ("L2WPS", "O\u2019FAKERY"),
        ("AA19DSL", "Stubbington Test"),  # Stubbington-Test: hyphen
        ("AA19DSL", "  stubbington\u2013test "),
    ],
)
async def test_family_name_is_folded(registration: str, family_name: str) -> None:
    label = TEST_KEEPERS[registration]
    subject = {**subject_of(label, registration), "family_name": family_name}
    assert await keeper_lookup()(request(subject)) == {"registered-keeper": True}


async def test_registration_is_normalised() -> None:
    subject = subject_of("bb-yes-pip-moving", "aa19 aaa")
    assert await keeper_lookup()(request(subject)) == {"registered-keeper": True}


async def test_someone_else_is_not_the_keeper() -> None:
    lookup = keeper_lookup()
    # same family name as AA19MOT's keeper, another date of birth
    assert await lookup(request(subject_of("bb-yes-wpms", "AA19MOT"))) == {
        "registered-keeper": False
    }
    keeper = TEST_IDENTITIES["both-yes-pip-moving-esa"]
    wrong_day = subject_of("both-yes-pip-moving-esa", "AA19MOT")
    wrong_day["date_of_birth"] = (keeper.date_of_birth + timedelta(days=1)).isoformat()
    assert await lookup(request(wrong_day)) == {"registered-keeper": False}
    wrong_name = {**subject_of("both-yes-pip-moving-esa", "AA19MOT"), "family_name": "Dummet"}
    assert await lookup(request(wrong_name)) == {"registered-keeper": False}


@pytest.mark.parametrize("registration", ["AA19AMP", "ER19NFD", "ER19BAD", "ZZ99ZZZ"])
async def test_unknown_registration_is_no_match(registration: str) -> None:
    subject = subject_of("bb-yes-pip-moving", registration)
    assert await keeper_lookup()(request(subject)) is None


async def test_generated_keepers_match() -> None:
    lookup = keeper_lookup()
    for vehicle in generate_keepers()[::97]:
        subject = {
            "vehicle_registration": vehicle.registration,
            "family_name": vehicle.keeper.family_name,
            "date_of_birth": vehicle.keeper.date_of_birth.isoformat(),
        }
        assert await lookup(request(subject)) == {"registered-keeper": True}


async def test_unknown_attribute_raises() -> None:
    with pytest.raises(KeyError):
        await keeper_lookup()(request(subject_of("bb-no", "AA19SRN"), "vehicle-taxed"))


async def test_a_given_register_is_used() -> None:
    register = {"AB12CDE": Keeper("K1", "Testone", date(1980, 1, 1), "CV1 1AA")}
    lookup = keeper_lookup(register)
    subject = {"vehicle_registration": "ab12cde", "family_name": "TESTONE"}
    subject["date_of_birth"] = "1980-01-01"
    assert await lookup(request(subject)) == {"registered-keeper": True}
    assert await lookup(request(subject_of("bb-yes-pip-moving", "AA19AAA"))) is None


# --- the documented parking cases ------------------------------------------------------------


def test_parking_cases_cover_every_outcome() -> None:
    labels = [label for label, _, _ in PARKING_TEST_CASES]
    assert len(labels) == len(set(labels))
    assert {expected for _, _, expected in PARKING_TEST_CASES} == set(OUTCOMES)
    registrations = {subject["vehicle_registration"] for _, subject, _ in PARKING_TEST_CASES}
    assert {"ER19ERR", "ER19MNT", "ER19THR", "ER19NFD"} <= registrations
    for _, subject, _ in PARKING_TEST_CASES:
        parsed: Any = parse_subject(subject)
        assert set(parsed.fields) >= {"vehicle_registration", "family_name", "date_of_birth"}


# --- the dvla-keeper provider service ---------------------------------------------------------


async def test_dvla_keeper_provider_builds(scheme: devscheme.DevScheme, tmp_path: Path) -> None:
    template = scheme.provider_config(devscheme.DWP).read_text()
    text = template.replace('reference = "dwp"', 'reference = "dvla-keeper"')
    config = scheme.provider_config(devscheme.DWP).with_name("dvla-keeper.toml")
    config.write_text(text)
    service = build_reference_provider(config)
    found = await service.kit._lookup(request(subject_of("bb-no", "AA19SRN")))
    assert found == {"registered-keeper": True}
