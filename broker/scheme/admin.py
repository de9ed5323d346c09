"""The scheme operator's tools: keep the registry's source, review changes, publish it signed.

The operator keeps an unsigned source document (``operator/registry-source.json``: members,
purposes, checks, the last ``seq``). Every change is validated exactly as a broker would
validate the published registry, then ``publish`` signs it with ``seq + 1`` and replaces the
registry file atomically; running brokers and providers pick it up without a restart.

The source and the documents handed in (registrations, purposes, checks, keys) are input like
any other: a document of the wrong shape is refused with :class:`SchemeAdminError` naming what
is wrong, before anything indexes into it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.scheme.changes import parse_checks, review_changes
from connectors.config import operator_signing_key
from connectors.errors import ConfigError
from connectors.scheme_folder import SchemeFolder
from trust import jws
from trust.did import parse_did_document
from trust.errors import KeyFormatError, KeyUnavailable, RegistryError, VerificationError
from trust.keys import VerifyingKey
from trust.registry import parse_registry_claims, sign_registry


class SchemeAdminError(BrokerError):
    """A change the operator asked for is invalid; the message says why."""


def source_path(scheme_dir: Path) -> Path:
    return SchemeFolder(scheme_dir).registry_source


def load_source(scheme_dir: Path) -> dict[str, Any]:
    path = source_path(scheme_dir)
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemeAdminError(f"cannot read the registry source {path}: {exc.strerror}") from exc
    except ValueError as exc:  # not UTF-8, or not JSON
        raise SchemeAdminError(f"the registry source {path} is not JSON: {exc}") from exc
    return checked_source(source)


def _object(document: object, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise SchemeAdminError(f"{what} is not a JSON object")
    return document


def _objects(value: object, what: str) -> list[dict[str, Any]]:
    """A list of JSON objects (the live list: changes edit it in place)."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SchemeAdminError(f"{what} is not a list of JSON objects")
    return value


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SchemeAdminError(f"{what} is not a list of strings")
    return value


def checked_source(source: object) -> dict[str, Any]:
    """The source, if it has the shape the tools index into (a hand-edited source is input)."""
    document = _object(source, "the registry source")
    for name in ("scheme", "operator"):
        if not isinstance(document.get(name), str):
            raise SchemeAdminError(f"the registry source has no {name} string")
    if type(document.get("seq")) is not int:
        raise SchemeAdminError("the registry source has no integer seq")
    for name in ("members", "purposes", "checks"):
        _objects(document.get(name), f"the registry source's {name}")
    return document


def save_source(scheme_dir: Path, source: dict[str, Any]) -> None:
    path = source_path(scheme_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(source, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def validate(source: dict[str, Any]) -> None:
    """Refuse a source a broker would refuse (bad keys, duplicate kids, dangling names)."""
    checked_source(source)
    claims = {
        "iss": source["operator"],
        "aud": source["scheme"],
        "iat": 0,
        "exp": 1,
        "seq": source["seq"] + 1,
        "members": source["members"],
        "purposes": source["purposes"],
        "checks": source["checks"],
        "witness_policy": source.get("witness_policy"),
    }
    try:
        parse_registry_claims(claims, digest="")
    except RegistryError as exc:
        raise SchemeAdminError(str(exc)) from exc


def _member(source: dict[str, Any], member_id: str) -> dict[str, Any]:
    members = _objects(checked_source(source)["members"], "the registry source's members")
    for member in members:
        if member.get("id") == member_id:
            return member  # the live entry, edited in place
    raise SchemeAdminError(f"no member {member_id!r}")


def _member_keys(member: dict[str, Any]) -> list[dict[str, Any]]:
    return _objects(member.get("keys"), f"member {member.get('id')}'s keys")


def review_registration(registration: Any) -> list[str]:
    """What the operator should read before admitting a registration; raises if invalid."""
    if not isinstance(registration, dict):
        raise SchemeAdminError("a registration is a JSON object")
    # an identity provider's keys keep the ids its DID document published (validate checks them)
    roles = registration.get("roles")
    thumbprints = not (isinstance(roles, list) and "identity-provider" in roles)
    for entry in registration.get("keys", []) if isinstance(registration.get("keys"), list) else ():
        try:
            jwk = entry.get("jwk") if isinstance(entry, dict) else None
            VerifyingKey.from_jwk(jwk, require_thumbprint_kid=thumbprints)
        except KeyFormatError as exc:
            raise SchemeAdminError(f"bad key in registration: {exc}") from exc
    lines = [
        f"member {registration.get('id')}: {registration.get('name')}",
        f"roles: {', '.join(_strings(registration.get('roles', []), 'roles'))}",
    ]
    provider = registration.get("provider")
    if isinstance(provider, dict):
        endpoint, timeout = provider.get("endpoint"), provider.get("timeout_ms")
        lines.append(f"endpoint: {endpoint}  timeout: {timeout} ms")
        for attribute in _objects(provider.get("attributes", []), "provider attributes"):
            matching = _object(attribute.get("matching", {}), "an attribute's matching")
            lines.append(
                f"  offers {attribute.get('name')}: needs {matching.get('required', [])}"
                f" (optional {matching.get('optional', [])})"
            )
    return lines


def add_member(source: dict[str, Any], registration: dict[str, Any]) -> dict[str, Any]:
    review_registration(registration)
    if any(m.get("id") == registration.get("id") for m in checked_source(source)["members"]):
        raise SchemeAdminError(f"member {registration.get('id')!r} already exists")
    changed = {**source, "members": [*source["members"], registration]}
    validate(changed)
    return changed


def did_keys(document: Any, did: Any) -> list[dict[str, Any]]:
    """The key entries of an identity provider's DID document, each under its published id;
    the document must describe ``did`` (the registration's own)."""
    try:
        published = parse_did_document(document)
    except KeyFormatError as exc:
        raise SchemeAdminError(f"the DID document is refused: {exc}") from exc
    if published.did != did:
        raise SchemeAdminError("the DID document describes another DID than identity_provider.did")
    return [{"jwk": dict(key.jwk), "not_before": None, "not_after": None} for key in published.keys]


def add_identity_provider(
    source: dict[str, Any], registration: dict[str, Any], did_document: Any
) -> dict[str, Any]:
    """Admit an identity provider, its keys imported from its DID document with their ids."""
    _object(registration, "a registration")
    info = _object(registration.get("identity_provider"), "the registration's identity_provider")
    if "keys" in registration:
        raise SchemeAdminError("an identity provider's keys come from its DID document only")
    return add_member(source, {**registration, "keys": did_keys(did_document, info.get("did"))})


def import_did_document(
    source: dict[str, Any], member_id: str, did_document: Any, *, now: str | None = None
) -> dict[str, Any]:
    """Rotate an identity provider's keys to those its DID document now publishes: new ids are
    added, ids the document no longer lists end their validity (``now`` by default)."""
    member = _member(source, member_id)
    info = _object(member.get("identity_provider"), f"{member_id}'s identity_provider")
    published = {entry["jwk"]["kid"]: entry for entry in did_keys(did_document, info.get("did"))}
    keys = _member_keys(member)
    registered = {k["jwk"].get("kid") for k in keys if isinstance(k.get("jwk"), dict)}
    ended = now or datetime.now(UTC).isoformat(timespec="seconds")
    for entry in keys:
        jwk = entry.get("jwk")
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if kid not in published and entry.get("not_after") is None:
            entry["not_after"] = ended
    keys.extend(entry for kid, entry in published.items() if kid not in registered)
    validate(source)
    return source


def add_named(source: dict[str, Any], kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """Add a purpose or a check (``kind`` is ``purposes`` or ``checks``)."""
    key = "id" if kind == "purposes" else "name"
    _object(document, f"a {kind[:-1]}")
    if any(item.get(key) == document.get(key) for item in checked_source(source)[kind]):
        raise SchemeAdminError(f"{kind[:-1]} {document.get(key)!r} already exists")
    changed = {**source, kind: [*source[kind], document]}
    validate(changed)
    return changed


def add_check(
    source: dict[str, Any],
    document: dict[str, Any],
    *,
    councils: tuple[str, ...] = (),
    owner: str | None = None,
) -> dict[str, Any]:
    """Add a check, or, with ``councils``, versions scoped to those councils: to a new check,
    or beside an existing check's versions (a local rule for those councils). ``owner`` makes
    a new check one council's local scheme. Each council named must be an active relying
    party: a rule for a suspended council is refused."""
    _object(document, "a check")
    for council in (*councils, *([owner] if owner else [])):
        member = _member(source, council)
        if "relying-party" not in _strings(member.get("roles", []), f"{council}'s roles"):
            raise SchemeAdminError(f"{council} is not a relying party")
        if member.get("status") != "active":
            raise SchemeAdminError(f"{council} is suspended: no rule may be scoped to it")
    versions = _objects(document.get("versions"), "the check's versions")
    if councils:
        versions = [{**v, "councils": sorted(councils)} for v in versions]
    checks = checked_source(source)["checks"]
    existing = next((c for c in checks if c.get("name") == document.get("name")), None)
    if existing is None:
        added = {**document, "versions": versions}
        if owner is not None:
            added["owner"] = owner
        changed = {**source, "checks": [*checks, added]}
    elif not councils or owner is not None:
        raise SchemeAdminError(
            f"check {document.get('name')!r} already exists (add versions with --for)"
        )
    else:
        merged = {
            **existing,
            "versions": [*_objects(existing.get("versions"), "its versions"), *versions],
        }
        changed = {**source, "checks": [merged if c is existing else c for c in checks]}
    validate(changed)
    return changed


def review_source(scheme_dir: Path, source: dict[str, Any]) -> list[str]:
    """What publishing ``source`` would change in the checks of the registry in force."""
    registry = SchemeFolder(scheme_dir).registry
    try:
        token = registry.read_bytes().strip()
        claims = jws.parse_json_object(
            jws.decode_compact(token, max_bytes=jws.MAX_REGISTRY_BYTES).payload
        )
        published = parse_checks(claims.get("checks", []))
    except OSError:
        published = []  # nothing published yet: everything is new
    except (VerificationError, ValueError) as exc:
        raise SchemeAdminError(f"the published registry {registry} cannot be read: {exc}") from exc
    try:
        return review_changes(published, parse_checks(checked_source(source)["checks"]))
    except ValueError as exc:
        raise SchemeAdminError(f"bad check in the source: {exc}") from exc


def permit(source: dict[str, Any], member_id: str, purpose: str) -> dict[str, Any]:
    """Let a relying party use a purpose."""
    member = _member(source, member_id)
    permissions = _object(member.setdefault("permissions", {}), f"{member_id}'s permissions")
    purposes = _strings(permissions.setdefault("purposes", []), f"{member_id}'s purposes")
    if purpose not in purposes:
        purposes.append(purpose)
    validate(source)
    return source


def set_status(source: dict[str, Any], member_id: str, status: str) -> dict[str, Any]:
    if status not in ("active", "suspended"):
        raise SchemeAdminError("status is active or suspended")
    _member(source, member_id)["status"] = status
    validate(source)
    return source


def add_key(
    source: dict[str, Any], member_id: str, jwk: dict[str, Any], *, not_before: str | None = None
) -> dict[str, Any]:
    """Add a key beside the current ones: the overlap window of a rotation starts."""
    try:
        key = VerifyingKey.from_jwk(jwk)
    except KeyFormatError as exc:
        raise SchemeAdminError(f"bad key: {exc}") from exc
    _member_keys(_member(source, member_id)).append(
        {"jwk": dict(key.jwk), "not_before": not_before, "not_after": None}
    )
    validate(source)
    return source


def retire_key(
    source: dict[str, Any], member_id: str, kid: str, *, not_after: str | None = None
) -> dict[str, Any]:
    """End a key's validity (default: now): the overlap window of a rotation closes."""
    keys = _member_keys(_member(source, member_id))
    entries = [k for k in keys if isinstance(k.get("jwk"), dict) and k["jwk"].get("kid") == kid]
    if not entries:
        raise SchemeAdminError(f"member {member_id} has no key {kid}")
    if len(keys) == 1:
        raise SchemeAdminError("add the new key before retiring the last one")
    entries[0]["not_after"] = not_after or datetime.now(UTC).isoformat(timespec="seconds")
    validate(source)
    return source


def publish(
    scheme_dir: Path, source: dict[str, Any], *, lifetime: int = 30 * 86400, now: int | None = None
) -> int:
    """Sign the source as the next registry (``seq + 1``) and replace the registry file."""
    validate(source)
    seq: int = source["seq"] + 1
    folder = SchemeFolder(scheme_dir)
    try:
        operator = operator_signing_key(folder)
    except ConfigError as exc:
        raise SchemeAdminError(str(exc)) from exc
    try:
        token = sign_registry(
            members=source["members"],
            purposes=source["purposes"],
            checks=source["checks"],
            seq=seq,
            scheme=source["scheme"],
            operator=source["operator"],
            key=operator,
            now=int(time.time()) if now is None else now,
            lifetime=lifetime,
            witness_policy=source.get("witness_policy"),  # a scheme change keeps the policy
        )
    except KeyUnavailable as exc:  # the operator's token went away: nothing is published
        raise SchemeAdminError(str(exc)) from exc
    registry = folder.registry
    tmp = registry.with_suffix(".tmp")
    tmp.write_text(token + "\n")
    tmp.replace(registry)  # atomic: a polling broker never reads half a file
    save_source(scheme_dir, {**source, "seq": seq})
    return seq
