"""``axb demo``: the whole journey on embedded defaults, on one machine, in a few seconds.

Generates a development scheme, starts the reference providers as their own processes and
the broker on loopback, runs checks that produce every outcome (``undetermined`` by stopping a
provider), and prints them as a table with timings.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import click
from aiohttp import web

from broker.app import create_app
from broker.app_keys import REGISTRY
from broker.logging import configure_logging
from broker.scheme import dev as devscheme
from broker.scheme.dwp_cis import CIS_FSM_CHECK, DWP_CIS, join_dwp_cis
from broker.settings import load_settings
from broker.witness.app import create_witness_app
from broker.witness.settings import load_witness_settings
from connectors.errors import ConfigError
from connectors.reference.identity import (
    ReferenceIdentityProvider,
    load_reference_identity_provider,
)
from connectors.reference.population import subject_of
from connectors.reference.providers import build_stub, build_ves_stub
from members.council import EligibilityClient
from members.errors import CheckFailed
from trust.cosignature import verified_cosignatures
from trust.messages import EligibilityAnswer
from trust.receipts import ReceiptNotProven

if TYPE_CHECKING:
    from connectors.pkcs11 import Pkcs11Uri


@dataclass(frozen=True)
class DemoCase:
    council: str
    check: str
    purpose: str
    identity: str
    as_of: date | None = None
    vehicle: str | None = None
    credential: bool = False  # the resident signed in with the identity provider
    note: str = ""

    @property
    def subject(self) -> dict[str, str]:
        subject = subject_of(self.identity)
        if self.credential:  # name and birth date come from the credential
            subject = {k: v for k, v in subject.items() if k in ("nino", "postcode")}
        if self.vehicle is not None:
            subject["vehicle_registration"] = self.vehicle
        return subject

    @property
    def label(self) -> str:
        label = self.identity if self.vehicle is None else f"{self.identity} + {self.vehicle}"
        return f"{label} (credential)" if self.credential else label


BB, FSM = devscheme.BLUE_BADGE_CHECK, devscheme.FSM_CHECK
BB_COUNCIL, FSM_COUNCIL = devscheme.COUNCIL_BLUE_BADGE, devscheme.COUNCIL_SCHOOLS
PARKING, PARKING_COUNCIL = devscheme.PARKING_CHECK, devscheme.COUNCIL_PARKING
PARKING_PURPOSE = "resident-parking-permit-application"
ONLINE = devscheme.BLUE_BADGE_ONLINE
CTR, CTR_PURPOSE = devscheme.CTR_CHECK, "council-tax-reduction-application"
CASES = (
    DemoCase(BB_COUNCIL, BB, ONLINE, "bb-yes-pip-moving", credential=True),
    DemoCase(BB_COUNCIL, BB, ONLINE, "bb-yes-dla", credential=True),
    DemoCase(BB_COUNCIL, BB, ONLINE, "bb-no", credential=True),
    DemoCase(BB_COUNCIL, BB, "blue-badge-application", "no-match"),
    DemoCase(FSM_COUNCIL, FSM, "free-school-meals-application", "fsm-yes-income-support"),
    DemoCase(FSM_COUNCIL, FSM, "free-school-meals-application", "hmrc-ctc-yes"),
    DemoCase(FSM_COUNCIL, FSM, "free-school-meals-application", "fsm-no"),
    DemoCase(
        FSM_COUNCIL,
        FSM,
        "free-school-meals-application",
        "fsm-yes-uc-any-only-after-2026-09",
        date(2026, 8, 31),
    ),
    DemoCase(
        FSM_COUNCIL,
        FSM,
        "free-school-meals-application",
        "fsm-yes-uc-any-only-after-2026-09",
        date(2026, 11, 27),
    ),
    DemoCase(FSM_COUNCIL, FSM, "free-school-meals-application", "no-match"),
    DemoCase(PARKING_COUNCIL, PARKING, PARKING_PURPOSE, "bb-yes-pip-moving", vehicle="AA19AAA"),
    DemoCase(PARKING_COUNCIL, PARKING, PARKING_PURPOSE, "hmrc-wtc-run-on-yes", vehicle="L2WPS"),
    DemoCase(PARKING_COUNCIL, PARKING, PARKING_PURPOSE, "fsm-no", vehicle="ER19NFD"),
    DemoCase(PARKING_COUNCIL, PARKING, PARKING_PURPOSE, "bb-yes-pip-moving", vehicle="ER19ERR"),
    # a local, banded scheme: two councils, the same resident, each its own band
    DemoCase(
        devscheme.COUNCIL_TAX_COVENTRY,
        CTR,
        CTR_PURPOSE,
        "fsm-yes-uc-low-earnings",
        note="(Coventry's scheme)",
    ),
    DemoCase(
        devscheme.COUNCIL_TAX_COVENTRY,
        CTR,
        CTR_PURPOSE,
        "fsm-yes-uc-low-earnings",
        date(2026, 3, 31),
        note="(Coventry's 2025/26 bands)",
    ),
    DemoCase(
        devscheme.COUNCIL_TAX_WARWICK,
        CTR,
        CTR_PURPOSE,
        "fsm-yes-uc-low-earnings",
        note="(Warwick District's scheme)",
    ),
    # the council as a provider: only its Blue Badge register knows this one
    DemoCase(
        BB_COUNCIL,
        devscheme.CONCESSIONARY_TRAVEL_CHECK,
        "concessionary-travel-application",
        "bb-no-pip-journeys-d",
        note="(the council's Blue Badge register)",
    ),
)
# free school meals through the DWP CIS adapter (joined at start, as a new provider is)
CIS_CASES = (
    DemoCase(
        FSM_COUNCIL,
        CIS_FSM_CHECK,
        "free-school-meals-application",
        "fsm-yes-uc-any-only-after-2026-09",
        date(2026, 11, 27),
        note="(through DWP's CIS API)",
    ),
    DemoCase(
        FSM_COUNCIL,
        CIS_FSM_CHECK,
        "free-school-meals-application",
        "fsm-no",
        note="(through DWP's CIS API)",
    ),
)
# an online application whose council asserts the identity itself: the purpose refuses it
REFUSED_CASE = DemoCase(BB_COUNCIL, BB, ONLINE, "bb-no")
DOWN_CASE = DemoCase(BB_COUNCIL, BB, ONLINE, "bb-yes-pip-moving", credential=True)


def start_provider(
    config: Path, log_path: Path, listener: socket.socket
) -> subprocess.Popen[bytes]:
    """``axb provider serve`` as its own process, serving ``listener`` (bound already, so the
    port the scheme names is never up for grabs). The child gets the socket; this process
    closes its copy, so that when the child stops its port refuses connections at once."""
    fd = listener.fileno()
    with log_path.open("ab") as log_file, listener:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "broker.cli",
                "provider",
                "serve",
                "--config",
                str(config),
                "--listen-fd",
                str(fd),
            ],
            stdout=log_file,
            stderr=log_file,
            pass_fds=[fd],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    # a provider process imports, builds its synthetic data and starts: on a busy machine
    # (the suite running beside it) that has taken more than 20 s
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise click.ClickException(f"{url} did not become healthy")
            await asyncio.sleep(0.05)


async def wait_for_registry(app: web.Application, seq: int, timeout_s: float = 30.0) -> None:
    """Until the broker has picked up the registry of ``seq`` (it polls the file)."""
    deadline = time.monotonic() + timeout_s
    while app[REGISTRY].snapshot.seq < seq:
        if time.monotonic() > deadline:
            raise click.ClickException(f"the broker did not pick up registry {seq}")
        await asyncio.sleep(0.05)


async def run_case(
    client: EligibilityClient, case: DemoCase, idp: ReferenceIdentityProvider
) -> tuple[str, str, float, EligibilityAnswer | None]:
    started = time.perf_counter()
    outcome: str
    answer: EligibilityAnswer | None = None
    credential = None
    if case.credential:  # what the council's service got back when the resident signed in
        client_id = devscheme.CLIENT_IDS[case.council]
        credential = idp.issue(case.identity, client_id=client_id, now=int(time.time()))
    try:
        answer = await client.check(
            case.check,
            purpose=case.purpose,
            subject=case.subject,
            as_of=case.as_of,
            assurance=None if case.credential else "P2",
            credential=credential,
        )
        outcome, receipt = answer.outcome, str(answer.log_index)
    except CheckFailed as failed:
        outcome, receipt = f"refused {failed.status}", str(failed.problem.get("log_index", "-"))
    return outcome, receipt, (time.perf_counter() - started) * 1000, answer


async def prove_receipts(
    answered: list[tuple[EligibilityClient, EligibilityAnswer]],
) -> tuple[bool, str]:
    """Each council proves each of its answers' receipts against the signed log, under the
    scheme's witness policy."""
    sizes, cosigners = set(), set()
    for client, answer in answered:
        try:
            receipt = await client.prove_receipt(answer)
        except ReceiptNotProven as exc:
            return False, f"the receipt of record {answer.log_index} was not proven: {exc}"
        sizes.add(receipt.checkpoint.size)
        policy = client.witness_policy
        if policy is not None:
            found = verified_cosignatures(receipt.note, policy.verifiers(), now=int(time.time()))
            cosigners.add((len(found), len(policy.witnesses), policy.describe()))
    witnessed = "".join(
        f", cosigned by {count} of {total} witnesses (policy: {rule})"
        for count, total, rule in sorted(cosigners)[:1]
    )
    return True, (
        f"{len(answered)} of {len(answered)} receipts proven: each answer's record digest is in "
        f"the log, under a checkpoint of size {max(sizes)} signed by the pinned log key"
        f"{witnessed}"
    )


def _row(number: int, case: DemoCase, outcome: str, receipt: str, ms: float, note: str) -> str:
    as_of = case.as_of.isoformat() if case.as_of else "today"
    return (
        f"{number:>2}  {case.check:<30} {as_of:<10}  {case.label:<34} "
        f"{outcome:<12} {receipt:>5} {ms:>8.1f}  {note}"
    )


async def run_demo(root: Path, token: Pkcs11Uri | None = None) -> int:
    with devscheme.Listeners(witnesses=devscheme.WITNESSES) as listeners:
        return await _run_demo(root, listeners, token)


async def _run_demo(
    root: Path, listeners: devscheme.Listeners, token: Pkcs11Uri | None = None
) -> int:
    """The demo on ``listeners``: every server serves the socket bound for it before the
    scheme named its port."""
    scheme = devscheme.generate(root, ports=listeners.ports, token=token)
    folder = scheme.folder
    folder.log_dir.mkdir(exist_ok=True)
    configure_logging(json=True, stream=(folder.log_dir / "broker.log").open("a"))
    stub_app, _, _ = build_ves_stub(folder.stub_config(devscheme.VES_STUB))
    stub = web.AppRunner(stub_app, access_log=None)  # stands in for DVLA's own service
    await stub.setup()
    await web.SockSite(stub, listeners.ves_stub).start()
    stubs: list[web.AppRunner] = []  # stubs started later (DWP's CIS)
    providers = {
        pid: start_provider(
            scheme.provider_config(pid), folder.log_dir / f"{pid}.log", listeners.providers[pid]
        )
        for pid in scheme.provider_ports
    }
    # Two witnesses, each with its own key, config and state file. In production each is
    # another organisation's `axb witness serve`; here they share this process, as the VES stub
    # does, to keep the demo quick on a small machine.
    witnesses = []
    for wid, sock in listeners.witnesses.items():
        witness = web.AppRunner(
            create_witness_app(load_witness_settings(scheme.witness_config(wid))),
            access_log=None,
        )
        await witness.setup()
        await web.SockSite(witness, sock).start()
        witnesses.append(witness)
    runner: web.AppRunner | None = None
    try:
        for port in scheme.provider_ports.values():
            await wait_healthy(f"http://127.0.0.1:{port}")
        settings = load_settings(scheme.broker_config)
        broker_app = create_app(settings)
        runner = web.AppRunner(broker_app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, listeners.broker).start()
        # the scheme operator admits DWP's CIS adapter while the broker runs, as any provider
        cis_stub_socket, cis_socket = devscheme.bind_loopback(), devscheme.bind_loopback()
        joined = join_dwp_cis(
            scheme,
            stub_port=cis_stub_socket.getsockname()[1],
            provider_port=cis_socket.getsockname()[1],
            token=token,
        )
        cis_stub_app, _, _ = build_stub(joined.stub_config)
        cis_stub = web.AppRunner(cis_stub_app, access_log=None)
        await cis_stub.setup()
        await web.SockSite(cis_stub, cis_stub_socket).start()
        stubs.append(cis_stub)
        providers[DWP_CIS] = start_provider(
            joined.provider_config, folder.log_dir / f"{DWP_CIS}.log", cis_socket
        )
        await wait_healthy(joined.endpoint.removesuffix("/v1/attributes"))
        await wait_for_registry(broker_app, joined.seq)
        click.echo(f"scheme in {root}")
        click.echo(
            f"broker   {scheme.broker_url}   providers on ports "
            f"{', '.join(str(p) for p in scheme.provider_ports.values())}   witnesses on ports "
            f"{', '.join(str(p) for p in scheme.witness_ports.values())}\n"
        )
        header = (
            f"{'#':>2}  {'check':<30} {'as of':<10}  {'test identity':<34} "
            f"{'outcome':<12} {'log#':>5} {'ms':>8}"
        )
        click.echo(header)
        click.echo("-" * len(header))
        clients = {
            member: EligibilityClient.from_config(scheme.council_config(member))
            for member in devscheme.COUNCILS
        }
        seen: set[str] = set()
        answered: list[tuple[EligibilityClient, EligibilityAnswer]] = []
        number = 0
        idp = load_reference_identity_provider(scheme.folder, devscheme.IDP)
        for client in clients.values():
            await client.__aenter__()
        try:
            for case in (*CASES, *CIS_CASES):
                number += 1
                outcome, receipt, ms, answer = await run_case(clients[case.council], case, idp)
                seen.add(outcome)
                if answer is not None:
                    answered.append((clients[case.council], answer))
                click.echo(_row(number, case, outcome, receipt, ms, case.note))
            number += 1
            case = REFUSED_CASE
            outcome, receipt, ms, _ = await run_case(clients[case.council], case, idp)
            note = "(credential-required: the council asserted the identity)"
            click.echo(_row(number, case, outcome, receipt, ms, note))
            refused_as_it_must = outcome == "refused 403"
            providers[devscheme.DWP].terminate()
            providers[devscheme.DWP].wait(timeout=10)
            number += 1
            outcome, receipt, ms, answer = await run_case(
                clients[DOWN_CASE.council], DOWN_CASE, idp
            )
            seen.add(outcome)
            if answer is not None:
                answered.append((clients[DOWN_CASE.council], answer))
            click.echo(_row(number, DOWN_CASE, outcome, receipt, ms, "(DWP provider stopped)"))
            proven, proof_report = await prove_receipts(answered)
        finally:
            for client in clients.values():
                await client.__aexit__(None, None, None)
        missing = {"yes", "no", "no-match", "undetermined"} - seen
        click.echo(
            f"\nevery answer was signed by the broker, verified by the council, and "
            f"recorded first: consent log {settings.consent_log_path}"
        )
        click.echo(proof_report, err=not proven)
        if not proven:
            return 1
        if missing:
            click.echo(f"outcomes missing: {sorted(missing)}", err=True)
            return 1
        if not refused_as_it_must:
            click.echo(
                "the credential-required purpose answered a council-asserted query", err=True
            )
            return 1
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        for stub_runner in (stub, *stubs):
            await stub_runner.cleanup()
        for witness in witnesses:
            await witness.cleanup()
        for process in providers.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


def demo(keep: Path | None, token_uri: str | None = None) -> int:
    token = None
    try:
        if token_uri is not None:
            from connectors.pkcs11 import parse_pkcs11_uri

            token = parse_pkcs11_uri(token_uri)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if keep is not None:
        code = asyncio.run(run_demo(keep.resolve(), token))
        click.echo(
            f"\nThe scheme is kept in {keep}. Serve it again with:\n"
            f"  axb serve --config {keep}/broker.toml --with-providers\n"
            f"and ask it from your own code with a council key in "
            f"{keep}/keys/ (or, with --pkcs11, in the token) (see docs/councils.md)."
        )
        return code
    with tempfile.TemporaryDirectory(prefix="axb-demo-") as tmp:
        return asyncio.run(run_demo(Path(tmp), token))


def write_compose_scheme(keep: Path) -> int:
    """A development scheme for deploy/compose.yaml in ``keep``, its keys readable by the
    image's group."""
    scheme = devscheme.generate(keep.resolve(), ports=devscheme.compose_ports(), for_compose=True)
    refused = devscheme.share_with_image(scheme)
    click.echo(f"scheme for deploy/compose.yaml in {keep}")
    if refused:
        click.echo(
            f"give the image's group (gid {devscheme.IMAGE_GID}) the keys and secrets: "
            f"sudo chgrp {devscheme.IMAGE_GID} {keep}/keys/* {keep}/secrets/*\n"
            f"(rootless podman: podman unshare chgrp {devscheme.IMAGE_GID} ...)"
        )
    click.echo(
        f"then: AXB_SCHEME={keep.resolve()} podman-compose -f deploy/compose.yaml up -d\n"
        f"and ask it through nginx with a council config in {keep}/councils/ "
        f"({devscheme.COMPOSE_BROKER_URL})"
    )
    return 0
