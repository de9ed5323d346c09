"""Adapter for DWP's Citizen Information API (CIS), in the shape DfE's eligibility engine calls.

Three calls, each under one deadline:

1. **Token**: OAuth 2.0 client credentials, ``POST {token_url}`` with
   ``grant_type=client_credentials`` (client id and secret in HTTP Basic). The bearer token is
   cached and fetched again ``TOKEN_REFRESH_MARGIN_S`` before its ``expires_in`` runs out. A
   401 from the API (the token expired or was revoked early) drops the cache and refreshes
   *once*; a second 401 is :class:`DwpRejected`.
2. **Match**: ``POST {base}/v2/citizens/match``, JSON:API (``application/vnd.api+json``)
   ``{"data": {"type": "Match", "attributes": {"dateOfBirth", "ninoFragment", "lastName"}}}``
   with headers ``instigating-user-id`` (a pseudonym of the council member, never a person),
   ``policy-id``, ``correlation-id`` (fresh per enquiry) and ``context``. 200 gives the
   citizen's ``guid`` (``data.id``); 404 is nobody (``no-match``); 422 is more than one person
   (also ``no-match``, logged with its own reason: the adapter never guesses).
3. **Claims**: ``GET {base}/v2/citizens/{guid}/claims?benefitType=…``. Every claim must be for
   that ``guid`` (an answer for another citizen is refused, not read).

Derivations, on the request's ``as_of``:

- a legacy benefit (Income Support, income-based JSA, income-related ESA, Pension Credit) counts
  while its claim has started and has no ``endDate`` (or one not yet passed);
- ``universal-credit``: a live Universal Credit claim;
- ``uc-take-home-pay-below`` (``periods``, ``amount_pence``): a live Universal Credit claim whose
  awards (one per monthly assessment period) in the last ``periods`` periods started by
  ``as_of`` sum to a take-home pay below ``amount_pence``. ``takeHomePay`` is read as a decimal
  of pounds, exactly (never a float), and converted to pence.

Failures (every one a :class:`~connectors.errors.ProviderFault`, i.e. ``undetermined``): 5xx,
timeouts, the network, a token endpoint that fails, a malformed JSON:API document, 429 when the
``Retry-After`` wait would not fit the deadline. **Nothing from a response body, no token and no
NINO is ever logged or put in an exception**: logs carry the status, a reason slug and the
correlation id only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import aiohttp
import structlog

from connectors.base import Reply, retry_after_seconds
from connectors.errors import ProviderFault
from connectors.provider_kit import Lookup, LookupRequest
from trust.dates import parse_date
from trust.errors import DateFormatError

__all__ = [
    "CIS_ATTRIBUTES",
    "CIS_PREDICATES",
    "JSON_API",
    "Claim",
    "DwpCisClient",
    "DwpError",
    "DwpInvalidResponse",
    "DwpRejected",
    "DwpUnavailable",
    "cis_lookup",
    "derive",
    "parse_claims",
]

log = structlog.get_logger("connectors.dwp_cis")

JSON_API: Final = "application/vnd.api+json"
MATCH_PATH: Final = "/v2/citizens/match"
TOKEN_REFRESH_MARGIN_S: Final = 60.0
MAX_RETRIES: Final = 2
DEFAULT_RETRY_AFTER_S: Final = 1.0
RETRY_MARGIN_S: Final = 0.05
MAX_BODY_BYTES: Final = 256 * 1024

LEGACY: Final[Mapping[str, str]] = {
    "income-support": "income_support",
    "jsa-income-based": "job_seekers_allowance_income_based",
    "esa-income-related": "employment_support_allowance_income_related",
    "pension-credit-guarantee": "pension_credit",
}
UNIVERSAL_CREDIT: Final = "universal_credit"
CIS_ATTRIBUTES: Final[Mapping[str, str]] = {
    "income-support": "Income Support, a live claim",
    "jsa-income-based": "Income-based Jobseeker's Allowance, a live claim",
    "esa-income-related": "Income-related Employment and Support Allowance, a live claim",
    "pension-credit-guarantee": "Pension Credit, a live claim",
    "universal-credit": "Universal Credit, a live claim",
}
CIS_PREDICATES: Final[Mapping[str, Mapping[str, Any]]] = {
    "uc-take-home-pay-below": {
        "description": (
            "Universal Credit, a live claim whose take-home pay over the last 'periods' "
            "assessment periods is below 'amount_pence'"
        ),
        "parameters": {
            "periods": {
                "type": "integer",
                "description": "monthly assessment periods, the current one included",
                "minimum": 1,
                "maximum": 12,
            },
            "amount_pence": {
                "type": "integer",
                "description": "the threshold in pence; the pay must be below it",
                "minimum": 1,
                "maximum": 100_000_000,
            },
        },
    }
}


# --- errors --------------------------------------------------------------------------------


class DwpError(ProviderFault):
    """Root of CIS failures; ``reason`` is a slug safe to log (never a body, token or NINO)."""


class DwpUnavailable(DwpError):
    """CIS (or its token endpoint) did not answer usefully in time."""


class DwpRejected(DwpError):
    """CIS refused our credentials, even with a fresh token."""


class DwpInvalidResponse(DwpError):
    """An answer outside the documented JSON:API shape, or about another citizen."""


# --- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Award:
    """One Universal Credit assessment period's award: its start and take-home pay."""

    start: date
    take_home_pence: int


@dataclass(frozen=True, slots=True)
class Claim:
    """The kept part of one claim: its benefit, dates and (Universal Credit) awards."""

    benefit_type: str
    start: date
    end: date | None
    awards: tuple[Award, ...] = ()

    def live_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


def _date(value: Any, what: str) -> date:
    try:
        return parse_date(value, what)
    except DateFormatError:
        raise DwpInvalidResponse(f"dwp-{what}-not-a-date") from None


def _pence(value: Any) -> int:
    """``takeHomePay`` in pounds (a JSON number, read as a Decimal) as whole pence."""
    if not isinstance(value, Decimal | int) or isinstance(value, bool):
        raise DwpInvalidResponse("dwp-take-home-pay-not-a-number")
    try:
        pence = Decimal(value) * 100
    except InvalidOperation:
        raise DwpInvalidResponse("dwp-take-home-pay-not-a-number") from None
    if pence != pence.to_integral_value() or pence < 0:
        raise DwpInvalidResponse("dwp-take-home-pay-not-pence")
    return int(pence)


def _resource(item: Any, kind: str) -> Mapping[str, Any]:
    if (
        not isinstance(item, dict)
        or item.get("type") != kind
        or not isinstance(item.get("attributes"), dict)
    ):
        raise DwpInvalidResponse(f"dwp-not-a-{kind.lower()}-resource")
    attributes: Mapping[str, Any] = item["attributes"]
    return attributes


def parse_match(payload: Any) -> str:
    """The citizen's guid from a 200 match document."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise DwpInvalidResponse("dwp-match-not-json-api")
    data = payload["data"]
    _resource(data, "MatchResult")
    guid = data.get("id")
    if not isinstance(guid, str) or not 8 <= len(guid) <= 64 or not guid.replace("-", "").isalnum():
        raise DwpInvalidResponse("dwp-match-guid-invalid")
    return guid


def parse_claims(payload: Any, guid: str) -> tuple[Claim, ...]:
    """The claims of a 200 claims document, each of which must name ``guid``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise DwpInvalidResponse("dwp-claims-not-json-api")
    claims = []
    for item in payload["data"]:
        attributes = _resource(item, "Claim")
        if attributes.get("guid") != guid:
            raise DwpInvalidResponse("dwp-claims-for-another-citizen")
        benefit = attributes.get("benefitType")
        if not isinstance(benefit, str):
            raise DwpInvalidResponse("dwp-claim-benefit-type-missing")
        end = attributes.get("endDate")
        awards_raw = attributes.get("awards", [])
        if not isinstance(awards_raw, list):
            raise DwpInvalidResponse("dwp-claim-awards-not-a-list")
        awards = tuple(
            Award(_date(a.get("startDate"), "award-start"), _pence(a.get("takeHomePay")))
            if isinstance(a, dict)
            else _no_award()
            for a in awards_raw
        )
        claims.append(
            Claim(
                benefit,
                _date(attributes.get("startDate"), "claim-start"),
                None if end is None else _date(end, "claim-end"),
                awards,
            )
        )
    return tuple(claims)


def _no_award() -> Award:
    raise DwpInvalidResponse("dwp-award-not-an-object")


def _take_home_below(claims: Sequence[Claim], as_of: date, bound: Mapping[str, Any]) -> bool:
    periods, amount = bound.get("periods"), bound.get("amount_pence")
    if type(periods) is not int or type(amount) is not int:
        raise DwpInvalidResponse("dwp-predicate-parameters")
    for claim in claims:
        if claim.benefit_type == UNIVERSAL_CREDIT and claim.live_on(as_of):
            started = sorted((a for a in claim.awards if a.start <= as_of), key=lambda a: a.start)
            if sum(a.take_home_pence for a in started[-periods:]) < amount:
                return True
    return False


def derive(
    claims: Sequence[Claim], attributes: Sequence[str], predicates: Sequence[Any], as_of: date
) -> dict[str, bool]:
    """The attributes and predicates asked, decided from the citizen's claims on ``as_of``."""

    def live(benefit: str) -> bool:
        return any(c.benefit_type == benefit and c.live_on(as_of) for c in claims)

    answers: dict[str, bool] = {}
    for name in attributes:
        if name == "universal-credit":
            answers[name] = live(UNIVERSAL_CREDIT)
        else:
            answers[name] = live(LEGACY[name])
    for predicate in predicates:
        if predicate.attribute != "uc-take-home-pay-below":
            raise KeyError(predicate.attribute)
        answers[str(predicate)] = _take_home_below(claims, as_of, dict(predicate.parameters))
    return answers


def benefit_types(attributes: Sequence[str], predicates: Sequence[Any]) -> list[str]:
    wanted = {UNIVERSAL_CREDIT if n == "universal-credit" else LEGACY[n] for n in attributes}
    if predicates:
        wanted.add(UNIVERSAL_CREDIT)
    return sorted(wanted)


# --- the client ----------------------------------------------------------------------------


class _Secret:
    """A credential or token: its value for the wire, nothing in a repr, a str or a log."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "_Secret(…)"

    __str__ = __repr__


def _retry_after(value: str | None) -> float:
    return retry_after_seconds(value, DEFAULT_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class MatchFields:
    """What CIS matches on. Never logged: its repr shows nothing."""

    last_name: str
    date_of_birth: date
    nino: str

    def __repr__(self) -> str:
        return "MatchFields(…)"

    def document(self) -> dict[str, Any]:
        return {
            "data": {
                "type": "Match",
                "attributes": {
                    "dateOfBirth": self.date_of_birth.isoformat(),
                    "ninoFragment": self.nino[-4:],
                    "lastName": self.last_name,
                },
            }
        }


class DwpCisClient:
    """One CIS endpoint and its token endpoint. ``deadline`` arguments are absolute times on
    ``clock`` (monotonic). The token lives here and nowhere else (not in a repr or a log)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        policy_id: str,
        context: str = "eligibility-check",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("the CIS client id and secret are required")
        for url in (base_url, token_url):
            if not url.startswith(("https://", "http://")):
                raise ValueError("the CIS URLs must be http(s)")
        self._session = session
        self._base = base_url.rstrip("/")
        self._token_url = token_url
        self._credentials = _Secret(aiohttp.encode_basic_auth(client_id, client_secret))
        self._policy_id = policy_id
        self._context = context
        self._clock = clock
        self._sleep = sleep
        self._token: tuple[_Secret, float] | None = None  # (access token, refresh at)
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"DwpCisClient(base_url={self._base!r})"

    def now(self) -> float:
        return self._clock()

    # token

    async def _access_token(self, deadline: float, *, fresh: bool = False) -> str:
        async with self._token_lock:
            if fresh:
                self._token = None
            if self._token is not None and self._clock() < self._token[1]:
                return self._token[0].value
            reply = await self._request(
                "POST",
                self._token_url,
                deadline,
                "token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": self._credentials.value, "Accept": "application/json"},
            )
            payload = reply.payload
            if reply.status != 200:
                log.warning("dwp_token_refused", status=reply.status)
                raise DwpUnavailable(f"dwp-token-http-{reply.status}")
            token = payload.get("access_token") if isinstance(payload, dict) else None
            lifetime = payload.get("expires_in") if isinstance(payload, dict) else None
            if not isinstance(token, str) or not token or type(lifetime) is not int or lifetime < 1:
                raise DwpInvalidResponse("dwp-token-response-invalid")
            refresh_in = max(0.0, lifetime - TOKEN_REFRESH_MARGIN_S)
            self._token = (_Secret(token), self._clock() + refresh_in)
            self.tokens_fetched += 1
            return token

    # HTTP

    async def _request(
        self, method: str, url: str, deadline: float, what: str, **options: Any
    ) -> Reply:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DwpUnavailable("dwp-deadline-passed")
        try:
            async with self._session.request(
                method,
                url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=remaining),
                **options,
            ) as response:
                raw = await response.content.read(MAX_BODY_BYTES + 1)
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as exc:
            log.warning("dwp_timeout", call=what)
            raise DwpUnavailable("dwp-timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("dwp_unreachable", call=what, error=type(exc).__name__)
            raise DwpUnavailable("dwp-unreachable") from exc
        if len(raw) > MAX_BODY_BYTES:
            raise DwpInvalidResponse("dwp-body-too-large")
        try:
            payload = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            payload = None  # a malformed body is reported by whoever reads it, never logged
        return Reply(status, payload, retry_after)

    async def _api(
        self,
        method: str,
        path: str,
        deadline: float,
        correlation_id: str,
        instigator: str,
        *,
        what: str,
        **options: Any,
    ) -> Reply:
        """One API call with the bearer token: one refresh after a 401, retries after 429."""
        refreshed = False
        attempt = 0
        while True:
            token = await self._access_token(deadline, fresh=False)
            headers = {
                "Authorization": f"Bearer {token}",
                "instigating-user-id": instigator,
                "policy-id": self._policy_id,
                "correlation-id": correlation_id,
                "context": self._context,
                "Accept": JSON_API,
            }
            if "data" in options:
                headers["Content-Type"] = JSON_API
            reply = await self._request(
                method, self._base + path, deadline, what, headers=headers, **options
            )
            if reply.status == 401:
                if refreshed:
                    log.warning("dwp_rejected", call=what, correlation_id=correlation_id)
                    raise DwpRejected("dwp-http-401-after-refresh")
                log.info("dwp_token_refresh", call=what, correlation_id=correlation_id)
                refreshed = True
                await self._access_token(deadline, fresh=True)
                continue
            if reply.status != 429:
                return reply
            delay = _retry_after(reply.retry_after)
            if attempt == MAX_RETRIES or self._clock() + delay + RETRY_MARGIN_S >= deadline:
                log.warning(
                    "dwp_throttled", call=what, retry_after=delay, correlation_id=correlation_id
                )
                raise DwpUnavailable("dwp-throttled")
            attempt += 1
            log.info("dwp_throttled_retrying", call=what, correlation_id=correlation_id)
            await self._sleep(delay)

    async def match(
        self, fields: MatchFields, *, instigator: str, deadline: float, correlation_id: str
    ) -> str | None:
        """The citizen's guid, or ``None`` when CIS finds nobody or more than one person."""
        body = json.dumps(fields.document()).encode()
        reply = await self._api(
            "POST",
            MATCH_PATH,
            deadline,
            correlation_id,
            instigator,
            what="match",
            data=body,
        )
        return self._interpret_match(reply, correlation_id)

    def _interpret_match(self, reply: Reply, correlation_id: str) -> str | None:
        if reply.status == 200:
            return parse_match(reply.payload)
        if reply.status == 404:
            log.info("dwp_no_match", correlation_id=correlation_id)
            return None
        if reply.status == 422:
            log.info("dwp_more_than_one_match", correlation_id=correlation_id)
            return None
        return self._failure(reply, "match", correlation_id)

    async def claims(
        self,
        guid: str,
        benefits: Sequence[str],
        *,
        instigator: str,
        deadline: float,
        correlation_id: str,
    ) -> tuple[Claim, ...]:
        reply = await self._api(
            "GET",
            f"/v2/citizens/{guid}/claims",
            deadline,
            correlation_id,
            instigator,
            what="claims",
            params={"benefitType": ",".join(benefits)},
        )
        if reply.status == 200:
            return parse_claims(reply.payload, guid)
        if reply.status == 404:  # a citizen with no claim of those types
            return ()
        self._failure(reply, "claims", correlation_id)
        return ()  # pragma: no cover (_failure raises)

    def _failure(self, reply: Reply, what: str, correlation_id: str) -> str | None:
        log.warning("dwp_error", call=what, status=reply.status, correlation_id=correlation_id)
        if 500 <= reply.status <= 599:
            raise DwpUnavailable(f"dwp-http-{reply.status}")
        if reply.status == 403:
            raise DwpRejected("dwp-http-403")
        raise DwpInvalidResponse(f"dwp-http-{reply.status}")


# --- the provider kit lookup ---------------------------------------------------------------


def cis_lookup(client: DwpCisClient, *, instigator: str, deadline_s: float) -> Lookup:
    """A provider-kit lookup answering :data:`CIS_ATTRIBUTES` and :data:`CIS_PREDICATES`
    from CIS. ``instigator`` is the pseudonym CIS sees in ``instigating-user-id``: the
    provider's own id for the broker, never a person. A subject without a NINO cannot be
    matched by CIS and is ``no-match``."""
    if deadline_s <= 0:
        raise ValueError("deadline_s must be positive")

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        for name in request.attributes:
            if name not in CIS_ATTRIBUTES:
                raise KeyError(name)
        fields = request.subject.fields
        if "nino" not in fields:
            return None
        deadline = client.now() + deadline_s
        correlation_id = str(uuid.uuid4())
        subject = MatchFields(
            fields["family_name"], date.fromisoformat(fields["date_of_birth"]), fields["nino"]
        )
        guid = await client.match(
            subject, instigator=instigator, deadline=deadline, correlation_id=correlation_id
        )
        if guid is None:
            return None
        claims = await client.claims(
            guid,
            benefit_types(request.attributes, request.predicates),
            instigator=instigator,
            deadline=deadline,
            correlation_id=correlation_id,
        )
        return derive(claims, request.attributes, request.predicates, request.as_of)

    return lookup
