"""Adapter for DVLA's Vehicle Enquiry Service (VES): is a vehicle taxed, is its MOT valid?

The real API: ``POST {base}/vehicle-enquiry/v1/vehicles`` with an ``x-api-key`` header and the
body ``{"registrationNumber": "AB12CDE"}``. A registration number is personal data, so it
travels in the JSON body only: never in the URL, a header, a log line or an exception message.
Each enquiry carries a fresh random ``X-Correlation-Id`` (safe to log, useful to DVLA support).

What is kept of an answer: ``taxStatus`` and ``motStatus``, nothing else. Make, colour, dates
and the rest are parsed past and dropped; :class:`VesVehicle` has no field to hold them.

How each answer maps (``None`` means "no such vehicle", which a provider reports as
``no-match``; an exception becomes a signed ``unavailable``, i.e. ``undetermined``):

======================  =====================================================================
VES answer              result
======================  =====================================================================
200, known enums        :class:`VesVehicle`
200, unknown enum       :class:`VesInvalidResponse` (never read as "not taxed")
404 with a VES body     ``None``: DVLA holds no vehicle with that registration
400 with a VES body     ``None``: see below
404/400 other body      :class:`VesInvalidResponse` (a wrong base URL must not look like
                        "no vehicle" for everybody)
429                     wait ``Retry-After`` seconds and retry, at most twice, only if the
                        wait ends before the deadline; otherwise :class:`VesThrottled`
401/403                 :class:`VesRejected` (our API key is missing, wrong or revoked)
5xx, network, timeout   :class:`VesUnavailable`
======================  =====================================================================

**Why 400 is "no such vehicle".** The adapter builds the body itself from a registration that
is already normalised (no spaces, upper case) and shaped ``[A-Z0-9]{1,7}``; the only thing in
it VES can reject is the registration, and VES documents 400 as "invalid vrn". A registration
DVLA calls invalid cannot identify any vehicle, which is exactly ``no-match`` ("we found no
one"), never ``no``. A registration that fails our own shape check is answered the same way
without calling DVLA. The 400 must still carry a VES error body, so a proxy's or a
misconfiguration's 400 is an error, not a silent no-match.

**"No details held by DVLA" is not a valid MOT.** VES says this (typically) for a vehicle too
new to need an MOT yet (under three years old) or one whose MOT record DVLA does not hold. The
attribute ``vehicle-mot-valid`` is the literal API fact "``motStatus`` is ``Valid``", so it is
``false`` here, as it is for "No results returned" and "Not valid". A rule that should accept
new vehicles must say so with its own attribute; this adapter does not guess an age.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import aiohttp
import structlog

from connectors.base import Reply, retry_after_seconds
from connectors.errors import ProviderFault
from connectors.provider_kit import Lookup, LookupRequest

__all__ = [
    "MOT_STATUSES",
    "TAX_STATUSES",
    "VEHICLE_MOT_VALID",
    "VEHICLE_TAXED",
    "VES_ATTRIBUTES",
    "VES_PATH",
    "VES_PRODUCTION_URL",
    "VES_TEST_URL",
    "DvlaVesClient",
    "MotStatus",
    "TaxStatus",
    "VesError",
    "VesInvalidResponse",
    "VesRejected",
    "VesThrottled",
    "VesUnavailable",
    "VesVehicle",
    "normalise_registration",
    "parse_vehicle",
    "vehicle_attributes",
    "ves_lookup",
]

log = structlog.get_logger("connectors.dvla_ves")

VES_PATH: Final = "/vehicle-enquiry/v1/vehicles"
VES_PRODUCTION_URL: Final = "https://driver-vehicle-licensing.api.gov.uk"
VES_TEST_URL: Final = "https://uat.driver-vehicle-licensing.api.gov.uk"

TaxStatus = Literal["Taxed", "Untaxed", "SORN", "Not Taxed for on Road Use"]
MotStatus = Literal["Valid", "Not valid", "No details held by DVLA", "No results returned"]
TAX_STATUSES: Final[tuple[TaxStatus, ...]] = get_args(TaxStatus)
MOT_STATUSES: Final[tuple[MotStatus, ...]] = get_args(MotStatus)

VEHICLE_TAXED: Final = "vehicle-taxed"
VEHICLE_MOT_VALID: Final = "vehicle-mot-valid"
VES_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        VEHICLE_TAXED: "DVLA records the vehicle as taxed (VES taxStatus is 'Taxed')",
        VEHICLE_MOT_VALID: (
            "DVLA records a valid MOT for the vehicle (VES motStatus is 'Valid'; 'No details "
            "held by DVLA', as for a vehicle under three years old, is not valid)"
        ),
    }
)

MAX_RETRIES: Final = 2
"""At most this many retries after a 429, so at most three requests per enquiry."""
DEFAULT_RETRY_AFTER_S: Final = 1.0
"""The wait after a 429 that has no usable ``Retry-After`` (delta-seconds) header."""
RETRY_MARGIN_S: Final = 0.05
"""A retry must leave at least this long before the deadline for the request itself."""
MAX_BODY_BYTES: Final = 64 * 1024

_VRN: Final = re.compile(r"[A-Z0-9]{1,7}")


# --- errors --------------------------------------------------------------------------------


class VesError(ProviderFault):
    """Root of VES failures; ``reason`` is a slug safe to log (never a registration)."""


class VesUnavailable(VesError):
    """VES did not answer usefully in time: 5xx, network failure, timeout, deadline passed."""


class VesThrottled(VesUnavailable):
    """VES kept answering 429 and another retry would not fit inside the deadline."""


class VesRejected(VesError):
    """VES refused us (401/403): the API key is missing, wrong or revoked."""


class VesInvalidResponse(VesError):
    """VES (or something pretending to be it) answered outside the documented shape."""


# --- the vehicle ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VesVehicle:
    """The two facts kept from a VES answer. ``None``: VES left the status out."""

    tax_status: TaxStatus | None
    mot_status: MotStatus | None


def normalise_registration(registration: str) -> str:
    """Drop all whitespace and upper-case (``ab12 cde`` = ``AB12CDE``), as VES expects."""
    return "".join(registration.split()).upper()


def _enum(value: Any, allowed: tuple[str, ...], name: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise VesInvalidResponse(f"ves-unknown-{name}")
    return value


def parse_vehicle(payload: Any, registration: str) -> VesVehicle:
    """The kept part of a 200 body. ``registrationNumber`` is required and must be the one
    asked for; unknown ``taxStatus``/``motStatus`` values are errors, not ``false``."""
    if not isinstance(payload, dict):
        raise VesInvalidResponse("ves-body-not-object")
    answered = payload.get("registrationNumber")
    if not isinstance(answered, str):
        raise VesInvalidResponse("ves-registration-missing")
    if normalise_registration(answered) != registration:
        raise VesInvalidResponse("ves-registration-mismatch")
    return VesVehicle(
        tax_status=_enum(payload.get("taxStatus"), TAX_STATUSES, "tax-status"),
        mot_status=_enum(payload.get("motStatus"), MOT_STATUSES, "mot-status"),
    )


def _taxed(vehicle: VesVehicle) -> bool:
    if vehicle.tax_status is None:
        raise VesInvalidResponse("ves-tax-status-absent")
    return vehicle.tax_status == "Taxed"


def _mot_valid(vehicle: VesVehicle) -> bool:
    if vehicle.mot_status is None:
        raise VesInvalidResponse("ves-mot-status-absent")
    return vehicle.mot_status == "Valid"


_RULES: Final[Mapping[str, Callable[[VesVehicle], bool]]] = MappingProxyType(
    {VEHICLE_TAXED: _taxed, VEHICLE_MOT_VALID: _mot_valid}
)


def vehicle_attributes(vehicle: VesVehicle) -> dict[str, bool]:
    """``vehicle-taxed`` iff taxStatus is ``Taxed``; ``vehicle-mot-valid`` iff motStatus is
    ``Valid``. A status VES left out raises :class:`VesInvalidResponse` (unknown, not false)."""
    return {name: rule(vehicle) for name, rule in _RULES.items()}


def _is_error_body(payload: Any) -> bool:
    """``{"errors": [{"title": ..., ...}, ...]}``: only ``title`` is required."""
    if not isinstance(payload, dict):
        return False
    errors = payload.get("errors")
    return (
        isinstance(errors, list)
        and len(errors) > 0
        and all(isinstance(e, dict) and isinstance(e.get("title"), str) for e in errors)
    )


def _retry_after(value: str | None) -> float:
    return retry_after_seconds(value, DEFAULT_RETRY_AFTER_S)


# --- the client ----------------------------------------------------------------------------


class DvlaVesClient:
    """One VES endpoint. ``deadline`` arguments are absolute times on ``clock`` (monotonic)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("the VES API key is required")
        if not base_url.startswith(("https://", "http://")):
            raise ValueError("the VES base URL must be http(s)")
        self._session = session
        self._url = base_url.rstrip("/") + VES_PATH
        self._api_key = api_key
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"DvlaVesClient(url={self._url!r})"

    def now(self) -> float:
        return self._clock()

    async def vehicle(self, registration: str, *, deadline: float) -> VesVehicle | None:
        """The vehicle's tax and MOT status, or ``None`` when VES knows no such vehicle."""
        vrn = normalise_registration(registration)
        if _VRN.fullmatch(vrn) is None:
            log.info("ves_registration_refused_locally")
            return None
        body = json.dumps({"registrationNumber": vrn}).encode()
        correlation_id = str(uuid.uuid4())
        headers = {
            "x-api-key": self._api_key,
            "X-Correlation-Id": correlation_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        for attempt in range(MAX_RETRIES + 1):
            reply = await self._post(body, headers, deadline, correlation_id)
            if reply.status != 429:
                return self._interpret(reply, vrn, correlation_id)
            delay = _retry_after(reply.retry_after)
            if attempt == MAX_RETRIES:
                log.warning("ves_throttled", attempts=attempt + 1, correlation_id=correlation_id)
                raise VesThrottled("ves-throttled")
            if self._clock() + delay + RETRY_MARGIN_S >= deadline:
                log.warning(
                    "ves_throttled_past_deadline",
                    retry_after=delay,
                    attempts=attempt + 1,
                    correlation_id=correlation_id,
                )
                raise VesThrottled("ves-throttled-past-deadline")
            log.info("ves_throttled_retrying", retry_after=delay, correlation_id=correlation_id)
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(
        self, body: bytes, headers: Mapping[str, str], deadline: float, correlation_id: str
    ) -> Reply:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise VesUnavailable("ves-deadline-passed")
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                raw = await response.content.read(MAX_BODY_BYTES + 1)
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as exc:
            log.warning("ves_timeout", correlation_id=correlation_id)
            raise VesUnavailable("ves-timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("ves_unreachable", error=type(exc).__name__, correlation_id=correlation_id)
            raise VesUnavailable("ves-unreachable") from exc
        if len(raw) > MAX_BODY_BYTES:
            raise VesInvalidResponse("ves-body-too-large")
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return Reply(status, payload, retry_after)

    def _interpret(self, reply: Reply, vrn: str, correlation_id: str) -> VesVehicle | None:
        status = reply.status
        if status == 200:
            try:
                return parse_vehicle(reply.payload, vrn)
            except VesInvalidResponse as exc:
                log.warning("ves_invalid_answer", reason=exc.reason, correlation_id=correlation_id)
                raise
        if status in (400, 404):
            if _is_error_body(reply.payload):
                log.info("ves_no_vehicle", status=status, correlation_id=correlation_id)
                return None
            log.warning("ves_unexpected_body", status=status, correlation_id=correlation_id)
            raise VesInvalidResponse(f"ves-http-{status}-not-ves")
        log.warning("ves_error", status=status, correlation_id=correlation_id)
        if status in (401, 403):
            raise VesRejected(f"ves-http-{status}")
        if 500 <= status <= 599:
            raise VesUnavailable(f"ves-http-{status}")
        raise VesInvalidResponse(f"ves-http-{status}")


# --- the provider kit lookup ---------------------------------------------------------------


def ves_lookup(client: DvlaVesClient, *, deadline_s: float) -> Lookup:
    """A provider-kit lookup answering ``VES_ATTRIBUTES`` from the subject's
    ``vehicle_registration``. Each enquiry must finish within ``deadline_s`` seconds; an
    unknown attribute name raises ``KeyError`` before any call to DVLA."""
    if deadline_s <= 0:
        raise ValueError("deadline_s must be positive")

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        try:
            rules = [(name, _RULES[name]) for name in request.attributes]
        except KeyError as exc:
            raise KeyError(exc.args[0]) from None
        registration = request.subject.fields["vehicle_registration"]
        vehicle = await client.vehicle(registration, deadline=client.now() + deadline_s)
        if vehicle is None:
            return None
        return {name: rule(vehicle) for name, rule in rules}

    return lookup
