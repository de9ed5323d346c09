"""The witness's settings: one TOML file, read once into a frozen object.

    host = "127.0.0.1"
    port = 8091
    key_file = "secrets/witness-a.skey"   # PRIVATE+KEY+<name>+<key id>+... (type 0x04)
    state = "witness-a/state.sqlite3"
    [[logs]]
    vkey_file = "public/log.vkey"          # or vkey = "<origin>+<hash>+<key>"

The key is read through :class:`trust.cosignature.RawSigner`: a key held in a token plugs in
there (``key = "pkcs11:..."`` is refused until the PKCS#11 signer lands, never read as a file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from broker.errors import SettingsError
from connectors.config import read_toml, resolve
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


def load_witness_settings(path: Path, *, port: int | None = None) -> WitnessSettings:
    try:
        table = read_toml(path)
        base = path.parent
        if "key" in table:
            raise SettingsError("key = 'pkcs11:...' is not supported yet: use key_file")
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
            cosigner=load_cosigner_file(resolve(base, table.get("key_file"), "key_file")),
            state_path=resolve(base, table.get("state"), "state"),
            log_keys=MappingProxyType(by_origin),
        )
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
