"""`axb demo --pkcs11`: the whole journey with every signing key of the scheme in a SoftHSM2
token, and no private key written anywhere under its folder: the two witnesses' cosigning keys
and the reference identity provider's credential key are in the token too (in production each
is another organisation's; here labels of the one token)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key

from broker.scheme import dev as devscheme
from connectors.pkcs11 import is_pkcs11_uri
from tests.support.tokens import PIN, make_token


def _holds_a_private_key(data: bytes) -> bool:
    if b"PRIVATE KEY" in data or b"PRIVATE+KEY+" in data:
        return True
    for load in (load_pem_private_key, load_der_private_key):
        try:
            load(data, password=None)
        except (ValueError, TypeError):
            continue
        return True
    return False


def test_demo_with_every_key_in_a_token_leaves_no_private_key_file(tmp_path: Path) -> None:
    token = make_token(tmp_path / "hsm", label="axb-demo")
    keep = tmp_path / "scheme"
    demo = [sys.executable, "-m", "broker.cli", "demo", "--keep", str(keep)]
    result = subprocess.run(
        [*demo, "--pkcs11", str(token.base(pin_source=False))],  # the PIN from the environment
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=token.env(),
    )
    assert result.returncode == 0, result.stderr
    for outcome in (" yes ", " no ", " no-match ", " undetermined "):
        assert outcome in result.stdout
    assert "21 of 21 receipts proven" in result.stdout
    assert "cosigned by 2 of 2 witnesses" in result.stdout  # with their keys in the token

    configs = [keep / "broker.toml", keep / "operator" / "operator.toml"]
    configs += sorted(keep.glob("providers/*.toml")) + sorted(keep.glob("councils/*.toml"))
    configs += sorted(keep.glob("auditors/*.toml"))
    # every reference provider, and DWP's CIS adapter the demo joins at start (its key too)
    assert len(configs) == 2 + len(devscheme.PROVIDERS) + 1 + len(devscheme.COUNCILS) + 1
    for config in configs:
        assert is_pkcs11_uri(tomllib.loads(config.read_text())["signing_key"]), config
    assert is_pkcs11_uri(tomllib.loads((keep / "broker.toml").read_text())["log"]["signing_key"])

    files = [path for path in keep.rglob("*") if path.is_file()]
    assert len(files) > 20  # the registry, configs, public keys, the log and its process logs
    holding = [path for path in files if _holds_a_private_key(path.read_bytes())]
    assert holding == []
    assert not (keep / "keys").exists() or list((keep / "keys").iterdir()) == []
    idp = tomllib.loads((keep / "identity" / f"{devscheme.IDP}.toml").read_text())
    assert is_pkcs11_uri(idp["signing_key"])
    for witness in devscheme.WITNESSES:
        config = tomllib.loads((keep / "witnesses" / f"{witness}.toml").read_text())
        assert is_pkcs11_uri(config["key"]), witness
        assert "key_file" not in config, witness
    assert not [path for path in files if PIN.encode() in path.read_bytes()]  # nor the PIN
