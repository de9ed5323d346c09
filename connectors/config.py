"""Reading the files a scheme participant keeps: TOML config, PEM keys, pinned anchors, a
server's TLS certificate."""

from __future__ import annotations

import json
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.errors import ConfigError
from connectors.scheme_folder import SchemeFolder
from trust.checkpoint import NoteSigner, NoteVerifier
from trust.errors import CheckpointError, KeyFormatError, RegistryError
from trust.keys import Signer, SigningKey, VerifyingKey
from trust.registry import Anchors, verify_registry
from trust.witness_policy import WitnessPolicy


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except UnicodeDecodeError:  # tomllib decodes before it parses
        raise ConfigError(f"cannot read config {path}: it is not UTF-8 text") from None


def resolve(base: Path, value: Any, name: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def require_str(table: dict[str, Any], name: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def server_tls(base: Path, table: dict[str, Any]) -> ssl.SSLContext | None:
    """A server's TLS context from ``tls_cert`` and ``tls_key`` (PEM files), or None when the
    config names neither (plain HTTP: loopback, or TLS ended in front of the server)."""
    cert, key = table.get("tls_cert"), table.get("tls_key")
    if cert is None and key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(resolve(base, cert, "tls_cert"), resolve(base, key, "tls_key"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load tls_cert/tls_key: {exc}") from exc
    return context


def load_signing_key(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pem(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc}") from exc


def names_a_token(value: Any) -> bool:
    return isinstance(value, str) and value[:7].lower() == "pkcs11:"


def configured_signer(base: Path, value: Any, name: str) -> Signer:
    """The ES256 key a config names: an RFC 7512 ``pkcs11:`` URI (a key in a token, see
    :mod:`connectors.pkcs11`) or the path of a PEM file, resolved beside the config."""
    if names_a_token(value):
        from connectors.pkcs11 import load_token_signing_key  # PKCS#11 only when used

        return load_token_signing_key(value, base)
    return load_signing_key(resolve(base, value, name))


def operator_signing_key(folder: SchemeFolder) -> Signer:
    """The scheme operator's registry key: the one ``operator/operator.toml`` names (a
    ``pkcs11:`` URI or a PEM path) if that file exists, else ``operator/operator.pem``."""
    if folder.operator_config.exists():
        table = read_toml(folder.operator_config)
        return configured_signer(
            folder.operator_config.parent, table.get("signing_key"), "signing_key"
        )
    try:
        return SigningKey.from_pem(folder.operator_key.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the operator key {folder.operator_key}: {exc}") from exc
    except KeyFormatError as exc:
        raise ConfigError(f"the operator key {folder.operator_key}: {exc}") from exc


def configured_note_signer(base: Path, value: Any, name: str, origin: Any) -> NoteSigner:
    """The log's checkpoint key a config names: a ``pkcs11:`` URI of an Ed25519 key in a token
    (then ``origin``, the log's name, is required) or a ``PRIVATE+KEY+...`` file."""
    if names_a_token(value):
        from connectors.pkcs11 import load_token_note_signer

        if not isinstance(origin, str) or not origin:
            raise ConfigError(f"a {name} in a token needs the log's origin beside it")
        try:
            return load_token_note_signer(value, origin, base)
        except (CheckpointError, KeyFormatError) as exc:
            raise ConfigError(f"cannot use {name}: {exc}") from exc
    path = resolve(base, value, name)
    try:
        signer = NoteSigner(path.read_text().strip())
    except (OSError, UnicodeDecodeError, CheckpointError, KeyFormatError) as exc:
        raise ConfigError(f"cannot read log signing key {path}: {exc}") from exc
    if origin is not None and origin != signer.name:
        raise ConfigError(f"{name} is named {signer.name!r}, not the origin {origin!r}")
    return signer


def load_anchors(base: Path, table: dict[str, Any]) -> Anchors:
    files = table.get("anchors")
    if not isinstance(files, list) or not 1 <= len(files) <= 2:
        raise ConfigError("anchors must list one or two pinned operator JWK files")
    keys = []
    for item in files:
        path = resolve(base, item, "anchors")
        try:
            keys.append(VerifyingKey.from_jwk(json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read anchor {path}: {exc}") from exc
    return Anchors(require_str(table, "scheme"), require_str(table, "operator"), tuple(keys))


@dataclass(frozen=True, slots=True)
class SchemeFiles:
    """What every participant's config names: the scheme, its anchors, the registry file."""

    anchors: Anchors
    registry_path: Path

    def read_registry(self) -> bytes:
        try:
            return self.registry_path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read registry {self.registry_path}: {exc}") from exc


def scheme_files(base: Path, table: dict[str, Any]) -> SchemeFiles:
    return SchemeFiles(load_anchors(base, table), resolve(base, table.get("registry"), "registry"))


def member_identity(path: Path) -> dict[str, Any]:
    """A member's client config (council or auditor): who it is, its key, which broker.
    Returned as keyword arguments for ``EligibilityClient`` / ``AuditClient``."""
    table = read_toml(path)
    return {
        "member_id": require_str(table, "member_id"),
        "key": configured_signer(path.parent, table.get("signing_key"), "signing_key"),
        "broker_url": require_str(table, "broker_url"),
        "broker_id": require_str(table, "broker_id"),
    }


def load_log_key(path: Path) -> NoteVerifier:
    """The consent log's pinned verifier key (a C2SP note key, e.g. ``public/log.vkey``)."""
    try:
        return NoteVerifier(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        raise ConfigError(f"cannot read log key {path}: {exc}") from exc


def member_witness_policy(path: Path, *, now: int) -> WitnessPolicy | None:
    """The scheme's witness policy, if a member's config pins the scheme (``scheme``,
    ``operator``, ``anchors``, ``registry``): from the registry, verified against the anchors.
    ``None`` if the config pins no registry, or the registry declares no policy."""
    table = read_toml(path)
    if "registry" not in table:
        return None
    files = scheme_files(path.parent, table)
    try:
        registry = verify_registry(files.read_registry(), files.anchors, now=now)
    except RegistryError as exc:
        raise ConfigError(f"cannot read the witness policy: {exc}") from exc
    return registry.witness_policy


def member_log_key(path: Path) -> NoteVerifier | None:
    """The log key a member's config pins with ``log_key``, if it pins one."""
    value = read_toml(path).get("log_key")
    return None if value is None else load_log_key(resolve(path.parent, value, "log_key"))
