"""SoftHSM2 tokens of a test's own: the token directory in the test's tmp_path, found through
``SOFTHSM2_CONF``, initialised with ``softhsm2-util`` (installed by ``.ci/tools``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from connectors import pkcs11
from connectors.pkcs11 import Pkcs11Uri

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246813579"
SO_PIN = "97531864"


@dataclass(frozen=True)
class SoftToken:
    """One initialised token; its PIN is in ``pin_file``, never in a URI or config."""

    root: Path
    label: str

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def token_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def pin_file(self) -> Path:
        return self.root / "pin"

    def uri(self, label: str | None = None, *, pin_source: bool = True) -> str:
        return str(self.base(pin_source=pin_source).with_object(label) if label else self.base())

    def base(self, *, pin_source: bool = True) -> Pkcs11Uri:
        return Pkcs11Uri(
            token=self.label,
            module_path=SOFTHSM_MODULE,
            pin_source=f"file:{self.pin_file}" if pin_source else None,
        )

    def env(self) -> dict[str, str]:
        """The environment a child process needs to find this token (and its PIN)."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), pkcs11.PIN_ENV: PIN}

    def remove(self, keep: Path) -> None:
        """The token goes away (its store moved to ``keep``), as a pulled HSM would."""
        shutil.move(self.token_dir, keep)
        self.token_dir.mkdir()

    def restore(self, kept: Path) -> None:
        shutil.rmtree(self.token_dir)
        shutil.move(kept, self.token_dir)


def make_token(root: Path, label: str = "axb-test") -> SoftToken:
    """A fresh token under ``root``; point ``SOFTHSM2_CONF`` at ``token.conf`` before use."""
    token = SoftToken(root, label)
    token.token_dir.mkdir(parents=True)
    token.conf.write_text(
        f"directories.tokendir = {token.token_dir}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    token.pin_file.write_text(PIN + "\n")
    token.pin_file.chmod(0o600)
    return another_token(token, label)


def another_token(beside: SoftToken, label: str) -> SoftToken:
    """One more token in the same store as ``beside`` (same conf, PIN and module)."""
    token = SoftToken(beside.root, label)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
    )
    return token
