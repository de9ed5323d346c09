"""Attributes the reference DWP and HMRC providers answer, and how each is decided.

An attribute is a yes/no fact about one person on one date: the person held the
qualifying award on that date (start and end inclusive) and its details meet the
threshold. ``EXPECTED_ATTRIBUTES`` and ``EXPECTED_OUTCOMES`` are the documented answers
for the test identities, written out by hand so that tests can check ``evaluate`` and
drive the broker end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from types import MappingProxyType
from typing import Final

from connectors.reference.population import Award, Benefit, Person

__all__ = [
    "ATTRIBUTES",
    "BLUE_BADGE_AUTOMATIC",
    "DWP_ATTRIBUTES",
    "EXPECTED_ATTRIBUTES",
    "EXPECTED_OUTCOMES",
    "FREE_SCHOOL_MEALS",
    "FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE",
    "HMRC_ATTRIBUTES",
    "evaluate",
]

DWP_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "dla-higher-rate-mobility": (
            "Disability Living Allowance with the mobility component at the higher rate"
        ),
        "pip-moving-around-8-plus": (
            "Personal Independence Payment with 8 or more points for 'moving around'"
        ),
        "pip-planning-journeys-10": (
            "Personal Independence Payment with 10 points for 'planning and following "
            "journeys' under descriptor E (overwhelming psychological distress)"
        ),
        "registered-blind": "Registered blind (severely sight impaired)",
        "war-pensioners-mobility-supplement": "War Pensioners' Mobility Supplement",
        "afcs-tariff-1-8-walking-disability": (
            "Armed Forces Compensation Scheme award at tariff 1 to 8 with a certified "
            "permanent and substantial walking disability"
        ),
        "income-support": "Income Support",
        "jsa-income-based": "Income-based Jobseeker's Allowance",
        "esa-income-related": "Income-related Employment and Support Allowance",
        "asylum-support-part-vi": "Support under Part VI of the Immigration and Asylum Act 1999",
        "pension-credit-guarantee": "Pension Credit, guarantee element",
        "universal-credit": "Universal Credit, any award",
        "universal-credit-earnings-under-7400": (
            "Universal Credit with net earned income of £7,400 a year or less"
        ),
    }
)

HMRC_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ctc-without-wtc-income-under-16190": (
            "Child Tax Credit without Working Tax Credit, annual gross income £16,190 or less"
        ),
        "wtc-run-on": "Working Tax Credit run-on (the four weeks after entitlement ends)",
    }
)

ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType({**DWP_ATTRIBUTES, **HMRC_ATTRIBUTES})
"""Every attribute ``evaluate`` knows, DWP and HMRC together."""

_AwardTest = Callable[[Award], bool]


def _any_award(
    benefit: Benefit, meets: _AwardTest = lambda _: True
) -> Callable[[Person, date], bool]:
    def holds(person: Person, as_of: date) -> bool:
        return any(
            award.benefit == benefit and award.active_on(as_of) and meets(award)
            for award in person.awards
        )

    return holds


def _registered_blind(person: Person, as_of: date) -> bool:
    return person.registered_blind


def _afcs_qualifies(award: Award) -> bool:
    tariff = award.afcs_tariff
    return tariff is not None and 1 <= tariff <= 8 and award.walking_disability_certified is True


def _uc_earnings_under_cap(award: Award) -> bool:
    return award.annual_net_earnings is not None and award.annual_net_earnings <= 7400


def _ctc_without_wtc_under_cap(award: Award) -> bool:
    income = award.annual_gross_income
    return award.with_wtc is False and income is not None and income <= 16190


_RULES: Final[Mapping[str, Callable[[Person, date], bool]]] = MappingProxyType(
    {
        "dla-higher-rate-mobility": _any_award(
            Benefit.DLA, lambda a: a.dla_mobility_rate == "higher"
        ),
        "pip-moving-around-8-plus": _any_award(
            Benefit.PIP, lambda a: a.pip_moving_points is not None and a.pip_moving_points >= 8
        ),
        # D and F also score 10 or more points; only E qualifies.
        "pip-planning-journeys-10": _any_award(
            Benefit.PIP, lambda a: a.pip_journeys_descriptor == "E"
        ),
        "registered-blind": _registered_blind,
        "war-pensioners-mobility-supplement": _any_award(
            Benefit.WAR_PENSIONERS_MOBILITY_SUPPLEMENT
        ),
        "afcs-tariff-1-8-walking-disability": _any_award(Benefit.AFCS, _afcs_qualifies),
        "income-support": _any_award(Benefit.INCOME_SUPPORT),
        "jsa-income-based": _any_award(Benefit.JSA_INCOME_BASED),
        "esa-income-related": _any_award(Benefit.ESA_INCOME_RELATED),
        "asylum-support-part-vi": _any_award(Benefit.ASYLUM_SUPPORT_PART_VI),
        "pension-credit-guarantee": _any_award(Benefit.PENSION_CREDIT_GUARANTEE),
        "universal-credit": _any_award(Benefit.UNIVERSAL_CREDIT),
        "universal-credit-earnings-under-7400": _any_award(
            Benefit.UNIVERSAL_CREDIT, _uc_earnings_under_cap
        ),
        "ctc-without-wtc-income-under-16190": _any_award(
            Benefit.CHILD_TAX_CREDIT, _ctc_without_wtc_under_cap
        ),
        "wtc-run-on": _any_award(Benefit.WTC_RUN_ON),
    }
)


def evaluate(person: Person, attribute: str, as_of: date) -> bool:
    """Whether ``person`` has ``attribute`` on ``as_of``. Unknown attributes raise KeyError."""
    try:
        rule = _RULES[attribute]
    except KeyError:
        raise KeyError(attribute) from None
    return rule(person, as_of)


# --- documented answers for the test identities --------------------------------------------

BLUE_BADGE_AUTOMATIC: Final = "blue-badge-automatic"
FREE_SCHOOL_MEALS: Final = "free-school-meals"
FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE: Final = "free-school-meals@2026-08-31"
"""Key for the free-school-meals answer on 2026-08-31, under the rule with the UC cap."""

EXPECTED_ATTRIBUTES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "bb-yes-dla": frozenset({"dla-higher-rate-mobility"}),
        "bb-yes-pip-moving": frozenset({"pip-moving-around-8-plus"}),
        "bb-yes-pip-journeys": frozenset({"pip-planning-journeys-10"}),
        "bb-yes-registered-blind": frozenset({"registered-blind"}),
        "bb-yes-wpms": frozenset({"war-pensioners-mobility-supplement"}),
        "bb-yes-afcs": frozenset({"afcs-tariff-1-8-walking-disability"}),
        "bb-no": frozenset(),
        "bb-no-pip-journeys-d": frozenset(),
        "bb-no-pip-journeys-f": frozenset(),
        "bb-no-dla-lower": frozenset(),
        "bb-no-afcs-tariff-9": frozenset(),
        "bb-no-afcs-uncertified": frozenset(),
        "bb-no-pip-ended": frozenset(),
        "fsm-yes-income-support": frozenset({"income-support"}),
        "fsm-yes-jsa-ib": frozenset({"jsa-income-based"}),
        "fsm-yes-esa-ir": frozenset({"esa-income-related"}),
        "fsm-yes-asylum-support": frozenset({"asylum-support-part-vi"}),
        "fsm-yes-pension-credit": frozenset({"pension-credit-guarantee"}),
        "fsm-yes-uc-low-earnings": frozenset(
            {"universal-credit", "universal-credit-earnings-under-7400"}
        ),
        "fsm-yes-uc-any-only-after-2026-09": frozenset({"universal-credit"}),
        "hmrc-ctc-yes": frozenset({"ctc-without-wtc-income-under-16190"}),
        "hmrc-wtc-run-on-yes": frozenset({"wtc-run-on"}),
        "both-yes-pip-moving-esa": frozenset({"pip-moving-around-8-plus", "esa-income-related"}),
        "fsm-no": frozenset(),
        "hmrc-ctc-no-income-over": frozenset(),
        "hmrc-ctc-no-with-wtc": frozenset(),
        "fsm-no-award-ended": frozenset(),
        "fsm-no-uc-starts-2027": frozenset(),
        "ctr-uc-pip-protected": frozenset(
            {"universal-credit", "universal-credit-earnings-under-7400", "pip-moving-around-8-plus"}
        ),
        "ctr-uc-earnings-above-bands": frozenset({"universal-credit"}),
    }
)
"""For each test identity, exactly the attributes it has on 2026-11-27."""


def _outcomes(blue_badge: str, free_school_meals: str) -> Mapping[str, str]:
    return MappingProxyType(
        {BLUE_BADGE_AUTOMATIC: blue_badge, FREE_SCHOOL_MEALS: free_school_meals}
    )


EXPECTED_OUTCOMES: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "bb-yes-dla": _outcomes("yes", "no"),
        "bb-yes-pip-moving": _outcomes("yes", "no"),
        "bb-yes-pip-journeys": _outcomes("yes", "no"),
        "bb-yes-registered-blind": _outcomes("yes", "no"),
        "bb-yes-wpms": _outcomes("yes", "no"),
        "bb-yes-afcs": _outcomes("yes", "no"),
        "bb-no": _outcomes("no", "no"),
        "bb-no-pip-journeys-d": _outcomes("no", "no"),
        "bb-no-pip-journeys-f": _outcomes("no", "no"),
        "bb-no-dla-lower": _outcomes("no", "no"),
        "bb-no-afcs-tariff-9": _outcomes("no", "no"),
        "bb-no-afcs-uncertified": _outcomes("no", "no"),
        "bb-no-pip-ended": _outcomes("no", "no"),
        "fsm-yes-income-support": _outcomes("no", "yes"),
        "fsm-yes-jsa-ib": _outcomes("no", "yes"),
        "fsm-yes-esa-ir": _outcomes("no", "yes"),
        "fsm-yes-asylum-support": _outcomes("no", "yes"),
        "fsm-yes-pension-credit": _outcomes("no", "yes"),
        "fsm-yes-uc-low-earnings": _outcomes("no", "yes"),
        "fsm-yes-uc-any-only-after-2026-09": MappingProxyType(
            {
                BLUE_BADGE_AUTOMATIC: "no",
                FREE_SCHOOL_MEALS: "yes",
                FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE: "no",
            }
        ),
        "hmrc-ctc-yes": _outcomes("no", "yes"),
        "hmrc-wtc-run-on-yes": _outcomes("no", "yes"),
        "both-yes-pip-moving-esa": _outcomes("yes", "yes"),
        "fsm-no": _outcomes("no", "no"),
        "hmrc-ctc-no-income-over": _outcomes("no", "no"),
        "hmrc-ctc-no-with-wtc": _outcomes("no", "no"),
        "fsm-no-award-ended": _outcomes("no", "no"),
        "fsm-no-uc-starts-2027": _outcomes("no", "no"),
        "ctr-uc-pip-protected": _outcomes("yes", "yes"),
        "ctr-uc-earnings-above-bands": _outcomes("no", "yes"),
    }
)
"""For each test identity, the answer of each reference check on 2026-11-27.

The identity matched on family name, date of birth and NINO (where it has one). The
no-match identities (``NO_MATCH_IDENTITY``, ``AMBIGUOUS_IDENTITY``) answer ``no-match``.
"""
