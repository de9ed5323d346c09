"""The witness's settings: one TOML file, read once into a frozen object.

    host = "127.0.0.1"
    port = 8091
    key_file = "secrets/witness-a.skey"   # PRIVATE+KEY+<name>+<key id>+... (type 0x04)
    # or the key in a PKCS#11 token (never read out of it), with the witness's key name:
    # key = "pkcs11:token=w;object=witness-a?module-path=/usr/lib/softhsm/libsofthsm2.so"
    # name = "witness.example/a"
    state = "witness-a/state.sqlite3"
    [[logs]]
    vkey_file = "public/log.vkey"          # or vkey = "<origin>+<hash>+<key>"

The key is used through :class:`trust.cosignature.RawSigner`: a file's key in memory, or an
Ed25519 key in a PKCS#11 token (``CKM_EDDSA``; the PIN from the URI's ``pin-source`` or
``AXB_PKCS11_PIN``, never from this file). A ``key`` that is not a ``pkcs11:`` URI is refused,
never read as a file; a token that cannot be reached at start is an error, and later makes
each add-checkpoint fail closed (no cosignature), never a fallback to a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from broker.errors import SettingsError
from connectors.config import names_a_token, read_toml, resolve
from connectors.errors import ConfigError
from trust.checkpoint import NoteVerifier
from trust.cosignature import Cosigner, load_cosigner
from trust.errors import CheckpointError, KeyFormatError


@dataclass(frozen=True, slots=True)
class WitnessSettings:
    host: str
    port: int
    cosigner: Cosigner
    state_path: Path
    log_keys: MappingProxyType[str, NoteVerifier]  # by log origin


def _log_key(base: Path, entry: Any) -> NoteVerifier:
    if not isinstance(entry, dict) or len(set(entry) & {"vkey", "vkey_file"}) != 1:
        raise SettingsError("each [[logs]] entry has one of vkey or vkey_file")
    try:
        if "vkey" in entry:
            return NoteVerifier(str(entry["vkey"]).strip())
        path = resolve(base, entry["vkey_file"], "logs.vkey_file")
        return NoteVerifier(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, CheckpointError, KeyFormatError) as exc:
        raise SettingsError(f"bad log key in [[logs]]: {exc}") from exc


def load_cosigner_file(path: Path) -> Cosigner:
    try:
        return load_cosigner(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, KeyFormatError) as exc:
        raise SettingsError(f"cannot read witness key {path}: {exc}") from exc


def _cosigner(base: Path, table: dict[str, Any]) -> Cosigner:
    if ("key" in table) == ("key_file" in table):
        raise SettingsError("a witness names its key with one of key_file or key (pkcs11:)")
    if "key_file" in table:
        return load_cosigner_file(resolve(base, table["key_file"], "key_file"))
    key, name = table["key"], table.get("name")
    if not names_a_token(key):
        raise SettingsError("key must be a pkcs11: URI (a key in a file is key_file)")
    if not isinstance(name, str) or not name:
        raise SettingsError("a witness key in a token needs its name beside it (name = ...)")
    from connectors.pkcs11 import load_token_cosigner

    try:
        return load_token_cosigner(key, name, base)
    except KeyFormatError as exc:
        raise SettingsError(f"cannot use the witness key: {exc}") from exc


def load_witness_settings(path: Path, *, port: int | None = None) -> WitnessSettings:
    try:
        table = read_toml(path)
        base = path.parent
        cosigner = _cosigner(base, table)
        logs = table.get("logs")
        if not isinstance(logs, list) or not logs:
            raise SettingsError("a witness needs at least one [[logs]] entry")
        keys = [_log_key(base, entry) for entry in logs]
        by_origin = {k.name: k for k in keys}
        if len(by_origin) != len(keys):
            raise SettingsError("two [[logs]] entries have the same origin")
        chosen = table.get("port", 8091) if port is None else port
        if type(chosen) is not int or not 0 <= chosen <= 65535:
            raise SettingsError("port must be an integer in 0..65535")
        return WitnessSettings(
            host=str(table.get("host", "127.0.0.1")),
            port=chosen,
            cosigner=cosigner,
            state_path=resolve(base, table.get("state"), "state"),
            log_keys=MappingProxyType(by_origin),
        )
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
