"""Parameterised attributes the reference DWP provider answers, and the banded reference checks'
documented answers for the test identities.

A predicate is a parameterised attribute with its parameters bound by a check version
(:mod:`trust.parameters`). The provider answers yes or no; the amount it compares stays here.

Universal Credit is assessed in monthly assessment periods from the award's start. An award's
take-home pay in one period is, in this synthetic data, a twelfth of its ``annual_net_earnings``
in pence (rounded down); over the last *periods* periods it is that times the number of those
periods the award covered, the one running on the date included.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import Any, Final

from connectors.reference.population import Award, Benefit, Person
from trust.parameters import Predicate

__all__ = [
    "DWP_PREDICATES",
    "EXPECTED_BANDS",
    "evaluate_predicate",
    "take_home_pence",
]

DWP_PREDICATES: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "uc-take-home-pay-below": {
            "description": (
                "Universal Credit award live on the date, with take-home pay over the last "
                "'periods' assessment periods below 'amount_pence'"
            ),
            "parameters": {
                "periods": {
                    "type": "integer",
                    "description": "how many monthly assessment periods, the current included",
                    "minimum": 1,
                    "maximum": 12,
                },
                "amount_pence": {
                    "type": "integer",
                    "description": "the threshold, in pence; the pay must be below it",
                    "minimum": 1,
                    "maximum": 100_000_000,
                },
            },
        },
        "pip-moving-around-points-at-least": {
            "description": (
                "Personal Independence Payment with at least 'points' points for 'moving around'"
            ),
            "parameters": {
                "points": {
                    "type": "integer",
                    "description": "the fewest points that qualify (the activity scores 0-12)",
                    "minimum": 0,
                    "maximum": 12,
                },
            },
        },
    }
)
"""Each parameterised attribute: its description and its parameter schema, as the registry
declares them (``provider.attributes[].parameters``)."""


def _periods_covered(award: Award, as_of: date, periods: int) -> int:
    months = (as_of.year - award.start.year) * 12 + as_of.month - award.start.month
    if as_of.day < award.start.day:
        months -= 1
    return max(0, min(periods, months + 1))


def take_home_pence(award: Award, as_of: date, periods: int) -> int:
    """The award's take-home pay over the last ``periods`` assessment periods, in pence."""
    monthly = (award.annual_net_earnings or 0) * 100 // 12
    return monthly * _periods_covered(award, as_of, periods)


def _uc_take_home_below(person: Person, as_of: date, bound: Mapping[str, int | str]) -> bool:
    periods, amount = bound["periods"], bound["amount_pence"]
    if not isinstance(periods, int) or not isinstance(amount, int):
        raise TypeError("periods and amount_pence are integers")
    return any(
        award.benefit == Benefit.UNIVERSAL_CREDIT
        and award.active_on(as_of)
        and take_home_pence(award, as_of, periods) < amount
        for award in person.awards
    )


def _pip_moving_at_least(person: Person, as_of: date, bound: Mapping[str, int | str]) -> bool:
    points = bound["points"]
    if not isinstance(points, int):
        raise TypeError("points is an integer")
    return any(
        award.benefit == Benefit.PIP
        and award.active_on(as_of)
        and award.pip_moving_points is not None
        and award.pip_moving_points >= points
        for award in person.awards
    )


_RULES: Final = MappingProxyType(
    {
        "uc-take-home-pay-below": _uc_take_home_below,
        "pip-moving-around-points-at-least": _pip_moving_at_least,
    }
)


def evaluate_predicate(person: Person, predicate: Predicate, as_of: date) -> bool:
    """Whether ``predicate`` holds for ``person`` on ``as_of`` (KeyError if unknown)."""
    try:
        rule = _RULES[predicate.attribute]
    except KeyError:
        raise KeyError(predicate.attribute) from None
    return rule(person, as_of, dict(predicate.parameters))


# --- documented answers of the banded checks -----------------------------------------------

_COVENTRY: Final = "council-coventry-council-tax"
_WARWICK: Final = "council-warwick-district-council-tax"

EXPECTED_BANDS: Final[tuple[tuple[str, str, str, str], ...]] = (
    # (test identity, council, as_of, answer of council-tax-reduction)
    ("fsm-yes-uc-low-earnings", _COVENTRY, "2026-11-27", "reduction-75"),
    ("fsm-yes-uc-low-earnings", _COVENTRY, "2026-03-31", "reduction-85"),
    ("fsm-yes-uc-low-earnings", _WARWICK, "2026-11-27", "standard-50"),
    ("fsm-yes-uc-any-only-after-2026-09", _COVENTRY, "2026-11-27", "reduction-75"),
    ("fsm-yes-uc-any-only-after-2026-09", _WARWICK, "2026-11-27", "standard-50"),
    ("ctr-uc-pip-protected", _COVENTRY, "2026-11-27", "reduction-85"),
    ("ctr-uc-pip-protected", _WARWICK, "2026-11-27", "protected-77"),
    ("ctr-uc-earnings-above-bands", _COVENTRY, "2026-11-27", "no"),
    ("ctr-uc-earnings-above-bands", _WARWICK, "2026-11-27", "no"),
    ("fsm-no", _COVENTRY, "2026-11-27", "no"),
    ("fsm-no", _WARWICK, "2026-11-27", "no"),
    ("no-match", _COVENTRY, "2026-11-27", "no-match"),
    ("no-match", _WARWICK, "2026-11-27", "no-match"),
)
"""Each demo council's ``council-tax-reduction`` answer for a test identity on a date: the
reference date 2026-11-27 and, for Coventry, 2026-03-31 (its 2025/26 scheme, before the
2026/27 one). ``no-match`` is :data:`~connectors.reference.population.NO_MATCH_IDENTITY`."""
