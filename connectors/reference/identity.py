"""A reference identity provider in GOV.UK One Login's shape, for development and tests only.

It publishes a ``did:web`` document with its credential-signing key and issues core identity
credentials (ES256 JWTs: ``vot``, ``vtm``, ``vc.credentialSubject.name[]`` and ``birthDate[]``)
for the documented synthetic test identities, with a pairwise ``sub`` per relying party, as
One Login does. Nothing here describes a real person, and nothing here is for production: the
key is an unencrypted PEM file in the development scheme, or (``axb demo --pkcs11``) a key in
the scheme's PKCS#11 token, named with the secret its pairwise ``sub`` is derived from in
``identity/<id>.toml`` (:func:`load_reference_identity_provider` reads either).

``axb identity issue`` prints one credential; ``identity_app`` serves the DID document and a
small sign-in page for the demo and the resident page.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from connectors.config import configured_signer, read_toml, resolve
from connectors.errors import ConfigError
from connectors.reference.population import TEST_IDENTITIES
from connectors.scheme_folder import SchemeFolder
from trust.credential import credential_claims, sign_credential
from trust.did import did_document, did_key
from trust.keys import KeyId, Signer, SigningKey, VerifyingKey, b64url_encode, thumbprint

DID = "did:web:identity.reference.ax-broker.test"
ISSUER = "https://identity.reference.ax-broker.test/"
VTM = "https://identity.reference.ax-broker.test/trustmark"

# Test identities whose credential records a former family name (marriage, deed poll): the
# credential's current name is the one without ``validUntil``.
FORMER_NAMES: dict[str, tuple[str, ...]] = {"bb-yes-pip-journeys": ("Maidenfield",)}


def did_verifying_key(key: VerifyingKey, did: str = DID) -> VerifyingKey:
    """``key`` under the id a DID document publishes for it: ``<did>#<thumbprint>``."""
    jwk = {k: v for k, v in key.jwk.items() if k != "kid"}
    return did_key(jwk, f"{did}#{thumbprint(jwk)}")


def did_signing_key(key: SigningKey, did: str = DID) -> SigningKey:
    """``key`` under its DID URL (see :func:`did_verifying_key`)."""
    return SigningKey(key.private_key, did_verifying_key(key.verifying_key, did))


@dataclass(frozen=True, slots=True)
class _UnderDid:
    """A signer wherever its key lives (a token), under the DID URL its document publishes."""

    inner: Signer = field(repr=False)
    verifying_key: VerifyingKey

    @property
    def kid(self) -> KeyId:
        return self.verifying_key.kid

    def sign(self, data: bytes) -> bytes:
        return self.inner.sign(data)


def did_signer(key: Signer, did: str = DID) -> Signer:
    """Any ``key`` under its DID URL (see :func:`did_verifying_key`)."""
    return _UnderDid(key, did_verifying_key(key.verifying_key, did))


_SUB_PREFIX = b"axb-reference-idp-sub\x00"


@dataclass(frozen=True)
class ReferenceIdentityProvider:
    """Issues core identity credentials for the documented test identities."""

    key: Signer = field(repr=False)  # its kid is the DID URL (see did_signer)
    did: str = DID
    issuer: str = ISSUER
    vtm: str = VTM
    # what the pairwise sub is derived from; by default the key file's own bytes
    sub_secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_pem(cls, pem: bytes) -> ReferenceIdentityProvider:
        return cls(did_signing_key(SigningKey.from_pem(pem)))

    def did_document(self) -> dict[str, Any]:
        return did_document(self.did, (self.key.verifying_key,))

    def pairwise_sub(self, client_id: str, identity: str) -> str:
        """One Login's ``sub`` is pairwise: the same resident has another at each client."""
        secret = self.sub_secret
        if secret is None:
            if not isinstance(self.key, SigningKey):
                raise ValueError("a reference identity provider in a token needs its sub_secret")
            secret = hashlib.sha256(_SUB_PREFIX + self.key.to_pem()).digest()
        mac = hmac.new(secret, f"{client_id}\x00{identity}".encode(), hashlib.sha256)
        return "urn:fdc:gov.uk:2022:" + b64url_encode(mac.digest())

    def claims(
        self, identity: str, *, client_id: str, now: int, vot: str = "P2", lifetime: int = 1200
    ) -> dict[str, Any]:
        """The claims of the credential of test identity ``identity`` for ``client_id``."""
        person = TEST_IDENTITIES.get(identity)
        if person is None:
            raise KeyError(f"no test identity {identity!r} (see docs/test-identities.md)")
        return credential_claims(
            issuer=self.issuer,
            audience=client_id,
            subject_id=self.pairwise_sub(client_id, identity),
            now=now,
            given_names=person.given_names,
            family_name=person.family_name,
            birth_dates=(person.date_of_birth.isoformat(),),
            vot=vot,
            vtm=self.vtm,
            lifetime=lifetime,
            former_family_names=FORMER_NAMES.get(identity, ()),
        )

    def issue(
        self, identity: str, *, client_id: str, now: int, vot: str = "P2", lifetime: int = 1200
    ) -> str:
        """A signed credential (compact JWS) of ``identity`` for ``client_id``."""
        claims = self.claims(identity, client_id=client_id, now=now, vot=vot, lifetime=lifetime)
        return sign_credential(claims, self.key)


CORE_IDENTITY_CLAIM = "https://vocab.account.gov.uk/v1/coreIdentityJWT"
_CODE_LIFETIME_S = 60


@dataclass
class _Grant:
    identity: str
    client_id: str
    redirect_uri: str
    expires_at: float


def _login_page(client_id: str, redirect_uri: str, state: str) -> str:
    options = "\n".join(
        f'<div><input type="radio" name="identity" id="i-{label}" value="{label}">'
        f'<label for="i-{label}">{html.escape(label)}</label></div>'
        for label in TEST_IDENTITIES
    )
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in (
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("state", state),
        )
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<title>Sign in: reference identity provider</title>"
        '<link rel="icon" href="data:,"></head><body>'
        "<h1>Reference identity provider (synthetic test identities only)</h1>"
        f'<form method="post" action="/authorize">{hidden}<fieldset>'
        f"<legend>Prove your identity as</legend>{options}</fieldset>"
        '<button type="submit">Continue</button></form></body></html>'
    )


def identity_app(
    provider: ReferenceIdentityProvider,
    *,
    redirect_uris: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Serves ``/.well-known/did.json``, where a scheme operator fetches the keys to import,
    and a small sign-in for the demo in the shape of an OpenID Connect code flow: ``GET
    /authorize`` (pick a test identity), a one-use code sent back to the client's registered
    ``redirect_uri`` (``redirect_uris``: client id -> URI), and ``POST /token`` exchanging the
    code for the core identity credential (One Login returns it from userinfo)."""
    registered = dict(redirect_uris or {})
    grants: dict[str, _Grant] = {}

    async def did_json(request: web.Request) -> web.Response:
        return web.json_response(provider.did_document())

    def client(client_id: str | None, redirect_uri: str | None) -> tuple[str, str]:
        if not client_id or registered.get(client_id) != redirect_uri or redirect_uri is None:
            raise web.HTTPBadRequest(text="unknown client_id or redirect_uri")
        return client_id, redirect_uri

    async def authorize_page(request: web.Request) -> web.Response:
        client_id, redirect_uri = client(
            request.query.get("client_id"), request.query.get("redirect_uri")
        )
        page = _login_page(client_id, redirect_uri, request.query.get("state", ""))
        return web.Response(text=page, content_type="text/html")

    async def authorize(request: web.Request) -> web.Response:
        form = await request.post()
        client_id, redirect_uri = client(
            str(form.get("client_id", "")), str(form.get("redirect_uri", ""))
        )
        identity = str(form.get("identity", ""))
        if identity not in TEST_IDENTITIES:
            raise web.HTTPBadRequest(text="choose a test identity")
        code = secrets.token_urlsafe(32)
        grants[code] = _Grant(identity, client_id, redirect_uri, clock() + _CODE_LIFETIME_S)
        query = urlencode({"code": code, "state": str(form.get("state", ""))})
        raise web.HTTPSeeOther(f"{redirect_uri}?{query}")

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        grant = grants.pop(str(form.get("code", "")), None)  # one use
        if (
            grant is None
            or grant.expires_at < clock()
            or grant.client_id != form.get("client_id")
            or grant.redirect_uri != form.get("redirect_uri")
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        credential = provider.issue(grant.identity, client_id=grant.client_id, now=int(clock()))
        return web.json_response({CORE_IDENTITY_CLAIM: credential})

    app = web.Application()
    app.router.add_get("/.well-known/did.json", did_json)
    app.router.add_get("/authorize", authorize_page)
    app.router.add_post("/authorize", authorize)
    app.router.add_post("/token", token)
    return app


def load_reference_identity_provider(
    folder: SchemeFolder, member_id: str
) -> ReferenceIdentityProvider:
    """The scheme's reference identity provider ``member_id``: its key in a token, as
    ``identity/<id>.toml`` names it (``signing_key = "pkcs11:..."``, ``sub_secret_file``), or
    else the PEM file ``keys/<id>.pem``. Raises ``ConfigError`` or ``OSError``."""
    config = folder.identity_config(member_id)
    if not config.exists():
        return ReferenceIdentityProvider.from_pem(folder.key(member_id).read_bytes())
    table = read_toml(config)
    key = configured_signer(config.parent, table.get("signing_key"), "signing_key")
    secret_file = resolve(config.parent, table.get("sub_secret_file"), "sub_secret_file")
    secret = secret_file.read_bytes().strip()
    if len(secret) < 32:
        raise ConfigError(f"{secret_file}: the sub secret is shorter than 32 bytes")
    return ReferenceIdentityProvider(did_signer(key), sub_secret=secret)
