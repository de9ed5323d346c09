"""A council's own Blue Badge register, served as a provider (the council as provider).

A council holds facts no national provider has: whom it has issued a Blue Badge. Served through
the provider kit like any provider, it lets another service ask, for example a concessionary
bus pass, whose disabled categories include "holds a Blue Badge". The register is synthetic:
the test identities who qualify automatically hold a badge, and so does one who qualified by
the council's own assessment (``bb-no-pip-journeys-d``, a badge no benefit would give); one
badge has expired.

``blue-badge-holder`` is yes when the register holds a badge for the person valid on ``as_of``.
The council matches the person among its residents (the synthetic population, exact on family
name and date of birth like the reference DWP provider): a resident without a valid badge is
``no``, someone who is not a resident (or who matches two) is ``no-match``, never ``no``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final

from connectors.provider_kit import Lookup, LookupRequest
from connectors.reference.population import TEST_IDENTITIES, PopulationIndex

__all__ = ["BADGE_ATTRIBUTES", "BLUE_BADGE_REGISTER", "EXPECTED_TRAVEL", "Badge", "badge_lookup"]

BADGE_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {"blue-badge-holder": "The council has issued the person a Blue Badge valid on the date"}
)


@dataclass(frozen=True, slots=True)
class Badge:
    """One entry of the register; the holder's identifiers never appear in a repr."""

    family_name: str = field(repr=False)
    date_of_birth: date = field(repr=False)
    issued: date
    expires: date | None  # None: an applicant refused a badge (the council knows them)

    def valid_on(self, day: date) -> bool:
        return self.expires is not None and self.issued <= day <= self.expires


def _badge(label: str, issued: date, expires: date | None) -> Badge:
    person = TEST_IDENTITIES[label]
    return Badge(person.family_name, person.date_of_birth, issued, expires)


BLUE_BADGE_REGISTER: Final[tuple[Badge, ...]] = (
    _badge("bb-yes-dla", date(2024, 5, 1), date(2027, 4, 30)),
    _badge("bb-yes-pip-moving", date(2025, 2, 10), date(2028, 2, 9)),
    _badge("bb-yes-registered-blind", date(2023, 12, 1), date(2026, 11, 30)),
    # by the council's own assessment: PIP descriptor D gives no automatic badge
    _badge("bb-no-pip-journeys-d", date(2025, 6, 2), date(2028, 6, 1)),
    # expired before the reference date
    _badge("bb-yes-wpms", date(2022, 1, 4), date(2025, 1, 3)),
    # applied and was refused: known to the council, holds no badge
    _badge("bb-no", date(2025, 9, 1), None),
)


def badge_lookup(
    residents: PopulationIndex, register: tuple[Badge, ...] = BLUE_BADGE_REGISTER
) -> Lookup:
    """A provider-kit lookup answering ``blue-badge-holder`` for the council's ``residents``;
    unknown attributes raise ``KeyError``."""
    badges: dict[str, list[Badge]] = {}
    for badge in register:
        holder = residents.match(badge.family_name, badge.date_of_birth)
        if holder is None:
            raise ValueError("every badge holder is a resident")
        badges.setdefault(holder.person_id, []).append(badge)

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        for name in request.attributes:
            if name not in BADGE_ATTRIBUTES:
                raise KeyError(name)
        fields = request.subject.fields
        person = residents.match(fields["family_name"], date.fromisoformat(fields["date_of_birth"]))
        if person is None:
            return None
        held = badges.get(person.person_id, [])
        return dict.fromkeys(request.attributes, any(b.valid_on(request.as_of) for b in held))

    return lookup


EXPECTED_TRAVEL: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bb-yes-dla": "yes",  # DLA higher rate mobility (and a badge)
        "bb-yes-pip-moving": "yes",  # PIP moving around 10 points (and a badge)
        "bb-yes-registered-blind": "yes",
        "bb-no-pip-journeys-d": "yes",  # only the council's register says so
        "bb-yes-wpms": "no",  # WPMS is no ENCTS category, and the badge expired
        "bb-no": "no",  # PIP 4 points, refused a badge
        "bb-no-dla-lower": "no",
        "no-match": "no-match",
    }
)
"""``concessionary-travel-disabled`` on 2026-11-27 for test identities: any of DLA higher-rate
mobility, PIP at least 8 points for moving around, registered blind (DWP) or a valid Blue
Badge (the council's register)."""
