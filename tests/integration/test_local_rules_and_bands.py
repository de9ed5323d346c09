"""Local rules and banded outcomes end to end: two councils ask council-tax-reduction for the
same resident and get their own schemes' bands (the old band before a scheme change); a council
asking another's local check is refused (403) and recorded; councils discover their checks; the
operator adds local versions and reviews what changes for whom, from when."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.scheme import admin
from broker.scheme import dev as devscheme
from connectors.reference.blue_badges import EXPECTED_TRAVEL
from connectors.reference.population import subject_of
from connectors.reference.predicates import EXPECTED_BANDS
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.cli import run_axb
from tests.support.servers import RunningBroker

CTR = devscheme.CTR_CHECK
PURPOSE = "council-tax-reduction-application"
COVENTRY, WARWICK = devscheme.COUNCIL_TAX_COVENTRY, devscheme.COUNCIL_TAX_WARWICK


@pytest.fixture
async def clients(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[dict[str, EligibilityClient]]:
    async with (
        EligibilityClient.from_config(scheme.council_config(COVENTRY)) as coventry,
        EligibilityClient.from_config(scheme.council_config(WARWICK)) as warwick,
    ):
        yield {COVENTRY: coventry, WARWICK: warwick}


async def test_each_council_gets_its_own_schemes_band_and_the_old_band_before_a_change(
    clients: dict[str, EligibilityClient], broker: RunningBroker
) -> None:
    seen = []
    for identity, council, as_of, _ in EXPECTED_BANDS:
        answer = await clients[council].check(
            CTR,
            purpose=PURPOSE,
            subject=subject_of(identity),
            as_of=date.fromisoformat(as_of),
            assurance="P2",
        )
        seen.append((identity, council, as_of, answer.outcome))
    assert seen == list(EXPECTED_BANDS)
    # a banded answer has its receipt like any other
    receipt = await clients[council].prove_receipt(answer)
    assert receipt.index == answer.log_index
    # the consent record names the band, as the answer does
    db = sqlite3.connect(broker.settings.consent_log_path)
    outcomes = {row[0] for row in db.execute("SELECT outcome FROM records")}
    assert {"reduction-75", "reduction-85", "standard-50", "protected-77"} <= outcomes

    # the same resident, the same day: two councils, two bands; the old band before a change
    subject = subject_of("fsm-yes-uc-low-earnings")

    async def ask(council: str, day: date) -> tuple[str, int, str | None]:
        answer = await clients[council].check(
            CTR, purpose=PURPOSE, subject=subject, as_of=day, assurance="P2"
        )
        return answer.outcome, answer.check_version, answer.band

    today = date(2026, 11, 27)
    assert await ask(COVENTRY, today) == ("reduction-75", 2, "reduction-75")
    assert await ask(WARWICK, today) == ("standard-50", 3, "standard-50")
    assert await ask(COVENTRY, date(2026, 3, 31)) == ("reduction-85", 1, "reduction-85")
    assert await ask(COVENTRY, date(2026, 4, 1)) == ("reduction-75", 2, "reduction-75")
    # Warwick District's scheme started 2025-04-01: before it, nothing answers Warwick
    with pytest.raises(CheckFailed) as refused:
        await ask(WARWICK, date(2025, 3, 31))
    assert refused.value.status == 403
    assert refused.value.problem["type"].endswith(":check-not-in-force")


async def test_a_council_asking_another_councils_local_check_is_refused_and_recorded(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    clients: dict[str, EligibilityClient],
) -> None:
    source = admin.load_source(scheme.root)
    hardship = {
        "name": "coventry-hardship-fund",
        "description": "Coventry's own council tax hardship fund: any Universal Credit",
        "versions": [
            {
                "version": 1,
                "effective_from": "2026-04-01",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": {"attribute": f"{devscheme.DWP}/universal-credit"},
            }
        ],
    }
    source = admin.add_check(source, hardship, owner=COVENTRY)
    # a purpose both councils hold names it: only the owner may still ask it
    for purpose in source["purposes"]:
        if purpose["id"] == PURPOSE:
            purpose["checks"].append("coventry-hardship-fund")
    seq = admin.publish(scheme.root, source)
    await broker.wait_for_seq(seq)

    subject = subject_of("fsm-yes-uc-low-earnings")
    with pytest.raises(CheckFailed) as refused:
        await clients[WARWICK].check(
            "coventry-hardship-fund", purpose=PURPOSE, subject=subject, assurance="P2"
        )
    assert refused.value.status == 403
    assert refused.value.problem["type"].endswith(":local-check-of-another-council")
    db = sqlite3.connect(broker.settings.consent_log_path)
    (body,) = db.execute(
        "SELECT body FROM records WHERE log_index = ?", (refused.value.problem["log_index"],)
    ).fetchone()
    record = json.loads(body)
    assert (record["outcome"], record["refusal"]) == ("refused", "local-check-of-another-council")
    assert record["requester"] == WARWICK
    owner = await clients[COVENTRY].check(
        "coventry-hardship-fund", purpose=PURPOSE, subject=subject, assurance="P2"
    )
    assert owner.outcome == "yes"


async def test_a_council_discovers_the_checks_it_may_ask_with_its_versions(
    clients: dict[str, EligibilityClient], broker: RunningBroker
) -> None:
    coventry = {c["name"]: c for c in await clients[COVENTRY].available_checks()}
    warwick = {c["name"]: c for c in await clients[WARWICK].available_checks()}
    assert set(coventry) == {CTR}
    assert set(warwick) == {CTR}
    assert [
        (v["version"], v["effective_from"], v["effective_to"]) for v in coventry[CTR]["versions"]
    ] == [
        (1, "2025-04-01", "2026-03-31"),
        (2, "2026-04-01", None),
    ]
    (warwick_version,) = warwick[CTR]["versions"]
    assert warwick_version["version"] == 3
    assert warwick_version["scope"] == "local"
    assert warwick_version["bands"] == ["protected-77", "standard-50"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{broker.url}/v1/members/nobody/checks") as response,
    ):
        assert response.status == 404
        assert response.content_type == "application/problem+json"


def _write(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document))
    return str(path)


async def test_operator_adds_a_local_version_and_review_says_for_whom_and_from_when(
    scheme: devscheme.DevScheme, tmp_path: Path
) -> None:
    root = str(scheme.root)
    local = {
        "name": "garden-waste-concession",
        "description": "Warwick District's garden waste concession: UC and low pay",
        "versions": [
            {
                "version": 1,
                "effective_from": "2027-04-01",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": {
                    "attribute": f"{devscheme.DWP}/uc-take-home-pay-below",
                    "parameters": {"periods": 3, "amount_pence": 150_000},
                },
            }
        ],
    }
    document = _write(tmp_path / "local.json", local)
    code, out, err = await run_axb(
        "scheme", "add-check", "--scheme", root, "--for", WARWICK, document
    )
    assert code == 0, out + err
    code, out, err = await run_axb("scheme", "review", "--scheme", root)
    assert code == 0, out + err
    assert "check garden-waste-concession:" in out
    assert (
        f"+ v1 for {WARWICK} from 2027-04-01 open-ended: "
        f"{devscheme.DWP}/uc-take-home-pay-below(amount_pence=150000,periods=3)"
    ) in out
    assert "council-tax-reduction" not in out  # unchanged checks are not mentioned

    # a second version overlapping the first, for the same council: refused
    overlapping = {**local, "versions": [{**local["versions"][0], "version": 2}]}
    with pytest.raises(admin.SchemeAdminError, match=f"overlapping versions for {WARWICK}"):
        admin.add_check(admin.load_source(scheme.root), overlapping, councils=(WARWICK,))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (  # the provider declared periods 1..12
            {"parameters": {"periods": 13, "amount_pence": 1000}},
            "periods is above its maximum 12",
        ),
        (  # a parameter the provider never declared
            {"parameters": {"periods": 1, "amount_pence": 1000, "household": 2}},
            "parameters not declared by the provider: ['household']",
        ),
        ({"parameters": {"periods": 1}}, "parameters not bound: ['amount_pence']"),
        ({}, "parameters not bound"),
        ({"parameters": {"periods": 1, "amount_pence": "lots"}}, "must be an integer"),
    ],
)
def test_scheme_refuses_a_rule_whose_parameters_break_the_schema(
    scheme: devscheme.DevScheme, change: dict[str, Any], message: str
) -> None:
    rule = {"attribute": f"{devscheme.DWP}/uc-take-home-pay-below", **change}
    check = {
        "name": "bad-parameters",
        "description": "refused",
        "versions": [
            {"version": 1, "effective_from": "2027-01-01", "effective_to": None, "rule": rule}
        ],
    }
    with pytest.raises(admin.SchemeAdminError) as refused:
        admin.add_check(admin.load_source(scheme.root), check)
    assert message in str(refused.value)


def test_no_rule_may_be_scoped_to_a_suspended_council(scheme: devscheme.DevScheme) -> None:
    source = admin.set_status(admin.load_source(scheme.root), WARWICK, "suspended")
    local = {
        "name": "garden-waste-concession",
        "description": "refused: its council is suspended",
        "versions": [
            {
                "version": 1,
                "effective_from": "2027-04-01",
                "effective_to": None,
                "rule": {"attribute": f"{devscheme.DWP}/universal-credit"},
            }
        ],
    }
    with pytest.raises(admin.SchemeAdminError, match=f"{WARWICK} is suspended"):
        admin.add_check(source, local, councils=(WARWICK,))
    with pytest.raises(admin.SchemeAdminError, match=f"{WARWICK} is suspended"):
        admin.add_check(source, local, owner=WARWICK)


async def test_concessionary_travel_asks_the_councils_own_blue_badge_register(
    blue_badge_client: EligibilityClient,
) -> None:
    """ENCTS disabled categories: DLA higher-rate mobility, PIP 8+ moving around, registered
    blind (DWP) or a valid Blue Badge, which only the council's register (a provider) knows."""
    answers = {
        who: (
            await blue_badge_client.check(
                devscheme.CONCESSIONARY_TRAVEL_CHECK,
                purpose="concessionary-travel-application",
                subject=subject_of(who),
                as_of=date(2026, 11, 27),
                assurance="P2",
            )
        ).outcome
        for who in EXPECTED_TRAVEL
    }
    assert answers == dict(EXPECTED_TRAVEL)
    assert answers["bb-no-pip-journeys-d"] == "yes"  # no benefit qualifies: the badge does
    available = {c["name"] for c in await blue_badge_client.available_checks()}
    assert devscheme.CONCESSIONARY_TRAVEL_CHECK in available
