"""Synthetic population behind the reference DWP and HMRC providers.

Everything here is invented. The population starts with hand-written TEST IDENTITIES (each
with a documented answer, see ``docs/test-identities.md``), then a pair of twins who can only
be told apart by NINO, then generated people. Generation is deterministic for a given seed.

Matching follows the DWP style: exact on family name and date of birth, narrowed by NINO
when one is given; no one found or more than one found both mean no match, never a guess.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, TypeVar

__all__ = [
    "AMBIGUOUS_IDENTITY",
    "NO_MATCH_IDENTITY",
    "PIP_JOURNEYS_POINTS",
    "REFERENCE_DATE",
    "TAX_CREDITS_CLOSED",
    "TEST_IDENTITIES",
    "TWINS",
    "Award",
    "Benefit",
    "DlaMobilityRate",
    "MatchingFields",
    "Person",
    "PipJourneysDescriptor",
    "PopulationIndex",
    "generate_population",
    "normalise_family_name",
    "normalise_nino",
]

REFERENCE_DATE: Final = date(2026, 11, 27)
"""The date on which the test identities give their documented answers."""

TAX_CREDITS_CLOSED: Final = date(2025, 4, 5)
"""Tax credits ended on this date; generated tax-credit awards never run past it."""

DlaMobilityRate = Literal["higher", "lower"]
PipJourneysDescriptor = Literal["A", "B", "C", "D", "E", "F"]

PIP_JOURNEYS_POINTS: Final[Mapping[PipJourneysDescriptor, int]] = MappingProxyType(
    {"A": 0, "B": 4, "C": 8, "D": 10, "E": 10, "F": 12}
)
"""Points for each descriptor of the PIP activity "planning and following journeys".

D and E both score 10; only E (overwhelming psychological distress) gives a Blue Badge
without further assessment in England, which is why awards record the descriptor.
"""


class Benefit(StrEnum):
    """Codes used in ``Award.benefit``."""

    DLA = "DLA"
    PIP = "PIP"
    WAR_PENSIONERS_MOBILITY_SUPPLEMENT = "WPMS"
    AFCS = "AFCS"
    INCOME_SUPPORT = "IS"
    JSA_INCOME_BASED = "JSA-IB"
    ESA_INCOME_RELATED = "ESA-IR"
    ASYLUM_SUPPORT_PART_VI = "ASYLUM-PART-VI"
    PENSION_CREDIT_GUARANTEE = "PC-GUARANTEE"
    UNIVERSAL_CREDIT = "UC"
    CHILD_TAX_CREDIT = "CTC"
    WTC_RUN_ON = "WTC-RUN-ON"


@dataclass(frozen=True, slots=True)
class Award:
    """One benefit award, in force from ``start`` to ``end`` inclusive (open if ``end`` is None).

    Detail fields apply to particular benefits and are None otherwise; money is in whole
    pounds a year.
    """

    benefit: str
    start: date
    end: date | None = None
    dla_mobility_rate: DlaMobilityRate | None = None
    pip_moving_points: int | None = None
    pip_journeys_descriptor: PipJourneysDescriptor | None = None
    annual_net_earnings: int | None = None
    annual_gross_income: int | None = None
    with_wtc: bool | None = None
    afcs_tariff: int | None = None
    walking_disability_certified: bool | None = None

    def __post_init__(self) -> None:
        if self.end is not None and self.end < self.start:
            raise ValueError("award ends before it starts")

    def active_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)

    @property
    def pip_journeys_points(self) -> int | None:
        if self.pip_journeys_descriptor is None:
            return None
        return PIP_JOURNEYS_POINTS[self.pip_journeys_descriptor]


@dataclass(frozen=True, slots=True)
class MatchingFields:
    """The matching set a relying party would send for a subject. Its repr shows nothing."""

    family_name: str = field(repr=False)
    given_names: str = field(repr=False)
    date_of_birth: date = field(repr=False)
    nino: str | None = field(repr=False)
    postcode: str = field(repr=False)

    def as_subject(self) -> dict[str, str]:
        """The query ``subject`` a council would send for this person."""
        subject = {
            "family_name": self.family_name,
            "given_names": self.given_names,
            "date_of_birth": self.date_of_birth.isoformat(),
            "postcode": self.postcode,
        }
        if self.nino:
            subject["nino"] = self.nino
        return subject


@dataclass(frozen=True, slots=True)
class Person:
    """A provider's record of one person.

    Only ``person_id`` appears in the repr: names, date of birth, postcode, NINO and the
    health and benefit details are personal data and must never reach a log.
    """

    person_id: str
    family_name: str = field(repr=False)
    given_names: str = field(repr=False)
    date_of_birth: date = field(repr=False)
    postcode: str = field(repr=False)
    nino: str | None = field(repr=False)
    registered_blind: bool = field(default=False, repr=False)
    awards: tuple[Award, ...] = field(default=(), repr=False)

    def matching_fields(self) -> MatchingFields:
        return MatchingFields(
            family_name=self.family_name,
            given_names=self.given_names,
            date_of_birth=self.date_of_birth,
            nino=self.nino,
            postcode=self.postcode,
        )


# --- matching ------------------------------------------------------------------------------

_APOSTROPHES: Final = "'\u2018\u2019\u02bc\u0060\u00b4"
_HYPHENS: Final = "-\u2010\u2011\u2012\u2013\u2014\u2212"
_NAME_TABLE: Final = str.maketrans(
    {**dict.fromkeys(_APOSTROPHES, ""), **dict.fromkeys(_HYPHENS, " ")}
)


def normalise_family_name(name: str) -> str:
    """Fold a family name to its matching key.

    Case-insensitive; accents dropped; apostrophes removed (O'Brien = OBrien); hyphens and
    runs of whitespace become one space (Lloyd-Davies = Lloyd Davies); ends trimmed.
    """
    decomposed = unicodedata.normalize("NFKD", name.translate(_NAME_TABLE))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def normalise_nino(nino: str) -> str:
    """Upper-case a NINO and drop all whitespace (``ab 12 34 56 c`` = ``AB123456C``)."""
    return "".join(nino.split()).upper()


class PopulationIndex:
    """DWP-style matcher over a population, one dict lookup per query."""

    __slots__ = ("_by_key", "_size")

    def __init__(self, people: Iterable[Person]) -> None:
        grouped: dict[tuple[str, date], list[tuple[str | None, Person]]] = {}
        seen: set[str] = set()
        for person in people:
            if person.person_id in seen:
                raise ValueError(f"duplicate person_id {person.person_id!r}")
            seen.add(person.person_id)
            key = (normalise_family_name(person.family_name), person.date_of_birth)
            nino = None if person.nino is None else normalise_nino(person.nino)
            grouped.setdefault(key, []).append((nino, person))
        self._by_key: dict[tuple[str, date], tuple[tuple[str | None, Person], ...]] = {
            key: tuple(entries) for key, entries in grouped.items()
        }
        self._size = len(seen)

    def __len__(self) -> int:
        return self._size

    def match(
        self, family_name: str, date_of_birth: date, nino: str | None = None
    ) -> Person | None:
        """The one person with this family name and date of birth (and NINO, if given).

        Returns None when nobody matches and also when more than one person does. A NINO
        that is given must equal the person's; a person with no NINO never matches one.
        """
        candidates = self._by_key.get((normalise_family_name(family_name), date_of_birth), ())
        if nino is not None:
            wanted = normalise_nino(nino)
            candidates = tuple(entry for entry in candidates if entry[0] == wanted)
        if len(candidates) != 1:
            return None
        return candidates[0][1]


# --- test identities -----------------------------------------------------------------------


def _person(
    person_id: str,
    family_name: str,
    given_names: str,
    date_of_birth: date,
    nino: str | None,
    postcode: str,
    *awards: Award,
    registered_blind: bool = False,
) -> Person:
    return Person(
        person_id=person_id,
        family_name=family_name,
        given_names=given_names,
        date_of_birth=date_of_birth,
        postcode=postcode,
        nino=nino,
        registered_blind=registered_blind,
        awards=awards,
    )


_B = Benefit
_D = date

# Every test NINO starts "ZX"; generated people never use that prefix.
TEST_IDENTITIES: Final[Mapping[str, Person]] = MappingProxyType(
    {
        # Blue Badge: yes
        "bb-yes-dla": _person(
            "T01", "Testwell", "Poppy Jane", _D(2016, 3, 14), None, "CV34 4RL",
            Award(_B.DLA, _D(2020, 6, 1), _D(2027, 5, 31), dla_mobility_rate="higher"),
        ),
        "bb-yes-pip-moving": _person(
            "T02", "Sampleton", "Arthur James", _D(1961, 7, 2), "ZX100001A", "B15 2TT",
            Award(_B.PIP, _D(2019, 9, 16), _D(2028, 9, 15),
                  pip_moving_points=10, pip_journeys_descriptor="B"),
        ),
        "bb-yes-pip-journeys": _person(
            "T03", "Fixturely", "Megan", _D(1994, 11, 30), "ZX100002B", "LS6 3HN",
            Award(_B.PIP, _D(2022, 1, 10), None,
                  pip_moving_points=4, pip_journeys_descriptor="E"),
        ),
        "bb-yes-registered-blind": _person(
            "T04", "Mockford", "Harold", _D(1941, 5, 19), "ZX100003C", "BS8 1TH",
            registered_blind=True,
        ),
        "bb-yes-wpms": _person(
            "T05", "Dummett", "Ronald Ernest", _D(1948, 2, 8), "ZX100004D", "PL1 2AA",
            Award(_B.WAR_PENSIONERS_MOBILITY_SUPPLEMENT, _D(1983, 4, 1)),
        ),
        "bb-yes-afcs": _person(
            "T06", "Specimen", "Kieran", _D(1986, 9, 23), "ZX100005A", "SP4 7EB",
            Award(_B.AFCS, _D(2012, 3, 1), afcs_tariff=8, walking_disability_certified=True),
        ),
        # Blue Badge: no
        "bb-no": _person(
            "T07", "Exampleby", "Susan", _D(1972, 4, 11), "ZX100006B", "NE1 4ST",
            Award(_B.PIP, _D(2021, 5, 1), _D(2029, 4, 30),
                  pip_moving_points=4, pip_journeys_descriptor="C"),
        ),
        "bb-no-pip-journeys-d": _person(
            "T08", "Trialson", "Jordan", _D(1999, 1, 25), "ZX100007C", "M14 5TP",
            Award(_B.PIP, _D(2023, 2, 6), _D(2028, 2, 5),
                  pip_moving_points=0, pip_journeys_descriptor="D"),
        ),
        "bb-no-pip-journeys-f": _person(
            "T09", "Proofley", "Gemma Louise", _D(1988, 6, 6), "ZX100008D", "S10 2TN",
            Award(_B.PIP, _D(2020, 10, 12), None,
                  pip_moving_points=4, pip_journeys_descriptor="F"),
        ),
        "bb-no-dla-lower": _person(
            "T10", "Testwell", "Oliver", _D(2014, 8, 9), None, "CV34 4RL",
            Award(_B.DLA, _D(2021, 1, 4), _D(2027, 1, 3), dla_mobility_rate="lower"),
        ),
        "bb-no-afcs-tariff-9": _person(
            "T11", "Specimen", "Liam", _D(1990, 12, 1), "ZX100009A", "SN9 6BE",
            Award(_B.AFCS, _D(2014, 7, 14), afcs_tariff=9, walking_disability_certified=True),
        ),
        "bb-no-afcs-uncertified": _person(
            "T12", "Mockridge", "Dean", _D(1979, 3, 3), "ZX100010B", "DL9 3AW",
            Award(_B.AFCS, _D(2010, 5, 17), afcs_tariff=3, walking_disability_certified=False),
        ),
        "bb-no-pip-ended": _person(
            "T13", "Mockford", "Irene", _D(1955, 10, 10), "ZX100011C", "BS8 1TH",
            Award(_B.PIP, _D(2016, 9, 1), _D(2026, 8, 31),
                  pip_moving_points=12, pip_journeys_descriptor="A"),
        ),
        # Free school meals: yes
        "fsm-yes-income-support": _person(
            "T14", "Examplewood", "Tracey", _D(1983, 2, 17), "ZX100101A", "CV11 5QS",
            Award(_B.INCOME_SUPPORT, _D(2015, 4, 1)),
        ),
        "fsm-yes-jsa-ib": _person(
            "T15", "Fauxley", "Darren", _D(1990, 9, 9), "ZX100102B", "WV1 1RE",
            Award(_B.JSA_INCOME_BASED, _D(2026, 6, 1), _D(2026, 12, 31)),
        ),
        "fsm-yes-esa-ir": _person(
            "T16", "Stubbington-Test", "Michelle", _D(1976, 12, 24), "ZX100103C", "HU3 2PA",
            Award(_B.ESA_INCOME_RELATED, _D(2017, 11, 20)),
        ),
        "fsm-yes-asylum-support": _person(
            "T17", "Testari", "Yonas", _D(1992, 1, 1), None, "NG7 2BY",
            Award(_B.ASYLUM_SUPPORT_PART_VI, _D(2025, 10, 1)),
        ),
        "fsm-yes-pension-credit": _person(
            "T18", "Sampleton", "Maureen", _D(1952, 8, 15), "ZX100104D", "B15 2TT",
            Award(_B.PENSION_CREDIT_GUARANTEE, _D(2019, 3, 4)),
        ),
        "fsm-yes-uc-low-earnings": _person(
            "T19", "Fixturely", "Jade", _D(1995, 5, 20), "ZX100105A", "LS6 3HN",
            Award(_B.UNIVERSAL_CREDIT, _D(2023, 7, 3), annual_net_earnings=7400),
        ),
        "fsm-yes-uc-any-only-after-2026-09": _person(
            "T20", "Switchford", "Daniel", _D(1987, 5, 5), "ZX100106B", "CV31 3NS",
            Award(_B.UNIVERSAL_CREDIT, _D(2024, 2, 1), annual_net_earnings=7401),
        ),
        "hmrc-ctc-yes": _person(
            "T21", "Mockridge", "Claire", _D(1985, 10, 31), "ZX100107C", "DL9 3AW",
            Award(_B.CHILD_TAX_CREDIT, _D(2024, 4, 6), _D(2027, 4, 5),
                  with_wtc=False, annual_gross_income=16190),
        ),
        "hmrc-wtc-run-on-yes": _person(
            "T22", "O'Fakery", "Siobhan", _D(1981, 3, 17), "ZX100108D", "L8 1XN",
            Award(_B.WTC_RUN_ON, _D(2026, 11, 10), _D(2026, 12, 7)),
        ),
        "both-yes-pip-moving-esa": _person(
            "T23", "Dummett", "Karen", _D(1969, 4, 30), "ZX100109A", "PL1 2AA",
            Award(_B.PIP, _D(2018, 1, 15), None,
                  pip_moving_points=12, pip_journeys_descriptor="B"),
            Award(_B.ESA_INCOME_RELATED, _D(2016, 6, 6)),
        ),
        # Free school meals: no
        "fsm-no": _person(
            "T24", "Exampleby", "Gary", _D(1980, 7, 7), "ZX100110B", "NE1 4ST",
        ),
        "hmrc-ctc-no-income-over": _person(
            "T25", "Trialson", "Natalie", _D(1991, 2, 28), "ZX100111C", "M14 5TP",
            Award(_B.CHILD_TAX_CREDIT, _D(2024, 4, 6), _D(2027, 4, 5),
                  with_wtc=False, annual_gross_income=16191),
        ),
        "hmrc-ctc-no-with-wtc": _person(
            "T26", "Proofley", "Craig", _D(1984, 9, 12), "ZX100112D", "S10 2TN",
            Award(_B.CHILD_TAX_CREDIT, _D(2024, 4, 6), _D(2027, 4, 5),
                  with_wtc=True, annual_gross_income=12000),
        ),
        "fsm-no-award-ended": _person(
            "T27", "Fauxley", "Kelly", _D(1993, 12, 12), "ZX100113A", "WV1 1RE",
            Award(_B.JSA_INCOME_BASED, _D(2025, 1, 6), _D(2026, 3, 31)),
        ),
        "fsm-no-uc-starts-2027": _person(
            "T28", "Switchford", "Amy", _D(1998, 8, 18), "ZX100114B", "CV31 3NS",
            Award(_B.UNIVERSAL_CREDIT, _D(2027, 1, 4), annual_net_earnings=0),
        ),
        # Council tax reduction (banded, local schemes): see connectors.reference.predicates
        "ctr-uc-pip-protected": _person(
            "T29", "Bandwell", "Rhiannon", _D(1978, 3, 9), "ZX100201A", "CV1 5FB",
            Award(_B.UNIVERSAL_CREDIT, _D(2022, 9, 5), annual_net_earnings=0),
            Award(_B.PIP, _D(2021, 3, 1), None,
                  pip_moving_points=10, pip_journeys_descriptor="A"),
        ),
        "ctr-uc-earnings-above-bands": _person(
            "T30", "Bandwell", "Owen", _D(1975, 10, 2), "ZX100202B", "CV1 5FB",
            Award(_B.UNIVERSAL_CREDIT, _D(2023, 1, 9), annual_net_earnings=30000),
        ),
    }
)  # fmt: skip
"""Hand-written people with documented answers on ``REFERENCE_DATE``, keyed by label.

Some hold tax-credit awards running past April 2025, when tax credits really ended, so
the HMRC attributes can still be exercised.
"""

TWINS: Final[tuple[Person, Person]] = (
    _person(
        "T91", "Testpair", "Alex", _D(2001, 4, 4), "ZX200001A", "CV32 5QN",
        Award(_B.PIP, _D(2021, 6, 7), None, pip_moving_points=12, pip_journeys_descriptor="A"),
    ),
    _person("T92", "Testpair", "Sam", _D(2001, 4, 4), "ZX200002B", "CV32 5QN"),
)  # fmt: skip
"""Same family name and date of birth: only a NINO tells them apart."""

AMBIGUOUS_IDENTITY: Final = MatchingFields(
    family_name="Testpair",
    given_names="Alex",
    date_of_birth=_D(2001, 4, 4),
    nino=None,
    postcode="CV32 5QN",
)
"""Matches both ``TWINS`` when sent without a NINO, so it must give no-match."""

NO_MATCH_IDENTITY: Final = MatchingFields(
    family_name="Nomatchley",
    given_names="Nobody",
    date_of_birth=_D(1970, 1, 1),
    nino="ZX999999D",
    postcode="CV34 9ZZ",
)
"""Matches nobody in the population, with or without its NINO."""


def subject_of(identity: str) -> dict[str, str]:
    """The matching fields a council would send for a documented test identity (its name in
    ``TEST_IDENTITIES``, or ``"no-match"`` for :data:`NO_MATCH_IDENTITY`)."""
    if identity == "no-match":
        return NO_MATCH_IDENTITY.as_subject()
    return TEST_IDENTITIES[identity].matching_fields().as_subject()


_FIXED: Final[tuple[Person, ...]] = (*TEST_IDENTITIES.values(), *TWINS)

# --- generation ----------------------------------------------------------------------------

# fmt: off
_SURNAMES: Final = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin",
    "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison",
    "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price",
    "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey",
    "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards", "Khan", "Marshall",
    "Anderson", "Simpson", "Ellis", "Adams", "Singh", "Begum", "Wilkinson", "Foster", "Chapman",
    "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali", "Hunt", "Hussain", "Campbell", "Matthews",
    "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd", "Butler", "Russell", "Barker",
    "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey", "Graham", "Pearson", "Ahmed",
    "Fletcher", "Walsh", "Kaur", "Gibson", "Howard", "Andrews", "Stewart", "Elliott", "Reynolds",
    "Saunders", "Payne", "Fox", "Ford", "Pearce", "Day", "Brooks", "West", "Lawrence", "Cole",
    "Atkinson", "Bradley", "Spencer", "Gill", "Dawson", "Ball", "Burton", "O'Brien", "Watts",
    "Rose", "Booth", "Perry", "Ryan", "Grant", "Wells", "Armstrong", "Francis", "Rees", "Hayes",
    "Hart", "Hudson", "Newman", "Barrett", "Webster", "Hunter", "Gregory", "Carr", "Lowe", "Page",
    "Marsh", "Riley", "Dunn", "Woods", "Parsons", "Berry", "Stone", "Reid", "Holland", "Hawkins",
    "Harding", "Porter", "Robertson", "Newton", "O'Connor", "Nowak", "Kowalski", "Okafor",
    "Adeyemi", "Mensah", "Chowdhury", "Rahman", "Miah", "Nguyen", "Chen", "Wong", "Mahmood",
    "Iqbal", "McDonald", "MacLeod", "Lloyd-Davies", "Pryce-Jones", "Kennedy", "Sullivan", "Doyle",
    "Byrne", "Quinn", "Hamilton",
)

# Given names by era of birth: (female, male).
_GIVEN: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = MappingProxyType(
    {
        "older": (
            (
                "Margaret", "Dorothy", "Joan", "Jean", "Patricia", "Barbara", "Joyce", "Doreen",
                "Sheila", "Irene", "Eileen", "Betty", "Pamela", "Maureen", "Brenda", "Valerie",
                "Shirley", "Sylvia", "Audrey", "Hilda",
            ),
            (
                "John", "William", "George", "Kenneth", "Peter", "Robert", "Michael", "Brian",
                "Ronald", "Dennis", "Derek", "Roy", "Alan", "Raymond", "Donald", "Harold",
                "Stanley", "Gordon", "Norman", "Leslie", "Keith", "Terence",
            ),
        ),
        "middle": (
            (
                "Susan", "Julie", "Karen", "Sarah", "Claire", "Nicola", "Lisa", "Helen", "Joanne",
                "Tracey", "Michelle", "Amanda", "Deborah", "Alison", "Rachel", "Kelly", "Emma",
                "Lorraine", "Wendy", "Angela", "Samina", "Nasreen",
            ),
            (
                "David", "Paul", "Andrew", "Mark", "Stephen", "Ian", "Gary", "Darren", "Richard",
                "Christopher", "Neil", "Simon", "Lee", "Wayne", "Jason", "Craig", "Martin",
                "Anthony", "Imran", "Tariq", "Rajesh",
            ),
        ),
        "younger": (
            (
                "Olivia", "Amelia", "Isla", "Ava", "Mia", "Emily", "Sophie", "Grace", "Lily",
                "Chloe", "Jessica", "Ella", "Freya", "Ruby", "Evie", "Poppy", "Aisha", "Maryam",
                "Zara", "Hannah",
            ),
            (
                "Oliver", "George", "Harry", "Jack", "Noah", "Charlie", "Jacob", "Thomas", "Oscar",
                "Leo", "Alfie", "Joshua", "Muhammad", "Ethan", "James", "Lucas", "Mason", "Kai",
                "Tyler", "Reuben", "Ibrahim", "Yusuf",
            ),
        ),
    }
)
# fmt: on

# (postcode area, highest district number); some districts made up, all well formed.
_POSTCODE_AREAS: Final = (
    ("B", 99), ("BS", 49), ("CV", 47), ("LS", 29), ("M", 90), ("NE", 88), ("S", 99),
    ("L", 75), ("NG", 34), ("LE", 19), ("OX", 49), ("CB", 25), ("NR", 35), ("EX", 39),
    ("PL", 35), ("BN", 45), ("CT", 21), ("ME", 20), ("SO", 53), ("PO", 41), ("YO", 62),
    ("HU", 20), ("DE", 75), ("ST", 21), ("WV", 16), ("WS", 15), ("DY", 14), ("BD", 24),
    ("HD", 9), ("PR", 26), ("BB", 18), ("CA", 28), ("DH", 9), ("SR", 8), ("TS", 29),
    ("DL", 17), ("LN", 13), ("PE", 38), ("IP", 33), ("CO", 16), ("CM", 24), ("SS", 17),
    ("RM", 20), ("E", 20), ("N", 22), ("SE", 28), ("SW", 20), ("W", 14), ("NW", 11),
    ("GL", 56), ("WR", 15), ("TA", 24), ("BA", 22), ("SN", 26), ("RG", 45), ("GU", 52),
    ("TN", 40), ("MK", 46), ("NN", 29), ("LU", 7), ("HP", 23), ("SG", 19), ("WD", 25),
    ("KT", 24), ("DA", 18), ("WA", 16), ("CH", 66), ("SK", 23), ("OL", 16), ("BL", 9),
    ("FY", 8), ("LA", 23), ("TR", 27), ("TQ", 14), ("BH", 31), ("WF", 17), ("DN", 41),
)  # fmt: skip
_INWARD_LETTERS: Final = "ABDEFGHJLNPQRSTUWXYZ"

_NINO_FIRST: Final = "ABCEGHJKLMNOPRSTWXYZ"
_NINO_SECOND: Final = "ABCEGHJKLMNPRSTWXYZ"
_NINO_PREFIXES: Final = tuple(
    a + b
    for a in _NINO_FIRST
    for b in _NINO_SECOND
    if a + b not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ", "ZX"}
)

_EARLIEST_BIRTH: Final = date(1930, 1, 1)
_LATEST_BIRTH: Final = date(2022, 12, 31)
_PIP_START: Final = date(2013, 4, 8)
_DLA_KEPT_IF_BORN_BEFORE: Final = date(1948, 4, 8)
_PENSION_AGE_IF_BORN_BEFORE: Final = date(1960, 10, 6)
_AFCS_START: Final = date(2005, 4, 6)
_LATEST_AWARD_START: Final = date(2027, 6, 30)
_LEGACY_LAST_START: Final = date(2018, 12, 31)
_LAST_TAX_CREDIT_START: Final = date(2024, 4, 6)
_LAST_RUN_ON_START: Final = TAX_CREDITS_CLOSED - timedelta(days=27)
_DLA_RATES: Final[tuple[DlaMobilityRate | None, ...]] = ("higher", "lower", None)
_PIP_MOVING_POINTS: Final = (0, 4, 8, 10, 12)
_PIP_MOVING_WEIGHTS: Final = (30, 25, 15, 15, 15)
_PIP_JOURNEYS: Final[tuple[PipJourneysDescriptor, ...]] = ("A", "B", "C", "D", "E", "F")
_PIP_JOURNEYS_WEIGHTS: Final = (40, 15, 10, 15, 10, 10)


_T = TypeVar("_T")


def _below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n): the ``random.Random`` helpers cost several times more."""
    return int(rng.random() * n)


def _pick(rng: random.Random, items: Sequence[_T]) -> _T:
    return items[int(rng.random() * len(items))]


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + _below(rng, high - low + 1)


def _day_between(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=_below(rng, (last - first).days + 1))


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _span(rng: random.Random, first: date, last: date) -> tuple[date, date | None]:
    """A start between first and last, and an open end or one 6 months to 10 years later."""
    start = _day_between(rng, first, max(first, last))
    if rng.random() < 0.55:
        return start, None
    return start, start + timedelta(days=_between(rng, 182, 3650))


def _postcode(rng: random.Random) -> str:
    area, districts = _pick(rng, _POSTCODE_AREAS)
    district = _between(rng, 1, districts)
    letters = _pick(rng, _INWARD_LETTERS) + _pick(rng, _INWARD_LETTERS)
    return f"{area}{district} {_below(rng, 10)}{letters}"


def _nino(rng: random.Random, used: set[str]) -> str:
    while True:
        prefix = _pick(rng, _NINO_PREFIXES)
        nino = f"{prefix}{_below(rng, 1_000_000):06d}{_pick(rng, 'ABCD')}"
        if nino not in used:
            used.add(nino)
            return nino


def _given_names(rng: random.Random, born: date) -> str:
    era = "older" if born.year < 1960 else "middle" if born.year < 1990 else "younger"
    names = _GIVEN[era][_below(rng, 2)]
    first = _pick(rng, names)
    if rng.random() < 0.3:
        second = _pick(rng, names)
        if second != first:
            return f"{first} {second}"
    return first


def _disability_awards(rng: random.Random, born: date, age: int) -> list[Award]:
    awards: list[Award] = []
    if 3 <= age < 16 and rng.random() < 0.05:
        start, end = _span(rng, max(_years_after(born, 3), date(2015, 1, 1)), _LATEST_AWARD_START)
        rate = _pick(rng, _DLA_RATES)
        awards.append(Award(Benefit.DLA, start, end, dla_mobility_rate=rate))
    elif born < _DLA_KEPT_IF_BORN_BEFORE and rng.random() < 0.06:
        start, end = _span(rng, max(_years_after(born, 40), date(1992, 4, 6)), date(2013, 4, 7))
        rate = _pick(rng, _DLA_RATES)
        awards.append(Award(Benefit.DLA, start, end, dla_mobility_rate=rate))
    elif age >= 16 and rng.random() < 0.09:
        start, end = _span(rng, max(_years_after(born, 16), _PIP_START), _LATEST_AWARD_START)
        awards.append(
            Award(
                Benefit.PIP,
                start,
                end,
                pip_moving_points=rng.choices(_PIP_MOVING_POINTS, _PIP_MOVING_WEIGHTS)[0],
                pip_journeys_descriptor=rng.choices(_PIP_JOURNEYS, _PIP_JOURNEYS_WEIGHTS)[0],
            )
        )
    if born.year < 1965 and rng.random() < 0.003:
        start = _day_between(rng, _years_after(born, 20), date(2010, 12, 31))
        awards.append(Award(Benefit.WAR_PENSIONERS_MOBILITY_SUPPLEMENT, start))
    if 1955 <= born.year <= 2004 and rng.random() < 0.004:
        start = _day_between(rng, max(_years_after(born, 18), _AFCS_START), date(2026, 12, 31))
        tariff = _between(rng, 1, 15)
        certified = rng.random() < (0.5 if tariff <= 8 else 0.1)
        awards.append(
            Award(Benefit.AFCS, start, afcs_tariff=tariff, walking_disability_certified=certified)
        )
    return awards


def _income_awards(rng: random.Random, born: date, age: int) -> list[Award]:
    if born < _PENSION_AGE_IF_BORN_BEFORE:
        if rng.random() < 0.12:
            start, end = _span(rng, max(_years_after(born, 60), date(2003, 10, 6)),
                               _LATEST_AWARD_START)  # fmt: skip
            return [Award(Benefit.PENSION_CREDIT_GUARANTEE, start, end)]
        return []
    if age < 18:
        return []
    adult = _years_after(born, 18)
    roll = rng.random()
    if roll < 0.15:
        start, end = _span(rng, max(adult, date(2016, 1, 1)), _LATEST_AWARD_START)
        earnings = 0 if rng.random() < 0.4 else _between(rng, 500, 30_000)
        return [Award(Benefit.UNIVERSAL_CREDIT, start, end, annual_net_earnings=earnings)]
    # Legacy benefits closed to new claims when Universal Credit took over.
    legacy = (
        (0.17, Benefit.INCOME_SUPPORT),
        (0.18, Benefit.JSA_INCOME_BASED),
        (0.21, Benefit.ESA_INCOME_RELATED),
    )
    for limit, benefit in legacy:
        if roll < limit:
            if adult > _LEGACY_LAST_START:
                return []
            start, end = _span(rng, max(adult, date(2008, 10, 27)), _LEGACY_LAST_START)
            return [Award(benefit, start, end)]
    if roll < 0.215:
        start, end = _span(rng, max(adult, date(2020, 1, 1)), _LATEST_AWARD_START)
        return [Award(Benefit.ASYLUM_SUPPORT_PART_VI, start, end)]
    if roll < 0.255:
        if adult > _LAST_TAX_CREDIT_START:
            return []
        start = _day_between(rng, max(adult, date(2005, 4, 6)), _LAST_TAX_CREDIT_START)
        end = min(start + timedelta(days=_between(rng, 182, 3650)), TAX_CREDITS_CLOSED)
        return [
            Award(
                Benefit.CHILD_TAX_CREDIT,
                start,
                end,
                with_wtc=rng.random() < 0.4,
                annual_gross_income=_between(rng, 5_000, 40_000),
            )
        ]
    if roll < 0.26:
        if adult > _LAST_RUN_ON_START:
            return []
        start = _day_between(rng, max(adult, date(2010, 1, 1)), _LAST_RUN_ON_START)
        return [Award(Benefit.WTC_RUN_ON, start, start + timedelta(days=27))]
    return []


def _age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def generate_population(size: int = 10_000, seed: int = 20261127) -> tuple[Person, ...]:
    """``size`` people: the test identities, the twins, then generated people.

    Deterministic for a given seed. No generated person shares a family name and date of
    birth with a fixed entry, so the fixed entries always match as documented.
    """
    if size < len(_FIXED):
        raise ValueError(f"size must be at least {len(_FIXED)} (the fixed test identities)")
    rng = random.Random(seed)
    reserved = {(normalise_family_name(p.family_name), p.date_of_birth) for p in _FIXED}
    used_ninos = {p.nino for p in _FIXED if p.nino is not None}
    used_ninos.add(normalise_nino(NO_MATCH_IDENTITY.nino or ""))
    surname_keys = {name: normalise_family_name(name) for name in _SURNAMES}
    span = (_LATEST_BIRTH - _EARLIEST_BIRTH).days + 1
    people = list(_FIXED)
    for number in range(1, size - len(_FIXED) + 1):
        family_name = _pick(rng, _SURNAMES)
        born = _EARLIEST_BIRTH + timedelta(days=_below(rng, span))
        while (surname_keys[family_name], born) in reserved:
            born = _EARLIEST_BIRTH + timedelta(days=_below(rng, span))
        age = _age_on(born, REFERENCE_DATE)
        income = _income_awards(rng, born, age)
        asylum = any(a.benefit == Benefit.ASYLUM_SUPPORT_PART_VI for a in income)
        has_nino = age >= 16 and rng.random() < (0.2 if asylum else 0.96)
        people.append(
            Person(
                person_id=f"P{number:06d}",
                family_name=family_name,
                given_names=_given_names(rng, born),
                date_of_birth=born,
                postcode=_postcode(rng),
                nino=_nino(rng, used_ninos) if has_nino else None,
                registered_blind=rng.random() < (0.012 if age >= 75 else 0.003),
                awards=(*_disability_awards(rng, born, age), *income),
            )
        )
    return tuple(people)
