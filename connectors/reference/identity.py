"""A reference identity provider in GOV.UK One Login's shape, for development and tests only.

It publishes a ``did:web`` document with its credential-signing key and issues core identity
credentials (ES256 JWTs: ``vot``, ``vtm``, ``vc.credentialSubject.name[]`` and ``birthDate[]``)
for the documented synthetic test identities, with a pairwise ``sub`` per relying party, as
One Login does. Nothing here describes a real person, and nothing here is for production: the
key is an unencrypted PEM file in the development scheme.

``axb identity issue`` prints one credential; ``identity_app`` serves the DID document.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from connectors.reference.population import TEST_IDENTITIES
from trust.credential import credential_claims, sign_credential
from trust.did import did_document, did_key
from trust.keys import SigningKey, b64url_encode, thumbprint

DID = "did:web:identity.reference.ax-broker.test"
ISSUER = "https://identity.reference.ax-broker.test/"
VTM = "https://identity.reference.ax-broker.test/trustmark"

# Test identities whose credential records a former family name (marriage, deed poll): the
# credential's current name is the one without ``validUntil``.
FORMER_NAMES: dict[str, tuple[str, ...]] = {"bb-yes-pip-journeys": ("Maidenfield",)}


def did_signing_key(key: SigningKey, did: str = DID) -> SigningKey:
    """``key`` under the id a DID document publishes for it: ``<did>#<thumbprint>``."""
    jwk = {k: v for k, v in key.verifying_key.jwk.items() if k != "kid"}
    return SigningKey(key.private_key, did_key(jwk, f"{did}#{thumbprint(jwk)}"))


@dataclass(frozen=True)
class ReferenceIdentityProvider:
    """Issues core identity credentials for the documented test identities."""

    key: SigningKey = field(repr=False)  # its kid is the DID URL (see did_signing_key)
    did: str = DID
    issuer: str = ISSUER
    vtm: str = VTM

    @classmethod
    def from_pem(cls, pem: bytes) -> ReferenceIdentityProvider:
        return cls(did_signing_key(SigningKey.from_pem(pem)))

    def did_document(self) -> dict[str, Any]:
        return did_document(self.did, (self.key.verifying_key,))

    def pairwise_sub(self, client_id: str, identity: str) -> str:
        """One Login's ``sub`` is pairwise: the same resident has another at each client."""
        secret = hashlib.sha256(b"axb-reference-idp-sub\x00" + self.key.to_pem()).digest()
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


def identity_app(provider: ReferenceIdentityProvider) -> web.Application:
    """Serves ``/.well-known/did.json``, where a scheme operator fetches the keys to import."""

    async def did_json(request: web.Request) -> web.Response:
        return web.json_response(provider.did_document())

    app = web.Application()
    app.router.add_get("/.well-known/did.json", did_json)
    return app
