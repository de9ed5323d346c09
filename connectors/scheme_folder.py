"""The one type that owns a scheme folder's layout, as ``axb demo --keep`` writes it and the
scheme operator's tools, the conformance checker and the command line read it.

    scheme/
      registry.jwt                     the signed registry in force
      anchors/<operator>-N.jwk.json    the operator's pinned public keys
      operator/operator.pem            the operator's signing key (the operator's machine only)
      operator/operator.toml           or, instead, ``signing_key = "pkcs11:..."``: it is in a token
      operator/registry-source.json    the unsigned source the operator edits and publishes
      keys/<member>.pem                each member's signing key (development only)
      public/<member>.jwk.json         each member's public key; public/log.vkey, the log's key;
                                       public/dev-ca.pem, a compose scheme's TLS CA
      secrets/                         pseudonym key, log signing key, API keys; tls/ (compose)
      broker.toml                      the broker's config
      providers/<provider>.toml        each reference provider's config
      stubs/<stub>.toml                stand-ins for outside services (DVLA's VES)
      councils/<member>.toml, auditors/<member>.toml   members' client configs
      log/                             the embedded consent log and process logs

Only paths: nothing here reads or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SchemeFolder:
    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "registry.jwt"

    @property
    def anchors_dir(self) -> Path:
        return self.root / "anchors"

    def anchor(self, operator: str, number: int = 1) -> Path:
        return self.anchors_dir / f"{operator}-{number}.jwk.json"

    @property
    def operator_key(self) -> Path:
        return self.root / "operator" / "operator.pem"

    @property
    def operator_config(self) -> Path:
        return self.root / "operator" / "operator.toml"

    @property
    def registry_source(self) -> Path:
        return self.root / "operator" / "registry-source.json"

    def key(self, member_id: str) -> Path:
        return self.root / "keys" / f"{member_id}.pem"

    def public_key(self, member_id: str) -> Path:
        return self.root / "public" / f"{member_id}.jwk.json"

    def identity_config(self, member_id: str) -> Path:
        """A reference identity provider's key setting, when its key is not ``key(member_id)``."""
        return self.root / "identity" / f"{member_id}.toml"

    def did_document(self, member_id: str) -> Path:
        """An identity provider's DID document, as the operator fetched it."""
        return self.root / "public" / f"{member_id}.did.json"

    @property
    def log_verifier_key(self) -> Path:
        return self.root / "public" / "log.vkey"

    @property
    def dev_ca(self) -> Path:
        """A compose scheme's development CA: the brokers trust it for the providers' TLS."""
        return self.root / "public" / "dev-ca.pem"

    def secret(self, name: str) -> Path:
        return self.root / "secrets" / name

    @property
    def broker_config(self) -> Path:
        return self.root / "broker.toml"

    @property
    def providers_dir(self) -> Path:
        return self.root / "providers"

    def provider_config(self, provider_id: str) -> Path:
        return self.providers_dir / f"{provider_id}.toml"

    @property
    def stubs_dir(self) -> Path:
        return self.root / "stubs"

    def stub_config(self, name: str) -> Path:
        return self.stubs_dir / f"{name}.toml"

    def council_config(self, member_id: str) -> Path:
        return self.root / "councils" / f"{member_id}.toml"

    def auditor_config(self, member_id: str) -> Path:
        return self.root / "auditors" / f"{member_id}.toml"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @classmethod
    def of_config(cls, config: Path) -> SchemeFolder:
        """The scheme folder a broker config (``broker.toml``) sits in."""
        return cls(config.parent)
