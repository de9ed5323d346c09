"""An identity provider's DID document, read for its signing keys and nothing else.

GOV.UK One Login publishes the keys that sign its core identity credentials only in its
``did:web`` document (``/.well-known/did.json``): each ``assertionMethod`` entry carries an
EC P-256 ``publicKeyJwk`` under an ``id`` such as ``did:web:identity.account.gov.uk#<hex>``,
which is the ``kid`` a credential names. One Login asks relying parties not to resolve DIDs
through third-party libraries; nothing here resolves anything. The scheme operator fetches
the document, reviews it and imports the keys with their published ids (``axb scheme
add-member --did-document``); brokers then trust only the signed registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trust.errors import KeyFormatError
from trust.keys import VerifyingKey, ensure_unique_kids

# did:web with a host name (and optional %3A-encoded port and colon-separated path)
DID_WEB = re.compile(r"did:web:[A-Za-z0-9.\-]+(%3A[0-9]{1,5})?(:[A-Za-z0-9._\-]+)*")
_FRAGMENT = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_METHOD_MEMBERS = frozenset({"id", "type", "controller", "publicKeyJwk"})
_METHOD_TYPES = frozenset({"JsonWebKey", "JsonWebKey2020"})


@dataclass(frozen=True, slots=True)
class DidKeys:
    """The DID a document describes and its assertion keys, each with its published id."""

    did: str
    keys: tuple[VerifyingKey, ...]


def is_did_web(value: Any) -> bool:
    return isinstance(value, str) and DID_WEB.fullmatch(value) is not None


def key_belongs_to(kid: str, did: str) -> bool:
    """A key id is ``<did>#<fragment>``: the DID's own, never another's."""
    prefix = did + "#"
    return kid.startswith(prefix) and _FRAGMENT.fullmatch(kid[len(prefix) :]) is not None


def _absolute_id(raw: Any, did: str) -> str:
    if not isinstance(raw, str):
        raise KeyFormatError("an assertionMethod id must be a string")
    kid = did + raw if raw.startswith("#") else raw
    if not key_belongs_to(kid, did):
        raise KeyFormatError("an assertionMethod id is not a fragment of the document's DID")
    return kid


def did_key(jwk: Mapping[str, Any], kid: str) -> VerifyingKey:
    """A P-256 verifying key whose id is the published DID URL, not its thumbprint."""
    if "kid" in jwk and jwk["kid"] != kid:
        raise KeyFormatError("publicKeyJwk names another kid than its assertionMethod id")
    return VerifyingKey.from_jwk({**jwk, "kid": kid}, require_thumbprint_kid=False)


def parse_did_document(document: Any) -> DidKeys:
    """The assertion keys of a ``did:web`` document; anything not of the one shape refused.

    Every ``assertionMethod`` entry must be an embedded ``JsonWebKey`` with an EC P-256
    ``publicKeyJwk`` (ES256), controlled by the document's DID; references to keys elsewhere
    are refused, as is a document with no key or with one id twice.
    """
    if not isinstance(document, Mapping):
        raise KeyFormatError("a DID document is a JSON object")
    did = document.get("id")
    if not isinstance(did, str) or not is_did_web(did):
        raise KeyFormatError("the DID document's id is not a did:web DID")
    methods = document.get("assertionMethod")
    if not isinstance(methods, list) or not methods:
        raise KeyFormatError("the DID document lists no assertionMethod")
    keys = []
    for method in methods:
        if not isinstance(method, Mapping):
            raise KeyFormatError("an assertionMethod must be an embedded key, not a reference")
        if not set(method) <= _METHOD_MEMBERS or "publicKeyJwk" not in method:
            raise KeyFormatError("an assertionMethod has members other than id, type, ...")
        if method.get("type") not in _METHOD_TYPES:
            raise KeyFormatError("an assertionMethod is not a JsonWebKey")
        if method.get("controller", did) != did:
            raise KeyFormatError("an assertionMethod is controlled by another DID")
        jwk = method["publicKeyJwk"]
        if not isinstance(jwk, Mapping):
            raise KeyFormatError("publicKeyJwk must be a JSON object")
        keys.append(did_key(jwk, _absolute_id(method.get("id"), did)))
    ensure_unique_kids(keys)
    return DidKeys(did, tuple(keys))


def did_document(did: str, keys: tuple[VerifyingKey, ...]) -> dict[str, Any]:
    """A DID document in One Login's shape (the reference identity provider publishes one)."""
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/jwk/v1"],
        "id": did,
        "assertionMethod": [
            {
                "type": "JsonWebKey",
                "id": key.kid,
                "controller": did,
                "publicKeyJwk": {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": key.jwk["x"],
                    "y": key.jwk["y"],
                    "alg": "ES256",
                },
            }
            for key in keys
        ],
    }
