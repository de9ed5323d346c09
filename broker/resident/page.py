"""The resident page: sign in with an identity provider, see every check of your data.

Sign-in is an OpenID Connect-style code flow with the identity provider named in
``[resident]``: ``/resident/sign-in`` sets a one-use ``state`` cookie and sends the browser to
the provider; the provider sends it back to ``/resident/callback`` with a code, which the
broker exchanges (server to server) for the resident's core identity credential, issued to the
broker's own client id. The credential is verified as a council's would be (:mod:`trust.
credential`): a credential issued to anyone else (another resident's, a council's) is refused.

Only pseudonyms are kept: the session holds the person pseudonyms of the credential's current
name and first birth date (under every pseudonym key in force), never the name, birth date or
``sub``; the checks are found by those pseudonyms, so the page shows that person's records and
nobody else's. The page's own use is logged without personal data.

Defences: session and state cookies are random 256-bit values, ``HttpOnly``, ``SameSite=Lax``
(the provider's redirect is a top-level navigation), scoped to ``/resident``; the state is
compared in constant time and used once; sign-out is a POST that needs the session's form
token and, when the browser sends one, this page's ``Origin``; a strict Content-Security-Policy,
``no-store`` and ``Referrer-Policy: same-origin`` (the code never leaks to another site;
``no-referrer`` would make browsers send ``Origin: null``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jinja2
import orjson
import structlog
from aiohttp import web

from broker.app_keys import CLOCK, HTTP, REGISTRY, SETTINGS, STORES
from broker.settings import ResidentPageSettings, Settings
from connectors.govuk import add_asset_route
from trust.credential import CoreIdentity, CredentialRefused, verify_credential
from trust.pseudonym import pseudonymise_identifiers
from trust.registry import Registry

log = structlog.get_logger("broker.resident")

HERE = Path(__file__).parent
SESSION_COOKIE = "axb_resident"
STATE_COOKIE = "axb_resident_state"
SESSION_SECONDS = 30 * 60
STATE_SECONDS = 10 * 60
CREDENTIAL_MAX_AGE_S = 10 * 60  # a sign-in is fresh: the credential was issued for it
CORE_IDENTITY_CLAIM = "https://vocab.account.gov.uk/v1/coreIdentityJWT"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; font-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",  # no referrer (nor code) to other sites
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
OUTCOMES = {
    "yes": "Yes",
    "no": "No",
    "no-match": "No record of you was found",
    "undetermined": "Could not be answered at the time",
    "refused": "Refused: the check was not allowed",
}
LAWFUL_BASES = {
    "public-task": "Public task (UK GDPR Article 6(1)(e))",
    "consent": "Your consent (UK GDPR Article 6(1)(a))",
    "legal-obligation": "Legal obligation (UK GDPR Article 6(1)(c))",
    "contract": "Contract (UK GDPR Article 6(1)(b))",
    "vital-interests": "Vital interests (UK GDPR Article 6(1)(d))",
}
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class Session:
    persons: tuple[str, ...]  # person pseudonyms under each key in force
    identity_provider: str
    csrf: str
    expires_at: float


SESSIONS = web.AppKey("resident_sessions", dict)


def _page(template: str, status: int = 200, **context: Any) -> web.Response:
    text = _ENV.get_template(template).render(**context)
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _refused(title: str, detail: str, status: int) -> web.Response:
    return _page("problem.html", status, title=title, detail=detail)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **HEADERS})


def _config(request: web.Request) -> tuple[Settings, ResidentPageSettings]:
    settings = request.app[SETTINGS]
    if settings.resident is None:  # routes are only added with [resident]
        raise web.HTTPNotFound()
    return settings, settings.resident


def _client_id(registry: Registry, settings: Settings, resident: ResidentPageSettings) -> str:
    member = registry.members.get(settings.broker_id)
    client_id = None if member is None else member.client_ids.get(resident.identity_provider)
    if client_id is None:
        raise web.HTTPServiceUnavailable(text="the broker has no client id at the provider")
    return client_id


def _cookie(
    response: web.Response, resident: ResidentPageSettings, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/resident",
        httponly=True,
        samesite="Lax",
        secure=resident.public_url.startswith("https://"),
    )


def _session(request: web.Request) -> Session | None:
    sid = request.cookies.get(SESSION_COOKIE, "")
    session = request.app[SESSIONS].get(sid)
    if session is None:
        return None
    if session.expires_at < request.app[CLOCK]():
        del request.app[SESSIONS][sid]
        return None
    return session  # type: ignore[no-any-return]


async def start(request: web.Request) -> web.Response:
    _settings, resident = _config(request)
    if _session(request) is not None:
        return _redirect("/resident/checks")
    provider = request.app[REGISTRY].snapshot.members.get(resident.identity_provider)
    name = "your identity provider" if provider is None else provider.name
    return _page("start.html", provider_name=name)


async def sign_in(request: web.Request) -> web.Response:
    settings, resident = _config(request)
    client_id = _client_id(request.app[REGISTRY].snapshot, settings, resident)
    state = secrets.token_urlsafe(32)
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": resident.public_url.rstrip("/") + "/resident/callback",
            "state": state,
            "response_type": "code",
            "scope": "openid",
            "vtr": '["Cl.Cm.P2"]',
        }
    )
    response = _redirect(f"{resident.authorize_url}?{query}")
    _cookie(response, resident, STATE_COOKIE, state, STATE_SECONDS)
    return response


async def _exchange(
    request: web.Request, resident: ResidentPageSettings, client_id: str, code: str
) -> str | None:
    """The credential for ``code`` from the provider's token endpoint, or None."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "redirect_uri": resident.public_url.rstrip("/") + "/resident/callback",
    }
    try:
        async with request.app[HTTP].post(
            resident.token_url, data=form, timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            body = await response.read()
            if response.status != 200 or len(body) > 64 * 1024:
                return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    try:
        credential = orjson.loads(body).get(CORE_IDENTITY_CLAIM)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return credential if isinstance(credential, str) else None


async def callback(request: web.Request) -> web.Response:
    settings, resident = _config(request)
    expected = request.cookies.get(STATE_COOKIE, "")
    state = request.query.get("state", "")
    if not expected or not hmac.compare_digest(expected.encode(), state.encode()):
        log.info("resident_sign_in", result="state-mismatch")
        return _refused("Sign-in was not completed", "Start again from this service.", 400)
    registry = request.app[REGISTRY].snapshot
    client_id = _client_id(registry, settings, resident)
    credential = await _exchange(request, resident, client_id, request.query.get("code", ""))
    if credential is None:
        log.info("resident_sign_in", result="no-credential")
        return _refused("Sign-in was not completed", "The identity provider said no.", 403)
    try:
        identity = verify_credential(
            credential,
            registry=registry,
            relying_party=settings.broker_id,
            now=int(request.app[CLOCK]()),
            max_age_s=CREDENTIAL_MAX_AGE_S,
        )
    except CredentialRefused as refused:
        log.info("resident_sign_in", result="credential-refused", reason=refused.reason)
        return _refused("Your identity could not be confirmed", "Start again.", 403)
    if identity.provider != resident.identity_provider:
        log.info("resident_sign_in", result="credential-refused", reason="another provider")
        return _refused("Your identity could not be confirmed", "Start again.", 403)
    persons = person_pseudonyms(settings, identity)
    sid = secrets.token_urlsafe(32)
    request.app[SESSIONS][sid] = Session(
        persons,
        identity.provider,
        secrets.token_urlsafe(32),
        request.app[CLOCK]() + SESSION_SECONDS,
    )
    log.info("resident_sign_in", result="signed-in", identity_provider=identity.provider)
    response = _redirect("/resident/checks")
    _cookie(response, resident, SESSION_COOKIE, sid, SESSION_SECONDS)
    response.del_cookie(STATE_COOKIE, path="/resident")
    return response


def person_pseudonyms(settings: Settings, identity: CoreIdentity) -> tuple[str, ...]:
    """The person pseudonyms of a credential's name and first birth date, under every
    pseudonym key in force (records made before a key rotation are found too)."""
    keys = (settings.pseudonym_key, *settings.previous_pseudonym_keys)
    found = (
        pseudonymise_identifiers(identity.family_name, identity.date_of_birth, None, key)
        for key in keys
    )
    return tuple(p.person for p in found if p.person is not None)


async def checks_of(request: web.Request, persons: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every check recorded about the person these pseudonyms name, newest first: who asked,
    when, for what, which check, under which basis, with what outcome. Records past
    retention (their content deleted) are left out."""
    found = await request.app[STORES].consent_log.by_subject(list(persons), [])
    registry = request.app[REGISTRY].snapshot
    entries = []
    for stored in sorted(found, key=lambda s: s.index, reverse=True):
        if stored.body is None:
            continue
        record = orjson.loads(stored.body)
        if record.get("kind") != "check":
            continue
        member = registry.members.get(record["requester"])
        purpose = registry.purposes.get(record["purpose"])
        check = registry.checks.get(record["check"])
        entries.append(
            {
                "log_index": stored.index,
                "when": record["recorded_at"],
                "who": record["requester"],
                "who_name": None if member is None else member.name,
                "purpose": record["purpose"],
                "purpose_description": None if purpose is None else purpose.description,
                "check": record["check"],
                "check_description": None if check is None else check.description,
                "lawful_basis": record["lawful_basis"],
                "outcome": record["outcome"],
            }
        )
    return entries


def _when(recorded_at: str) -> str:
    moment = time.strptime(recorded_at[:19], "%Y-%m-%dT%H:%M:%S")
    return time.strftime("%d %B %Y at %H:%M UTC", moment).lstrip("0")


async def checks(request: web.Request) -> web.Response:
    _config(request)
    session = _session(request)
    if session is None:
        return _redirect("/resident")
    history = await checks_of(request, session.persons)
    rows = [
        {
            "when": _when(entry["when"]),
            "who": entry["who_name"] or entry["who"],
            "purpose": entry["purpose_description"] or entry["purpose"],
            "check": entry["check_description"] or entry["check"],
            "lawful_basis": LAWFUL_BASES.get(entry["lawful_basis"], entry["lawful_basis"]),
            "outcome": OUTCOMES.get(entry["outcome"], entry["outcome"]),
        }
        for entry in history
    ]
    log.info("resident_view", records=len(rows), identity_provider=session.identity_provider)
    return _page("checks.html", rows=rows, csrf=session.csrf)


async def sign_out(request: web.Request) -> web.Response:
    _settings, resident = _config(request)
    session = _session(request)
    form = await request.post()
    origin = request.headers.get("Origin")
    expected_origin = "{0.scheme}://{0.netloc}".format(urlsplit(resident.public_url))
    if (
        session is None
        or not hmac.compare_digest(str(form.get("csrf", "")).encode(), session.csrf.encode())
        or (origin is not None and origin != expected_origin)
    ):
        log.info("resident_sign_out", result="refused")
        return _refused("That did not work", "Sign out from the page itself.", 403)
    request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    log.info("resident_sign_out", result="signed-out")
    response = _redirect("/resident")
    response.del_cookie(SESSION_COOKIE, path="/resident")
    return response


def add_resident_routes(app: web.Application) -> None:
    """The resident page's routes (HTML for people, so not in the API's route table)."""
    app[SESSIONS] = {}
    app.router.add_get("/resident", start)
    app.router.add_get("/resident/sign-in", sign_in)
    app.router.add_get("/resident/callback", callback)
    app.router.add_get("/resident/checks", checks)
    app.router.add_post("/resident/sign-out", sign_out)
    add_asset_route(app, "/resident/assets")
