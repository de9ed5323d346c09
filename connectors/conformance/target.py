"""Who the checker talks to and as whom: the target, the sample people, and reading a scheme
folder (as ``devscheme.generate`` or ``axb demo --keep`` write it) into a target.

For the reference providers the sample people come from the synthetic data: the test
identities, and for the vehicle providers the keepers of the taxed test vehicles. Nothing here
logs or prints a subject's identifiers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from connectors.config import (
    SchemeFiles,
    configured_signer,
    load_anchors,
    load_signing_key,
    read_toml,
)
from connectors.errors import ConfigError
from connectors.reference.keepers import NO_MATCH_REGISTRATION, PARKING_TEST_CASES
from connectors.reference.population import NO_MATCH_IDENTITY, TEST_IDENTITIES
from connectors.scheme_folder import SchemeFolder
from trust.errors import InvalidMessage, RegistryError
from trust.keys import Signer
from trust.messages import parse_subject
from trust.parameters import ParameterSpec, Predicate, check_bindings, parse_predicate
from trust.registry import ProviderInfo, Registry, provider_fields, verify_registry

API_PATH: Final = "/v1/attributes"


@dataclass(frozen=True, slots=True)
class ConformanceTarget:
    """Everything the checker needs to play the broker against one provider.

    ``known`` is a subject the provider knows (its answer must be ``match``) and
    ``attributes`` what to ask about them (and ``predicates``: its parameterised attributes,
    bound); ``unknown`` is a subject nobody matches. Both hold only fields the provider declared
    for those attributes. ``timeout_ms`` is the latency the registry declares for the provider.
    """

    provider_id: str
    endpoint: str
    registry: Registry = field(repr=False)
    broker_id: str
    broker_key: Signer = field(repr=False)
    other_member_id: str
    other_member_key: Signer = field(repr=False)
    known: Mapping[str, str] = field(repr=False)
    attributes: tuple[str, ...]
    unknown: Mapping[str, str] = field(repr=False)
    timeout_ms: int
    purpose: str = "provider-conformance"
    as_of: date | None = None
    predicates: tuple[Predicate, ...] = ()
    # what the registry declares for batches: at most this many items, sent there
    max_batch: int = 1
    batch_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Samples:
    """Who to ask about: a person the provider knows (and what to ask), and nobody."""

    known: Mapping[str, str] = field(repr=False)
    attributes: tuple[str, ...]
    unknown: Mapping[str, str] = field(repr=False)
    predicates: tuple[Predicate, ...] = ()


def _sample_value(spec: ParameterSpec) -> int | str:
    return spec.maximum if spec.type == "integer" and spec.maximum is not None else spec.choices[0]


def sample_predicates(registry: Registry, provider_id: str) -> tuple[Predicate, ...]:
    """Each parameterised attribute the provider offers, every parameter bound to a value its
    schema allows (an integer's maximum, a word's first choice)."""
    member = registry.members[provider_id]
    offered = member.provider.attributes if member.provider else {}
    return tuple(
        Predicate(name, tuple(sorted((p, _sample_value(spec)) for p, spec in a.parameters.items())))
        for name, a in sorted(offered.items())
        if a.parameters
    )


def _declared(registry: Registry, provider_id: str, attributes: Sequence[str]) -> set[str]:
    offered = registry.members[provider_id].provider
    assert offered is not None
    return {f for name in attributes for f in provider_fields(offered.attributes[name])}


def _known_subjects() -> Iterator[Mapping[str, str]]:
    """Subjects some reference provider knows, in order of preference: each test identity
    (DWP, HMRC), then each keeper of a taxed test vehicle with its registration (a parking
    "yes" case, so both the keeper register and the VES stub answer ``match`` for it)."""
    for person in TEST_IDENTITIES.values():
        yield person.matching_fields().as_subject()
    for _, subject, outcome in PARKING_TEST_CASES:
        if outcome == "yes":
            yield subject


def _unknown_subject() -> dict[str, str]:
    """The documented no-match identity, with a registration no vehicle provider knows."""
    return {**NO_MATCH_IDENTITY.as_subject(), "vehicle_registration": NO_MATCH_REGISTRATION}


def reference_samples(registry: Registry, provider_id: str) -> Samples:
    """Samples for a reference provider: every attribute it offers, asked about the known
    subject that fills the most declared fields; the documented no-match identity (and
    unknown registration), cut to the declared fields."""
    member = registry.members.get(provider_id)
    if member is None or member.provider is None:
        raise ConfigError(f"{provider_id} is not an attribute provider in the registry")
    offered = member.provider.attributes
    attributes = tuple(sorted(n for n, a in offered.items() if not a.parameters))[:64]
    predicates = sample_predicates(registry, provider_id)[:64]
    asked = [*attributes, *(p.attribute for p in predicates)]
    declared = _declared(registry, provider_id, asked)
    required = {f for n in asked for f in offered[n].required_fields}
    best: dict[str, str] | None = None
    for subject in _known_subjects():
        fields = {k: v for k, v in subject.items() if k in declared}
        if required <= set(fields) and (best is None or len(fields) > len(best)):
            best = fields
    if best is None:
        raise ConfigError(f"no test identity has the fields {provider_id} requires")
    unknown = {k: v for k, v in _unknown_subject().items() if k in declared}
    if not required <= set(unknown):
        raise ConfigError(f"the no-match identity lacks fields {provider_id} requires")
    return Samples(best, attributes, unknown, predicates)


def load_samples(path: Path, registry: Registry, provider_id: str) -> Samples:
    """Samples from a JSON file: ``{"known": {...}, "unknown": {...}, "attributes": [...],
    "predicates": [...]}`` (``attributes`` defaults to every yes/no attribute the registry says
    the provider offers, ``predicates`` to each parameterised one bound to sample values)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read subjects {path}: {exc}") from exc
    if not isinstance(document, dict) or not {"known", "unknown"} <= set(document):
        raise ConfigError('the subjects file needs "known" and "unknown" objects')
    member = registry.members.get(provider_id)
    offered = member.provider.attributes if member is not None and member.provider else {}
    attributes = document.get(
        "attributes", sorted(n for n, a in offered.items() if not a.parameters)
    )
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise ConfigError('"attributes" must be a list of attribute names')
    known, unknown = document["known"], document["unknown"]
    if not isinstance(known, dict) or not isinstance(unknown, dict):
        raise ConfigError('"known" and "unknown" must be objects of subject fields')
    if "predicates" in document:
        raw = document["predicates"]
        try:
            predicates = tuple(parse_predicate(p) for p in raw) if isinstance(raw, list) else None
        except ValueError as exc:
            raise ConfigError(f'"predicates": {exc}') from exc
        if predicates is None:
            raise ConfigError('"predicates" must be a list of {attribute, parameters}')
    else:
        predicates = sample_predicates(registry, provider_id) if member else ()
    return Samples(known, tuple(attributes), unknown, predicates)


def _default_member(registry: Registry, role: str, *, exclude: Sequence[str]) -> str:
    candidates = sorted(
        member.id
        for member in registry.members.values()
        if role in member.roles and member.active and member.id not in exclude
    )
    if not candidates:
        raise ConfigError(f"the registry has no active {role} to use")
    return candidates[0]


def _member_key(folder: SchemeFolder, registry: Registry, member_id: str) -> Signer:
    """The member's key file in the scheme folder or, where its keys are in a token (no key
    file), the key the member's own config names."""
    path = folder.key(member_id)
    key: Signer
    if path.exists():
        key = load_signing_key(path)
    else:
        configs = (
            folder.broker_config,
            folder.council_config(member_id),
            folder.auditor_config(member_id),
            folder.provider_config(member_id),
        )
        for config in configs:
            table = read_toml(config) if config.exists() else {}
            if member_id in (
                table.get("broker_id"),
                table.get("member_id"),
                table.get("provider_id"),
            ):
                key = configured_signer(config.parent, table.get("signing_key"), "signing_key")
                path = config
                break
        else:
            raise ConfigError(f"no key file and no config for {member_id} in the scheme folder")
    trusted = registry.key(key.kid)
    if trusted is None or trusted.owner != member_id:
        shown = path.relative_to(folder.root).as_posix()
        raise ConfigError(f"{shown} is not a key the registry gives {member_id}")
    return key


def load_scheme_registry(scheme_dir: Path, *, now: int | None = None) -> Registry:
    """Verify the scheme folder's registry against the anchors pinned in it (scheme and
    operator named by the broker's config, as every participant's config names them)."""
    folder = SchemeFolder(scheme_dir)
    table = read_toml(folder.broker_config)
    anchor_files = sorted(folder.anchors_dir.glob("*.jwk.json"))
    if not anchor_files:
        raise ConfigError(f"no anchors in {folder.anchors_dir}")
    anchors = load_anchors(
        folder.root,
        {
            "anchors": [str(path) for path in anchor_files],
            "scheme": table.get("scheme"),
            "operator": table.get("operator"),
        },
    )
    document = SchemeFiles(anchors, folder.registry).read_registry()
    try:
        return verify_registry(document, anchors, now=int(time.time()) if now is None else now)
    except RegistryError as exc:
        raise ConfigError(f"registry does not verify: {exc}") from exc


def target_from_scheme(
    scheme_dir: Path,
    *,
    endpoint: str,
    provider_id: str,
    as_broker: str | None = None,
    other_member: str | None = None,
    subjects: Path | None = None,
    now: int | None = None,
) -> ConformanceTarget:
    """A target from a scheme folder: verified registry, the broker's and another member's
    development keys, and sample subjects (reference ones unless ``subjects``).

    ``endpoint`` is the provider's attribute URL; a bare origin gets ``/v1/attributes``.
    """
    folder = SchemeFolder(scheme_dir)
    registry = load_scheme_registry(folder.root, now=now)
    member = registry.members.get(provider_id)
    if member is None or member.provider is None:
        raise ConfigError(f"{provider_id} is not an attribute provider in the registry")
    broker_id = as_broker or _default_member(registry, "broker", exclude=[provider_id])
    if broker_id not in registry.members or "broker" not in registry.members[broker_id].roles:
        raise ConfigError(f"{broker_id} is not a broker in the registry")
    other_id = other_member or _default_member(
        registry, "relying-party", exclude=[provider_id, broker_id]
    )
    if other_id in (provider_id, broker_id) or other_id not in registry.members:
        raise ConfigError(f"{other_id} must be another member of the registry")
    samples = (
        reference_samples(registry, provider_id)
        if subjects is None
        else load_samples(subjects, registry, provider_id)
    )
    _validate_samples(registry, provider_id, samples)
    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + API_PATH
    return ConformanceTarget(
        provider_id=provider_id,
        endpoint=endpoint,
        registry=registry,
        broker_id=broker_id,
        broker_key=_member_key(folder, registry, broker_id),
        other_member_id=other_id,
        other_member_key=_member_key(folder, registry, other_id),
        known=samples.known,
        attributes=samples.attributes,
        unknown=samples.unknown,
        timeout_ms=member.provider.timeout_ms,
        purpose=_purpose_for(registry, provider_id),
        predicates=samples.predicates,
        max_batch=member.provider.max_batch,
        batch_endpoint=_batch_endpoint(member.provider, endpoint),
    )


def _batch_endpoint(provider: ProviderInfo, endpoint: str) -> str | None:
    """The registry's batch endpoint, moved along with ``endpoint`` when the checker is
    pointed elsewhere (a staging copy) and the batch endpoint sits below the registered one."""
    batch = provider.batch_endpoint
    if batch is not None and endpoint != provider.endpoint and batch.startswith(provider.endpoint):
        return endpoint + batch[len(provider.endpoint) :]
    return batch


def _validate_samples(registry: Registry, provider_id: str, samples: Samples) -> None:
    member = registry.members[provider_id]
    assert member.provider is not None
    offered = member.provider.attributes
    unknown_names = [a for a in samples.attributes if a not in offered]
    if not (samples.attributes or samples.predicates) or unknown_names:
        raise ConfigError(f"attributes must be offered by {provider_id}: {unknown_names}")
    parameterised = [a for a in samples.attributes if offered[a].parameters]
    if parameterised:
        raise ConfigError(f"these take parameters: ask them as predicates: {parameterised}")
    for predicate in samples.predicates:
        spec = offered.get(predicate.attribute)
        if spec is None:
            raise ConfigError(f"predicate attribute not offered by {provider_id}: {predicate}")
        try:
            check_bindings(spec.parameters, predicate.parameters, str(predicate))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    asked = [*samples.attributes, *(p.attribute for p in samples.predicates)]
    declared = _declared(registry, provider_id, asked)
    for label, subject in (("known", samples.known), ("unknown", samples.unknown)):
        try:
            parse_subject(dict(subject), required=())
        except InvalidMessage as exc:
            raise ConfigError(f"{label} subject: {exc}") from exc
        extra = sorted(set(subject) - declared)
        if extra:
            raise ConfigError(f"{label} subject has fields {provider_id} did not declare: {extra}")


def _purpose_for(registry: Registry, provider_id: str) -> str:
    """A registered purpose whose checks use this provider (what a broker would send)."""
    for purpose in sorted(registry.purposes.values(), key=lambda p: p.id):
        for check_name in sorted(purpose.checks):
            check = registry.checks.get(check_name)
            if check is None:
                continue
            for version in check.versions:
                if any(ref.provider == provider_id for ref in version.attributes):
                    return purpose.id
    return "provider-conformance"
