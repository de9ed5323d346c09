"""The auditor's console: web pages over the audit API, run on the auditor's own machine.

    axb audit console --config auditors/auditor-ico.toml

It listens on 127.0.0.1 only and prints a URL with a one-time secret. Opening that URL sets a
cookie; every other request needs it. The console holds the auditor's key and signs each audit
API request itself, so the key never reaches the browser. Pages: records (filters,
pagination), one record with its proof checked here against the pinned log key, subject
access, verification of the whole export (with checkpoints held from earlier visits), and a
council's answer token checked against the log.

Defences:
- The ``Host`` header must name the console, which stops DNS rebinding.
- A cookie scoped ``SameSite=Strict`` is required, and a form token plus the ``Origin``
  header are checked on every POST.
- A strict Content-Security-Policy applies; nothing is cached; no access log is written, so
  the identifiers typed for a subject access request are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jinja2
import orjson
from aiohttp import web

from connectors.config import member_identity, member_log_key
from connectors.connections import ConnectionGuard, ConnectionLimits, serve
from connectors.govuk import add_asset_route
from members.auditor import AuditClient
from members.errors import CheckFailed
from trust.checkpoint import NoteVerifier, split_notes
from trust.log_verify import VerifyReport, verify_export, verify_record

COOKIE = "axb_console"
PAGE_SIZE = 50
FILTERS = (
    ("since", "Since (YYYY-MM-DD or RFC 3339 time)"),
    ("until", "Until"),
    ("requester", "Requester"),
    ("purpose", "Purpose"),
    ("check", "Check"),
    ("lawful_basis", "Lawful basis"),
)
OUTCOMES = ("yes", "no", "no-match", "undetermined", "refused")
KINDS = ("check", "consent-withdrawal")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; font-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with the
    # console's own forms, which the Origin check must then refuse
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
TEMPLATES = Path(__file__).parent / "templates"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    client: AuditClient
    verifier: NoteVerifier | None
    token: str
    broker_url: str
    env: jinja2.Environment
    port: int = 0  # set once listening: the Host and Origin the console answers to

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()

    def origins(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def page(self, template: str, status: int = 200, **values: Any) -> web.Response:
        html = self.env.get_template(template).render(
            auditor=self.client.member_id,
            broker_url=self.broker_url,
            log_key=None if self.verifier is None else self.verifier.vkey,
            csrf=self.csrf,
            **values,
        )
        return web.Response(text=html, content_type="text/html", status=status)


CONSOLE = web.AppKey("console", Console)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = _console(request)
    if request.host not in console.origins():
        return web.Response(status=421, text="this console answers only on its own address")
    if request.path == "/login":
        return await handler(request)
    cookie = request.cookies.get(COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), console.token.encode()):
        return web.Response(
            status=401, text="open the URL that 'axb audit console' printed to sign in"
        )
    if request.method == "POST":
        origin = request.headers.get("Origin")
        allowed = {f"http://{host}" for host in console.origins()}
        if origin is not None and origin not in allowed:
            return web.Response(status=403, text="cross-origin form refused")
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")).encode(), console.csrf.encode()):
            return web.Response(status=403, text="form token missing or wrong")
    try:
        return await handler(request)
    except CheckFailed as failed:
        detail = failed.problem.get("detail") or failed.problem.get("title") or ""
        return console.page(
            "error.html",
            status=502,
            title=f"The broker refused: {failed.status} {failed.problem.get('type', '')}",
            detail=str(detail),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return console.page(
            "error.html", status=502, title="The broker is unreachable", detail=type(exc).__name__
        )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)


async def login(request: web.Request) -> web.Response:
    console = _console(request)
    if not hmac.compare_digest(request.query.get("token", "").encode(), console.token.encode()):
        return web.Response(status=401, text="wrong or missing token")
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(COOKIE, console.token, httponly=True, samesite="Strict", path="/")
    return response


async def records_page(request: web.Request) -> web.Response:
    console = _console(request)
    names = [name for name, _ in FILTERS] + ["outcome", "kind"]
    filters = {n: request.query[n] for n in names if request.query.get(n)}
    after = request.query.get("after")
    found = await console.client.records(
        **filters, limit=PAGE_SIZE, after=after if after and after.isdigit() else None
    )
    next_url = None
    if "next" in found:
        next_url = "/?" + urlencode({**filters, "after": found["next"]})
    # a banded check's records name a band as their outcome: offer the bands seen, to filter by
    seen = {str(r["body"].get("outcome")) for r in found["records"] if r.get("body")}
    bands = sorted((seen | {filters.get("outcome", "")}) - {*OUTCOMES, "", "None"})
    return console.page(
        "records.html",
        records=found["records"],
        filters=filters,
        fields=FILTERS,
        outcomes=(*OUTCOMES, *bands),
        kinds=KINDS,
        next_url=next_url,
    )


async def jobs_page(request: web.Request) -> web.Response:
    """Bulk jobs, newest first: whose, for what, how far, and the range of their records."""
    console = _console(request)
    requester = request.query.get("requester") or None
    jobs = await console.client.jobs(requester=requester, limit=PAGE_SIZE)
    return console.page("jobs.html", jobs=jobs, requester=requester or "")


def _fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The record's fields as rows; nested values (consent, subject) flattened one level."""
    rows = []
    for name, value in body.items():
        if isinstance(value, dict):
            rows += [(f"{name}.{k}", "" if v is None else str(v)) for k, v in value.items()]
        elif isinstance(value, list):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, "" if value is None else str(value)))
    return rows


async def record_page(request: web.Request) -> web.Response:
    console = _console(request)
    raw = request.match_info["index"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        return console.page("error.html", 400, title="Bad record index", detail=raw[:40])
    found = await console.client.record(int(raw))
    record, note, proof = found["record"], found["checkpoint"], found["inclusion_proof"]
    if console.verifier is None:
        report = VerifyReport(problems=["no log key is pinned: set log_key in your config"])
    else:
        report = verify_record(
            record,
            note,
            proof,
            console.verifier,
            policy=console.client.witness_policy,
            now=int(time.time()),
        )
    return console.page(
        "record.html",
        index=int(raw),
        record=record,
        fields=_fields(record.get("body") or {}),
        checkpoint=note,
        proof=proof,
        report=report,
    )


async def subject_access_page(request: web.Request) -> web.Response:
    console = _console(request)
    if request.method == "GET":
        return console.page("subject_access.html", results=None)
    form = await request.post()
    identifiers = {
        name: str(form.get(name, "")).strip() for name in ("family_name", "date_of_birth", "nino")
    }
    found = await console.client.subject_access({k: v for k, v in identifiers.items() if v})
    return console.page("subject_access.html", results=found["records"])


async def verify_page(request: web.Request) -> web.Response:
    console = _console(request)
    if request.method == "GET":
        return console.page("verify.html", report=None, held="", latest=None)
    form = await request.post()
    held_text = str(form.get("held", ""))
    if console.verifier is None:
        report = VerifyReport(problems=["no log key is pinned: set log_key in your config"])
        return console.page("verify.html", report=report, held=held_text, latest=None)
    verifier, held = console.verifier, split_notes(held_text)
    latest = None
    with tempfile.TemporaryFile() as export:  # a large log is streamed to disk, not memory
        async for line in console.client.export():
            export.write(line)
            if line.startswith(b'{"type":"checkpoint"'):
                latest = orjson.loads(line)["note"]  # the newest one is worth keeping
        export.seek(0)
        # verifying a large export takes seconds of CPU: off the event loop
        report = await asyncio.to_thread(
            verify_export,
            export,
            verifier,
            held=held,
            policy=console.client.witness_policy,
            now=int(time.time()),
        )
    return console.page("verify.html", report=report, held=held_text, latest=latest)


async def receipt_page(request: web.Request) -> web.Response:
    console = _console(request)
    if request.method == "GET":
        return console.page("receipt.html", audit=None)
    form = await request.post()
    audit = await console.client.audit_receipt(str(form.get("token", "")), console.verifier)
    return console.page("receipt.html", audit=audit)


async def stylesheet(_: web.Request) -> web.FileResponse:
    return web.FileResponse(TEMPLATES / "console.css")


def build_console(config: Path, *, token: str | None = None) -> tuple[web.Application, Console]:
    """The console's app for an auditor config (``member_id``, key, broker, ``log_key``)."""
    identity = member_identity(config)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    console = Console(
        client=AuditClient.from_config(config),
        verifier=member_log_key(config),
        token=token or secrets.token_urlsafe(32),
        broker_url=identity["broker_url"],
        env=env,
    )
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONSOLE] = console
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/login", login)
    app.router.add_get("/", records_page)
    app.router.add_get("/records/{index}", record_page)
    app.router.add_get("/jobs", jobs_page)
    pages = (
        ("/subject-access", subject_access_page),
        ("/verify", verify_page),
        ("/receipt", receipt_page),
    )
    for path, page in pages:
        app.router.add_get(path, page)
        app.router.add_post(path, page)
    app.router.add_get("/static/console.css", stylesheet)
    add_asset_route(app, "/assets")  # GOV.UK Frontend: the look of the resident's page too

    async def client_session(app: web.Application) -> Any:
        async with console.client:
            yield

    app.cleanup_ctx.append(client_session)
    return app, console


async def start_console(
    config: Path, *, port: int = 0, token: str | None = None
) -> tuple[web.AppRunner, Console]:
    """Serve the console on 127.0.0.1 (``port`` 0: any free port); returns the runner."""
    app, console = build_console(config, token=token)
    sock = socket.create_server(("127.0.0.1", port))
    try:  # header, body and keep-alive timeouts and a connection limit, as for the broker
        runner = await serve(app, sock, ConnectionGuard(ConnectionLimits()))
    except BaseException:
        sock.close()
        raise
    console.port = runner.addresses[0][1]
    return runner, console


def login_url(console: Console) -> str:
    return f"http://127.0.0.1:{console.port}/login?token={console.token}"
