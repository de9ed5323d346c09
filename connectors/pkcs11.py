"""Signing keys in PKCS#11 tokens (an HSM; SoftHSM2 for development), named by RFC 7512 URIs.

Any config that names a signing key may name one in a token instead of a PEM file::

    signing_key = "pkcs11:token=axb;object=axb-broker?module-path=/usr/lib/softhsm/libsofthsm2.so"

The private key never leaves the token: ES256 is ``CKM_ECDSA`` over a SHA-256 digest taken
here (raw ``r || s``, as JWS carries it), the log's checkpoint key Ed25519 ``CKM_EDDSA``. A
token that cannot do ``CKM_EDDSA`` is refused with a message saying so; the operator may then
name a checkpoint key file explicitly, and nothing ever falls back to one silently.

The PIN is never in a config: ``pin-value`` is refused. It is read from the file the URI's
``pin-source`` names (``file:/run/secrets/axb-pin``; a relative path is resolved beside the
config) or from the environment variable ``AXB_PKCS11_PIN``. The module comes from the URI's
``module-path`` or ``AXB_PKCS11_MODULE``.

Each process keeps one logged-in session per token and each key's public half and object
handle; the private key itself is never read. A token that goes away raises
:class:`~trust.errors.KeyUnavailable` (the broker answers 503); the next use opens a fresh
session and signs only if the object found still has the same public key.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, unquote

import pkcs11
import structlog
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PinIncorrect, PKCS11Error, UserAlreadyLoggedIn
from pkcs11.util.ec import encode_named_curve_parameters

from connectors.errors import ConfigError
from trust.checkpoint import NoteSigner
from trust.cosignature import Cosigner
from trust.errors import KeyUnavailable
from trust.keys import KeyId, VerifyingKey

__all__ = [
    "PIN_ENV",
    "SCHEME",
    "Pkcs11Uri",
    "TokenEd25519Key",
    "TokenSigningKey",
    "generate_in_token",
    "is_pkcs11_uri",
    "load_token_note_signer",
    "load_token_signing_key",
    "parse_pkcs11_uri",
    "reset",
]

log = structlog.get_logger("connectors.pkcs11")

SCHEME: Final = "pkcs11:"
PIN_ENV: Final = "AXB_PKCS11_PIN"
MODULE_ENV: Final = "AXB_PKCS11_MODULE"
KeyKind = Literal["es256", "ed25519"]

_PATH_ATTRIBUTES: Final = frozenset(
    {"token", "serial", "manufacturer", "model", "object", "id", "type"}
)
_QUERY_ATTRIBUTES: Final = frozenset({"module-path", "pin-source"})
_P256_PARAMS: Final = encode_named_curve_parameters("secp256r1")
_ED25519_PARAMS: Final = encode_named_curve_parameters("1.3.101.112")  # id-Ed25519, RFC 8410
_P256_POINT_BYTES: Final = 65
RESCAN_EVERY_S: Final = 1.0


def is_pkcs11_uri(value: object) -> bool:
    return isinstance(value, str) and value[: len(SCHEME)].lower() == SCHEME


@dataclass(frozen=True, slots=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI this project reads: which token, which object, how."""

    token: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    object: str | None = None
    id: bytes | None = None
    module_path: str | None = None
    pin_source: str | None = None

    def with_object(self, label: str) -> Pkcs11Uri:
        return Pkcs11Uri(
            self.token,
            self.serial,
            self.manufacturer,
            self.model,
            label,
            None,
            self.module_path,
            self.pin_source,
        )

    def __str__(self) -> str:
        path = [
            f"{name}={quote(value, safe='')}"
            for name, value in (
                ("token", self.token),
                ("serial", self.serial),
                ("manufacturer", self.manufacturer),
                ("model", self.model),
                ("object", self.object),
            )
            if value is not None
        ]
        if self.id is not None:
            path.append("id=" + "".join(f"%{byte:02X}" for byte in self.id))
        query = [
            f"{name}={quote(value, safe='/:')}"
            for name, value in (("module-path", self.module_path), ("pin-source", self.pin_source))
            if value is not None
        ]
        return SCHEME + ";".join(path) + ("?" + "&".join(query) if query else "")

    @property
    def shown(self) -> str:
        """Which key, for messages and logs: token and object, nothing else."""
        return f"pkcs11:token={self.token or self.serial};object={self.object or '(by id)'}"


def _attributes(text: str, separator: str, allowed: frozenset[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    if not text:
        return found
    for part in text.split(separator):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"pkcs11 URI: malformed {where} attribute")
        if name == "pin-value":
            raise ConfigError(
                "pkcs11 URI: pin-value is refused; give the PIN in a pin-source file or "
                f"the {PIN_ENV} environment variable, never in a config"
            )
        if name not in allowed:
            raise ConfigError(f"pkcs11 URI: unsupported {where} attribute {name!r}")
        if name in found:
            raise ConfigError(f"pkcs11 URI: attribute {name!r} appears twice")
        if name == "id":  # binary: read byte by byte by _percent_bytes
            found[name] = value
            continue
        try:
            found[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ConfigError(f"pkcs11 URI: attribute {name!r} is not UTF-8") from None
    return found


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """Parse an RFC 7512 ``pkcs11:`` URI naming one key in one token; refuse anything else."""
    if not is_pkcs11_uri(text):
        raise ConfigError("not a pkcs11: URI")
    path, _, query = text[len(SCHEME) :].partition("?")
    attrs = _attributes(path, ";", _PATH_ATTRIBUTES, "path")
    attrs.update(_attributes(query, "&", _QUERY_ATTRIBUTES, "query"))
    if "token" not in attrs and "serial" not in attrs:
        raise ConfigError("pkcs11 URI: name the token (token= or serial=)")
    if attrs.get("type", "private") not in ("private", "public"):
        raise ConfigError("pkcs11 URI: type must be private (the key pair is found by it)")
    key_id = _percent_bytes(path) if "id" in attrs else None
    return Pkcs11Uri(
        token=attrs.get("token"),
        serial=attrs.get("serial"),
        manufacturer=attrs.get("manufacturer"),
        model=attrs.get("model"),
        object=attrs.get("object"),
        id=key_id,
        module_path=attrs.get("module-path"),
        pin_source=attrs.get("pin-source"),
    )


def _percent_bytes(path: str) -> bytes:
    """The ``id`` attribute as bytes: it is binary, percent-encoded byte by byte."""
    for part in path.split(";"):
        if part.startswith("id="):
            raw = part[3:]
            out = bytearray()
            index = 0
            while index < len(raw):
                if raw[index] == "%":
                    try:
                        out.append(int(raw[index + 1 : index + 3], 16))
                    except ValueError:
                        raise ConfigError("pkcs11 URI: id is not percent-encoded bytes") from None
                    index += 3
                else:
                    out += raw[index].encode("utf-8")
                    index += 1
            return bytes(out)
    raise ConfigError("pkcs11 URI: id missing")


def _read_pin(uri: Pkcs11Uri, base: Path | None, environ: Mapping[str, str]) -> str:
    if uri.pin_source is not None:
        source = uri.pin_source
        if source.startswith("file://"):
            source = source[len("file://") :]
        elif source.startswith("file:"):
            source = source[len("file:") :]
        path = Path(source)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            pin = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            what = type(exc).__name__
            raise ConfigError(f"cannot read the PIN file of {uri.shown}: {what}") from None
        if not pin:
            raise ConfigError(f"the PIN file of {uri.shown} is empty")
        return pin
    pin = environ.get(PIN_ENV, "")
    if not pin:
        raise ConfigError(f"{uri.shown}: no PIN (set pin-source in the URI or {PIN_ENV})")
    return pin


def _module_path(uri: Pkcs11Uri, environ: Mapping[str, str]) -> str:
    module = uri.module_path or environ.get(MODULE_ENV, "")
    if not module:
        raise ConfigError(f"{uri.shown}: no PKCS#11 module (module-path or {MODULE_ENV})")
    return module


class _Libraries:
    """Loaded modules and one logged-in session per token, per process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._libs: dict[str, Any] = {}
        self._sessions: dict[tuple[str, str | None, str | None], Any] = {}
        self._rescanned: dict[str, float] = {}

    def lib(self, module: str) -> Any:
        if module not in self._libs:
            try:
                self._libs[module] = pkcs11.lib(module)
            except (PKCS11Error, RuntimeError, OSError) as exc:
                raise ConfigError(f"cannot load PKCS#11 module {module}: {exc!r}") from None
        return self._libs[module]

    def session(self, module: str, uri: Pkcs11Uri, pin: str) -> Any:
        key = (module, uri.token, uri.serial)
        session = self._sessions.get(key)
        if session is not None:
            return session
        token = self._token(module, uri)
        try:
            session = token.open(rw=True, user_pin=pin)
        except PinIncorrect:
            raise ConfigError(f"{uri.shown}: the token refused the PIN") from None
        except UserAlreadyLoggedIn:  # another session of this process logged in already
            session = token.open(rw=True)
        except PKCS11Error as exc:
            raise ConfigError(f"{uri.shown}: cannot open a session: {exc!r}") from None
        self._sessions[key] = session
        return session

    def _token(self, module: str, uri: Pkcs11Uri) -> Any:
        lib = self.lib(module)
        serial = None if uri.serial is None else uri.serial.encode("ascii")
        try:
            return lib.get_token(token_label=uri.token, token_serial=serial)
        except PKCS11Error:
            pass
        # A module may list only the tokens present when it was initialised: a token put
        # back (or made) since is found by initialising it again, at most once a second.
        now = time.monotonic()
        if now - self._rescanned.get(module, -math.inf) >= RESCAN_EVERY_S:
            self._rescanned[module] = now
            for key in [key for key in self._sessions if key[0] == module]:
                with suppress(PKCS11Error):
                    self._sessions.pop(key).close()
            with suppress(PKCS11Error):
                lib.reinitialize()
            with suppress(PKCS11Error):
                return lib.get_token(token_label=uri.token, token_serial=serial)
        raise ConfigError(f"{uri.shown}: no such token")

    def current(self, module: str, uri: Pkcs11Uri) -> Any:
        """The open session of this token, or None once it was forgotten."""
        return self._sessions.get((module, uri.token, uri.serial))

    def forget(self, module: str, uri: Pkcs11Uri) -> None:
        session = self._sessions.pop((module, uri.token, uri.serial), None)
        if session is not None:
            with suppress(PKCS11Error):  # the token is gone already: nothing left to close
                session.close()

    def reset(self) -> None:
        with self.lock:
            for session in self._sessions.values():
                with suppress(PKCS11Error):
                    session.close()
            self._sessions.clear()
            for lib in self._libs.values():
                with suppress(PKCS11Error):
                    lib.reinitialize()


_LIBRARIES = _Libraries()


def reset() -> None:
    """Close every session and re-initialise the loaded modules, which then read their
    configuration (``SOFTHSM2_CONF``) again. For tests that make tokens of their own."""
    _LIBRARIES.reset()


def _find(session: Any, uri: Pkcs11Uri, object_class: ObjectClass) -> Any:
    template: dict[Attribute, Any] = {Attribute.CLASS: object_class}
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    found = list(session.get_objects(template))
    if not found:
        raise ConfigError(f"{uri.shown}: no {object_class.name.lower()} object")
    if len(found) > 1:
        raise ConfigError(f"{uri.shown}: names {len(found)} objects, not one")
    return found[0]


def _point(public: Any, uri: Pkcs11Uri) -> bytes:
    """The key's point from ``CKA_EC_POINT``: a DER OCTET STRING (PKCS#11 2.40 section 2.3.3),
    read strictly; a bare point would be ambiguous, so it is refused."""
    try:
        return bytes(OctetString.load(bytes(public[Attribute.EC_POINT]), strict=True).native)
    except (ValueError, TypeError):
        raise ConfigError(f"{uri.shown}: CKA_EC_POINT is not a DER OCTET STRING") from None


def _refuse_exportable(private: Any, uri: Pkcs11Uri) -> None:
    """A key the token would hand out is a key file waiting to happen: refused."""
    if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
        raise ConfigError(f"{uri.shown}: the private key is extractable; generate it inside")


class _TokenKey:
    """One private-key object in a token, found once and used through the cached session."""

    def __init__(self, uri: Pkcs11Uri, *, base: Path | None, kind: KeyKind) -> None:
        environ = os.environ
        self.uri = uri
        self._kind = kind
        self._module = _module_path(uri, environ)
        self._pin = _read_pin(uri, base, environ)
        with _LIBRARIES.lock:
            self._public = self._open_pair()

    def _open_pair(self) -> bytes:
        session = _LIBRARIES.session(self._module, self.uri, self._pin)
        try:
            private = _find(session, self.uri, ObjectClass.PRIVATE_KEY)
            public = _find(session, self.uri, ObjectClass.PUBLIC_KEY)
            expected = KeyType.EC if self._kind == "es256" else KeyType.EC_EDWARDS
            if private[Attribute.KEY_TYPE] != expected or public[Attribute.KEY_TYPE] != expected:
                raise ConfigError(f"{self.uri.shown}: not an {self._kind} key pair")
            params = _P256_PARAMS if self._kind == "es256" else _ED25519_PARAMS
            if bytes(public[Attribute.EC_PARAMS]) != params:
                raise ConfigError(f"{self.uri.shown}: not an {self._kind} key pair")
            _refuse_exportable(private, self.uri)
            if self._kind == "ed25519":
                mechanisms = session.token.slot.get_mechanisms()
                if Mechanism.EDDSA not in mechanisms:
                    raise ConfigError(
                        f"{self.uri.shown}: this token cannot sign Ed25519 (no CKM_EDDSA); "
                        "name a checkpoint key file in [log] signing_key instead"
                    )
            point = _point(public, self.uri)
        except PKCS11Error as exc:
            _LIBRARIES.forget(self._module, self.uri)
            raise ConfigError(f"{self.uri.shown}: {exc!r}") from None
        self._private = private
        self._session = session
        return point

    def _sign(self, data: bytes, mechanism: Mechanism) -> bytes:
        with _LIBRARIES.lock:
            # An object handle means something only in the session it was found in: once
            # that session is gone, the same number may name another key in a new one.
            if _LIBRARIES.current(self._module, self.uri) is self._session:
                try:
                    return bytes(self._private.sign(data, mechanism=mechanism))
                except PKCS11Error:
                    _LIBRARIES.forget(self._module, self.uri)
            try:  # once more through a fresh session: a token that came back serves again
                if self._open_pair() != self._public:
                    raise KeyUnavailable(f"{self.uri.shown}: the object's key has changed")
                return bytes(self._private.sign(data, mechanism=mechanism))
            except (PKCS11Error, ConfigError) as exc:
                _LIBRARIES.forget(self._module, self.uri)
                log.warning("signing_key_unavailable", key=self.uri.shown, error=str(exc))
                raise KeyUnavailable(f"{self.uri.shown} is unavailable: {exc}") from None


class TokenSigningKey:
    """An ES256 :class:`~trust.keys.Signer` whose private key lives in a PKCS#11 token."""

    def __init__(self, uri: Pkcs11Uri, *, base: Path | None = None) -> None:
        self._key = _TokenKey(uri, base=base, kind="es256")
        point = self._key._public
        if len(point) != _P256_POINT_BYTES:
            raise ConfigError(f"{uri.shown}: not an uncompressed P-256 point")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self._verifying_key = VerifyingKey.from_public_key(public)

    @property
    def kid(self) -> KeyId:
        return self._verifying_key.kid

    @property
    def verifying_key(self) -> VerifyingKey:
        return self._verifying_key

    def sign(self, data: bytes) -> bytes:
        return self._key._sign(hashlib.sha256(data).digest(), Mechanism.ECDSA)

    def __repr__(self) -> str:
        return f"TokenSigningKey({self._key.uri.shown!r}, kid={self.kid!r})"


class TokenEd25519Key:
    """An :class:`~trust.keys.Ed25519Signer` whose private key lives in a PKCS#11 token."""

    def __init__(self, uri: Pkcs11Uri, *, base: Path | None = None) -> None:
        self._key = _TokenKey(uri, base=base, kind="ed25519")
        if len(self._key._public) != 32:
            raise ConfigError(f"{uri.shown}: not a 32-byte Ed25519 public key")

    @property
    def public_key(self) -> bytes:
        return self._key._public

    def sign(self, message: bytes) -> bytes:
        return self._key._sign(message, Mechanism.EDDSA)


def load_token_signing_key(text: str, base: Path | None = None) -> TokenSigningKey:
    return TokenSigningKey(parse_pkcs11_uri(text), base=base)


def load_token_note_signer(text: str, name: str, base: Path | None = None) -> NoteSigner:
    """The log's checkpoint key (a C2SP note key named ``name``) in a token."""
    return NoteSigner.from_signer(name, TokenEd25519Key(parse_pkcs11_uri(text), base=base))


def load_token_cosigner(text: str, name: str, base: Path | None = None) -> Cosigner:
    """A witness's cosigning key (C2SP ``cosignature/v1``, named ``name``) in a token."""
    return Cosigner(name, TokenEd25519Key(parse_pkcs11_uri(text), base=base))


@contextmanager
def _token_errors(uri: Pkcs11Uri) -> Iterator[None]:
    try:
        yield
    except PKCS11Error as exc:
        raise ConfigError(f"{uri.shown}: {exc!r}") from None


def generate_in_token(text: str, kind: KeyKind, *, base: Path | None = None) -> str:
    """Generate a key pair inside the token the URI names, under its ``object`` label; the
    private half is sensitive and never extractable. Refuses a label already in use (a key is
    never replaced). Returns the URI of the new key."""
    uri = parse_pkcs11_uri(text)
    if uri.object is None:
        raise ConfigError("pkcs11 URI: name the new key with object=")
    module = _module_path(uri, os.environ)
    pin = _read_pin(uri, base, os.environ)
    with _LIBRARIES.lock, _token_errors(uri):
        session = _LIBRARIES.session(module, uri, pin)
        if list(session.get_objects({Attribute.LABEL: uri.object})):
            raise ConfigError(f"{uri.shown}: the token already holds this object")
        key_type, params, mechanism = (
            (KeyType.EC, _P256_PARAMS, Mechanism.EC_KEY_PAIR_GEN)
            if kind == "es256"
            else (KeyType.EC_EDWARDS, _ED25519_PARAMS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
        )
        if mechanism not in session.token.slot.get_mechanisms():
            raise ConfigError(f"{uri.shown}: this token cannot generate {kind} keys")
        domain = session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: params}, local=True
        )
        key_id = hashlib.sha256(uri.object.encode("utf-8")).digest()[:8]
        domain.generate_keypair(
            id=key_id,
            label=uri.object,
            store=True,
            mechanism=mechanism,
            public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
            private_template={
                Attribute.SIGN: True,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
    return str(uri)
