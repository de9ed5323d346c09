"""No personal data and no token ever reaches a log line; one canonical ``check`` line per check.

The broker, both reference providers and the councils' client all run in this process, so
everything any of them logs is seen: structlog events (captured raw with
``structlog.testing.capture_logs``, i.e. *before* the production redaction processor, so the
redaction is not what makes these tests pass), the rendered JSON lines the production
configuration writes to stderr (``capfd``), and stdlib logging (``caplog``).

The run covers every test identity through both checks (one by one, and all at once so that
provider calls travel as batches), a policy refusal, hostile queries
(a forged signature carrying a real subject, a stranger's key, malformed claims) and a provider
that is down (``undetermined``). The scanner looks for every family name, given name, date of
birth (ISO, UK, US and compact forms), NINO (with or without spaces), postcode (with or without
its space) and anything shaped like a JWS. A self-check proves the scanner can fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from broker.app import create_app
from broker.logging import configure_logging
from broker.scheme import dev as devscheme
from broker.settings import load_settings
from connectors.config import member_log_key
from connectors.reference.attributes import EXPECTED_OUTCOMES
from connectors.reference.population import (
    AMBIGUOUS_IDENTITY,
    NO_MATCH_IDENTITY,
    TEST_IDENTITIES,
    TWINS,
    subject_of,
)
from connectors.reference.predicates import EXPECTED_BANDS, take_home_pence
from members.auditor import AuditClient
from members.bulk import BulkJobs, ItemsFile
from members.console.app import login_url, start_console
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support import credentials as cred
from tests.support.councils import CouncilKey, blue_badge_answer_token
from tests.support.logdb import log_backend
from tests.support.processes import start_workers, tail, until_answers, workers_config
from tests.support.residents import rows, sign_in
from tests.support.servers import (
    RunningBroker,
    RunningProvider,
    StartBroker,
    serve_on,
    start_app,
    url_of,
)
from tests.support.services import REDIS_URL
from tests.support.tokens import PIN, SoftToken
from tests.support.witnesses import serve_scheme_witnesses
from trust import bulk
from trust.keys import SigningKey
from trust.messages import OUTCOMES, is_band_name, new_jti
from trust.testing import forge

BB, FSM = devscheme.BLUE_BADGE_CHECK, devscheme.FSM_CHECK
ONLINE = devscheme.BLUE_BADGE_ONLINE
JWT = "application/jwt"
TOKEN_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.")


# --- the scanner --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    family_name: str
    given_names: str
    date_of_birth: date
    nino: str | None
    postcode: str


def _people() -> list[Identity]:
    everyone: list[Any] = [*TEST_IDENTITIES.values(), NO_MATCH_IDENTITY, *TWINS]
    return [
        Identity(p.family_name, p.given_names, p.date_of_birth, p.nino, p.postcode)
        for p in everyone
    ]


def _spaced(text: str) -> str:
    """``text`` with any whitespace allowed between its characters (NINOs, postcodes)."""
    return r"\s*".join(re.escape(ch) for ch in text if not ch.isspace())


def _letters(pattern: str) -> str:
    return rf"(?<![A-Za-z]){pattern}(?![A-Za-z])"


@dataclass
class Scanner:
    """Finds personal identifiers of the test population, and tokens, in any text."""

    people: Iterable[Identity]
    patterns: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[str] = set()

        def add(label: str, pattern: str, flags: int = re.IGNORECASE) -> None:
            if pattern not in seen:
                seen.add(pattern)
                self.patterns.append((label, re.compile(pattern, flags)))

        for person in self.people:
            family = person.family_name
            variants = {family, family.replace("'", ""), re.sub(r"[-']", " ", family)}
            for variant in variants:
                add("family name", _letters(r"\s*".join(map(re.escape, variant.split()))))
            for part in re.split(r"[^A-Za-z]+", family):
                if len(part) >= 5:  # "Test" of Stubbington-Test is too common a word
                    add("family name", _letters(re.escape(part)))
            for given in person.given_names.split():
                add("given name", _letters(re.escape(given)))
            born = person.date_of_birth
            for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%Y%m%d", "%d-%m-%Y", "%Y/%m/%d", "%m/%d/%Y"):
                add("date of birth", rf"(?<!\d){re.escape(born.strftime(fmt))}(?!\d)")
            add("date of birth", rf"(?<!\d){born.day}/{born.month}/{born.year}(?!\d)")
            if person.nino:
                add("NINO", rf"(?<![A-Za-z0-9]){_spaced(person.nino)}(?![A-Za-z0-9])")
            add("postcode", rf"(?<![A-Za-z0-9]){_spaced(person.postcode)}(?![A-Za-z0-9])")
        # any NINO-shaped string at all (upper case only: lower-case hex ids would collide)
        add(
            "NINO shape",
            r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]"
            r"(?![A-Za-z0-9])",
            0,
        )
        add("token", TOKEN_SHAPE.pattern, 0)
        # an identity provider's pairwise subject id (One Login's form) is personal data too
        add("credential sub", r"urn:fdc:gov\.uk:2022:[A-Za-z0-9_-]+", 0)

    def findings(self, text: str) -> list[str]:
        found = []
        for label, pattern in self.patterns:
            for match in pattern.finditer(text):
                start = max(0, match.start() - 40)
                found.append(f"{label} {match.group()!r} in …{text[start : match.end() + 40]!r}")
        return found

    def scan_events(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        found = []
        for event in events:
            found += self.findings(repr(event))
            found += self.findings(json.dumps(event, default=repr, ensure_ascii=False))
        return found


SCANNER = Scanner(_people())


def test_the_scanner_detects_what_it_must() -> None:
    """The tests below can fail: a planted identifier in any form is found."""
    person = TEST_IDENTITIES["bb-yes-pip-moving"]  # Sampleton, Arthur James, 1961-07-02
    assert (person.family_name, person.date_of_birth) == ("Sampleton", date(1961, 7, 2))
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    planted: list[dict[str, Any]] = [
        {"event": "check", "note": "Sampleton"},
        {"event": "check", "note": "SAMPLETON"},
        {"event": "check", "who": "Arthur"},
        {"event": "check", "family_name": "O'Fakery"},
        {"event": "check", "family_name": "OFakery"},
        {"event": "check", "subject": "stubbington test"},
        {"event": "check", "dob": "1961-07-02"},
        {"event": "check", "dob": "02/07/1961"},
        {"event": "check", "dob": "19610702"},
        {"event": "check", "dob": "2/7/1961"},
        {"event": "check", "nino": "ZX100001A"},
        {"event": "check", "nino": "ZX 10 00 01 A"},
        {"event": "check", "nino": "zx100001a"},
        {"event": "check", "nino": "AB 12 34 56 C"},
        {"event": "check", "postcode": "B15 2TT"},
        {"event": "check", "postcode": "b152tt"},
        {"event": "check", "postcode": "CV344RL"},
        {"event": "check", "token": token},
        {"event": "check", "sub": "urn:fdc:gov.uk:2022:5f1c0ffee"},
        {"event": "check", "nested": {"deep": ["x", ("Testwell",)]}},
        {"event": "check", "exception": f"Traceback ...\nValueError: {token}"},
    ]
    for event in planted:
        assert SCANNER.scan_events([event]), f"the scanner missed {event}"
    assert SCANNER.findings("line 1\n" + token)
    clean = {
        "event": "check",
        "request_id": "0f3c9a1b2c3d4e5f60718293a4b5c6d7",
        "requester": devscheme.COUNCIL_BLUE_BADGE,
        "check": BB,
        "purpose": "blue-badge-application",
        "outcome": "yes",
        "log_index": 7,
        "duration_ms": 12.5,
        "timestamp": "2026-11-27T10:00:00.000000Z",
        "providers": [{"provider": devscheme.DWP, "status": "match", "ms": 3.2}],
    }
    assert SCANNER.scan_events([clean]) == []


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Sent:
    request_id: str
    kind: str  # answered | refused | replayed | unverified | invalid
    requester: str | None
    check: str | None
    status: int
    outcome: str | None = None
    problem: str | None = None
    log_index: int | None = None


def _forge(key: SigningKey, kid: str, claims: Mapping[str, Any]) -> str:
    return forge({"alg": "ES256", "kid": kid, "typ": "eligibility-query+jwt"}, claims, key)


class Run:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url + "/v1/checks"
        self.sent: list[Sent] = []
        self._ids = itertools.count()

    async def post(
        self, token: str, *, kind: str, requester: str | None, check: str | None
    ) -> tuple[Sent, bytes]:
        request_id = f"logtest{next(self._ids):08d}"
        async with self.session.post(
            self.url, data=token, headers={"Content-Type": JWT, "X-Request-Id": request_id}
        ) as response:
            body = await response.read()
            assert response.headers["X-Request-Id"] == request_id
            sent = Sent(request_id, kind, requester, check, response.status)
        if response.status != 200:
            problem = json.loads(body)
            sent.problem = problem["type"].rsplit(":", 1)[1]
            sent.log_index = problem.get("log_index")
        self.sent.append(sent)
        return sent, body


async def exercise(
    broker: RunningBroker,
    providers: Mapping[str, RunningProvider],
    bb_client: EligibilityClient,
    fsm_client: EligibilityClient,
    council_key: CouncilKey,
) -> list[Sent]:
    """Every test identity through both checks, a refusal, hostile queries, a provider down."""
    async with aiohttp.ClientSession() as session:
        run = Run(session, broker.url)

        async def ask(
            client: EligibilityClient, check: str, purpose: str, who: str | dict[str, str]
        ) -> None:
            subject = subject_of(who) if isinstance(who, str) else who
            token, jti = client.sign_query(check, purpose=purpose, subject=subject, assurance="P2")
            sent, body = await run.post(
                token, kind="answered", requester=client.member_id, check=check
            )
            assert sent.status == 200, body
            answer = await client.verify_answer(body, jti)
            sent.outcome, sent.log_index = answer.outcome, answer.log_index

        twins: dict[str, str] = {
            "family_name": AMBIGUOUS_IDENTITY.family_name,
            "given_names": AMBIGUOUS_IDENTITY.given_names,
            "date_of_birth": AMBIGUOUS_IDENTITY.date_of_birth.isoformat(),
            "postcode": AMBIGUOUS_IDENTITY.postcode,
        }
        everyone: list[str | dict[str, str]] = [*sorted(EXPECTED_OUTCOMES), "no-match", twins]
        for who in everyone:
            await ask(bb_client, BB, "blue-badge-application", who)
            await ask(fsm_client, FSM, "free-school-meals-application", who)

        # a policy refusal, recorded
        token, _ = bb_client.sign_query(
            FSM,
            purpose="free-school-meals-application",
            subject=subject_of("fsm-no"),
            assurance="P2",
        )
        sent, _ = await run.post(token, kind="refused", requester=bb_client.member_id, check=FSM)
        assert (sent.status, sent.problem) == (403, "purpose-not-permitted")

        # hostile: a real subject under a forged signature, a stranger's key, bad claims
        bb_key = council_key(devscheme.COUNCIL_BLUE_BADGE)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": devscheme.COUNCIL_BLUE_BADGE,
            "aud": devscheme.BROKER,
            "iat": now,
            "exp": now + 60,
            "jti": new_jti(),
            "check": BB,
            "purpose": "blue-badge-application",
            "assurance": "P2",
            "lawful_basis": "public-task",
            "subject": subject_of("bb-yes-pip-moving"),
        }
        good = _forge(bb_key, bb_key.kid, claims)
        head, payload, _ = good.split(".")
        forged = f"{head}.{payload}.{_forge(bb_key, bb_key.kid, {'x': 1}).split('.')[2]}"
        stranger = SigningKey.generate()
        hostile = [
            forged,
            _forge(stranger, bb_key.kid, claims),
            _forge(stranger, stranger.kid, claims),
            good.replace(".", ".\n", 1),
            good + "." + good,
        ]
        for token in hostile:
            sent, _ = await run.post(token, kind="unverified", requester=None, check=None)
            assert (sent.status, sent.problem) == (401, "invalid-token")
        person = subject_of("bb-yes-pip-moving")
        malformed = {
            **claims,
            "jti": new_jti(),
            "subject": {**person, "maiden_name": person["family_name"]},
        }
        sent, body = await run.post(
            _forge(bb_key, bb_key.kid, malformed), kind="invalid", requester=None, check=None
        )
        assert (sent.status, sent.problem) == (400, "invalid-query"), body
        first, body = await run.post(good, kind="answered", requester=claims["iss"], check=BB)
        assert first.status == 200, body
        answer = await bb_client.verify_answer(body, claims["jti"])
        first.outcome, first.log_index = answer.outcome, answer.log_index
        again, _ = await run.post(good, kind="replayed", requester=claims["iss"], check=BB)
        assert (again.status, again.problem) == (401, "invalid-token")

        # identity credentials: checks answered from one, and each kind of refusal
        idp = council_key(devscheme.IDP)

        def credential(who: str, **changes: Any) -> str:
            claims = cred.one_login_claims(who, client_id=cred.BLUE_BADGE_CLIENT, now=now)
            return cred.jwcrypto_sign(idp, {**claims, **changes})

        for who in ("bb-yes-pip-moving", "bb-no", "bb-yes-dla"):
            token, jti = bb_client.sign_query(
                BB, purpose=ONLINE, subject={}, credential=credential(who)
            )
            sent, body = await run.post(
                token, kind="answered", requester=bb_client.member_id, check=BB
            )
            assert sent.status == 200, body
            answer = await bb_client.verify_answer(body, jti)
            sent.outcome, sent.log_index = answer.outcome, answer.log_index
        refusals = [
            ("credential-required", None, subject_of("bb-yes-dla")),
            ("credential-invalid", credential("bb-yes-dla", exp=now - 120), {}),
            ("credential-vot-too-low", credential("bb-yes-dla", vot="P1"), {}),
            (
                "subject-contradicts-credential",
                credential("bb-yes-pip-moving"),
                subject_of("bb-yes-dla"),
            ),
        ]
        for code, presented, subject in refusals:
            token, _ = bb_client.sign_query(
                BB, purpose=ONLINE, subject=subject, credential=presented, assurance="P2"
            )
            sent, _ = await run.post(token, kind="refused", requester=bb_client.member_id, check=BB)
            assert (sent.status, sent.problem) == (403, code)
        # everyone at once: the broker coalesces the calls into batch requests
        kit = providers[devscheme.DWP].service.kit
        batches = kit.batches_answered
        # the burst starts a fresh rate-limit window (each member's, one second, 50 queries in
        # the development scheme): the queries above must not count against it
        await asyncio.sleep(1.0 - time.time() % 1.0)
        await asyncio.gather(*(ask(bb_client, BB, "blue-badge-application", w) for w in everyone))
        assert kit.batches_answered > batches, "no batch request was made"

        # a provider down: undetermined, still recorded
        await providers[devscheme.DWP].stop()
        await ask(bb_client, BB, "blue-badge-application", "bb-yes-pip-moving")
        assert run.sent[-1].outcome == "undetermined"
        return run.sent


def assert_canonical_lines(events: Sequence[Mapping[str, Any]], sent: list[Sent]) -> None:
    """Exactly one ``check`` line per request, bound to its request id, with the fields an
    operator needs and no attribution for a query that did not verify."""
    lines = [e for e in events if e.get("event") == "check"]
    assert len(lines) == len(sent)
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id", ""), []).append(line)
    for item in sent:
        matching = by_id.get(item.request_id, [])
        assert len(matching) == 1, (item, matching)
        line = matching[0]
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
        assert line["status"] == item.status
        if item.kind == "answered":
            assert line["requester"] == item.requester
            assert line["check"] == item.check
            assert line["outcome"] == item.outcome
            assert line["outcome"] in OUTCOMES or is_band_name(line["outcome"])
            assert line["log_index"] == item.log_index
            assert line.get("problem") is None
        elif item.kind == "refused":
            assert line["requester"] == item.requester
            assert line["check"] == item.check
            assert line["problem"] == item.problem
            assert line["outcome"] == "refused"
            assert line["log_index"] == item.log_index
            assert type(line["log_index"]) is int
        elif item.kind == "replayed":  # verified, so attributable; never recorded
            assert line["requester"] == item.requester
            assert line["problem"] == "invalid-token"
            assert "log_index" not in line
        else:
            assert line["problem"] == item.problem
            assert "requester" not in line, "an unverified claim was attributed in the log"
            assert "log_index" not in line


@pytest.fixture
def restore_structlog() -> Any:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def clients(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[tuple[EligibilityClient, EligibilityClient]]:
    async with (
        EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)) as bb,
        EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_SCHOOLS)) as fsm,
    ):
        yield bb, fsm


async def test_no_personal_data_in_any_structlog_event(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    clients: tuple[EligibilityClient, EligibilityClient],
    council_key: CouncilKey,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info]
    ) as events:
        sent = await exercise(broker, providers, *clients, council_key)
    out, err = capfd.readouterr()

    assert len(sent) >= 2 * len(EXPECTED_OUTCOMES) + 9
    assert {s.outcome for s in sent if s.kind == "answered"} == set(OUTCOMES)
    assert events, "nothing was logged at all: the capture is not working"
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err) == []
    assert SCANNER.findings(caplog.text) == []
    assert_canonical_lines(events, sent)


async def test_no_personal_data_in_the_json_lines_on_stderr(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    clients: tuple[EligibilityClient, EligibilityClient],
    council_key: CouncilKey,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    restore_structlog: None,
) -> None:
    """The production configuration: JSON lines to stderr, as ``axb serve`` writes them."""
    capfd.readouterr()
    configure_logging(json=True, stream=sys.stderr)
    sent = await exercise(broker, providers, *clients, council_key)
    sys.stderr.flush()
    out, err = capfd.readouterr()

    assert SCANNER.findings(out + err) == []
    assert SCANNER.findings(caplog.text) == []
    events = []
    for line in err.splitlines():
        if line.strip():
            event = json.loads(line)  # every line on stderr is one JSON object
            assert isinstance(event, dict)
            assert {"event", "level", "timestamp"} <= set(event)
            events.append(event)
    assert_canonical_lines(events, sent)


async def test_attacker_chosen_header_member_names_do_not_reach_the_log(
    broker: RunningBroker, council_key: CouncilKey
) -> None:
    key = council_key(devscheme.COUNCIL_BLUE_BADGE)
    planted = "Sampleton 1961-07-02 ZX100001A"
    header = {"alg": "ES256", "kid": key.kid, "typ": "eligibility-query+jwt", planted: 1}
    body = forge(header, b"{}", None, signature=bytes(64))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                broker.url + "/v1/checks", data=body, headers={"Content-Type": JWT}
            ) as response,
        ):
            assert response.status == 401
    assert [e for e in events if e.get("event") == "check"]
    assert SCANNER.scan_events(events) == []


@pytest.mark.parametrize(
    "keys", ["in-files", pytest.param("in-a-token", marks=pytest.mark.keys_in_token)]
)
async def test_the_audit_side_logs_no_personal_data_and_no_tokens(
    keys: str,
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    clients: tuple[EligibilityClient, EligibilityClient],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Subject access (by the API and in the console), a council's answer checked as a
    receipt, records, export and verification: the identifiers an auditor types and the
    tokens that travel never reach a log line — with keys in files, and with every key
    (the auditor's and the console's too) in a PKCS#11 token."""
    bb_client, _ = clients
    auditor_config = scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml"
    known = subject_of("fsm-yes-income-support")
    person = {k: known[k] for k in ("family_name", "date_of_birth", "nino") if k in known}
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info]
    ) as events:
        kept = await blue_badge_answer_token(bb_client, "bb-yes-dla")
        await blue_badge_answer_token(bb_client, "fsm-yes-income-support")
        async with AuditClient.from_config(auditor_config) as auditor:
            found = await auditor.subject_access(person)
            assert found["records"]
            await auditor.records(requester=devscheme.COUNCIL_BLUE_BADGE)
            await auditor.records(identity_provider=devscheme.IDP)
            assert (await auditor.identity_sources())["checks"] >= 2
            assert (await auditor.audit_receipt(kept, member_log_key(auditor_config))).ok
        runner, console = await start_console(auditor_config)
        try:
            jar = aiohttp.CookieJar(unsafe=True)  # the console is at an IP address
            async with aiohttp.ClientSession(cookie_jar=jar) as browser:
                async with browser.get(login_url(console)) as response:
                    assert response.status == 200  # signed in, then the records page
                base = f"http://127.0.0.1:{console.port}"
                for path, form in (
                    ("/subject-access", person),
                    ("/receipt", {"token": kept}),
                    ("/verify", {"held": ""}),
                ):
                    async with browser.get(base + path) as response:
                        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', await response.text())
                    assert csrf is not None
                    async with browser.post(
                        base + path, data={"csrf": csrf.group(1), **form}
                    ) as response:
                        assert response.status == 200
        finally:
            await runner.cleanup()
    out, err = capfd.readouterr()
    assert events, "nothing was logged at all: the capture is not working"
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err) == []
    assert SCANNER.findings(caplog.text) == []


async def test_the_witness_paths_log_no_personal_data_and_no_tokens(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A scheme with two witnesses: checks of every test identity (providers down, so each is
    recorded as ``undetermined``), the broker submitting checkpoints, the witnesses cosigning
    and refusing, one witness going away, receipts proven under the policy."""
    with devscheme.Listeners(witnesses=devscheme.WITNESSES) as held:
        scheme = devscheme.generate(tmp_path / "witnessed", ports=held.ports)
        settings = dataclasses.replace(
            load_settings(scheme.broker_config), checkpoint_every_seconds=0.2
        )
        with capture_logs(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.format_exc_info,
            ]
        ) as events:
            witnesses = await serve_scheme_witnesses(scheme, held)
            broker = await serve_on(create_app(settings), held.broker)
            try:
                async with EligibilityClient.from_config(
                    scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
                ) as client:
                    for identity in list(TEST_IDENTITIES)[:6]:
                        answer = await client.check(
                            BB,
                            purpose="blue-badge-application",
                            subject=subject_of(identity),
                            assurance="P2",
                        )
                    await client.prove_receipt(answer, wait_s=10, poll_s=0.1)
                    await witnesses.pop("witness-b").cleanup()
                    await client.check(
                        BB,
                        purpose="blue-badge-application",
                        subject=subject_of("bb-no"),
                        assurance="P2",
                    )
                    await asyncio.sleep(0.5)  # the broker finds witness B gone
                async with aiohttp.ClientSession() as session:
                    port = scheme.witness_ports["witness-a"]
                    async with session.post(
                        f"http://127.0.0.1:{port}/add-checkpoint",
                        data=b"old 0\n\nSampleton 1961-07-02 ZX100001A\n",
                    ) as response:
                        assert response.status == 404
            finally:
                await broker.cleanup()
                for runner in witnesses.values():
                    await runner.cleanup()
    out, err = capfd.readouterr()
    names = {e.get("event") for e in events}
    assert {"checkpoint_cosigned", "checkpoint_refused", "witness_unreachable"} <= names
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err) == []


async def test_the_resident_page_logs_no_personal_data(
    broker: RunningBroker,
    identity_provider: str,
    clients: tuple[EligibilityClient, EligibilityClient],
    council_key: CouncilKey,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resident signs in, sees their checks and signs out; a forged callback and a sign-out
    without its form token are refused: the page's own log lines hold no name, birth date,
    ``sub`` or credential."""
    bb_client, _ = clients
    now = int(time.time())
    claims = cred.one_login_claims("bb-yes-dla", client_id=cred.BLUE_BADGE_CLIENT, now=now)
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info]
    ) as events:
        await bb_client.check(
            BB,
            purpose=ONLINE,
            subject={},
            credential=cred.jwcrypto_sign(council_key(devscheme.IDP), claims),
        )
        portal = cred.jwcrypto_sign(council_key(devscheme.IDP), claims)  # the API form
        assert len(await bb_client.resident_checks(portal)) == 1
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(f"{broker.url}/resident/callback?code=c&state=s") as forged:
                assert forged.status == 400
            page = await sign_in(browser, broker.url, "bb-yes-dla")
            assert rows(page) == 1
            async with browser.post(f"{broker.url}/resident/sign-out", data={}) as refused:
                assert refused.status == 403
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            async with browser.post(
                f"{broker.url}/resident/sign-out", data={"csrf": csrf.group(1)}
            ) as out:
                assert out.url.path == "/resident"
    out_text, err = capfd.readouterr()
    names = {e.get("event") for e in events}
    assert {"resident_sign_in", "resident_view", "resident_sign_out", "resident_api_view"} <= names
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out_text + err) == []
    assert SCANNER.findings(caplog.text) == []


async def test_banded_and_local_checks_log_no_personal_data_and_no_amounts(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Council tax reduction for every documented band (two councils' local versions, the
    parameterised predicates on the DWP provider), a refusal where no local version is in
    force, and the discovery endpoint: no identifier, token or take-home amount is logged, and
    the canonical line names the band as the answer does."""
    councils = (devscheme.COUNCIL_TAX_COVENTRY, devscheme.COUNCIL_TAX_WARWICK)
    purpose = "council-tax-reduction-application"
    async with aiohttp.ClientSession() as session:
        run = Run(session, broker.url)
        with capture_logs(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.format_exc_info,
            ]
        ) as events:
            for council in councils:
                async with EligibilityClient.from_config(scheme.council_config(council)) as c:
                    assert await c.available_checks()
                    for identity, asker, as_of, expected in EXPECTED_BANDS:
                        if asker != council:
                            continue
                        token, jti = c.sign_query(
                            devscheme.CTR_CHECK,
                            purpose=purpose,
                            subject=subject_of(identity),
                            as_of=date.fromisoformat(as_of),
                            assurance="P2",
                        )
                        sent, body = await run.post(
                            token, kind="answered", requester=council, check=devscheme.CTR_CHECK
                        )
                        answer = await c.verify_answer(body, jti)
                        assert answer.outcome == expected
                        sent.outcome, sent.log_index = answer.outcome, answer.log_index
                    token, _ = c.sign_query(
                        devscheme.CTR_CHECK,
                        purpose=purpose,
                        subject=subject_of("fsm-yes-uc-low-earnings"),
                        as_of=date(2025, 3, 31),
                        assurance="P2",
                    )
                    sent, _ = await run.post(
                        token, kind="refused", requester=council, check=devscheme.CTR_CHECK
                    )
                    assert (sent.status, sent.problem) == (403, "check-not-in-force")
    out, err = capfd.readouterr()
    assert {s.outcome for s in run.sent} >= {"reduction-75", "protected-77", "no", "no-match"}
    assert events
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err) == []
    assert SCANNER.findings(caplog.text) == []
    assert_canonical_lines(events, run.sent)
    amounts = {
        str(take_home_pence(award, date(2026, 11, 27), 1))
        for label in ("fsm-yes-uc-low-earnings", "fsm-yes-uc-any-only-after-2026-09")
        for award in TEST_IDENTITIES[label].awards
    }
    logged = repr(events) + out + err + caplog.text
    assert amounts == {"61666", "61675"}
    assert not [amount for amount in amounts if amount in logged]


async def test_bulk_jobs_log_no_personal_data_and_no_tokens(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    clients: tuple[EligibilityClient, EligibilityClient],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bulk job of every test identity (submitted, run, polled, its results and signed
    manifest fetched), one refused for a bad row that carries a real identity, one cancelled:
    the subjects, the manifest and the request tokens never reach a log line."""
    _, fsm_client = clients
    jobs = BulkJobs(fsm_client)
    everyone = [*TEST_IDENTITIES, "no-match"]
    rows = [{"ref": f"r{i}", "subject": subject_of(who)} for i, who in enumerate(everyone)]
    items = bulk.items_ndjson(rows)
    bad = bulk.items_ndjson([{**rows[0], "subject": {**rows[0]["subject"], "postcode": "ZZ"}}])
    options = {"check": FSM, "purpose": "free-school-meals-application", "assurance": "P2"}
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info]
    ) as events:
        job = await jobs.submit(
            items, ItemsFile("ndjson", len(rows), bulk.digest_of(items)), **options
        )
        with pytest.raises(CheckFailed):
            await jobs.submit(bad, ItemsFile("ndjson", 1, bulk.digest_of(bad)), **options)
        other = await jobs.submit(
            items, ItemsFile("ndjson", len(rows), bulk.digest_of(items)), **options
        )
        await jobs.cancel(other["id"])
        assert (await jobs.wait(job["id"], poll_s=0.05))["status"] == "completed"
        await jobs.results(job["id"], "csv")
    out, err = capfd.readouterr()
    assert [e for e in events if e.get("event") == "bulk_job_ended"]
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err) == []
    assert SCANNER.findings(caplog.text) == []


async def test_bulk_notices_log_no_personal_data_and_no_tokens(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job of every test identity that asks for an end-of-job notice, its callback failing
    once and then taking it: the notice's retries and delivery log the job, never a subject,
    the notice token or the callback's answer."""
    answers = [500]
    bodies: list[bytes] = []

    async def callback(request: aiohttp.web.Request) -> aiohttp.web.Response:
        bodies.append(await request.read())
        return aiohttp.web.Response(status=answers.pop(0) if answers else 204, text="secret")

    app = aiohttp.web.Application()
    app.router.add_post("/n", callback)
    receiver = await start_app(app)
    devscheme.publish_registry(
        scheme, seq=2, callbacks={devscheme.COUNCIL_SCHOOLS: url_of(receiver) + "/n"}
    )
    await start_broker(bulk={"poll_s": 0.05, "notice_backoff_s": 0.05})
    everyone = [*TEST_IDENTITIES, "no-match"]
    rows = [{"ref": f"r{i}", "subject": subject_of(who)} for i, who in enumerate(everyone)]
    items = bulk.items_ndjson(rows)
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        jobs = BulkJobs(client)
        with capture_logs(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.format_exc_info,
            ]
        ) as events:
            job = await jobs.submit(
                items,
                ItemsFile("ndjson", len(rows), bulk.digest_of(items)),
                check=FSM,
                purpose="free-school-meals-application",
                assurance="P2",
                notify=True,
            )
            for _ in range(200):
                if ((await jobs.status(job["id"]))["notice"] or {}).get("state") == "delivered":
                    break
                await asyncio.sleep(0.05)
    await receiver.cleanup()
    out, err = capfd.readouterr()
    assert len(bodies) == 2
    assert [e["event"] for e in events if str(e.get("event")).startswith("bulk_notice_")] == [
        "bulk_notice_retrying",
        "bulk_notice_delivered",
    ]
    assert SCANNER.scan_events(events) == []
    logged = repr(events) + out + err + caplog.text
    assert SCANNER.findings(logged) == []
    assert bodies[0].decode() not in logged
    assert "secret" not in logged


@pytest.mark.keys_in_token
async def test_a_token_that_goes_away_logs_which_key_but_no_personal_data_nor_the_pin(
    soft_token: SoftToken,
    broker: RunningBroker,
    clients: tuple[EligibilityClient, EligibilityClient],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bb_client, _ = clients
    query, jti = bb_client.sign_query(
        BB, purpose="blue-badge-application", subject=subject_of("bb-yes-dla"), assurance="P2"
    )
    soft_token.remove(tmp_path / "pulled")
    with (
        capture_logs(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.format_exc_info,
            ]
        ) as events,
        pytest.raises(CheckFailed) as failed,
    ):
        await bb_client.exchange(query, jti)
    assert failed.value.status == 503
    out, err = capfd.readouterr()
    unavailable = [e for e in events if e.get("event") == "signing_key_unavailable"]
    assert unavailable
    assert "object=axb-broker" in str(unavailable[0]["key"])
    assert [e["problem"] for e in events if e.get("event") == "check"] == ["key-unavailable"]
    assert SCANNER.scan_events(events) == []
    assert SCANNER.findings(out + err + caplog.text) == []
    assert PIN not in repr(events) + out + err + caplog.text


@pytest.mark.redis
@pytest.mark.postgres
async def test_no_personal_data_in_the_logs_of_serve_workers(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    council_key: CouncilKey,
    tmp_path: Path,
) -> None:
    """``axb serve --workers 2``: the supervisor's lines and both workers' JSON lines."""
    log = tmp_path / "workers.log"
    async with log_backend("postgres") as overrides:
        dsn, schema = str(overrides["consent_log"]), str(overrides["consent_log_schema"])
        config = workers_config(scheme.broker_config, dsn, schema)
        supervisor = start_workers(config, listeners.broker.fileno(), log, REDIS_URL)
        listeners.broker.close()
        try:
            await until_answers(scheme.broker_url + "/readyz", supervisor, log)
            bb_config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
            fsm_config = scheme.council_config(devscheme.COUNCIL_SCHOOLS)
            async with (
                EligibilityClient.from_config(bb_config) as bb,
                EligibilityClient.from_config(fsm_config) as fsm,
            ):
                at = cast(RunningBroker, SimpleNamespace(url=scheme.broker_url))
                sent = await exercise(at, providers, bb, fsm, council_key)
            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(supervisor.wait, 15) == 0, tail(log)
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
    text = log.read_text()
    assert len(sent) >= 2 * len(EXPECTED_OUTCOMES)
    assert text.count('"event":"check"') >= len(sent) // 2, "the workers' lines are in the log"
    assert "supervising 2 workers" in text
    assert SCANNER.findings(text) == []
