"""Parameterised attributes, local rules and bands, attacked: schemas that check nothing, rules
whose parameters break a schema or were never declared, bands out of order or overlapping,
another council's local check, answers carrying amounts; and the yes/no path unchanged."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from broker.scheme import dev as devscheme
from trust import jws, policy
from trust.errors import InvalidMessage, PolicyRefusal, RegistryError
from trust.keys import SigningKey
from trust.messages import (
    AttributeRequest,
    EligibilityQuery,
    Outcome,
    Subject,
    attribute_request_claims,
    parse_answer,
    parse_attribute_request,
    parse_attribute_response,
)
from trust.parameters import (
    Predicate,
    check_bindings,
    parse_bindings,
    parse_parameter_schema,
)
from trust.registry import Anchors, Registry, sign_registry, verify_registry
from trust.rules import AttributeRef, check_document, parse_bands, parse_check, verdict

NOW = 1_790_000_000
KEYS = {m: SigningKey.generate() for m in devscheme.MEMBERS}
OPERATOR = SigningKey.generate()
ANCHORS = Anchors(devscheme.SCHEME, devscheme.OPERATOR, (OPERATOR.verifying_key,))
PORTS = {p: 9001 + i for i, p in enumerate(devscheme.PROVIDERS)}
DWP = devscheme.DWP
TAKE_HOME = f"{DWP}/uc-take-home-pay-below"
SCHEMA = {
    "amount": {"type": "integer", "description": "pence", "minimum": 1, "maximum": 1000},
    "kind": {"type": "word", "description": "which", "choices": ["a", "b"]},
}


def registry(
    checks: list[dict[str, Any]] | None = None, members: list[dict[str, Any]] | None = None
) -> Registry:
    token = sign_registry(
        members=members or devscheme.registry_members(KEYS, PORTS, suspended=()),
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks() if checks is None else checks,
        seq=1,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=OPERATOR,
        now=NOW,
    )
    return verify_registry(token, ANCHORS, now=NOW + 10)


def with_ctr_version(change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    checks = devscheme.reference_checks()
    ctr = next(c for c in checks if c["name"] == devscheme.CTR_CHECK)
    change(ctr["versions"][2])  # Warwick District's version
    return checks


# --- parameter schemas and bindings --------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"n": {"type": "integer", "description": "unbounded"}},
        {"n": {"type": "integer", "description": "x", "minimum": 5, "maximum": 1}},
        {"n": {"type": "integer", "description": "x", "minimum": 0, "maximum": 10**13}},
        {"n": {"type": "float", "description": "x"}},
        {"n": {"type": "word", "description": "x", "choices": []}},
        {"n": {"type": "word", "description": "x", "choices": ["a", "a"]}},
        {"N": {"type": "integer", "description": "x", "minimum": 0, "maximum": 1}},
        {"n": {"type": "integer", "minimum": 0, "maximum": 1}},
        {},
    ],
)
def test_a_parameter_schema_that_checks_nothing_or_is_malformed_is_refused(
    schema: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="parameter"):
        parse_parameter_schema(schema)


@pytest.mark.parametrize(
    ("bound", "message"),
    [
        ({"amount": 0, "kind": "a"}, "below its minimum"),
        ({"amount": 1001, "kind": "a"}, "above its maximum"),
        ({"amount": True, "kind": "a"}, "must be an integer"),
        ({"amount": 5, "kind": "c"}, "must be one of"),
        ({"amount": 5}, "not bound: ['kind']"),
        ({"amount": 5, "kind": "a", "extra": 1}, "not declared by the provider: ['extra']"),
    ],
)
def test_bindings_outside_the_schema_are_refused(bound: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_bindings(parse_parameter_schema(SCHEMA), parse_bindings(bound), "test")


def test_bindings_inside_the_schema_pass_and_sort() -> None:
    bound = parse_bindings({"kind": "b", "amount": 1000})
    check_bindings(parse_parameter_schema(SCHEMA), bound, "test")
    assert bound == (("amount", 1000), ("kind", "b"))
    assert str(Predicate("x", bound)) == "x(amount=1000,kind=b)"


@pytest.mark.parametrize("value", [1.5, None, [1], {"a": 1}, "Not A Slug", ""])
def test_a_binding_is_an_integer_or_a_slug_word(value: Any) -> None:
    with pytest.raises(ValueError, match="integer or a slug"):
        parse_bindings({"n": value})


# --- the registry refuses rules that break the provider's declaration ---------------------


@pytest.mark.parametrize(
    ("measure", "message"),
    [
        ({"periods": 13}, "periods is above its maximum 12"),
        ({"periods": 1, "household": 2}, "not declared by the provider"),
        ({"periods": "one"}, "must be an integer"),
    ],
)
def test_registry_refuses_a_band_measure_that_breaks_the_schema(
    measure: dict[str, Any], message: str
) -> None:
    def change(version: dict[str, Any]) -> None:
        version["bands"]["measure"]["parameters"] = measure

    with pytest.raises(RegistryError, match=message):
        registry(with_ctr_version(change))


def test_registry_refuses_a_band_threshold_beyond_the_schema() -> None:
    def change(version: dict[str, Any]) -> None:
        version["bands"]["order"][1]["below"] = 200_000_000  # maximum 100,000,000

    with pytest.raises(RegistryError, match="amount_pence is above its maximum"):
        registry(with_ctr_version(change))


def test_registry_refuses_parameters_on_a_plain_attribute_and_none_on_a_parameterised_one() -> None:
    def plain_with_parameters(version: dict[str, Any]) -> None:
        version["rule"] = {"attribute": f"{DWP}/universal-credit", "parameters": {"periods": 1}}

    def parameterised_without(version: dict[str, Any]) -> None:
        version["rule"] = {"attribute": TAKE_HOME}

    with pytest.raises(RegistryError, match="not declared by the provider: \\['periods'\\]"):
        registry(with_ctr_version(plain_with_parameters))
    with pytest.raises(RegistryError, match="not bound"):
        registry(with_ctr_version(parameterised_without))


def test_registry_refuses_a_provider_schema_that_checks_nothing() -> None:
    members = devscheme.registry_members(KEYS, PORTS, suspended=())
    dwp = next(m for m in members if m["id"] == DWP)
    spec = next(a for a in dwp["provider"]["attributes"] if a["name"] == "uc-take-home-pay-below")
    del spec["parameters"]["amount_pence"]["maximum"]
    with pytest.raises(RegistryError, match="amount_pence"):
        registry(members=members)


@pytest.mark.parametrize("councils", [["council-nowhere"], [devscheme.DWP], [devscheme.AUDITOR]])
def test_registry_refuses_a_version_scoped_to_what_is_not_a_council(councils: list[str]) -> None:
    def change(version: dict[str, Any]) -> None:
        version["councils"] = councils

    with pytest.raises(RegistryError, match="not a relying party"):
        registry(with_ctr_version(change))


# --- bands ----------------------------------------------------------------------------------

MEASURE = {"attribute": TAKE_HOME, "parameters": {"periods": 1}}


def bands(*order: dict[str, Any]) -> dict[str, Any]:
    return {"measure": MEASURE, "threshold": "amount_pence", "order": list(order)}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (bands({"band": "a", "below": 200}, {"band": "b", "below": 100}), "not ordered or overlap"),
        (bands({"band": "a", "below": 100}, {"band": "b", "below": 100}), "not ordered or overlap"),
        (bands({"band": "a"}, {"band": "b", "below": 100}), "needs below, when or both"),
        (
            bands(
                {"band": "a", "when": {"attribute": f"{DWP}/registered-blind"}},
                {"band": "b", "when": {"attribute": f"{DWP}/registered-blind"}},
            ),
            "can never apply",
        ),
        (bands({"band": "a", "below": 1}, {"band": "a", "below": 2}), "band names repeat"),
        (bands({"band": "yes", "below": 1}), "must be a slug other than"),
        (bands({"band": "refused", "below": 1}), "must be a slug other than"),
        (bands({"band": "Band A", "below": 1}), "must be a slug other than"),
        (bands(), "1 to 16 bands"),
        (
            {
                "measure": {"attribute": TAKE_HOME, "parameters": {"amount_pence": 5}},
                "threshold": "amount_pence",
                "order": [{"band": "a", "below": 1}],
            },
            "may not fix its own threshold",
        ),
        ({"order": [{"band": "a", "below": 1}]}, "needs the bands' measure"),
    ],
)
def test_bands_not_ordered_overlapping_or_malformed_are_refused(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bands(document)


def test_the_registry_refuses_bands_out_of_order() -> None:
    def change(version: dict[str, Any]) -> None:
        version["bands"]["order"] = [
            {"band": "standard-50", "below": 150_000},
            {"band": "lower-25", "below": 100_000},
        ]

    with pytest.raises(RegistryError, match="not ordered or overlap"):
        registry(with_ctr_version(change))


def test_bands_with_different_conditions_may_share_a_threshold() -> None:
    protected = {"attribute": f"{DWP}/registered-blind"}
    parsed = parse_bands(
        bands({"band": "p", "below": 100, "when": protected}, {"band": "s", "below": 100})
    )
    assert [b.name for b in parsed.order] == ["p", "s"]


CTR = registry().checks[devscheme.CTR_CHECK]
COVENTRY_V2 = CTR.version_on(date(2026, 11, 27), devscheme.COUNCIL_TAX_COVENTRY)


def answers(version: Any, **by_threshold: Outcome) -> Callable[[AttributeRef], Outcome | None]:
    """Answers by attribute name, or ``below_N`` for the take-home predicate at N pence."""

    def known(ref: AttributeRef) -> Outcome | None:
        if ref.parameters:
            return by_threshold.get(f"below_{dict(ref.parameters)['amount_pence']}")
        return by_threshold.get(ref.attribute.replace("-", "_"))

    return known


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"universal_credit": "no"}, "no"),
        ({"universal_credit": "no-match"}, "no-match"),
        ({"universal_credit": "undetermined"}, "undetermined"),
        ({}, None),  # nothing known yet
        ({"universal_credit": "yes", "below_50000": "yes"}, "reduction-85"),
        ({"universal_credit": "yes", "below_50000": "no", "below_100000": "yes"}, "reduction-75"),
        ({"universal_credit": "yes", "below_50000": "no"}, None),  # the next band is pending
        ({"universal_credit": "yes", "below_50000": "undetermined"}, "undetermined"),
        (
            {
                "universal_credit": "yes",
                "below_50000": "no",
                "below_100000": "no",
                "below_150000": "no",
                "below_200000": "no",
            },
            "no",
        ),
    ],
)
def test_a_banded_answer_is_the_first_band_that_applies_once_the_rule_is_yes(
    given: dict[str, Outcome], expected: str | None
) -> None:
    assert COVENTRY_V2 is not None
    assert verdict(COVENTRY_V2, answers(COVENTRY_V2, **given)) == expected


# --- local rules ---------------------------------------------------------------------------


def test_each_council_is_answered_by_its_own_version_and_no_one_else_by_any() -> None:
    day = date(2026, 11, 27)
    coventry = CTR.version_on(day, devscheme.COUNCIL_TAX_COVENTRY)
    warwick = CTR.version_on(day, devscheme.COUNCIL_TAX_WARWICK)
    assert (coventry and coventry.version, warwick and warwick.version) == (2, 3)
    before = CTR.version_on(date(2026, 3, 31), devscheme.COUNCIL_TAX_COVENTRY)
    assert before is not None
    assert before.version == 1
    assert CTR.version_on(day, devscheme.COUNCIL_SCHOOLS) is None
    assert CTR.version_on(day) is None


def test_a_local_version_takes_precedence_over_the_national_one_for_its_council_only() -> None:
    national = {
        "version": 1, "effective_from": "2020-01-01", "effective_to": None,
        "rule": {"attribute": "p/a"},
    }  # fmt: skip
    local = {**national, "version": 2, "councils": ["c1"], "rule": {"attribute": "p/b"}}
    check = parse_check({"name": "x", "description": "", "versions": [national, local]})
    day = date(2026, 1, 1)
    assert [getattr(check.version_on(day, c), "version", None) for c in ("c1", "c2")] == [2, 1]


def test_versions_overlapping_for_one_council_are_refused_for_others_allowed() -> None:
    base = {"effective_from": "2020-01-01", "effective_to": None, "rule": {"attribute": "p/a"}}
    apart = [{**base, "version": 1, "councils": ["c1"]}, {**base, "version": 2, "councils": ["c2"]}]
    parse_check({"name": "x", "description": "", "versions": apart})
    clash = [
        {**base, "version": 1, "councils": ["c1"]},
        {**base, "version": 2, "councils": ["c1", "c2"]},
    ]
    with pytest.raises(ValueError, match="overlapping versions for c1"):
        parse_check({"name": "x", "description": "", "versions": clash})


def test_an_owned_check_may_not_carry_a_version_for_another_council() -> None:
    version = {
        "version": 1, "effective_from": "2020-01-01", "effective_to": None,
        "rule": {"attribute": "p/a"}, "councils": ["c2"],
    }  # fmt: skip
    with pytest.raises(ValueError, match="c1's local check"):
        parse_check({"name": "x", "description": "", "owner": "c1", "versions": [version]})


def query(requester: str, check: str, purpose: str) -> EligibilityQuery:
    return EligibilityQuery(
        requester=requester,
        jti="j" * 24,
        issued_at=NOW,
        expires_at=NOW + 60,
        check=check,
        purpose=purpose,
        lawful_basis="public-task",
        consent=None,
        as_of=date(2026, 11, 27),
        assurance="P2",
        subject=Subject({"family_name": "Fixturely", "date_of_birth": "1995-05-20"}),
    )


def test_a_council_asking_another_councils_local_check_is_refused() -> None:
    checks = devscheme.reference_checks()
    ctr = next(c for c in checks if c["name"] == devscheme.CTR_CHECK)
    ctr["owner"] = devscheme.COUNCIL_TAX_COVENTRY
    ctr["versions"] = [v for v in ctr["versions"] if v["version"] != 3]
    owned = registry(checks)
    purpose = "council-tax-reduction-application"
    with pytest.raises(PolicyRefusal) as refused:
        policy.decide(owned, query(devscheme.COUNCIL_TAX_WARWICK, devscheme.CTR_CHECK, purpose))
    assert refused.value.code == policy.LOCAL_CHECK_OF_ANOTHER_COUNCIL
    decision = policy.decide(
        owned, query(devscheme.COUNCIL_TAX_COVENTRY, devscheme.CTR_CHECK, purpose)
    )
    assert decision.version.version == 2


def test_the_plan_sends_the_bound_predicates_with_the_plain_attributes() -> None:
    decision = policy.decide(
        registry(),
        query(
            devscheme.COUNCIL_TAX_WARWICK,
            devscheme.CTR_CHECK,
            "council-tax-reduction-application",
        ),
    )
    (call,) = decision.calls
    assert call.attributes == ("universal-credit",)
    assert sorted(map(str, call.predicates)) == [
        "pip-moving-around-points-at-least(points=8)",
        "uc-take-home-pay-below(amount_pence=150000,periods=1)",
    ]


# --- messages: predicates travel only when used ---------------------------------------------


REQUEST = AttributeRequest(
    broker=devscheme.BROKER,
    provider=DWP,
    jti="r" * 24,
    purpose="blue-badge-application",
    attributes=("dla-higher-rate-mobility",),
    as_of=date(2026, 11, 27),
    subject=Subject({"family_name": "Testwell", "date_of_birth": "2016-03-14"}),
)


def test_a_yes_no_request_and_check_are_exactly_what_they_were() -> None:
    claims = attribute_request_claims(REQUEST, now=NOW)
    assert set(claims) == {
        "iss", "aud", "iat", "exp", "jti", "purpose", "attributes", "as_of", "subject",
    }  # fmt: skip
    for document in devscheme.reference_checks()[:3]:  # blue badge, free school meals, parking
        assert check_document(parse_check(copy.deepcopy(document))) == document


def verified(claims: dict[str, Any]) -> jws.Verified:
    key = KEYS[DWP]
    token = jws.sign(claims, key, jws.ATTRIBUTE_RESPONSE)
    lookup = {key.kid: jws.TrustedKey(DWP, key.verifying_key)}
    return jws.verify(
        token, jws.ATTRIBUTE_RESPONSE, keys=lookup.get, audience=claims["aud"], now=NOW
    )


def response(**changes: Any) -> dict[str, Any]:
    claims = {
        "iss": DWP, "aud": devscheme.BROKER, "iat": NOW, "exp": NOW + 60, "jti": "a" * 24,
        "request": "r" * 24, "result": "match", "attributes": {"dla-higher-rate-mobility": True},
        "predicates": [True],
    }  # fmt: skip
    claims.update(changes)
    return claims


ASKED = AttributeRequest(
    **{
        **{f: getattr(REQUEST, f) for f in ("broker", "provider", "jti", "purpose", "as_of")},
        "attributes": ("dla-higher-rate-mobility",),
        "subject": REQUEST.subject,
        "predicates": (Predicate("uc-take-home-pay-below", (("amount_pence", 9), ("periods", 1))),),
    }
)


def test_a_predicate_answered_with_a_boolean_is_read() -> None:
    answer = parse_attribute_response(verified(response()), request=ASKED)
    assert answer.predicates == (True,)


@pytest.mark.parametrize(
    "predicates", [[61666], ["reduction-85"], [None], [], [True, False], "yes", {"a": True}]
)
def test_a_predicate_answered_with_anything_but_one_boolean_each_is_refused(
    predicates: Any,
) -> None:
    with pytest.raises(InvalidMessage, match="predicate"):
        parse_attribute_response(verified(response(predicates=predicates)), request=ASKED)


def test_a_request_round_trips_its_predicates_and_refuses_malformed_ones() -> None:
    claims = attribute_request_claims(ASKED, now=NOW)
    key = KEYS[devscheme.BROKER]
    lookup = {key.kid: jws.TrustedKey(devscheme.BROKER, key.verifying_key)}

    def parse(claims: dict[str, Any]) -> AttributeRequest:
        token = jws.sign(claims, key, jws.ATTRIBUTE_REQUEST)
        checked = jws.verify(token, jws.ATTRIBUTE_REQUEST, keys=lookup.get, audience=DWP, now=NOW)
        return parse_attribute_request(checked, provider=DWP)

    assert parse(claims).predicates == ASKED.predicates
    for bad in ([{"attribute": "x"}], [{"attribute": "x", "parameters": {"n": 1.5}}], []):
        with pytest.raises(InvalidMessage):
            parse({**claims, "predicates": bad})


@pytest.mark.parametrize(
    ("outcome", "accepted"),
    [("reduction-85", True), ("yes", True), ("refused", False), ("Band 1", False), (5, False)],
)
def test_an_answer_names_an_outcome_or_a_band_and_nothing_else(
    outcome: Any, accepted: bool
) -> None:
    key = KEYS[devscheme.BROKER]
    claims = {
        "iss": devscheme.BROKER, "aud": "council", "iat": NOW, "exp": NOW + 60, "jti": "b" * 24,
        "query_jti": "q" * 24, "check": "council-tax-reduction", "check_version": 2,
        "as_of": "2026-11-27", "outcome": outcome, "log_index": 0,
        "record_digest": "A" * 43 + "=",
    }  # fmt: skip
    token = jws.sign(claims, key, jws.ELIGIBILITY_RESPONSE)
    lookup = {key.kid: jws.TrustedKey(devscheme.BROKER, key.verifying_key)}
    checked = jws.verify(
        token, jws.ELIGIBILITY_RESPONSE, keys=lookup.get, audience="council", now=NOW
    )
    if accepted:
        answer = parse_answer(checked, requester="council")
        assert answer.band == (None if outcome == "yes" else outcome)
    else:
        with pytest.raises(InvalidMessage, match="outcome"):
            parse_answer(checked, requester="council")
