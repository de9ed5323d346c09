"""The DVLA VES adapter against the local VES stub, over real HTTP on 127.0.0.1.

Covers every registration of DVLA's test environment (eight 200s, five errors), a missing and
a wrong API key, the shape of what goes on the wire (the registration only in the body), the
extra vehicle fields being dropped, 429 handling against the deadline, 5xx, network failure,
timeouts, undocumented enum values, the provider-kit lookup, the ``dvla-ves`` provider service
and the resident-parking-permit check end to end. Every test also checks that no registration
reached a log: structlog events (``capture_logs``), stdlib logging (``caplog``) and anything
written to stdout/stderr (``capfd``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from broker.scheme import dev as devscheme
from connectors.dvla_ves import (
    VES_PATH,
    DvlaVesClient,
    VesInvalidResponse,
    VesRejected,
    VesThrottled,
    VesUnavailable,
    VesVehicle,
    parse_vehicle,
    vehicle_attributes,
    ves_lookup,
)
from connectors.errors import ConfigError
from connectors.provider_kit import LookupRequest
from connectors.reference.dvla_stub import VES_STUB, VesStubState, create_ves_stub_app
from connectors.reference.keepers import PARKING_TEST_CASES, keeper_fleet, keeper_lookup
from connectors.reference.providers import build_reference_provider
from tests.support.servers import refusing_port, start_app, url_of
from trust.messages import Outcome, Subject, parse_subject
from trust.rules import AttributeRef, finalise, parse_rule

API_KEY = "ves-test-key-2f1c9a7e"
AS_OF = date(2026, 11, 27)

# DVLA's test environment, written out here independently of the stub.
OK: dict[str, tuple[str, str]] = {
    "AA19AAA": ("Taxed", "No details held by DVLA"),
    "AA19EEE": ("Taxed", "No results returned"),
    "AA19PPP": ("Not Taxed for on Road Use", "Not valid"),
    "L2WPS": ("Untaxed", "Valid"),
    "AA19SRN": ("SORN", "Not valid"),
    "AA19DSL": ("Taxed", "Valid"),
    "AA19MOT": ("Taxed", "Valid"),
    "AA19AMP": ("Taxed", "Valid"),
}
ERRORS = {"ER19BAD": 400, "ER19NFD": 404, "ER19THR": 429, "ER19ERR": 500, "ER19MNT": 503}
PLANTED = {"ZZ99ZZZ": ("Exempt", "Valid"), "ZZ98ZZZ": ("Taxed", "Expired")}

EVERY_REGISTRATION = [*OK, *ERRORS, *PLANTED, *list(keeper_fleet())[:50]]


# --- no registration in any log ---------------------------------------------------------------


def _registration_pattern(registrations: list[str]) -> re.Pattern[str]:
    spaced = [r"\s?".join(re.escape(ch) for ch in vrn) for vrn in registrations]
    return re.compile(
        rf"(?<![A-Za-z0-9])(?:{'|'.join(spaced)})(?![A-Za-z0-9])", flags=re.IGNORECASE
    )


LEAK = _registration_pattern(EVERY_REGISTRATION)


def test_the_leak_scanner_can_fail() -> None:
    assert LEAK.search('{"event": "x", "vrn": "aa19 aaa"}')
    assert LEAK.search("registration=L2WPS.")
    assert not LEAK.search("correlation_id=3f2a19aa-aaa0 ves-http-503 AA19AAAB")


@pytest.fixture(autouse=True)
def no_registration_in_logs(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[list[MutableMapping[str, Any]]]:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        yield events
    out, err = capfd.readouterr()
    for source, text in (
        ("structlog", repr(events)),
        ("stdout", out),
        ("stderr", err),
        ("stdlib logging", caplog.text),
    ):
        found = LEAK.search(text)
        assert found is None, f"a registration reached {source}"


def assert_no_registration(exc: BaseException) -> None:
    chain: BaseException | None = exc
    while chain is not None:
        assert LEAK.search(str(chain)) is None
        assert LEAK.search(repr(chain)) is None
        chain = chain.__cause__ or chain.__context__


# --- harness ----------------------------------------------------------------------------------


async def serve(app: web.Application) -> tuple[str, web.AppRunner]:
    runner = await start_app(app)
    return url_of(runner), runner


@dataclass
class Stub:
    url: str
    state: VesStubState


class StartStub(Protocol):
    """The ``start_stub`` fixture: a VES stub with ``options`` (its fleet, faults)."""

    async def __call__(self, **options: Any) -> Stub: ...


@pytest.fixture
async def start_stub() -> AsyncIterator[StartStub]:
    runners: list[web.AppRunner] = []

    async def start(**options: Any) -> Stub:
        options.setdefault("fleet", {**PLANTED, **keeper_fleet()})
        app = create_ves_stub_app(API_KEY, **options)
        url, runner = await serve(app)
        runners.append(runner)
        return Stub(url, app[VES_STUB])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def stub(start_stub: StartStub) -> Stub:
    return await start_stub()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


class FakeTime:
    """Monotonic time that ``sleep`` moves forward without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def lookup_request(registration: str, *attributes: str) -> LookupRequest:
    subject = parse_subject({"vehicle_registration": registration}, required=())
    return LookupRequest(attributes, subject, AS_OF, "resident-parking-permit")


# --- the eight 200s and what is kept of them -------------------------------------------------


@pytest.mark.parametrize(("registration", "statuses"), OK.items())
async def test_every_test_vehicle(
    stub: Stub, session: aiohttp.ClientSession, registration: str, statuses: tuple[str, str]
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    vehicle = await client.vehicle(registration, deadline=soon())
    tax, mot = statuses
    assert vehicle == VesVehicle(tax_status=tax, mot_status=mot)  # type: ignore[arg-type]
    assert vehicle_attributes(vehicle) == {
        "vehicle-taxed": tax == "Taxed",
        "vehicle-mot-valid": mot == "Valid",
    }


async def test_no_details_held_is_not_a_valid_mot(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    vehicle = await client.vehicle("AA19AAA", deadline=soon())
    assert vehicle is not None
    assert vehicle.mot_status == "No details held by DVLA"
    assert vehicle_attributes(vehicle)["vehicle-mot-valid"] is False


async def test_extra_fields_are_discarded(stub: Stub, session: aiohttp.ClientSession) -> None:
    raw = await session.post(
        stub.url + VES_PATH,
        json={"registrationNumber": "AA19DSL"},
        headers={"x-api-key": API_KEY},
    )
    sent = await raw.json()
    assert {"make", "colour", "fuelType", "yearOfManufacture", "taxDueDate", "motExpiryDate"} <= (
        set(sent)
    )
    client = DvlaVesClient(session, stub.url, API_KEY)
    vehicle = await client.vehicle("AA19DSL", deadline=soon())
    assert vehicle is not None
    assert dataclasses.asdict(vehicle) == {"tax_status": "Taxed", "mot_status": "Valid"}
    assert not hasattr(vehicle, "__dict__")  # slots: nowhere to keep anything else
    assert [f.name for f in dataclasses.fields(VesVehicle)] == ["tax_status", "mot_status"]
    for value in (sent["make"], sent["colour"], sent["fuelType"], str(sent["yearOfManufacture"])):
        assert value not in repr(vehicle)
    assert set(vehicle_attributes(vehicle)) == {"vehicle-taxed", "vehicle-mot-valid"}


# --- what goes on the wire -------------------------------------------------------------------


async def test_registration_travels_in_the_body_only(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    client = DvlaVesClient(session, stub.url + "/", API_KEY)
    await client.vehicle("aa19 aaa", deadline=soon())
    await client.vehicle("AA19EEE", deadline=soon())
    first, second = stub.state.received
    for received, registration in ((first, "AA19AAA"), (second, "AA19EEE")):
        assert received.method == "POST"
        assert received.path == VES_PATH == "/vehicle-enquiry/v1/vehicles"
        assert received.query_string == ""
        assert json.loads(received.body) == {"registrationNumber": registration}
        headers = {name.lower(): value for name, value in received.headers.items()}
        assert headers["x-api-key"] == API_KEY
        assert headers["content-type"].startswith("application/json")
        correlation = headers["x-correlation-id"]
        assert str(uuid.UUID(correlation)) == correlation
        for name, value in received.headers.items():
            for text in (name, value):
                squeezed = "".join(text.split()).upper()
                assert registration not in squeezed
    assert first.headers["X-Correlation-Id"] != second.headers["X-Correlation-Id"]
    assert stub.state.calls == 2


# --- the five error registrations ------------------------------------------------------------


@pytest.mark.parametrize("registration", ["ER19NFD", "ER19BAD"])
async def test_not_found_and_invalid_mean_no_such_vehicle(
    stub: Stub, session: aiohttp.ClientSession, registration: str
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    assert await client.vehicle(registration, deadline=soon()) is None
    assert stub.state.calls == 1


async def test_a_registration_that_cannot_be_one_is_not_sent(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    assert await client.vehicle("AB-12 CDE", deadline=soon()) is None
    assert await client.vehicle("ABCDEFGH", deadline=soon()) is None
    assert stub.state.calls == 0


@pytest.mark.parametrize(("registration", "status"), [("ER19ERR", 500), ("ER19MNT", 503)])
async def test_server_errors_are_unavailable(
    stub: Stub, session: aiohttp.ClientSession, registration: str, status: int
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    with pytest.raises(VesUnavailable) as caught:
        await client.vehicle(registration, deadline=soon())
    assert caught.value.reason == f"ves-http-{status}"
    assert_no_registration(caught.value)


async def test_throttled_then_answered_within_the_deadline(
    start_stub: StartStub, session: aiohttp.ClientSession
) -> None:
    stub = await start_stub(throttle_first=1, retry_after=1)
    client = DvlaVesClient(session, stub.url, API_KEY)
    started = time.monotonic()
    vehicle = await client.vehicle("ER19THR", deadline=started + 3.0)
    elapsed = time.monotonic() - started
    assert vehicle == VesVehicle("Taxed", "Valid")
    assert 1.0 <= elapsed < 3.0
    assert stub.state.calls == 2
    assert stub.state.throttled == 1


async def test_throttled_past_the_deadline_raises_without_sleeping(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # pragma: no cover - must not be called
        slept.append(seconds)
        await asyncio.sleep(seconds)

    client = DvlaVesClient(session, stub.url, API_KEY, sleep=sleep)
    started = time.monotonic()
    with pytest.raises(VesThrottled) as caught:
        await client.vehicle("ER19THR", deadline=started + 0.5)
    assert time.monotonic() - started < 0.5
    assert slept == []
    assert stub.state.calls == 1
    assert isinstance(caught.value, VesUnavailable)
    assert_no_registration(caught.value)


async def test_throttled_retries_at_most_twice(stub: Stub, session: aiohttp.ClientSession) -> None:
    clock = FakeTime()
    client = DvlaVesClient(session, stub.url, API_KEY, clock=clock.now, sleep=clock.sleep)
    with pytest.raises(VesThrottled):
        await client.vehicle("ER19THR", deadline=clock.now() + 100)
    assert clock.sleeps == [1.0, 1.0]
    assert stub.state.calls == 3


async def test_retry_after_is_honoured(
    start_stub: StartStub, session: aiohttp.ClientSession
) -> None:
    stub = await start_stub(throttle_first=2, retry_after=4)
    clock = FakeTime()
    client = DvlaVesClient(session, stub.url, API_KEY, clock=clock.now, sleep=clock.sleep)
    vehicle = await client.vehicle("ER19THR", deadline=clock.now() + 9)
    assert vehicle == VesVehicle("Taxed", "Valid")
    assert clock.sleeps == [4.0, 4.0]
    # a wait of 4 s does not fit a 3 s deadline: no sleep at all
    stub = await start_stub(retry_after=4)
    clock = FakeTime()
    client = DvlaVesClient(session, stub.url, API_KEY, clock=clock.now, sleep=clock.sleep)
    with pytest.raises(VesThrottled):
        await client.vehicle("ER19THR", deadline=clock.now() + 3)
    assert clock.sleeps == []


# --- API key ---------------------------------------------------------------------------------


async def test_wrong_api_key_is_rejected(stub: Stub, session: aiohttp.ClientSession) -> None:
    client = DvlaVesClient(session, stub.url, "not-the-key")
    with pytest.raises(VesRejected) as caught:
        await client.vehicle("AA19AAA", deadline=soon())
    assert caught.value.reason == "ves-http-403"
    assert_no_registration(caught.value)


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
async def test_stub_refuses_missing_or_wrong_key(
    stub: Stub, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with session.post(
        stub.url + VES_PATH, json={"registrationNumber": "AA19AAA"}, headers=headers
    ) as response:
        assert response.status == 403
        body = await response.json()
    assert body["errors"][0]["title"]
    assert "AA19AAA" not in json.dumps(body)


def test_client_needs_a_key() -> None:
    with pytest.raises(ValueError, match="API key"):
        DvlaVesClient(None, "http://127.0.0.1:1", "")  # type: ignore[arg-type]


# --- what the stub refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "400"),
        (b"[]", "400"),
        (b'{"registration": "AA19AAA"}', "400"),
        (b'{"registrationNumber": 12}', "400"),
        (b'{"registrationNumber": "aa19aaa"}', "105"),
        (b'{"registrationNumber": "AA19 AAA"}', "105"),
    ],
)
async def test_stub_refuses_bad_bodies(
    stub: Stub, session: aiohttp.ClientSession, body: bytes, code: str
) -> None:
    async with session.post(
        stub.url + VES_PATH,
        data=body,
        headers={"x-api-key": API_KEY, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        errors = (await response.json())["errors"]
    assert errors[0]["code"] == code
    assert errors[0]["title"]


async def test_stub_errors_have_the_documented_shape(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    for registration, status in ERRORS.items():
        async with session.post(
            stub.url + VES_PATH,
            json={"registrationNumber": registration},
            headers={"x-api-key": API_KEY},
        ) as response:
            assert response.status == status
            errors = (await response.json())["errors"]
            assert isinstance(errors[0]["title"], str)
            if status == 429:
                assert response.headers["Retry-After"] == "1"
    async with session.post(
        stub.url + VES_PATH, json={"registrationNumber": "ZZ11ZZZ"}, headers={"x-api-key": API_KEY}
    ) as response:
        assert response.status == 404


# --- answers outside the documented shape -----------------------------------------------------


@pytest.mark.parametrize("registration", list(PLANTED))
async def test_unknown_enum_value_is_an_error_not_false(
    stub: Stub, session: aiohttp.ClientSession, registration: str
) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    with pytest.raises(VesInvalidResponse) as caught:
        await client.vehicle(registration, deadline=soon())
    assert caught.value.reason in ("ves-unknown-tax-status", "ves-unknown-mot-status")
    lookup = ves_lookup(client, deadline_s=2)
    with pytest.raises(VesInvalidResponse):
        await lookup(lookup_request(registration, "vehicle-taxed"))


def test_parse_vehicle_is_strict_enough() -> None:
    assert parse_vehicle({"registrationNumber": "AB12CDE"}, "AB12CDE") == VesVehicle(None, None)
    assert parse_vehicle(
        {"registrationNumber": "AB12 CDE", "taxStatus": "SORN", "motStatus": None, "x": 1},
        "AB12CDE",
    ) == VesVehicle("SORN", None)
    bad: list[Any] = [
        [],
        "AB12CDE",
        {"taxStatus": "Taxed"},
        {"registrationNumber": 7},
        {"registrationNumber": "ZZ99ZZZ", "taxStatus": "Taxed"},
        {"registrationNumber": "AB12CDE", "taxStatus": "taxed"},
        {"registrationNumber": "AB12CDE", "motStatus": "VALID"},
        {"registrationNumber": "AB12CDE", "motStatus": True},
    ]
    for payload in bad:
        with pytest.raises(VesInvalidResponse) as caught:
            parse_vehicle(payload, "AB12CDE")
        assert_no_registration(caught.value)
    # a status VES left out is unknown, never false
    for vehicle in (VesVehicle(None, "Valid"), VesVehicle("Taxed", None)):
        with pytest.raises(VesInvalidResponse):
            vehicle_attributes(vehicle)


async def test_a_404_without_a_ves_body_is_not_no_such_vehicle(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    client = DvlaVesClient(session, stub.url + "/wrong-prefix", API_KEY)
    with pytest.raises(VesInvalidResponse) as caught:
        await client.vehicle("ER19NFD", deadline=soon())
    assert caught.value.reason == "ves-http-404-not-ves"
    assert stub.state.calls == 0


async def test_network_failure_is_unavailable(session: aiohttp.ClientSession) -> None:
    with refusing_port() as port:
        client = DvlaVesClient(session, f"http://127.0.0.1:{port}", API_KEY)
        with pytest.raises(VesUnavailable) as caught:
            await client.vehicle("AA19AAA", deadline=soon())
    assert caught.value.reason == "ves-unreachable"
    assert_no_registration(caught.value)


async def test_a_slow_ves_is_cut_at_the_deadline(session: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"registrationNumber": "AA19AAA", "taxStatus": "Taxed"})

    app = web.Application()
    app.router.add_post(VES_PATH, slow)
    url, runner = await serve(app)
    try:
        client = DvlaVesClient(session, url, API_KEY)
        started = time.monotonic()
        with pytest.raises(VesUnavailable) as caught:
            await client.vehicle("AA19AAA", deadline=started + 0.3)
        assert time.monotonic() - started < 1.0
        assert caught.value.reason == "ves-timeout"
        with pytest.raises(VesUnavailable, match="ves-deadline-passed"):
            await client.vehicle("AA19AAA", deadline=time.monotonic() - 1)
    finally:
        release.set()
        await runner.cleanup()


# --- the provider-kit lookup -----------------------------------------------------------------


async def test_ves_lookup_answers_only_what_was_asked(
    stub: Stub, session: aiohttp.ClientSession
) -> None:
    lookup = ves_lookup(DvlaVesClient(session, stub.url, API_KEY), deadline_s=2)
    assert await lookup(lookup_request("AA19MOT", "vehicle-taxed")) == {"vehicle-taxed": True}
    assert await lookup(lookup_request("aa19 srn", "vehicle-mot-valid", "vehicle-taxed")) == {
        "vehicle-mot-valid": False,
        "vehicle-taxed": False,
    }
    assert await lookup(lookup_request("ER19NFD", "vehicle-taxed")) is None
    calls = stub.state.calls
    with pytest.raises(KeyError):
        await lookup(lookup_request("AA19MOT", "vehicle-taxed", "vehicle-colour"))
    assert stub.state.calls == calls  # refused before any call to DVLA
    with pytest.raises(VesUnavailable):
        await lookup(lookup_request("ER19MNT", "vehicle-taxed"))


async def test_fleet_vehicles_are_served(stub: Stub, session: aiohttp.ClientSession) -> None:
    client = DvlaVesClient(session, stub.url, API_KEY)
    for registration, (tax, mot) in list(keeper_fleet().items())[:20]:
        vehicle = await client.vehicle(registration, deadline=soon())
        assert vehicle == VesVehicle(tax, mot)  # type: ignore[arg-type]


# --- resident parking permit, end to end against the stub ------------------------------------

PARKING_RULE = parse_rule(
    {
        "all": [
            {"attribute": "dvla-keeper/registered-keeper"},
            {"attribute": "dvla-ves/vehicle-taxed"},
        ]
    }
)


async def _answer(lookup: Any, ref: AttributeRef, subject: Subject) -> Outcome:
    """What the broker would make of one provider: no-match, yes/no, or undetermined."""
    request = LookupRequest((ref.attribute,), subject, AS_OF, "resident-parking-permit")
    try:
        found = await lookup(request)
    except Exception:
        return "undetermined"
    if found is None:
        return "no-match"
    return "yes" if found[ref.attribute] else "no"


@pytest.mark.parametrize(
    ("label", "subject", "expected"), PARKING_TEST_CASES, ids=[c[0] for c in PARKING_TEST_CASES]
)
async def test_resident_parking_permit(
    stub: Stub,
    session: aiohttp.ClientSession,
    label: str,
    subject: dict[str, str],
    expected: str,
) -> None:
    clock = FakeTime()
    client = DvlaVesClient(session, stub.url, API_KEY, clock=clock.now, sleep=clock.sleep)
    lookups = {"dvla-keeper": keeper_lookup(), "dvla-ves": ves_lookup(client, deadline_s=1.8)}
    parsed = parse_subject(subject)
    known = {
        ref: await _answer(lookups[ref.provider], ref, parsed)
        for ref in (
            AttributeRef("dvla-keeper", "registered-keeper"),
            AttributeRef("dvla-ves", "vehicle-taxed"),
        )
    }
    assert finalise(PARKING_RULE, known) == expected


# --- the dvla-ves provider service ------------------------------------------------------------


def _ves_config(scheme: devscheme.DevScheme, tmp_path: Path, url: str, key: str) -> Path:
    key_file = tmp_path / "ves.key"
    key_file.write_text(key + "\n")
    template = scheme.provider_config(devscheme.DWP).read_text()
    assert 'reference = "dwp"' in template
    text = template.replace('reference = "dwp"', 'reference = "dvla-ves"')
    text = text.replace('provider_id = "', 'provider_id = "dvla-ves-', 1)
    text += f'\nves_url = "{url}"\nves_api_key_file = "{key_file}"\nves_deadline_s = 1.5\n'
    path = scheme.provider_config(devscheme.DWP).with_name("dvla-ves.toml")
    path.write_text(text)
    return path


async def test_dvla_ves_provider_service_owns_its_session(
    stub: Stub, scheme: devscheme.DevScheme, tmp_path: Path
) -> None:
    service = build_reference_provider(_ves_config(scheme, tmp_path, stub.url, API_KEY))
    lookup = service.kit._lookup
    with pytest.raises(VesUnavailable):  # no session before startup
        await lookup(lookup_request("AA19AAA", "vehicle-taxed"))
    runner = web.AppRunner(service.app, access_log=None)
    await runner.setup()
    try:
        found = await lookup(lookup_request("AA19AAA", "vehicle-taxed", "vehicle-mot-valid"))
        assert found == {"vehicle-taxed": True, "vehicle-mot-valid": False}
        received = stub.state.received[-1]
        assert received.headers["x-api-key"] == API_KEY
    finally:
        await runner.cleanup()
    with pytest.raises(VesUnavailable):  # the session closed with the app
        await lookup(lookup_request("AA19AAA", "vehicle-taxed"))


def test_dvla_ves_provider_config_errors(scheme: devscheme.DevScheme, tmp_path: Path) -> None:
    config = _ves_config(scheme, tmp_path, "http://127.0.0.1:1", "")
    with pytest.raises(ConfigError, match="ves_api_key_file"):
        build_reference_provider(config)
    config = _ves_config(scheme, tmp_path, "ftp://127.0.0.1:1", API_KEY)
    with pytest.raises(ConfigError, match="ves_url"):
        build_reference_provider(config)
    config = _ves_config(scheme, tmp_path, "http://127.0.0.1:1", API_KEY)
    config.write_text(config.read_text().replace("ves_api_key_file", "other_file"))
    with pytest.raises(ConfigError, match="ves_api_key_file"):
        build_reference_provider(config)
    config = _ves_config(scheme, tmp_path, "http://127.0.0.1:1", API_KEY)
    config.write_text(config.read_text().replace("ves_deadline_s = 1.5", "ves_deadline_s = 0"))
    with pytest.raises(ConfigError, match="ves_deadline_s"):
        build_reference_provider(config)
