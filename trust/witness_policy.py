"""The witness policy of the scheme: which witnesses must have cosigned a checkpoint before
anyone treats it as proven.

The registry names the witnesses (members with role ``witness``, each with its cosignature
verifier key and the URL of its ``add-checkpoint`` endpoint) and declares the policy in the
style of Sigsum's policy files: groups of ``k`` of the named witnesses or of earlier groups,
and one quorum (a group or a single witness)::

    "witness_policy": {
        "groups": [{"name": "dev-witnesses", "k": 2, "of": ["witness-a", "witness-b"]}],
        "quorum": "dev-witnesses"
    }

A checkpoint is proven only when the witnesses whose cosignatures verify satisfy the quorum.
The policy is fail-closed by construction: an empty group, a ``k`` of zero or more than its
members, a name defined twice, or a group that names what is not yet defined is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trust.checkpoint import NoteVerifier, open_checkpoint
from trust.cosignature import Cosignature, CosignatureVerifier, verified_cosignatures
from trust.errors import CheckpointError, KeyFormatError, RegistryError

__all__ = [
    "Witness",
    "WitnessGroup",
    "WitnessPolicy",
    "WitnessedCheckpoint",
    "open_witnessed_checkpoint",
    "parse_witness",
    "parse_witness_policy",
    "require_quorum",
]


@dataclass(frozen=True, slots=True)
class Witness:
    """A witness member: its registry id, its cosignature key and where it takes checkpoints."""

    member_id: str
    verifier: CosignatureVerifier
    url: str
    active: bool = True  # a suspended witness's cosignatures count for nothing

    @property
    def name(self) -> str:
        """The witness's key name, as it appears on its cosignature lines."""
        return self.verifier.name


@dataclass(frozen=True, slots=True)
class WitnessGroup:
    name: str
    threshold: int
    members: tuple[str, ...]  # witness member ids or names of earlier groups


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    witnesses: Mapping[str, Witness]  # by member id
    groups: Mapping[str, WitnessGroup]
    quorum: str

    def verifiers(self) -> dict[str, CosignatureVerifier]:
        """The cosignature verifiers of the policy's active witnesses, by key name."""
        return {w.name: w.verifier for w in self.witnesses.values() if w.active}

    def satisfied_by(self, cosigned: Iterable[str]) -> bool:
        """Whether witnesses with these member ids make the quorum."""
        done = frozenset(cosigned)

        def holds(name: str) -> bool:
            group = self.groups.get(name)
            if group is None:
                return name in done
            return sum(holds(m) for m in group.members) >= group.threshold

        return holds(self.quorum)

    def describe(self) -> str:
        group = self.groups.get(self.quorum)
        if group is None:
            return f"witness {self.quorum}"
        return f"{group.threshold} of {len(group.members)} in {group.name}"


def parse_witness(member_id: str, raw: Any, *, active: bool = True) -> Witness:
    """A witness member's ``witness`` metadata: ``{"vkey": ..., "url": ...}``."""
    if not isinstance(raw, dict) or set(raw) != {"vkey", "url"}:
        raise RegistryError(f"member {member_id}: witness metadata is {{vkey, url}}")
    url = raw["url"]
    if not isinstance(url, str) or not url.startswith(
        ("https://", "http://127.", "http://localhost", "http://[::1]")
    ):
        raise RegistryError(f"member {member_id}: witness url must be https (or loopback http)")
    try:
        verifier = CosignatureVerifier(str(raw["vkey"]))
    except KeyFormatError as exc:
        raise RegistryError(f"member {member_id}: bad witness key: {exc}") from exc
    return Witness(member_id, verifier, url.rstrip("/"), active)


def parse_witness_policy(raw: Any, witnesses: Mapping[str, Witness]) -> WitnessPolicy:
    """The registry's ``witness_policy`` over the witness members ``witnesses`` (by id)."""
    if not isinstance(raw, dict) or set(raw) - {"groups", "quorum"}:
        raise RegistryError("witness_policy has groups and quorum only")
    groups: dict[str, WitnessGroup] = {}
    raw_groups = raw.get("groups", [])
    if not isinstance(raw_groups, list):
        raise RegistryError("witness_policy.groups must be a list")
    for item in raw_groups:
        if not isinstance(item, dict) or set(item) != {"name", "k", "of"}:
            raise RegistryError("a witness group is {name, k, of}")
        name, k, members = item["name"], item["k"], item["of"]
        if not isinstance(name, str) or not name or name in groups or name in witnesses:
            raise RegistryError(f"witness group name {name!r} is empty or defined twice")
        if not isinstance(members, list) or not members or len(set(members)) != len(members):
            raise RegistryError(f"witness group {name}: of must list distinct members")
        unknown = [m for m in members if m not in witnesses and m not in groups]
        if unknown:
            raise RegistryError(f"witness group {name} names unknown witnesses {unknown}")
        if type(k) is not int or not 1 <= k <= len(members):
            raise RegistryError(f"witness group {name}: k must be 1..{len(members)}")
        groups[name] = WitnessGroup(name, k, tuple(members))
    quorum = raw.get("quorum")
    if not isinstance(quorum, str) or (quorum not in groups and quorum not in witnesses):
        raise RegistryError(f"witness_policy.quorum {quorum!r} names no group or witness")
    if len({w.name for w in witnesses.values()}) != len(witnesses):
        raise RegistryError("two witnesses share a key name")
    return WitnessPolicy(MappingProxyType(dict(witnesses)), MappingProxyType(groups), quorum)


@dataclass(frozen=True, slots=True)
class WitnessedCheckpoint:
    """A log checkpoint and the verified cosignatures on it, by witness member id."""

    size: int
    cosignatures: Mapping[str, Cosignature]
    quorum: bool


def open_witnessed_checkpoint(
    note: str, log_key: NoteVerifier, policy: WitnessPolicy, *, now: int
) -> WitnessedCheckpoint:
    """Verify the log's signature and every policy witness's cosignature on ``note``, and
    whether they make the quorum. Raises ``CheckpointError`` for a bad log signature or a bad
    cosignature line."""
    checkpoint = open_checkpoint(note, log_key, log_key.name)
    by_name = {w.name: w.member_id for w in policy.witnesses.values()}
    found = verified_cosignatures(note, policy.verifiers(), now=now)
    by_member = {by_name[name]: c for name, c in found.items()}
    return WitnessedCheckpoint(checkpoint.size, by_member, policy.satisfied_by(by_member))


def require_quorum(
    note: str, log_key: NoteVerifier, policy: WitnessPolicy, *, now: int
) -> WitnessedCheckpoint:
    """As :func:`open_witnessed_checkpoint`, raising ``CheckpointError`` without a quorum."""
    witnessed = open_witnessed_checkpoint(note, log_key, policy, now=now)
    if not witnessed.quorum:
        raise CheckpointError(
            f"checkpoint of size {witnessed.size} is cosigned by {len(witnessed.cosignatures)} "
            f"witness(es), short of the policy's quorum {policy.describe()}"
        )
    return witnessed
