"""A local stand-in for DVLA's Vehicle Enquiry Service, answering like its test environment.

``create_ves_stub_app(api_key, fleet)`` serves ``POST /vehicle-enquiry/v1/vehicles`` and
answers the fixed registrations of DVLA's published VES test environment, with the same status
codes and the same shape of body, plus an optional synthetic ``fleet`` (registration ->
(taxStatus, motStatus)), e.g. the vehicles of the reference keeper register.

Test registrations (full bodies carry the extra fields a real answer has, so that tests can
prove the adapter drops them):

=========  ======  =========================  =======================  =======================
VRN        status  taxStatus                  motStatus                vehicle
=========  ======  =========================  =======================  =======================
AA19AAA    200     Taxed                      No details held by DVLA  Ford, red, petrol
AA19EEE    200     Taxed                      No results returned      Ford, red, electric
AA19PPP    200     Not Taxed for on Road Use  Not valid                Vauxhall, silver, petrol
L2WPS      200     Untaxed                    Valid                    Kawasaki motorcycle
AA19SRN    200     SORN                       Not valid                Nissan, blue, petrol
AA19DSL    200     Taxed                      Valid                    Skoda, grey, diesel
AA19MOT    200     Taxed                      Valid                    Audi, white, petrol
AA19AMP    200     Taxed                      Valid                    Ford, black, diesel
ER19BAD    400     errors: "Bad Request", detail "Invalid format for field - vehicle
                   registration number"
ER19NFD    404     errors: "Vehicle Not Found"
ER19THR    429     errors: "Too Many Requests", ``Retry-After: 1`` (configurable; with
                   ``throttle_first=N`` only the first N calls are throttled, then 200
                   Taxed / Valid)
ER19ERR    500     errors: "Internal Server Error"
ER19MNT    503     errors: "System currently down for maintenance" (``status`` is the number
                   503 there, not a string, as DVLA's test environment sends it)
=========  ======  =========================  =======================  =======================

Where DVLA publishes the body (AA19AAA, AA19EEE) it is followed, with its relative dates
("one year from now") computed from ``today``; the statuses of AA19MOT (valid MOT), AA19SRN
(SORN) and L2WPS (untaxed, tax due date passed) follow what the test environment answers;
for the rest the published page gives no status, and the values above are this project's
choice, picked so that every ``taxStatus`` and ``motStatus`` value occurs at least once.

Anything else: a registration not in the table or the fleet answers 404; one that is not
``[A-Z0-9]{1,7}`` (spaces, lower case, too long) answers 400 with code 105 "Invalid vrn
number"; a request without ``x-api-key`` or with a wrong one answers 403; a body that is not
a JSON object with a string ``registrationNumber`` answers 400; other paths and methods get
aiohttp's plain 404/405 (no VES error body). The stub counts calls and keeps the last few
requests for tests to inspect (``app[VES_STUB]``); it never logs a registration.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from connectors.dvla_ves import VES_PATH

__all__ = [
    "VES_STUB",
    "VES_TEST_ERRORS",
    "VES_TEST_STATUSES",
    "ReceivedRequest",
    "VesStubState",
    "create_ves_stub_app",
    "vehicle_body",
]

_VRN: Final = re.compile(r"[A-Z0-9]{1,7}")

VES_TEST_STATUSES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "AA19AAA": ("Taxed", "No details held by DVLA"),
        "AA19EEE": ("Taxed", "No results returned"),
        "AA19PPP": ("Not Taxed for on Road Use", "Not valid"),
        "L2WPS": ("Untaxed", "Valid"),
        "AA19SRN": ("SORN", "Not valid"),
        "AA19DSL": ("Taxed", "Valid"),
        "AA19MOT": ("Taxed", "Valid"),
        "AA19AMP": ("Taxed", "Valid"),
    }
)
"""(taxStatus, motStatus) of each 200 test registration, as in the module's table."""

VES_TEST_ERRORS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "ER19BAD": 400,
        "ER19NFD": 404,
        "ER19THR": 429,
        "ER19ERR": 500,
        "ER19MNT": 503,
    }
)
"""The HTTP status of each error test registration."""


def _error(status: int | str, code: str | None, title: str, detail: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": status}
    if code is not None:
        entry["code"] = code
    entry.update(title=title, detail=detail)
    return {"errors": [entry]}


_ERROR_BODIES: Final[Mapping[str, dict[str, Any]]] = {
    "ER19BAD": _error(
        "400", "400", "Bad Request", "Invalid format for field - vehicle registration number"
    ),
    "ER19NFD": _error("404", "404", "Vehicle Not Found", "Record for vehicle not found"),
    "ER19THR": _error("429", "429", "Too Many Requests", "Too many requests, try again later"),
    "ER19ERR": _error("500", "500", "Internal Server Error", "System Error occurred"),
    "ER19MNT": _error(
        503,
        None,
        "System currently down for maintenance",
        "The service is currently down for maintenance, please contact support for more "
        "information",
    ),
}
_NOT_FOUND: Final = _ERROR_BODIES["ER19NFD"]
_INVALID_VRN: Final = _error(
    "400", "105", "Invalid vrn number", "Invalid format for field - vehicle registration number"
)
_BAD_REQUEST: Final = _error("400", "400", "Bad Request", "The request body is not valid")
_FORBIDDEN: Final = _error("403", "403", "Forbidden", "Missing or invalid API key")


def _years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def vehicle_body(vrn: str, today: date) -> dict[str, Any]:
    """A full 200 body for a test registration, relative dates computed from ``today``."""
    tax, mot = VES_TEST_STATUSES[vrn]
    next_year = _years(today, 1).isoformat()
    body: dict[str, Any] = {
        "registrationNumber": vrn,
        "artEndDate": "2025-03-30",
        "co2Emissions": 300,
        "engineCapacity": 2000,
        "euroStatus": "EURO1",
        "markedForExport": False,
        "fuelType": "PETROL",
        "motStatus": mot,
        "revenueWeight": 0,
        "colour": "RED",
        "make": "FORD",
        "typeApproval": "M1",
        "yearOfManufacture": 2019,
        "taxDueDate": next_year,
        "taxStatus": tax,
        "dateOfLastV5CIssued": "2019-05-20",
        "wheelplan": "2 AXLE RIGID BODY",
        "monthOfFirstDvlaRegistration": "2019-03",
        "monthOfFirstRegistration": "2019-03",
        "realDrivingEmissions": "1",
    }
    changes: dict[str, dict[str, Any]] = {
        "AA19AAA": {},
        "AA19EEE": {"co2Emissions": 200, "fuelType": "ELECTRICITY", "engineCapacity": None},
        "AA19PPP": {"make": "VAUXHALL", "colour": "SILVER", "taxDueDate": None},
        "L2WPS": {
            "make": "KAWASAKI",
            "colour": "BLACK",
            "engineCapacity": 649,
            "co2Emissions": 110,
            "typeApproval": "L3",
            "wheelplan": "2 WHEEL",
            "yearOfManufacture": 2012,
            "monthOfFirstDvlaRegistration": "2012-06",
            "monthOfFirstRegistration": "2012-06",
            "taxDueDate": (today - timedelta(days=92)).isoformat(),
            "motExpiryDate": (today + timedelta(days=140)).isoformat(),
        },
        "AA19SRN": {"make": "NISSAN", "colour": "BLUE", "taxDueDate": None},
        "AA19DSL": {
            "make": "SKODA",
            "colour": "GREY",
            "fuelType": "DIESEL",
            "engineCapacity": 1968,
            "co2Emissions": 129,
            "euroStatus": "EURO 6",
            "motExpiryDate": (today + timedelta(days=200)).isoformat(),
        },
        "AA19MOT": {"make": "AUDI", "colour": "WHITE", "motExpiryDate": next_year},
        "AA19AMP": {
            "fuelType": "DIESEL",
            "colour": "BLACK",
            "co2Emissions": 350,
            "motExpiryDate": (today + timedelta(days=300)).isoformat(),
        },
    }
    for name, value in changes[vrn].items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


_MAKES: Final = (
    ("FORD", "PETROL"),
    ("VAUXHALL", "PETROL"),
    ("VOLKSWAGEN", "DIESEL"),
    ("TOYOTA", "HYBRID ELECTRIC"),
    ("NISSAN", "ELECTRICITY"),
    ("BMW", "DIESEL"),
    ("KIA", "PETROL"),
    ("PEUGEOT", "DIESEL"),
)
_COLOURS: Final = ("BLACK", "WHITE", "SILVER", "GREY", "BLUE", "RED", "GREEN", "YELLOW")


def _fleet_vehicle(vrn: str, tax: str, mot: str, today: date) -> dict[str, Any]:
    """A plausible full body for a fleet vehicle; the extras derive from the registration."""
    digest = hashlib.sha256(vrn.encode()).digest()
    make, fuel = _MAKES[digest[0] % len(_MAKES)]
    year = 2005 + digest[1] % 21
    body: dict[str, Any] = {
        "registrationNumber": vrn,
        "taxStatus": tax,
        "motStatus": mot,
        "make": make,
        "colour": _COLOURS[digest[2] % len(_COLOURS)],
        "fuelType": fuel,
        "yearOfManufacture": year,
        "monthOfFirstRegistration": f"{year}-{1 + digest[3] % 12:02d}",
        "engineCapacity": 1000 + 100 * (digest[4] % 20),
        "co2Emissions": 90 + digest[5] % 120,
        "markedForExport": False,
        "typeApproval": "M1",
        "wheelplan": "2 AXLE RIGID BODY",
        "dateOfLastV5CIssued": f"{year + 1}-0{1 + digest[6] % 9}-1{digest[7] % 9}",
    }
    if tax == "Taxed":
        body["taxDueDate"] = (today + timedelta(days=1 + digest[8])).isoformat()
    if mot == "Valid":
        body["motExpiryDate"] = (today + timedelta(days=1 + digest[9])).isoformat()
    return body


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request the stub received, for tests (headers case-insensitive). Headers and body
    are kept out of ``repr``."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass
class VesStubState:
    """What a running stub knows: its configuration and what it has received."""

    api_key: str = field(repr=False)
    fleet: Mapping[str, tuple[str, str]] = field(repr=False)
    throttle_first: int | None
    retry_after: int
    today: Callable[[], date]
    calls: int = 0
    throttled: int = 0
    received: deque[ReceivedRequest] = field(default_factory=lambda: deque(maxlen=64))


VES_STUB: Final = web.AppKey("ves_stub", VesStubState)


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


async def _vehicles(request: web.Request) -> web.Response:
    state = request.app[VES_STUB]
    raw = await request.read()
    state.calls += 1
    state.received.append(
        ReceivedRequest(
            request.method, request.path, request.query_string, CIMultiDict(request.headers), raw
        )
    )
    key = request.headers.get("x-api-key")
    if key is None or not hmac.compare_digest(key.encode(), state.api_key.encode()):
        return _json(403, _FORBIDDEN)
    try:
        payload = json.loads(raw)
    except ValueError:
        return _json(400, _BAD_REQUEST)
    vrn = payload.get("registrationNumber") if isinstance(payload, dict) else None
    if not isinstance(vrn, str):
        return _json(400, _BAD_REQUEST)
    if _VRN.fullmatch(vrn) is None:
        return _json(400, _INVALID_VRN)
    today = state.today()
    if vrn == "ER19THR":
        if state.throttle_first is None or state.throttled < state.throttle_first:
            state.throttled += 1
            retry = {"Retry-After": str(state.retry_after)}
            return _json(429, _ERROR_BODIES[vrn], retry)
        return _json(200, _fleet_vehicle(vrn, "Taxed", "Valid", today))
    if vrn in _ERROR_BODIES:
        return _json(VES_TEST_ERRORS[vrn], _ERROR_BODIES[vrn])
    if vrn in VES_TEST_STATUSES:
        return _json(200, vehicle_body(vrn, today))
    if vrn in state.fleet:
        tax, mot = state.fleet[vrn]
        return _json(200, _fleet_vehicle(vrn, tax, mot, today))
    return _json(404, _NOT_FOUND)


def create_ves_stub_app(
    api_key: str,
    fleet: Mapping[str, tuple[str, str]] | None = None,
    *,
    throttle_first: int | None = None,
    retry_after: int = 1,
    today: Callable[[], date] = date.today,
) -> web.Application:
    """The stub app. ``fleet`` adds vehicles (registration -> (taxStatus, motStatus)); its
    values are served verbatim, so a test can plant an undocumented status. ``throttle_first``
    limits ER19THR's 429s to the first N calls (``None``: always 429, as DVLA's does)."""
    if not api_key:
        raise ValueError("the stub needs an API key")
    fleet = dict(fleet or {})
    reserved = set(fleet) & (set(VES_TEST_STATUSES) | set(VES_TEST_ERRORS))
    if reserved:
        raise ValueError(f"the fleet may not redefine {len(reserved)} test registrations")
    if any(_VRN.fullmatch(vrn) is None for vrn in fleet):
        raise ValueError("fleet registrations must be [A-Z0-9]{1,7}")
    app = web.Application(client_max_size=16 * 1024)
    app[VES_STUB] = VesStubState(api_key, fleet, throttle_first, retry_after, today)
    app.router.add_post(VES_PATH, _vehicles)
    return app
