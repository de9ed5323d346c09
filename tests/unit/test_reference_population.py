"""The reference providers' synthetic population, its matcher and its attributes."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from connectors.reference.attributes import (
    ATTRIBUTES,
    BLUE_BADGE_AUTOMATIC,
    DWP_ATTRIBUTES,
    EXPECTED_ATTRIBUTES,
    EXPECTED_OUTCOMES,
    FREE_SCHOOL_MEALS,
    FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE,
    HMRC_ATTRIBUTES,
    evaluate,
)
from connectors.reference.population import (
    AMBIGUOUS_IDENTITY,
    NO_MATCH_IDENTITY,
    REFERENCE_DATE,
    TEST_IDENTITIES,
    TWINS,
    Award,
    Benefit,
    Person,
    PopulationIndex,
    generate_population,
    normalise_family_name,
)

AS_OF = date(2026, 11, 27)
UC_CHANGE = date(2026, 9, 1)

# The check rules, written out here independently of the code under test.
BLUE_BADGE_ANY_OF = frozenset(
    {
        "dla-higher-rate-mobility",
        "pip-moving-around-8-plus",
        "pip-planning-journeys-10",
        "registered-blind",
        "war-pensioners-mobility-supplement",
        "afcs-tariff-1-8-walking-disability",
    }
)
FSM_ANY_OF_ALWAYS = frozenset(
    {
        "income-support",
        "jsa-income-based",
        "esa-income-related",
        "asylum-support-part-vi",
        "pension-credit-guarantee",
        "ctc-without-wtc-income-under-16190",
        "wtc-run-on",
    }
)

NINO_FORMAT = re.compile(r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]")
POSTCODE_FORMAT = re.compile(r"[A-Z]{1,2}[0-9]{1,2} [0-9][ABD-HJLNP-UW-Z]{2}")


def attributes_on(person: Person, on: date) -> frozenset[str]:
    return frozenset(name for name in ATTRIBUTES if evaluate(person, name, on))


def blue_badge(person: Person, on: date) -> str:
    return "yes" if attributes_on(person, on) & BLUE_BADGE_ANY_OF else "no"


def free_school_meals(person: Person, on: date) -> str:
    uc = "universal-credit" if on >= UC_CHANGE else "universal-credit-earnings-under-7400"
    return "yes" if attributes_on(person, on) & (FSM_ANY_OF_ALWAYS | {uc}) else "no"


@pytest.fixture(scope="module")
def population() -> tuple[Person, ...]:
    return generate_population()


@pytest.fixture(scope="module")
def index(population: tuple[Person, ...]) -> PopulationIndex:
    return PopulationIndex(population)


# --- generation ----------------------------------------------------------------------------


def test_generation_is_deterministic(population: tuple[Person, ...]) -> None:
    assert generate_population() == population


def test_another_seed_gives_other_generated_people(population: tuple[Person, ...]) -> None:
    other = generate_population(seed=1)
    fixed = len(TEST_IDENTITIES) + len(TWINS)
    assert other[:fixed] == population[:fixed]
    assert other[fixed:] != population[fixed:]


def test_generation_of_ten_thousand_takes_well_under_a_second() -> None:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        generate_population(10_000)
        best = min(best, time.perf_counter() - started)
    assert best < 1.0


def test_population_has_ten_thousand_people_test_identities_first(
    population: tuple[Person, ...],
) -> None:
    assert len(population) >= 10_000
    fixed = (*TEST_IDENTITIES.values(), *TWINS)
    assert population[: len(fixed)] == fixed
    assert len({person.person_id for person in population}) == len(population)


def test_size_too_small_for_the_fixed_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        generate_population(size=3)


def test_generated_fields_are_well_formed(population: tuple[Person, ...]) -> None:
    ninos = [person.nino for person in population if person.nino is not None]
    assert len(set(ninos)) == len(ninos)
    assert all(NINO_FORMAT.fullmatch(nino) for nino in ninos)
    assert all(POSTCODE_FORMAT.fullmatch(person.postcode) for person in population)
    assert all(date(1930, 1, 1) <= p.date_of_birth <= date(2022, 12, 31) for p in population)
    without_nino = len(population) - len(ninos)
    assert 0.05 * len(population) < without_nino < 0.4 * len(population)


def test_no_generated_person_shares_surname_and_birth_date_with_a_fixed_entry(
    population: tuple[Person, ...],
) -> None:
    fixed = (*TEST_IDENTITIES.values(), *TWINS)
    reserved = {(normalise_family_name(p.family_name), p.date_of_birth) for p in fixed}
    generated = population[len(fixed) :]
    assert not any(
        (normalise_family_name(p.family_name), p.date_of_birth) in reserved for p in generated
    )


def test_generated_people_exercise_every_attribute(population: tuple[Person, ...]) -> None:
    generated = population[len(TEST_IDENTITIES) + len(TWINS) :]
    days = (date(2020, 6, 1), date(2024, 6, 1), date(2026, 8, 31), AS_OF)
    held = {name for person in generated for day in days for name in attributes_on(person, day)}
    assert held == set(ATTRIBUTES)


def test_generated_awards_start_and_end_around_the_uc_change(
    population: tuple[Person, ...],
) -> None:
    awards = [award for person in population for award in person.awards]
    assert any(award.end is not None and award.end < UC_CHANGE for award in awards)
    assert any(award.start > UC_CHANGE for award in awards)
    assert any(award.end is None for award in awards)


def test_generated_tax_credits_end_when_tax_credits_ended(
    population: tuple[Person, ...],
) -> None:
    generated = population[len(TEST_IDENTITIES) + len(TWINS) :]
    tax_credits = [
        award
        for person in generated
        for award in person.awards
        if award.benefit in {Benefit.CHILD_TAX_CREDIT, Benefit.WTC_RUN_ON}
    ]
    assert tax_credits
    assert all(a.end is not None and a.end <= date(2025, 4, 5) for a in tax_credits)


# --- attributes ----------------------------------------------------------------------------


def test_attribute_names_are_the_published_ones() -> None:
    assert set(DWP_ATTRIBUTES) == {
        "dla-higher-rate-mobility",
        "pip-moving-around-8-plus",
        "pip-planning-journeys-10",
        "registered-blind",
        "war-pensioners-mobility-supplement",
        "afcs-tariff-1-8-walking-disability",
        "income-support",
        "jsa-income-based",
        "esa-income-related",
        "asylum-support-part-vi",
        "pension-credit-guarantee",
        "universal-credit",
        "universal-credit-earnings-under-7400",
    }
    assert set(HMRC_ATTRIBUTES) == {"ctc-without-wtc-income-under-16190", "wtc-run-on"}
    assert set(ATTRIBUTES) == set(DWP_ATTRIBUTES) | set(HMRC_ATTRIBUTES)
    assert all(description.strip() for description in ATTRIBUTES.values())


def test_unknown_attribute_raises_key_error() -> None:
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    with pytest.raises(KeyError, match="blue-badge-automatic"):
        evaluate(person, "blue-badge-automatic", AS_OF)


def test_reference_date_is_the_documented_one() -> None:
    assert REFERENCE_DATE == AS_OF


def test_expected_tables_cover_exactly_the_test_identities() -> None:
    assert set(EXPECTED_ATTRIBUTES) == set(TEST_IDENTITIES)
    assert set(EXPECTED_OUTCOMES) == set(TEST_IDENTITIES)
    assert all(attrs <= set(ATTRIBUTES) for attrs in EXPECTED_ATTRIBUTES.values())


@pytest.mark.parametrize("check", [BLUE_BADGE_AUTOMATIC, FREE_SCHOOL_MEALS])
def test_each_check_has_a_yes_and_a_no_identity(check: str) -> None:
    answers = {outcomes[check] for outcomes in EXPECTED_OUTCOMES.values()}
    assert answers == {"yes", "no"}


@pytest.mark.parametrize("label", sorted(TEST_IDENTITIES))
def test_test_identity_has_exactly_its_documented_attributes(label: str) -> None:
    assert attributes_on(TEST_IDENTITIES[label], AS_OF) == EXPECTED_ATTRIBUTES[label]


@pytest.mark.parametrize("label", sorted(TEST_IDENTITIES))
def test_test_identity_gives_its_documented_check_outcomes(label: str) -> None:
    person = TEST_IDENTITIES[label]
    expected = EXPECTED_OUTCOMES[label]
    assert expected[BLUE_BADGE_AUTOMATIC] == blue_badge(person, AS_OF)
    assert expected[FREE_SCHOOL_MEALS] == free_school_meals(person, AS_OF)
    if FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE in expected:
        before = UC_CHANGE - timedelta(days=1)
        assert expected[FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE] == free_school_meals(person, before)


def test_uc_above_the_cap_flips_free_school_meals_on_the_change_date() -> None:
    person = TEST_IDENTITIES["fsm-yes-uc-any-only-after-2026-09"]
    before, on = UC_CHANGE - timedelta(days=1), UC_CHANGE
    for day in (before, on):
        assert evaluate(person, "universal-credit", day)
        assert not evaluate(person, "universal-credit-earnings-under-7400", day)
    assert free_school_meals(person, before) == "no"
    assert free_school_meals(person, on) == "yes"
    assert EXPECTED_OUTCOMES["fsm-yes-uc-any-only-after-2026-09"] == {
        BLUE_BADGE_AUTOMATIC: "no",
        FREE_SCHOOL_MEALS: "yes",
        FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE: "no",
    }


def test_uc_at_the_cap_qualifies_under_both_rules() -> None:
    person = TEST_IDENTITIES["fsm-yes-uc-low-earnings"]
    assert free_school_meals(person, UC_CHANGE - timedelta(days=1)) == "yes"
    assert free_school_meals(person, UC_CHANGE) == "yes"


def test_award_dates_are_inclusive() -> None:
    person = TEST_IDENTITIES["bb-no-pip-ended"]
    award = person.awards[0]
    assert award.end is not None
    assert not evaluate(person, "pip-moving-around-8-plus", award.start - timedelta(days=1))
    assert evaluate(person, "pip-moving-around-8-plus", award.start)
    assert evaluate(person, "pip-moving-around-8-plus", award.end)
    assert not evaluate(person, "pip-moving-around-8-plus", award.end + timedelta(days=1))


def test_award_starting_later_does_not_count_yet() -> None:
    person = TEST_IDENTITIES["fsm-no-uc-starts-2027"]
    assert not evaluate(person, "universal-credit", AS_OF)
    assert evaluate(person, "universal-credit", person.awards[0].start)


@pytest.mark.parametrize(
    ("award", "attribute", "expected"),
    [
        (Award("PIP", date(2020, 1, 1), pip_moving_points=8), "pip-moving-around-8-plus", True),
        (Award("PIP", date(2020, 1, 1), pip_moving_points=4), "pip-moving-around-8-plus", False),
        (
            Award("PIP", date(2020, 1, 1), pip_journeys_descriptor="E"),
            "pip-planning-journeys-10",
            True,
        ),
        (
            Award("PIP", date(2020, 1, 1), pip_journeys_descriptor="D"),
            "pip-planning-journeys-10",
            False,
        ),
        (
            Award("AFCS", date(2020, 1, 1), afcs_tariff=1, walking_disability_certified=True),
            "afcs-tariff-1-8-walking-disability",
            True,
        ),
        (
            Award("AFCS", date(2020, 1, 1), afcs_tariff=None, walking_disability_certified=True),
            "afcs-tariff-1-8-walking-disability",
            False,
        ),
        (
            Award("UC", date(2020, 1, 1), annual_net_earnings=None),
            "universal-credit-earnings-under-7400",
            False,
        ),
        (
            Award("CTC", date(2020, 1, 1), with_wtc=None, annual_gross_income=1000),
            "ctc-without-wtc-income-under-16190",
            False,
        ),
        (Award("IS", date(2020, 1, 1)), "jsa-income-based", False),
    ],
)
def test_thresholds_and_missing_details(award: Award, attribute: str, expected: bool) -> None:
    person = Person("X1", "Edgecase", "Ed", date(1980, 1, 1), "CV34 4RL", None, awards=(award,))
    assert evaluate(person, attribute, AS_OF) is expected


def test_award_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before"):
        Award("UC", date(2026, 1, 2), date(2026, 1, 1))


# --- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(TEST_IDENTITIES))
def test_test_identity_matches_itself_with_and_without_nino(
    index: PopulationIndex, label: str
) -> None:
    person = TEST_IDENTITIES[label]
    assert index.match(person.family_name, person.date_of_birth) is person
    if person.nino is not None:
        assert index.match(person.family_name, person.date_of_birth, person.nino) is person


def test_match_ignores_case_and_surrounding_whitespace(index: PopulationIndex) -> None:
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    for name in ("sampleton", "SAMPLETON", "  Sampleton\t", "sAmPlEtOn "):
        assert index.match(name, person.date_of_birth) is person


def test_match_normalises_hyphens_apostrophes_and_inner_spaces(index: PopulationIndex) -> None:
    hyphenated = TEST_IDENTITIES["fsm-yes-esa-ir"]
    for name in ("Stubbington Test", "stubbington  -  test", "Stubbington\u2013Test"):
        assert index.match(name, hyphenated.date_of_birth) is hyphenated
    apostrophe = TEST_IDENTITIES["hmrc-wtc-run-on-yes"]
    for name in ("O\u2019Fakery", "OFakery", "o'fakery"):
        assert index.match(name, apostrophe.date_of_birth) is apostrophe


def test_match_is_exact_on_surname_and_date_of_birth(index: PopulationIndex) -> None:
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    assert index.match("Sampleto", person.date_of_birth) is None
    assert index.match("Sampletons", person.date_of_birth) is None
    assert index.match("Sample ton", person.date_of_birth) is None
    assert index.match(person.family_name, person.date_of_birth + timedelta(days=1)) is None
    assert index.match("", person.date_of_birth) is None


def test_match_ignores_spaces_and_case_in_nino(index: PopulationIndex) -> None:
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    assert index.match(person.family_name, person.date_of_birth, "zx 10 00 01 a") is person


def test_nino_mismatch_is_no_match(index: PopulationIndex) -> None:
    person = TEST_IDENTITIES["bb-yes-pip-moving"]
    other = TEST_IDENTITIES["bb-yes-pip-journeys"]
    assert other.nino is not None
    assert index.match(person.family_name, person.date_of_birth, other.nino) is None
    assert index.match(person.family_name, person.date_of_birth, "") is None


def test_nino_given_for_person_without_one_is_no_match(index: PopulationIndex) -> None:
    person = TEST_IDENTITIES["fsm-yes-asylum-support"]
    assert person.nino is None
    assert index.match(person.family_name, person.date_of_birth) is person
    assert index.match(person.family_name, person.date_of_birth, "ZX100101A") is None


def test_ambiguous_identity_is_no_match_and_nino_resolves_it(index: PopulationIndex) -> None:
    assert AMBIGUOUS_IDENTITY.nino is None
    assert index.match(AMBIGUOUS_IDENTITY.family_name, AMBIGUOUS_IDENTITY.date_of_birth) is None
    for twin in TWINS:
        assert index.match(twin.family_name, twin.date_of_birth, twin.nino) is twin


def test_ambiguous_generated_people_are_no_match(
    population: tuple[Person, ...], index: PopulationIndex
) -> None:
    seen: dict[tuple[str, date], Person] = {}
    clashes = []
    for person in population:
        key = (normalise_family_name(person.family_name), person.date_of_birth)
        if key in seen:
            clashes.append((seen[key], person))
        seen[key] = person
    assert clashes, "the generated population is expected to contain namesakes"
    for first, _second in clashes:
        assert index.match(first.family_name, first.date_of_birth) is None


def test_two_people_without_nino_are_ambiguous() -> None:
    born = date(1975, 5, 5)
    index = PopulationIndex(
        [
            Person("A", "Doubleton", "Ann", born, "CV34 4RL", None),
            Person("B", "Doubleton", "Bea", born, "CV34 4RL", None),
        ]
    )
    assert len(index) == 2
    assert index.match("Doubleton", born) is None
    assert index.match("Doubleton", born, "AB123456C") is None


def test_no_match_identity_matches_nobody(index: PopulationIndex) -> None:
    identity = NO_MATCH_IDENTITY
    assert index.match(identity.family_name, identity.date_of_birth) is None
    assert index.match(identity.family_name, identity.date_of_birth, identity.nino) is None


def test_duplicate_person_id_is_refused() -> None:
    person = TEST_IDENTITIES["fsm-no"]
    with pytest.raises(ValueError, match="duplicate"):
        PopulationIndex([person, person])


# --- personal data stays out of logs -------------------------------------------------------


def _personal_strings(person: Person) -> list[str]:
    born = person.date_of_birth
    values = [
        person.family_name,
        *person.given_names.split(),
        person.postcode,
        born.isoformat(),
        repr(born),
        f"{born.day:02d}/{born.month:02d}/{born.year}",
    ]
    if person.nino is not None:
        values.append(person.nino)
    return values


@pytest.mark.parametrize("person", [*TEST_IDENTITIES.values(), *TWINS], ids=repr)
def test_person_repr_shows_no_personal_data(person: Person) -> None:
    shown = [repr(person), str(person)]
    for value in _personal_strings(person):
        assert all(value not in text for text in shown), value
    assert person.person_id in repr(person)
    assert "award" not in repr(person).lower()


def test_matching_fields_repr_shows_no_personal_data() -> None:
    for fields in (NO_MATCH_IDENTITY, AMBIGUOUS_IDENTITY):
        text = repr(fields)
        for value in (
            fields.family_name,
            fields.given_names,
            fields.postcode,
            fields.date_of_birth.isoformat(),
        ):
            assert value not in text
        assert fields.nino is None or fields.nino not in text


# --- the published table -------------------------------------------------------------------

DOCS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "test-identities.md"


def test_published_table_matches_the_test_identities() -> None:
    rows = {}
    for line in DOCS_TABLE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(TEST_IDENTITIES)
    for label, person in TEST_IDENTITIES.items():
        _, family, given, born, nino, postcode, _held, badge, meals = rows[label]
        assert (family, given, born, nino, postcode) == (
            person.family_name,
            person.given_names,
            person.date_of_birth.isoformat(),
            person.nino or "—",
            person.postcode,
        ), label
        expected = EXPECTED_OUTCOMES[label]
        assert badge == expected[BLUE_BADGE_AUTOMATIC], label
        assert meals.split()[0] == expected[FREE_SCHOOL_MEALS], label
        if FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE in expected:
            before = expected[FREE_SCHOOL_MEALS_BEFORE_UC_CHANGE]
            assert f"**{before}** on 2026-08-31" in meals, label
