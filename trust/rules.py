"""Named, date-effective checks and how provider answers combine into one outcome.

A check has versions, each effective over a date range, each a rule over provider attributes:
``{"any": [...]}``, ``{"all": [...]}`` or ``{"attribute": "provider/attribute"}``. Evaluation is
three-valued while answers arrive (``None`` = not yet decided), which is what lets the broker
short-circuit: an ``any`` is ``yes`` at the first ``yes``, an ``all`` is ``no`` at the first ``no``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from trust.dates import parse_date
from trust.messages import ASSURANCE_LEVELS, Outcome


@dataclass(frozen=True, slots=True)
class AttributeRef:
    provider: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.attribute}"


@dataclass(frozen=True, slots=True)
class AnyOf:
    terms: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    terms: tuple[Rule, ...]


Rule = AttributeRef | AnyOf | AllOf

# When nothing decides a combination, the most informative outcome wins, in this order.
_ANY_PRECEDENCE: tuple[Outcome, ...] = ("yes", "undetermined", "no-match", "no")
_ALL_PRECEDENCE: tuple[Outcome, ...] = ("no", "undetermined", "no-match", "yes")


def parse_rule(document: Any, depth: int = 0) -> Rule:
    """Parse a rule document; raises ``ValueError`` (empty ``any``/``all`` included: an empty
    rule must never pass by default)."""
    if depth > 8:
        raise ValueError("rule nested too deeply")
    if not isinstance(document, dict) or len(document) != 1:
        raise ValueError("a rule is an object with exactly one of any, all, attribute")
    ((kind, body),) = document.items()
    if kind == "attribute":
        if not isinstance(body, str) or body.count("/") != 1:
            raise ValueError("attribute must be 'provider/attribute'")
        provider, attribute = body.split("/")
        if not provider or not attribute:
            raise ValueError("attribute must be 'provider/attribute'")
        return AttributeRef(provider, attribute)
    if kind not in ("any", "all"):
        raise ValueError(f"unknown rule kind {kind!r}")
    if not isinstance(body, list) or not body:
        raise ValueError(f"'{kind}' needs at least one term")
    terms = tuple(parse_rule(term, depth + 1) for term in body)
    return AnyOf(terms) if kind == "any" else AllOf(terms)


def rule_document(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, AttributeRef):
        return {"attribute": str(rule)}
    kind = "any" if isinstance(rule, AnyOf) else "all"
    return {kind: [rule_document(term) for term in rule.terms]}


def attributes_of(rule: Rule) -> frozenset[AttributeRef]:
    if isinstance(rule, AttributeRef):
        return frozenset({rule})
    return frozenset().union(*(attributes_of(term) for term in rule.terms))


def evaluate(rule: Rule, known: Callable[[AttributeRef], Outcome | None]) -> Outcome | None:
    """The rule's outcome from the answers known so far, or ``None`` while it is still open."""
    if isinstance(rule, AttributeRef):
        return known(rule)
    decisive: Outcome = "yes" if isinstance(rule, AnyOf) else "no"
    precedence = _ANY_PRECEDENCE if isinstance(rule, AnyOf) else _ALL_PRECEDENCE
    results = [evaluate(term, known) for term in rule.terms]
    if decisive in results:
        return decisive
    if None in results:
        return None
    return next(outcome for outcome in precedence if outcome in results)


def finalise(rule: Rule, known: Mapping[AttributeRef, Outcome]) -> Outcome:
    """The outcome once no more answers will come: a missing answer counts as undetermined."""
    outcome = evaluate(rule, lambda ref: known.get(ref, "undetermined"))
    return "undetermined" if outcome is None else outcome


@dataclass(frozen=True, slots=True)
class CheckVersion:
    version: int
    effective_from: date
    effective_to: date | None
    rule: Rule
    min_assurance: str | None

    def effective_on(self, day: date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )


@dataclass(frozen=True, slots=True)
class Check:
    """A named rule councils ask for, answered by whichever version is effective on the date."""

    name: str
    description: str
    versions: tuple[CheckVersion, ...]

    def version_on(self, day: date) -> CheckVersion | None:
        return next((v for v in self.versions if v.effective_on(day)), None)


def parse_check(document: Any) -> Check:
    """Parse one check; raises ``ValueError`` on overlapping versions or bad fields."""
    if not isinstance(document, dict):
        raise ValueError("a check is an object")
    name, description, raw_versions = (
        document.get("name"),
        document.get("description", ""),
        document.get("versions"),
    )
    if not isinstance(name, str) or not name or not isinstance(description, str):
        raise ValueError("a check needs a name and a description")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise ValueError(f"check {name!r} needs at least one version")
    versions = tuple(_parse_version(raw) for raw in raw_versions)
    ordered = sorted(versions, key=lambda v: v.effective_from)
    for earlier, later in itertools.pairwise(ordered):
        if earlier.effective_to is None or earlier.effective_to >= later.effective_from:
            raise ValueError(f"check {name!r} has overlapping versions")
    if len({v.version for v in versions}) != len(versions):
        raise ValueError(f"check {name!r} repeats a version number")
    return Check(name, description, tuple(ordered))


def _parse_version(raw: Any) -> CheckVersion:
    if not isinstance(raw, dict):
        raise ValueError("a check version is an object")
    version = raw.get("version")
    if type(version) is not int or version < 1:
        raise ValueError("version must be an integer >= 1")
    start = parse_date(raw.get("effective_from"), "effective_from")
    end_raw = raw.get("effective_to")
    end = None if end_raw is None else parse_date(end_raw, "effective_to")
    if end is not None and end < start:
        raise ValueError("effective_to before effective_from")
    minimum = raw.get("min_assurance")
    if minimum is not None and minimum not in ASSURANCE_LEVELS:
        raise ValueError("min_assurance must be one of P0..P4")
    return CheckVersion(version, start, end, parse_rule(raw.get("rule")), minimum)


def check_document(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "description": check.description,
        "versions": [
            {
                "version": v.version,
                "effective_from": v.effective_from.isoformat(),
                "effective_to": None if v.effective_to is None else v.effective_to.isoformat(),
                "min_assurance": v.min_assurance,
                "rule": rule_document(v.rule),
            }
            for v in check.versions
        ],
    }
