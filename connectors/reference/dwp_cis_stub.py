"""A local stand-in for DWP's Citizen Information API, on the synthetic population.

``create_cis_stub_app(client_id, client_secret)`` serves:

- ``POST /oauth2/token``: client credentials in HTTP Basic, ``grant_type=client_credentials``;
  answers ``{"access_token", "token_type": "Bearer", "expires_in"}`` (``token_lifetime_s``,
  default 3600). A wrong client is 401 ``invalid_client``.
- ``POST /v2/citizens/match``: a JSON:API ``Match`` document (``lastName``, ``dateOfBirth``,
  ``ninoFragment``: the NINO's last four characters); the headers ``instigating-user-id``,
  ``policy-id``, ``correlation-id`` and ``context`` are required (400 without). 200
  ``MatchResult`` with the citizen's ``guid``; 404 nobody; 422 more than one person.
- ``GET /v2/citizens/{guid}/claims?benefitType=a,b``: the citizen's claims of those types,
  each naming its ``guid``; Universal Credit claims carry one award per monthly assessment
  period from the claim's start (``takeHomePay`` in pounds: a twelfth of the synthetic yearly
  net earnings), up to ``horizon``.

A bearer token must be one the stub issued and has not expired or been revoked
(:meth:`CisStubState.revoke_tokens`), else 401. Documented error cases, by ``lastName``
(case-insensitive), matched before the population:

==================  =============================================================
lastName            answer
==================  =============================================================
Cisservererror      500 on match
Cisthrottled        429 with ``Retry-After: 1`` on match (``throttle_first`` calls)
Cismanymatches      422 on match (more than one person)
Cismalformed        200 on match with a document that is not JSON:API
Cisotherguid        200 on match, then claims that name another citizen's guid
Cisunauthorised     401 on match, whatever the token
Cisslow             match answered after ``slow_s`` seconds
==================  =============================================================

Each error case matches with any date of birth and NINO. The stub counts calls and keeps the
last requests' headers for tests (``app[CIS_STUB]``); it never logs a name, NINO or token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Final

from aiohttp import web

from connectors.reference.population import (
    Benefit,
    Person,
    generate_population,
    normalise_family_name,
    normalise_nino,
)

JSON_API: Final = "application/vnd.api+json"
REQUIRED_HEADERS: Final = ("instigating-user-id", "policy-id", "correlation-id", "context")
BENEFIT_TYPES: Final = {
    Benefit.INCOME_SUPPORT: "income_support",
    Benefit.JSA_INCOME_BASED: "job_seekers_allowance_income_based",
    Benefit.ESA_INCOME_RELATED: "employment_support_allowance_income_related",
    Benefit.PENSION_CREDIT_GUARANTEE: "pension_credit",
    Benefit.UNIVERSAL_CREDIT: "universal_credit",
}
ERROR_CASES: Final = frozenset(
    {
        "cisservererror",
        "cisthrottled",
        "cismanymatches",
        "cismalformed",
        "cisotherguid",
        "cisunauthorised",
        "cisslow",
    }
)
_NAMESPACE: Final = uuid.UUID("5f0e1c9a-3c7e-4c55-9a55-000000000000")


def guid_of(person_id: str) -> str:
    """A citizen's stable guid in the stub (a UUID5 of the synthetic person's id)."""
    return str(uuid.uuid5(_NAMESPACE, person_id))


def _months_after(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    for candidate in (day.day, 28):
        try:
            return day.replace(year=day.year + year, month=month + 1, day=candidate)
        except ValueError:
            continue
    raise ValueError("unreachable")  # pragma: no cover


def claims_of(person: Person, guid: str, wanted: set[str], horizon: date) -> list[dict[str, Any]]:
    """The JSON:API claim resources of ``person``'s awards of the ``wanted`` benefit types."""
    claims = []
    for number, award in enumerate(person.awards):
        benefit = BENEFIT_TYPES.get(Benefit(award.benefit))
        if benefit is None or benefit not in wanted:
            continue
        attributes: dict[str, Any] = {
            "guid": guid,
            "benefitType": benefit,
            "startDate": award.start.isoformat(),
            "endDate": None if award.end is None else award.end.isoformat(),
        }
        if benefit == "universal_credit":
            monthly = Decimal((award.annual_net_earnings or 0) * 100 // 12) / 100
            awards = []
            period = 0
            while (start := _months_after(award.start, period)) <= horizon and (
                award.end is None or start <= award.end
            ):
                awards.append({"startDate": start.isoformat(), "takeHomePay": monthly})
                period += 1
            attributes["awards"] = awards
        claims.append({"id": f"{guid}-{number}", "type": "Claim", "attributes": attributes})
    return claims


@dataclass
class CisStubState:
    client_id: str
    client_secret: str
    by_name: Mapping[tuple[str, date], tuple[Person, ...]]
    token_lifetime_s: int = 3600
    horizon: date = date(2027, 12, 31)
    throttle_first: int = 1_000_000
    slow_s: float = 5.0
    clock: Any = time.time
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at
    calls: dict[str, int] = field(default_factory=dict)
    headers: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=16))
    people: dict[str, Person] = field(default_factory=dict)  # guid -> person

    def revoke_tokens(self) -> None:
        """Every token issued so far answers 401 from now on (as an early expiry would)."""
        self.tokens.clear()

    def count(self, what: str) -> int:
        self.calls[what] = self.calls.get(what, 0) + 1
        return self.calls[what]


CIS_STUB: Final = web.AppKey("cis_stub", CisStubState)


def _dumps(value: Any) -> str:
    # pounds as JSON numbers: a float's shortest repr of a two-decimal amount is that amount
    return json.dumps(value, default=float)


def _json_api(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        body, status=status, content_type=JSON_API, headers=headers, dumps=_dumps
    )


def _errors(status: int, title: str) -> web.Response:
    return _json_api({"errors": [{"status": str(status), "title": title}]}, status)


async def _token(request: web.Request) -> web.Response:
    state = request.app[CIS_STUB]
    state.count("token")
    expected = "Basic " + base64.b64encode(
        f"{state.client_id}:{state.client_secret}".encode()
    ).decode("ascii")
    form = await request.post()
    if request.headers.get("Authorization") != expected:
        return web.json_response({"error": "invalid_client"}, status=401)
    if form.get("grant_type") != "client_credentials":
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    token = secrets.token_urlsafe(32)
    state.tokens[token] = state.clock() + state.token_lifetime_s
    body = {"access_token": token, "token_type": "Bearer", "expires_in": state.token_lifetime_s}
    return web.json_response(body)


def _authorised(request: web.Request) -> web.Response | None:
    state = request.app[CIS_STUB]
    state.headers.append({k.lower(): v for k, v in request.headers.items()})
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ")
    if not auth.startswith("Bearer ") or state.tokens.get(token, 0) <= state.clock():
        return _errors(401, "Unauthorized")
    if any(not request.headers.get(name) for name in REQUIRED_HEADERS):
        return _errors(400, "Missing required header")
    return None


async def _match(request: web.Request) -> web.Response:
    state = request.app[CIS_STUB]
    number = state.count("match")
    try:
        document = await request.json()
        attributes = document["data"]["attributes"]
        if document["data"]["type"] != "Match":
            raise KeyError("type")
        last_name = str(attributes["lastName"])
        born = date.fromisoformat(attributes["dateOfBirth"])
        fragment = str(attributes["ninoFragment"]).upper()
    except (ValueError, KeyError, TypeError):
        return _errors(400, "Bad Request")
    case = last_name.strip().lower()
    if case == "cisunauthorised":
        return _errors(401, "Unauthorized")
    refused = _authorised(request)
    if refused is not None:
        return refused
    if case in ERROR_CASES:
        if case == "cisservererror":
            return _errors(500, "Internal Server Error")
        if case == "cisthrottled" and number <= state.throttle_first:
            throttled = {"errors": [{"status": "429", "title": "Too Many Requests"}]}
            return _json_api(throttled, 429, {"Retry-After": "1"})
        if case == "cismanymatches":
            return _errors(422, "More than one citizen matches")
        if case == "cismalformed":
            return _json_api({"data": [{"id": 7}]})
        if case == "cisslow":
            await asyncio.sleep(state.slow_s)
        guid = guid_of(f"case-{case}")
        return _json_api({"data": {"id": guid, "type": "MatchResult", "attributes": {}}})
    candidates = [
        person
        for person in state.by_name.get((normalise_family_name(last_name), born), ())
        if person.nino is not None and normalise_nino(person.nino).endswith(fragment)
    ]
    if len(candidates) > 1:
        return _errors(422, "More than one citizen matches")
    if not candidates:
        return _errors(404, "Not Found")
    (person,) = candidates
    guid = guid_of(person.person_id)
    state.people[guid] = person
    return _json_api({"data": {"id": guid, "type": "MatchResult", "attributes": {}}})


async def _claims(request: web.Request) -> web.Response:
    state = request.app[CIS_STUB]
    state.count("claims")
    refused = _authorised(request)
    if refused is not None:
        return refused
    guid = request.match_info["guid"]
    wanted = set(request.query.get("benefitType", "").split(","))
    if guid == guid_of("case-cisotherguid"):
        other = guid_of("someone-else")
        claim = {
            "guid": other,
            "benefitType": "universal_credit",
            "startDate": "2024-01-01",
            "endDate": None,
        }
        return _json_api({"data": [{"id": f"{other}-0", "type": "Claim", "attributes": claim}]})
    if guid in {guid_of(f"case-{case}") for case in ERROR_CASES}:
        return _json_api({"data": []})  # an error case past its error: no claims
    person = state.people.get(guid)
    if person is None:
        return _errors(404, "Not Found")
    return _json_api({"data": claims_of(person, guid, wanted, state.horizon)})


def create_cis_stub_app(
    client_id: str,
    client_secret: str,
    *,
    people: Iterable[Person] | None = None,
    **options: Any,
) -> web.Application:
    """The stub on ``people`` (default: the generated synthetic population). CIS matches
    exactly on last name (as the reference matcher folds it) and date of birth, then on the
    last four characters of the NINO."""
    by_name: dict[tuple[str, date], list[Person]] = {}
    for person in generate_population() if people is None else people:
        key = (normalise_family_name(person.family_name), person.date_of_birth)
        by_name.setdefault(key, []).append(person)
    frozen = {key: tuple(group) for key, group in by_name.items()}
    state = CisStubState(client_id, client_secret, frozen, **options)
    app = web.Application()
    app[CIS_STUB] = state
    app.router.add_post("/oauth2/token", _token)
    app.router.add_post("/v2/citizens/match", _match)
    app.router.add_get("/v2/citizens/{guid}/claims", _claims)
    return app
