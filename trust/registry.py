"""The signed trust registry: one document from the scheme operator, an immutable snapshot.

A registry is a JWS (``typ`` trust-registry+jwt) signed with one of the operator's pinned anchor
keys. It lists members (with roles, status, keys and permissions), provider metadata, purposes
and named checks. A newer one replaces the old only with a higher ``seq`` (rollback refused);
one past its ``exp`` is stale and everything that depends on it fails closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from trust import jws
from trust.batch import MAX_BATCH_ITEMS
from trust.credential import VOT_ORDER
from trust.dates import parse_date_time
from trust.did import is_did_web, key_belongs_to
from trust.errors import DateFormatError, KeyFormatError, RegistryError, VerificationError
from trust.keys import Signer, VerifyingKey
from trust.messages import SUBJECT_FIELDS, new_jti
from trust.parameters import ParameterSpec, check_bindings, parse_parameter_schema
from trust.rules import AttributeRef, Check, check_document, parse_check
from trust.witness_policy import Witness, WitnessPolicy, parse_witness, parse_witness_policy

Role = Literal[
    "relying-party", "attribute-provider", "auditor", "broker", "witness", "identity-provider"
]
ROLES: frozenset[str] = frozenset(
    {"relying-party", "attribute-provider", "auditor", "broker", "witness", "identity-provider"}
)
STATUSES: frozenset[str] = frozenset({"active", "suspended"})
LAWFUL_BASES: frozenset[str] = frozenset(
    {"consent", "contract", "legal-obligation", "vital-interests", "public-task"}
)


@dataclass(frozen=True, slots=True)
class MemberKey:
    key: VerifyingKey
    not_before: int | None
    not_after: int | None


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """An attribute a provider offers and the subject fields it needs to answer it."""

    name: str
    description: str
    required_fields: tuple[str, ...]
    optional_fields: tuple[str, ...]
    # A parameterised attribute's schema (trust.parameters); empty for a plain yes/no one.
    parameters: Mapping[str, ParameterSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outage:
    """A scheduled outage a provider declared: no calls are made while it lasts."""

    start: int
    end: int
    reason: str

    def covers(self, now: int) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    endpoint: str
    timeout_ms: int
    attributes: Mapping[str, AttributeSpec]
    max_concurrency: int = 32
    outages: tuple[Outage, ...] = ()
    # how many items one batch request may carry (trust.batch), and where it goes; 1 = none
    max_batch: int = 1
    batch_endpoint: str | None = None

    def outage_at(self, now: int) -> Outage | None:
        return next((o for o in self.outages if o.covers(now)), None)


@dataclass(frozen=True, slots=True)
class IdentityProviderInfo:
    """An identity provider: the exact ``iss`` of its credentials and the DID whose document
    published its keys (each key's id is ``<did>#<fragment>``)."""

    issuer: str
    did: str


@dataclass(frozen=True, slots=True)
class IdentityRequirement:
    """What identity a purpose needs: ``council-asserted`` (the council verified the resident
    itself, e.g. face to face) or ``credential`` from an identity provider, proving at least
    ``min_vot`` and issued no more than ``max_age_s`` ago."""

    source: Literal["council-asserted", "credential"]
    min_vot: str | None = None
    max_age_s: int = 3600


COUNCIL_ASSERTED = IdentityRequirement("council-asserted")


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    roles: frozenset[str]
    status: str
    keys: tuple[MemberKey, ...]
    purposes: frozenset[str]
    permissions: frozenset[str]
    rate_limit_per_second: int | None
    provider: ProviderInfo | None
    witness: Witness | None = None  # a witness's cosignature key and endpoint
    identity_provider: IdentityProviderInfo | None = None
    # a relying party's client id at each identity provider (by the provider's member id)
    client_ids: Mapping[str, str] = field(default_factory=dict)
    # where the broker posts a relying party's signed bulk-job notices (trust.bulk), if anywhere
    bulk_callback: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Purpose:
    id: str
    description: str
    checks: frozenset[str]
    lawful_bases: frozenset[str]
    consent_required: bool
    identity: IdentityRequirement = COUNCIL_ASSERTED


@dataclass(frozen=True, slots=True)
class Registry:
    """An immutable, verified registry snapshot. Look keys up with :meth:`key`."""

    scheme: str
    operator: str
    seq: int
    issued_at: int
    expires_at: int
    digest: str
    members: Mapping[str, Member]
    purposes: Mapping[str, Purpose]
    checks: Mapping[str, Check]
    _keys: Mapping[str, jws.TrustedKey] = field(repr=False)
    witness_policy: WitnessPolicy | None = None  # None: the log's signature alone proves
    _credential_keys: Mapping[str, jws.TrustedKey] = field(repr=False, default_factory=dict)

    def key(self, kid: str) -> jws.TrustedKey | None:
        """A :data:`trust.jws.KeyLookup`: the key, its owner and validity, or ``None``."""
        return self._keys.get(kid)

    def credential_key(self, kid: str) -> jws.TrustedKey | None:
        """An identity provider's credential-signing key by its DID URL. Kept apart from
        :meth:`key`: a member's message key never signs a credential, nor the reverse."""
        return self._credential_keys.get(kid)

    def fresh_at(self, now: int) -> bool:
        return now < self.expires_at

    def keys_of(self, member_id: str) -> tuple[VerifyingKey, ...]:
        member = self.members.get(member_id)
        return () if member is None else tuple(k.key for k in member.keys)


def _epoch(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(parse_date_time(value, name).timestamp())
    except DateFormatError as exc:
        raise RegistryError(str(exc)) from exc


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{name} must be a list of strings")
    if len(set(value)) != len(value):
        raise RegistryError(f"{name} repeats an entry")
    return tuple(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{name} must be a non-empty string")
    return value


def _endpoint(member_id: str, value: Any, name: str) -> str:
    endpoint = _text(value, f"member {member_id}: provider.{name}")
    if not endpoint.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
        raise RegistryError(f"member {member_id}: {name} must be https (or loopback http)")
    return endpoint


def _batching(member_id: str, raw: dict[str, Any]) -> tuple[int, str | None]:
    """``max_batch`` (1..1000, default 1) and the ``batch_endpoint`` it needs above 1."""
    max_batch = raw.get("max_batch", 1)
    if type(max_batch) is not int or not 1 <= max_batch <= MAX_BATCH_ITEMS:
        raise RegistryError(f"member {member_id}: max_batch must be 1..{MAX_BATCH_ITEMS}")
    if max_batch == 1:
        if "batch_endpoint" in raw:
            raise RegistryError(f"member {member_id}: a batch_endpoint needs max_batch > 1")
        return 1, None
    return max_batch, _endpoint(member_id, raw.get("batch_endpoint"), "batch_endpoint")


def _parse_provider(member_id: str, raw: Any) -> ProviderInfo:
    if not isinstance(raw, dict):
        raise RegistryError(f"member {member_id}: provider must be an object")
    endpoint = _endpoint(member_id, raw.get("endpoint"), "endpoint")
    timeout_ms = raw.get("timeout_ms")
    if type(timeout_ms) is not int or not 50 <= timeout_ms <= 30_000:
        raise RegistryError(f"member {member_id}: timeout_ms must be 50..30000")
    attributes: dict[str, AttributeSpec] = {}
    raw_attributes = raw.get("attributes")
    if not isinstance(raw_attributes, list) or not raw_attributes:
        raise RegistryError(f"member {member_id}: a provider offers at least one attribute")
    for item in raw_attributes:
        if not isinstance(item, dict):
            raise RegistryError(f"member {member_id}: attribute entries are objects")
        name = _text(item.get("name"), f"member {member_id}: attribute name")
        matching = item.get("matching")
        if not isinstance(matching, dict) or not set(matching) <= {"required", "optional"}:
            raise RegistryError(f"{member_id}/{name}: matching needs required/optional lists")
        required = _strings(matching.get("required", []), f"{member_id}/{name} required")
        optional = _strings(matching.get("optional", []), f"{member_id}/{name} optional")
        unknown = (set(required) | set(optional)) - set(SUBJECT_FIELDS)
        if unknown:
            raise RegistryError(f"{member_id}/{name}: unknown matching fields {sorted(unknown)}")
        if name in attributes:
            raise RegistryError(f"member {member_id}: attribute {name} listed twice")
        description = _text(item.get("description"), f"{member_id}/{name} description")
        schema: Mapping[str, ParameterSpec] = {}
        if "parameters" in item:
            try:
                schema = parse_parameter_schema(item["parameters"])
            except ValueError as exc:
                raise RegistryError(f"{member_id}/{name}: {exc}") from exc
        attributes[name] = AttributeSpec(name, description, required, optional, schema)
    concurrency = raw.get("max_concurrency", 32)
    if type(concurrency) is not int or not 1 <= concurrency <= 10_000:
        raise RegistryError(f"member {member_id}: max_concurrency must be 1..10000")
    outages = []
    for item in raw.get("outages", []):
        if not isinstance(item, dict):
            raise RegistryError(f"member {member_id}: outages are objects")
        start = _epoch(item.get("from"), f"member {member_id}: outage from")
        end = _epoch(item.get("to"), f"member {member_id}: outage to")
        if start is None or end is None or end <= start:
            raise RegistryError(f"member {member_id}: an outage needs from < to")
        outages.append(Outage(start, end, str(item.get("reason", "scheduled maintenance"))))
    return ProviderInfo(
        endpoint,
        timeout_ms,
        MappingProxyType(attributes),
        concurrency,
        tuple(outages),
        *_batching(member_id, raw),
    )


def _parse_identity_provider(member_id: str, raw: Any) -> IdentityProviderInfo:
    if not isinstance(raw, dict) or set(raw) != {"issuer", "did"}:
        raise RegistryError(f"member {member_id}: identity_provider needs exactly issuer, did")
    issuer = _text(raw["issuer"], f"member {member_id}: identity_provider.issuer")
    if not issuer.startswith("https://"):
        raise RegistryError(f"member {member_id}: an identity provider's issuer is https")
    if not is_did_web(raw["did"]):
        raise RegistryError(f"member {member_id}: identity_provider.did is not a did:web DID")
    return IdentityProviderInfo(issuer, raw["did"])


def _client_ids(member_id: str, raw: Any) -> Mapping[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in raw.items()
    ):
        raise RegistryError(f"member {member_id}: client_ids maps identity providers to ids")
    return MappingProxyType(dict(raw))


def _parse_member(raw: Any) -> Member:
    if not isinstance(raw, dict):
        raise RegistryError("a member is an object")
    member_id = _text(raw.get("id"), "member id")
    roles = frozenset(_strings(raw.get("roles"), f"member {member_id}: roles"))
    if not roles or not roles <= ROLES:
        raise RegistryError(f"member {member_id}: roles must be among {sorted(ROLES)}")
    status = raw.get("status")
    if status not in STATUSES:
        raise RegistryError(f"member {member_id}: status must be active or suspended")
    identity = raw.get("identity_provider")
    if ("identity-provider" in roles) != (identity is not None):
        raise RegistryError(f"member {member_id}: identity_provider iff identity-provider")
    idp = None if identity is None else _parse_identity_provider(member_id, identity)
    keys: list[MemberKey] = []
    raw_keys = raw.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise RegistryError(f"member {member_id}: at least one key")
    for entry in raw_keys:
        if not isinstance(entry, dict):
            raise RegistryError(f"member {member_id}: key entries are objects")
        try:
            # an identity provider's keys keep the ids its DID document published
            key = VerifyingKey.from_jwk(entry.get("jwk"), require_thumbprint_kid=idp is None)
        except KeyFormatError as exc:
            raise RegistryError(f"member {member_id}: bad key: {exc}") from exc
        if idp is not None and not key_belongs_to(key.kid, idp.did):
            raise RegistryError(f"member {member_id}: a key id is not a fragment of its DID")
        start = _epoch(entry.get("not_before"), f"member {member_id}: not_before")
        end = _epoch(entry.get("not_after"), f"member {member_id}: not_after")
        keys.append(MemberKey(key, start, end))
    permissions = raw.get("permissions", {})
    if not isinstance(permissions, dict) or not set(permissions) <= {"purposes", "grants"}:
        raise RegistryError(f"member {member_id}: permissions has purposes and grants only")
    rate = raw.get("rate_limit_per_second")
    if rate is not None and (type(rate) is not int or rate < 1):
        raise RegistryError(f"member {member_id}: rate_limit_per_second must be >= 1")
    provider = raw.get("provider")
    if ("attribute-provider" in roles) != (provider is not None):
        raise RegistryError(f"member {member_id}: provider metadata iff attribute-provider")
    witness = raw.get("witness")
    if ("witness" in roles) != (witness is not None):
        raise RegistryError(f"member {member_id}: witness metadata iff witness")
    return Member(
        id=member_id,
        name=_text(raw.get("name"), f"member {member_id}: name"),
        roles=roles,
        status=status,
        keys=tuple(keys),
        purposes=frozenset(_strings(permissions.get("purposes", []), "permissions.purposes")),
        permissions=frozenset(_strings(permissions.get("grants", []), "permissions.grants")),
        rate_limit_per_second=rate,
        provider=None if provider is None else _parse_provider(member_id, provider),
        witness=None
        if witness is None
        else parse_witness(member_id, witness, active=status == "active"),
        identity_provider=idp,
        client_ids=_client_ids(member_id, raw.get("client_ids", {})),
        bulk_callback=_bulk_callback(member_id, roles, raw.get("bulk_callback")),
    )


def _bulk_callback(member_id: str, roles: frozenset[str], value: Any) -> str | None:
    """The one URL the broker may post a relying party's bulk notices to: named by the scheme
    operator, never by a manifest (so the broker cannot be sent to any address of a caller's
    choosing); https, or http on loopback."""
    if value is None:
        return None
    if "relying-party" not in roles:
        raise RegistryError(f"member {member_id}: only a relying party has a bulk_callback")
    url = _text(value, f"member {member_id}: bulk_callback")
    if not url.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
        raise RegistryError(f"member {member_id}: bulk_callback must be https (or loopback http)")
    return url


def _parse_purpose(raw: Any) -> Purpose:
    if not isinstance(raw, dict):
        raise RegistryError("a purpose is an object")
    purpose_id = _text(raw.get("id"), "purpose id")
    bases = frozenset(_strings(raw.get("lawful_bases"), f"purpose {purpose_id}: lawful_bases"))
    if not bases or not bases <= LAWFUL_BASES:
        raise RegistryError(f"purpose {purpose_id}: lawful_bases must be among {LAWFUL_BASES}")
    consent_required = raw.get("consent_required", False)
    if not isinstance(consent_required, bool):
        raise RegistryError(f"purpose {purpose_id}: consent_required must be true or false")
    return Purpose(
        id=purpose_id,
        description=_text(raw.get("description"), f"purpose {purpose_id}: description"),
        checks=frozenset(_strings(raw.get("checks"), f"purpose {purpose_id}: checks")),
        lawful_bases=bases,
        consent_required=consent_required,
        identity=_parse_identity_requirement(purpose_id, raw.get("identity")),
    )


def _parse_identity_requirement(purpose_id: str, raw: Any) -> IdentityRequirement:
    """``{"source": "council-asserted"}`` (also when absent: today's behaviour) or
    ``{"source": "credential", "min_vot": "P2", "max_age_s": 3600}``."""
    if raw is None:
        return COUNCIL_ASSERTED
    where = f"purpose {purpose_id}: identity"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be an object")
    source = raw.get("source")
    if source == "council-asserted":
        if set(raw) != {"source"}:
            raise RegistryError(f"{where}: council-asserted takes no other member")
        return COUNCIL_ASSERTED
    if source != "credential" or not set(raw) <= {"source", "min_vot", "max_age_s"}:
        raise RegistryError(f"{where}: source is council-asserted or credential")
    min_vot = raw.get("min_vot")
    if min_vot not in VOT_ORDER:
        raise RegistryError(f"{where}: min_vot must be one of {list(VOT_ORDER)}")
    max_age = raw.get("max_age_s", 3600)
    if type(max_age) is not int or not 60 <= max_age <= 30 * 86400:
        raise RegistryError(f"{where}: max_age_s must be 60..2592000")
    return IdentityRequirement("credential", min_vot, max_age)


def _unique(items: Iterable[Any], what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key = item.name if isinstance(item, Check) else item.id
        if key in result:
            raise RegistryError(f"{what} {key!r} appears twice")
        result[key] = item
    return result


def _cross_check(
    members: Mapping[str, Member], purposes: Mapping[str, Purpose], checks: Mapping[str, Check]
) -> None:
    for purpose in purposes.values():
        missing = purpose.checks - set(checks)
        if missing:
            raise RegistryError(f"purpose {purpose.id} names unknown checks {sorted(missing)}")
    for member in members.values():
        missing = member.purposes - set(purposes)
        if missing:
            raise RegistryError(f"member {member.id} names unknown purposes {sorted(missing)}")
        for idp in member.client_ids:
            known = members.get(idp)
            if known is None or known.identity_provider is None:
                raise RegistryError(f"member {member.id}: client id at {idp}, no such provider")
    for check in checks.values():
        for council in sorted({*check.councils, *([check.owner] if check.owner else [])}):
            party = members.get(council)
            if party is None or "relying-party" not in party.roles:
                raise RegistryError(f"check {check.name} names {council}, not a relying party")
        for version in check.versions:
            for ref in version.attributes:
                provider = members.get(ref.provider)
                info = provider.provider if provider is not None else None
                if info is None or ref.attribute not in info.attributes:
                    raise RegistryError(f"check {check.name} uses unknown attribute {ref}")
                try:
                    check_bindings(
                        info.attributes[ref.attribute].parameters,
                        ref.parameters,
                        f"check {check.name} v{version.version} {ref.provider}/{ref.attribute}",
                    )
                except ValueError as exc:
                    raise RegistryError(str(exc)) from exc


def parse_registry_claims(claims: Mapping[str, Any], *, digest: str) -> Registry:
    """Turn verified registry claims into a snapshot, cross-checking every reference."""
    seq = claims.get("seq")
    if type(seq) is not int or seq < 1:
        raise RegistryError("seq must be an integer >= 1")
    for name in ("members", "purposes", "checks"):
        if not isinstance(claims.get(name), list):
            raise RegistryError(f"{name} must be a list")
    members = _unique((_parse_member(m) for m in claims["members"]), "member")
    purposes = _unique((_parse_purpose(p) for p in claims["purposes"]), "purpose")
    try:
        checks = _unique((parse_check(c) for c in claims["checks"]), "check")
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"bad check: {exc}") from exc
    _cross_check(members, purposes, checks)
    witness_policy = None
    if claims.get("witness_policy") is not None:
        witnesses = {m.id: m.witness for m in members.values() if m.witness is not None}
        witness_policy = parse_witness_policy(claims["witness_policy"], witnesses)
    keys: dict[str, jws.TrustedKey] = {}
    credential_keys: dict[str, jws.TrustedKey] = {}
    for member in members.values():
        for entry in member.keys:
            if entry.key.kid in keys or entry.key.kid in credential_keys:
                raise RegistryError(f"kid {entry.key.kid} is registered twice")
            into = keys if member.identity_provider is None else credential_keys
            into[entry.key.kid] = jws.TrustedKey(
                member.id, entry.key, entry.not_before, entry.not_after
            )
    return Registry(
        scheme=claims["aud"],
        operator=claims["iss"],
        seq=seq,
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        digest=digest,
        members=MappingProxyType(members),
        purposes=MappingProxyType(purposes),
        checks=MappingProxyType(checks),
        _keys=MappingProxyType(keys),
        witness_policy=witness_policy,
        _credential_keys=MappingProxyType(credential_keys),
    )


@dataclass(frozen=True, slots=True)
class Anchors:
    """What a broker or provider pins in its config: the scheme, its operator, their keys."""

    scheme: str
    operator: str
    keys: tuple[VerifyingKey, ...]

    def lookup(self, kid: str) -> jws.TrustedKey | None:
        for key in self.keys:
            if key.kid == kid:
                return jws.TrustedKey(self.operator, key)
        return None


def verify_registry(
    token: str | bytes, anchors: Anchors, *, now: int, current: Registry | None = None
) -> Registry:
    """Verify a registry document against pinned anchors and the registry now in force.

    Refuses: a bad signature or a key not pinned, another scheme, a stale document, and a
    ``seq`` lower than the current one (rollback), or equal with different content.
    """
    if not anchors.keys:
        raise RegistryError("no anchor keys are pinned")
    try:
        verified = jws.verify(
            token, jws.TRUST_REGISTRY, keys=anchors.lookup, audience=anchors.scheme, now=now
        )
    except VerificationError as exc:
        raise RegistryError(f"registry not verified: {exc.reason}") from exc
    if now >= verified.expires_at:
        raise RegistryError("registry is stale (past its exp)")
    raw = token.encode("ascii") if isinstance(token, str) else token
    digest = hashlib.sha256(raw).hexdigest()
    if current is not None:
        seq = verified.claims.get("seq")
        if type(seq) is not int or seq < current.seq:
            raise RegistryError(f"registry rollback refused (seq {seq} < {current.seq})")
        if seq == current.seq:
            if digest != current.digest:
                raise RegistryError("a different registry with the same seq was refused")
            return current
    return parse_registry_claims(verified.claims, digest=digest)


def member_document(
    *,
    member_id: str,
    name: str,
    roles: Sequence[str],
    keys: Sequence[VerifyingKey],
    purposes: Sequence[str] = (),
    grants: Sequence[str] = (),
    status: str = "active",
    provider: Mapping[str, Any] | None = None,
    rate_limit_per_second: int | None = None,
    witness: Mapping[str, Any] | None = None,
    identity_provider: Mapping[str, str] | None = None,
    client_ids: Mapping[str, str] | None = None,
    bulk_callback: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": member_id,
        "name": name,
        "roles": list(roles),
        "status": status,
        "keys": [{"jwk": dict(k.jwk), "not_before": None, "not_after": None} for k in keys],
        "permissions": {"purposes": list(purposes), "grants": list(grants)},
    }
    if provider is not None:
        document["provider"] = dict(provider)
    if rate_limit_per_second is not None:
        document["rate_limit_per_second"] = rate_limit_per_second
    if witness is not None:
        document["witness"] = dict(witness)
    if identity_provider is not None:
        document["identity_provider"] = dict(identity_provider)
    if client_ids:
        document["client_ids"] = dict(client_ids)
    if bulk_callback is not None:
        document["bulk_callback"] = bulk_callback
    return document


def sign_registry(
    *,
    members: Sequence[Mapping[str, Any]],
    purposes: Sequence[Mapping[str, Any]],
    checks: Sequence[Check | Mapping[str, Any]],
    seq: int,
    scheme: str,
    operator: str,
    key: Signer,
    now: int,
    lifetime: int = 30 * 24 * 3600,
    witness_policy: Mapping[str, Any] | None = None,
) -> str:
    """What the scheme operator runs to publish a registry (validated before it is signed)."""
    claims: dict[str, Any] = {
        "iss": operator,
        "aud": scheme,
        "iat": now,
        "exp": now + lifetime,
        "jti": new_jti(),
        "seq": seq,
        "members": [dict(m) for m in members],
        "purposes": [dict(p) for p in purposes],
        "checks": [check_document(c) if isinstance(c, Check) else dict(c) for c in checks],
    }
    if witness_policy is not None:
        claims["witness_policy"] = dict(witness_policy)
    parse_registry_claims(claims, digest="")
    return jws.sign(claims, key, jws.TRUST_REGISTRY)


def provider_fields(spec: AttributeSpec) -> tuple[str, ...]:
    return spec.required_fields + spec.optional_fields


def attribute_spec(registry: Registry, ref: AttributeRef) -> AttributeSpec:
    member = registry.members[ref.provider]
    if member.provider is None:
        raise RegistryError(f"{ref.provider} is not a provider")
    return member.provider.attributes[ref.attribute]
