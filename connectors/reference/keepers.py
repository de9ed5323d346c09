"""Synthetic DVLA keeper register behind the reference ``dvla-keeper`` provider.

DVLA said in 2017 that a keeper yes/no answer by API was still to come; this register stands in
for it. Everything here is invented and deterministic. It maps a registration to the vehicle's
registered keeper (family name, date of birth, postcode) and, for generated vehicles, gives the
tax and MOT status the VES stub (:mod:`connectors.reference.dvla_stub`) answers for them.

Fixed keepers: some documented TEST IDENTITIES keep some of the VES test-environment
registrations, so the resident-parking-permit check (ALL of ``registered-keeper`` and
``vehicle-taxed``) runs end to end against the stub:

========  ===========================  ======================================================
VRN       keeper (test identity)       VES stub says
========  ===========================  ======================================================
AA19AAA   bb-yes-pip-moving            Taxed, MOT "No details held by DVLA"
ER19ERR   bb-yes-pip-moving            500
AA19DSL   fsm-yes-esa-ir               Taxed, MOT valid (keeper name has a hyphen)
AA19PPP   fsm-yes-esa-ir               Not Taxed for on Road Use
L2WPS     hmrc-wtc-run-on-yes          Untaxed (keeper name has an apostrophe)
ER19THR   hmrc-wtc-run-on-yes          429
AA19SRN   bb-no                        SORN
ER19MNT   bb-no                        503
AA19MOT   both-yes-pip-moving-esa      Taxed, MOT valid
AA19EEE   both-yes-pip-moving-esa      Taxed, MOT "No results returned"
========  ===========================  ======================================================

AA19AMP, ER19BAD and ER19NFD have no keeper record. Then ~2,000 generated keepers: adults of
the reference population (:func:`generate_population`, same seed) each keeping one vehicle with
a generated registration in the current format (memory tag, age identifier, three letters).

Matching for ``registered-keeper``: the registration must be on the register (otherwise
``no-match``); the answer is ``true`` iff its keeper's family name (folded as
:func:`normalise_family_name` does) and date of birth equal the subject's, else ``false``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final

from connectors.dvla_ves import VES_ATTRIBUTES, normalise_registration
from connectors.provider_kit import Lookup, LookupRequest
from connectors.reference.dvla_stub import VES_TEST_ERRORS, VES_TEST_STATUSES
from connectors.reference.population import (
    REFERENCE_DATE,
    TEST_IDENTITIES,
    Person,
    generate_population,
    normalise_family_name,
)

__all__ = [
    "KEEPER_ATTRIBUTES",
    "KEEPER_FIELDS",
    "NO_MATCH_REGISTRATION",
    "PARKING_TEST_CASES",
    "REGISTERED_KEEPER",
    "RESIDENT_PARKING_PERMIT",
    "TEST_KEEPERS",
    "VES_ATTRIBUTES",
    "VES_FIELDS",
    "Keeper",
    "KeptVehicle",
    "generate_keepers",
    "keeper_fleet",
    "keeper_lookup",
    "keeper_register",
]

REGISTERED_KEEPER: Final = "registered-keeper"
KEEPER_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        REGISTERED_KEEPER: (
            "The person is the registered keeper of the vehicle with this registration "
            "(DVLA keeper record: family name and date of birth)"
        )
    }
)
KEEPER_FIELDS: Final = ("vehicle_registration", "family_name", "date_of_birth")
"""The subject fields the keeper provider needs (all required)."""
VES_FIELDS: Final = ("vehicle_registration",)
"""The subject fields the VES provider needs (all required)."""

RESIDENT_PARKING_PERMIT: Final = "resident-parking-permit"

KEEPER_SEED: Final = 20261127
KEEPER_COUNT: Final = 2000


@dataclass(frozen=True, slots=True)
class Keeper:
    """A registered keeper. Only ``keeper_id`` shows in the repr: the rest is personal."""

    keeper_id: str
    family_name: str = field(repr=False)
    date_of_birth: date = field(repr=False)
    postcode: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeptVehicle:
    """A generated vehicle: its keeper and the status VES gives it."""

    registration: str = field(repr=False)
    keeper: Keeper
    tax_status: str
    mot_status: str


TEST_KEEPERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "AA19AAA": "bb-yes-pip-moving",
        "ER19ERR": "bb-yes-pip-moving",
        "AA19DSL": "fsm-yes-esa-ir",
        "AA19PPP": "fsm-yes-esa-ir",
        "L2WPS": "hmrc-wtc-run-on-yes",
        "ER19THR": "hmrc-wtc-run-on-yes",
        "AA19SRN": "bb-no",
        "ER19MNT": "bb-no",
        "AA19MOT": "both-yes-pip-moving-esa",
        "AA19EEE": "both-yes-pip-moving-esa",
    }
)
"""Registration -> the TEST_IDENTITIES label of its keeper."""

NO_MATCH_REGISTRATION: Final = "ER19NFD"
"""A registration no vehicle provider knows: no keeper record, and VES answers 404 Vehicle Not
Found, so both the keeper register and the VES adapter give ``no-match`` for it."""


def _keeper_of(person: Person) -> Keeper:
    return Keeper(person.person_id, person.family_name, person.date_of_birth, person.postcode)


# --- generated registrations ---------------------------------------------------------------

# Memory tags: a region letter, then any letter but I, Q, Z; the random part avoids I and Q.
_REGION_LETTERS: Final = "ABCDEFGHKLMNOPRSVWY"
_TAG_LETTERS: Final = "ABCDEFGHJKLMNOPRSTUVWXY"
_RANDOM_LETTERS: Final = "ABCDEFGHJKLMNOPRSTUVWXYZ"
_RESERVED: Final = frozenset(VES_TEST_STATUSES) | frozenset(VES_TEST_ERRORS)


def _age_identifier(first_registered: date) -> str:
    """The two digits for a first registration date: March-August ``yy``, September-February
    ``yy + 50`` (of the September's year)."""
    if first_registered.month >= 9:
        return f"{first_registered.year % 100 + 50:02d}"
    if first_registered.month <= 2:
        return f"{(first_registered.year - 1) % 100 + 50:02d}"
    return f"{first_registered.year % 100:02d}"


def _registration(rng: random.Random, first_registered: date) -> str:
    return (
        rng.choice(_REGION_LETTERS)
        + rng.choice(_TAG_LETTERS)
        + _age_identifier(first_registered)
        + "".join(rng.choice(_RANDOM_LETTERS) for _ in range(3))
    )


def _statuses(rng: random.Random, first_registered: date) -> tuple[str, str]:
    roll = rng.random()
    tax = (
        "Taxed"
        if roll < 0.86
        else "Untaxed"
        if roll < 0.90
        else "SORN"
        if roll < 0.98
        else "Not Taxed for on Road Use"
    )
    months_old = (REFERENCE_DATE.year - first_registered.year) * 12 + (
        REFERENCE_DATE.month - first_registered.month
    )
    if months_old < 36:  # first MOT not due yet
        return tax, "No details held by DVLA"
    roll = rng.random()
    mot = "Valid" if roll < 0.85 else "Not valid" if roll < 0.98 else "No results returned"
    return tax, mot


def _adult(person: Person) -> bool:
    born, on = person.date_of_birth, REFERENCE_DATE
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day)) >= 17


@functools.cache
def generate_keepers(count: int = KEEPER_COUNT, seed: int = KEEPER_SEED) -> tuple[KeptVehicle, ...]:
    """``count`` generated vehicles with their keepers, deterministic for a given seed."""
    people = generate_population(size=40 + count + count // 2)
    adults = [p for p in people if p.person_id.startswith("P") and _adult(p)]
    if len(adults) < count:
        raise ValueError("not enough generated adults for the keeper register")
    rng = random.Random(seed)
    used: set[str] = set(_RESERVED)
    vehicles = []
    for person in adults[:count]:
        earliest = max(person.date_of_birth.year + 17, 2002)
        first_registered = date(rng.randint(earliest, 2026), rng.randint(1, 12), 1)
        if first_registered > REFERENCE_DATE:
            first_registered = date(2026, rng.randint(3, 10), 1)
        registration = _registration(rng, first_registered)
        while registration in used:
            registration = _registration(rng, first_registered)
        used.add(registration)
        tax, mot = _statuses(rng, first_registered)
        vehicles.append(KeptVehicle(registration, _keeper_of(person), tax, mot))
    return tuple(vehicles)


@functools.cache
def keeper_register(count: int = KEEPER_COUNT, seed: int = KEEPER_SEED) -> Mapping[str, Keeper]:
    """Registration -> keeper: the fixed test keepers first, then the generated ones."""
    register = {vrn: _keeper_of(TEST_IDENTITIES[label]) for vrn, label in TEST_KEEPERS.items()}
    for vehicle in generate_keepers(count, seed):
        register[vehicle.registration] = vehicle.keeper
    return MappingProxyType(register)


@functools.cache
def keeper_fleet(
    count: int = KEEPER_COUNT, seed: int = KEEPER_SEED
) -> Mapping[str, tuple[str, str]]:
    """Registration -> (taxStatus, motStatus) of the generated vehicles, for the VES stub's
    ``fleet`` (the test registrations are the stub's own)."""
    return MappingProxyType(
        {v.registration: (v.tax_status, v.mot_status) for v in generate_keepers(count, seed)}
    )


def keeper_lookup(register: Mapping[str, Keeper] | None = None) -> Lookup:
    """A provider-kit lookup answering ``registered-keeper``. Unknown registration: ``None``
    (no-match); known, keeper differs: ``False``. Other attribute names raise ``KeyError``."""
    keepers = keeper_register() if register is None else register

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        for name in request.attributes:
            if name not in KEEPER_ATTRIBUTES:
                raise KeyError(name)
        fields = request.subject.fields
        keeper = keepers.get(normalise_registration(fields["vehicle_registration"]))
        if keeper is None:
            return None
        is_keeper = (
            normalise_family_name(fields["family_name"])
            == normalise_family_name(keeper.family_name)
            and date.fromisoformat(fields["date_of_birth"]) == keeper.date_of_birth
        )
        return {name: is_keeper for name in request.attributes}

    return lookup


# --- documented answers of the resident parking permit check --------------------------------


def _subject(label: str, registration: str) -> dict[str, str]:
    subject = TEST_IDENTITIES[label].matching_fields().as_subject()
    return {**subject, "vehicle_registration": registration}


PARKING_TEST_CASES: Final[Sequence[tuple[str, dict[str, str], str]]] = (
    ("yes-keeper-taxed", _subject("bb-yes-pip-moving", "AA19AAA"), "yes"),
    ("yes-keeper-taxed-hyphenated-name", _subject("fsm-yes-esa-ir", "AA19DSL"), "yes"),
    ("yes-keeper-taxed-mot-valid", _subject("both-yes-pip-moving-esa", "AA19MOT"), "yes"),
    ("yes-registration-with-space", _subject("both-yes-pip-moving-esa", "aa19 eee"), "yes"),
    ("no-keeper-untaxed", _subject("hmrc-wtc-run-on-yes", "L2WPS"), "no"),
    ("no-keeper-sorn", _subject("bb-no", "AA19SRN"), "no"),
    ("no-keeper-not-taxed-for-road-use", _subject("fsm-yes-esa-ir", "AA19PPP"), "no"),
    # same family name as AA19MOT's keeper, another date of birth
    ("no-not-the-keeper", _subject("bb-yes-wpms", "AA19MOT"), "no"),
    ("no-not-the-keeper-other-name", _subject("fsm-no", "AA19AAA"), "no"),
    ("no-match-unknown-registration", _subject("fsm-no", "ER19NFD"), "no-match"),
    ("no-match-invalid-registration", _subject("fsm-no", "ER19BAD"), "no-match"),
    ("no-match-no-keeper-record", _subject("bb-yes-pip-moving", "AA19AMP"), "no-match"),
    ("undetermined-ves-500", _subject("bb-yes-pip-moving", "ER19ERR"), "undetermined"),
    ("undetermined-ves-503", _subject("bb-no", "ER19MNT"), "undetermined"),
    # the stub throttles ER19THR on every call unless told otherwise, as DVLA's does
    ("undetermined-ves-429", _subject("hmrc-wtc-run-on-yes", "ER19THR"), "undetermined"),
)
"""(label, subject, expected outcome) of ``resident-parking-permit`` = ALL(registered-keeper,
vehicle-taxed) against the keeper register and the VES stub with its default configuration."""
