"""Rules: three-valued evaluation, short-circuit points and date-effective versions."""

from __future__ import annotations

from datetime import date

import pytest

from trust.messages import Outcome
from trust.rules import AllOf, AnyOf, AttributeRef, evaluate, finalise, parse_check, parse_rule

A, B, C = (AttributeRef("p", name) for name in ("a", "b", "c"))


def known(**values: Outcome) -> dict[AttributeRef, Outcome]:
    return {AttributeRef("p", k): v for k, v in values.items()}


def test_any_is_yes_at_the_first_yes_even_with_answers_pending() -> None:
    assert evaluate(AnyOf((A, B, C)), known(b="yes").get) == "yes"


def test_any_stays_open_while_a_no_leaves_answers_pending() -> None:
    assert evaluate(AnyOf((A, B)), known(a="no").get) is None


def test_all_is_no_at_the_first_no() -> None:
    assert evaluate(AllOf((A, B)), known(a="no").get) == "no"


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"a": "no", "b": "no"}, "no"),
        ({"a": "no", "b": "undetermined"}, "undetermined"),
        ({"a": "no-match", "b": "no-match"}, "no-match"),
        ({"a": "no", "b": "no-match"}, "no-match"),
        ({"a": "undetermined", "b": "no-match"}, "undetermined"),
    ],
)
def test_any_without_a_yes_reports_the_most_informative_outcome(
    answers: dict[str, Outcome], expected: Outcome
) -> None:
    assert finalise(AnyOf((A, B)), known(**answers)) == expected


def test_missing_answers_count_as_undetermined_at_the_deadline() -> None:
    assert finalise(AnyOf((A, B)), known(a="no")) == "undetermined"
    assert finalise(AllOf((A, B)), known(a="yes")) == "undetermined"


def test_nested_rules_evaluate() -> None:
    rule = AllOf((A, AnyOf((B, C))))
    assert evaluate(rule, known(a="yes", c="yes").get) == "yes"
    assert evaluate(rule, known(a="yes", b="no").get) is None


@pytest.mark.parametrize(
    "document",
    [{"any": []}, {"all": []}, {"any": [{"attribute": "nope"}]}, {"xor": []}, [], {"a": 1, "b": 2}],
)
def test_refuses_empty_or_malformed_rules(document: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_rule(document)


def _check(versions: list[dict[str, object]]) -> dict[str, object]:
    return {"name": "c", "description": "d", "versions": versions}


def _version(n: int, start: str, end: str | None) -> dict[str, object]:
    return {
        "version": n,
        "effective_from": start,
        "effective_to": end,
        "rule": {"attribute": "p/a"},
    }


def test_version_in_force_is_chosen_by_date() -> None:
    check = parse_check(
        _check([_version(1, "2020-01-01", "2026-08-31"), _version(2, "2026-09-01", None)])
    )
    assert check.version_on(date(2026, 8, 31)).version == 1  # type: ignore[union-attr]
    assert check.version_on(date(2026, 9, 1)).version == 2  # type: ignore[union-attr]
    assert check.version_on(date(2019, 12, 31)) is None


def test_refuses_overlapping_versions() -> None:
    with pytest.raises(ValueError, match="overlapping"):
        parse_check(_check([_version(1, "2020-01-01", None), _version(2, "2026-09-01", None)]))
