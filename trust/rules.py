"""Named, date-effective checks and how provider answers combine into one outcome.

A check has versions, each effective over a date range, each a rule over provider attributes:
``{"any": [...]}``, ``{"all": [...]}`` or ``{"attribute": "provider/attribute"}`` (with
``"parameters": {...}`` binding a parameterised attribute, :mod:`trust.parameters`). Evaluation is
three-valued while answers arrive (``None`` = not yet decided), which is what lets the broker
short-circuit: an ``any`` is ``yes`` at the first ``yes``, an ``all`` is ``no`` at the first ``no``.

Local rules: a check may be ``owner``-ed by one council (its local scheme: no one else may ask
it), and a version may be scoped to named ``councils``; a council is answered by the version
scoped to it that is in force on the date, else by the unscoped one. A version may declare
ordered ``bands`` (a council tax reduction scheme): once its rule is ``yes`` the answer is the
first band whose condition holds, or ``no`` when none does. Band conditions are parameterised
predicates ("take-home pay below 50,000 p"), so the provider still reveals no income.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from trust.dates import parse_date
from trust.messages import ASSURANCE_LEVELS, OUTCOMES, Outcome, is_band_name
from trust.parameters import Bindings, Predicate, parse_bindings


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """A provider's attribute, with its parameters bound if it takes any."""

    provider: str
    attribute: str
    parameters: Bindings = ()

    def __str__(self) -> str:
        if not self.parameters:
            return f"{self.provider}/{self.attribute}"
        return f"{self.provider}/{Predicate(self.attribute, self.parameters)}"

    @property
    def predicate(self) -> Predicate | None:
        return Predicate(self.attribute, self.parameters) if self.parameters else None


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
    if isinstance(document, dict) and set(document) == {"attribute", "parameters"}:
        return _attribute(document["attribute"], parse_bindings(document["parameters"]))
    if not isinstance(document, dict) or len(document) != 1:
        raise ValueError("a rule is an object with exactly one of any, all, attribute")
    ((kind, body),) = document.items()
    if kind == "attribute":
        return _attribute(body)
    if kind not in ("any", "all"):
        raise ValueError(f"unknown rule kind {kind!r}")
    if not isinstance(body, list) or not body:
        raise ValueError(f"'{kind}' needs at least one term")
    terms = tuple(parse_rule(term, depth + 1) for term in body)
    return AnyOf(terms) if kind == "any" else AllOf(terms)


def _attribute(body: Any, parameters: Bindings = ()) -> AttributeRef:
    if not isinstance(body, str) or body.count("/") != 1:
        raise ValueError("attribute must be 'provider/attribute'")
    provider, attribute = body.split("/")
    if not provider or not attribute:
        raise ValueError("attribute must be 'provider/attribute'")
    return AttributeRef(provider, attribute, parameters)


def rule_document(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, AttributeRef):
        document: dict[str, Any] = {"attribute": f"{rule.provider}/{rule.attribute}"}
        if rule.parameters:
            document["parameters"] = dict(rule.parameters)
        return document
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
class Band:
    """One band of a banded check: it applies when ``rule`` is ``yes`` (and no earlier band
    did). ``below`` and ``when`` are how the registry document wrote it."""

    name: str
    rule: Rule
    below: int | None
    when: Rule | None


@dataclass(frozen=True, slots=True)
class Bands:
    """Ordered bands over one measure: a parameterised attribute whose ``threshold`` parameter
    each band binds to its ``below`` (the other parameters fixed in ``measure``)."""

    measure: AttributeRef | None
    threshold: str | None
    order: tuple[Band, ...]


@dataclass(frozen=True, slots=True)
class CheckVersion:
    version: int
    effective_from: date
    effective_to: date | None
    rule: Rule
    min_assurance: str | None
    councils: frozenset[str] = frozenset()
    bands: Bands | None = None

    def effective_on(self, day: date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )

    @property
    def attributes(self) -> frozenset[AttributeRef]:
        """Every attribute (or predicate) this version may ask a provider."""
        bands = () if self.bands is None else self.bands.order
        return attributes_of(self.rule).union(*(attributes_of(b.rule) for b in bands))


def verdict(version: CheckVersion, known: Callable[[AttributeRef], Outcome | None]) -> str | None:
    """The version's answer from the answers known so far (``None`` while open): its rule's
    outcome, or for a banded version whose rule is ``yes``, the first band that applies, ``no``
    when none does, and ``undetermined`` when an earlier band cannot be decided."""
    outcome = evaluate(version.rule, known)
    if version.bands is None or outcome != "yes":
        return outcome
    for band in version.bands.order:
        applies = evaluate(band.rule, known)
        if applies is None:
            return None
        if applies == "yes":
            return band.name
        if applies != "no":
            return "undetermined"
    return "no"


def final_verdict(version: CheckVersion, known: Mapping[AttributeRef, Outcome]) -> str:
    """The answer once no more answers will come: a missing answer counts as undetermined."""
    outcome = verdict(version, lambda ref: known.get(ref, "undetermined"))
    return "undetermined" if outcome is None else outcome


@dataclass(frozen=True, slots=True)
class Check:
    """A named rule councils ask for, answered by whichever version is effective on the date
    (for a council: the version scoped to it, else the unscoped one). A check with an
    ``owner`` is that council's local scheme."""

    name: str
    description: str
    versions: tuple[CheckVersion, ...]
    owner: str | None = None

    def version_on(self, day: date, council: str | None = None) -> CheckVersion | None:
        if council is not None:
            scoped = next(
                (v for v in self.versions if council in v.councils and v.effective_on(day)), None
            )
            if scoped is not None:
                return scoped
        return next((v for v in self.versions if not v.councils and v.effective_on(day)), None)

    @property
    def councils(self) -> frozenset[str]:
        """Every council a version of this check is scoped to."""
        return frozenset().union(*(v.councils for v in self.versions))

    def may_ask(self, council: str) -> bool:
        return self.owner is None or self.owner == council


def _no_overlap(name: str, versions: list[CheckVersion], scope: str) -> None:
    ordered = sorted(versions, key=lambda v: v.effective_from)
    for earlier, later in itertools.pairwise(ordered):
        if earlier.effective_to is None or earlier.effective_to >= later.effective_from:
            raise ValueError(f"check {name!r} has overlapping versions{scope}")


def parse_check(document: Any) -> Check:
    """Parse one check; raises ``ValueError`` on overlapping versions (among the unscoped ones,
    and among those scoped to any one council) or bad fields."""
    if not isinstance(document, dict):
        raise ValueError("a check is an object")
    name, description, raw_versions = (
        document.get("name"),
        document.get("description", ""),
        document.get("versions"),
    )
    if not isinstance(name, str) or not name or not isinstance(description, str):
        raise ValueError("a check needs a name and a description")
    owner = document.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise ValueError(f"check {name!r}: owner must be a member id")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise ValueError(f"check {name!r} needs at least one version")
    versions = tuple(_parse_version(raw) for raw in raw_versions)
    _no_overlap(name, [v for v in versions if not v.councils], "")
    for council in sorted(frozenset().union(*(v.councils for v in versions))):
        scoped = [v for v in versions if council in v.councils]
        _no_overlap(name, scoped, f" for {council}")
    if owner is not None and any(v.councils - {owner} for v in versions):
        raise ValueError(f"check {name!r} is {owner}'s local check: no version for others")
    if len({v.version for v in versions}) != len(versions):
        raise ValueError(f"check {name!r} repeats a version number")
    ordered = sorted(versions, key=lambda v: (v.effective_from, v.version))
    return Check(name, description, tuple(ordered), owner)


def _parse_councils(raw: Any) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(c, str) and c for c in raw)
        or len(set(raw)) != len(raw)
    ):
        raise ValueError("councils must be a non-empty list of distinct member ids")
    return frozenset(raw)


def _parse_band(raw: Any, measure: AttributeRef | None, threshold: str | None) -> Band:
    if not isinstance(raw, dict) or not set(raw) <= {"band", "below", "when"}:
        raise ValueError("a band is an object with band, below and when")
    name = raw.get("band")
    if not isinstance(name, str) or not is_band_name(name):
        raise ValueError(f"band name {name!r} must be a slug other than {list(OUTCOMES)}")
    below, when_raw = raw.get("below"), raw.get("when")
    when = None if when_raw is None else parse_rule(when_raw)
    terms: list[Rule] = [] if when is None else [when]
    if below is not None:
        if type(below) is not int or measure is None or threshold is None:
            raise ValueError(f"band {name}: below is an integer and needs the bands' measure")
        terms.append(
            AttributeRef(
                measure.provider,
                measure.attribute,
                tuple(sorted((*measure.parameters, (threshold, below)))),
            )
        )
    if not terms:
        raise ValueError(f"band {name} needs below, when or both")
    rule = terms[0] if len(terms) == 1 else AllOf(tuple(terms))
    return Band(name, rule, below, when)


def parse_bands(raw: Any) -> Bands:
    """A version's ``bands``; raises ``ValueError`` when the bands are not ordered or overlap:
    among bands with the same ``when``, ``below`` must rise strictly and a band without one
    (it takes everyone left) must come last. Band names are distinct."""
    if not isinstance(raw, dict) or not set(raw) <= {"measure", "threshold", "order"}:
        raise ValueError("bands is an object with measure, threshold and order")
    measure = None if raw.get("measure") is None else parse_rule(raw["measure"])
    threshold = raw.get("threshold")
    one_attribute = isinstance(measure, AttributeRef) and isinstance(threshold, str)
    if measure is not None and not one_attribute:
        raise ValueError("the bands' measure is one attribute, with a threshold parameter")
    if isinstance(measure, AttributeRef) and threshold in dict(measure.parameters):
        raise ValueError("the bands' measure may not fix its own threshold")
    order = raw.get("order")
    if not isinstance(order, list) or not 0 < len(order) <= 16:
        raise ValueError("bands need an order of 1 to 16 bands")
    ref = measure if isinstance(measure, AttributeRef) else None
    bands = tuple(_parse_band(item, ref, threshold if ref else None) for item in order)
    if len({b.name for b in bands}) != len(bands):
        raise ValueError("band names repeat")
    groups: dict[str, list[Band]] = {}
    for band in bands:
        key = "" if band.when is None else repr(rule_document(band.when))
        groups.setdefault(key, []).append(band)
    for group in groups.values():
        for earlier, later in itertools.pairwise(group):
            if earlier.below is None:
                raise ValueError(f"band {later.name} can never apply: {earlier.name} takes all")
            if later.below is not None and later.below <= earlier.below:
                raise ValueError(
                    f"bands {earlier.name} and {later.name} are not ordered or overlap"
                )
    return Bands(ref, threshold if ref else None, bands)


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
    bands = None if raw.get("bands") is None else parse_bands(raw["bands"])
    return CheckVersion(
        version,
        start,
        end,
        parse_rule(raw.get("rule")),
        minimum,
        _parse_councils(raw.get("councils")),
        bands,
    )


def bands_document(bands: Bands) -> dict[str, Any]:
    order: list[dict[str, Any]] = []
    for band in bands.order:
        entry: dict[str, Any] = {"band": band.name}
        if band.below is not None:
            entry["below"] = band.below
        if band.when is not None:
            entry["when"] = rule_document(band.when)
        order.append(entry)
    document: dict[str, Any] = {"order": order}
    if bands.measure is not None:
        document |= {"measure": rule_document(bands.measure), "threshold": bands.threshold}
    return document


def version_document(v: CheckVersion) -> dict[str, Any]:
    """A version as the registry writes it; the local-rule and band keys only when used, so a
    plain yes/no check's document is what it always was."""
    document: dict[str, Any] = {
        "version": v.version,
        "effective_from": v.effective_from.isoformat(),
        "effective_to": None if v.effective_to is None else v.effective_to.isoformat(),
        "min_assurance": v.min_assurance,
        "rule": rule_document(v.rule),
    }
    if v.councils:
        document["councils"] = sorted(v.councils)
    if v.bands is not None:
        document["bands"] = bands_document(v.bands)
    return document


def check_document(check: Check) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": check.name,
        "description": check.description,
        "versions": [version_document(v) for v in check.versions],
    }
    if check.owner is not None:
        document["owner"] = check.owner
    return document
