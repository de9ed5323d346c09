"""A development scheme: every key, a signed registry and every config, written to a folder.

``axb demo`` builds one in a temporary folder (or keeps it with ``--keep DIR``); tests build
their own. Nothing here is for production: keys are unencrypted PEM files on disk, unless a
PKCS#11 token is named (``axb demo --pkcs11 URI``): then every signing key — the operator's,
each member's (the reference identity provider's too), the log's and the witnesses' — is
generated in that token, each config names its key by a ``pkcs11:`` URI, and no private key is
written anywhere.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.scheme.dev_tls import write_dev_tls
from connectors.config import operator_signing_key
from connectors.reference import identity as reference_identity
from connectors.reference.attributes import DWP_ATTRIBUTES, HMRC_ATTRIBUTES
from connectors.reference.blue_badges import BADGE_ATTRIBUTES
from connectors.reference.keepers import KEEPER_ATTRIBUTES, VES_ATTRIBUTES
from connectors.reference.predicates import DWP_PREDICATES
from connectors.scheme_folder import SchemeFolder
from trust.checkpoint import generate_signer
from trust.cosignature import generate_cosigner
from trust.keys import Signer, SigningKey, VerifyingKey
from trust.registry import member_document, sign_registry

if TYPE_CHECKING:  # PKCS#11 is loaded only for a scheme whose keys are in a token
    from connectors.pkcs11 import Pkcs11Uri, TokenSigningKey

SCHEME = "urn:ax-broker:scheme:dev"
OPERATOR = "scheme-operator"
BROKER = "axb-broker"
COUNCIL_BLUE_BADGE = "council-warwickshire-blue-badge"
COUNCIL_SCHOOLS = "council-coventry-schools"
COUNCIL_PARKING = "council-warwick-district-parking"
COUNCIL_TAX_COVENTRY = "council-coventry-council-tax"
COUNCIL_TAX_WARWICK = "council-warwick-district-council-tax"
DWP = "dwp-reference"
HMRC = "hmrc-reference"
DVLA_KEEPER = "dvla-keeper-reference"
DVLA_VES = "dvla-ves"
BLUE_BADGE_REGISTER = "council-warwickshire-blue-badge-register"
AUDITOR = "auditor-ico"
IDP = "idp-reference"  # a One Login-style identity provider (connectors.reference.identity)
MEMBERS = (
    BROKER,
    COUNCIL_BLUE_BADGE,
    COUNCIL_SCHOOLS,
    COUNCIL_PARKING,
    DWP,
    HMRC,
    DVLA_KEEPER,
    DVLA_VES,
    AUDITOR,
    IDP,
    COUNCIL_TAX_COVENTRY,
    COUNCIL_TAX_WARWICK,
    BLUE_BADGE_REGISTER,
)
COUNCILS = (
    COUNCIL_BLUE_BADGE,
    COUNCIL_SCHOOLS,
    COUNCIL_PARKING,
    COUNCIL_TAX_COVENTRY,
    COUNCIL_TAX_WARWICK,
)
PROVIDERS = (DWP, HMRC, DVLA_KEEPER, DVLA_VES, BLUE_BADGE_REGISTER)
# Each council's client id at the identity provider: a credential's ``aud``.
CLIENT_IDS = {
    COUNCIL_BLUE_BADGE: "wcc-blue-badge-7f3a",
    COUNCIL_SCHOOLS: "ccc-school-admissions-21c4",
    COUNCIL_PARKING: "wdc-parking-9b0e",
}
# The broker's own client id at the identity provider: residents sign in to its resident page.
RESIDENT_PAGE_CLIENT_ID = "axb-resident-page"
# The Blue Badge purpose for online applications: the resident's identity must come from a
# credential of vot P2 or above, issued at most an hour before the check.
BLUE_BADGE_ONLINE = "blue-badge-online-application"
REFERENCE_KIND = {
    DWP: "dwp",
    HMRC: "hmrc",
    DVLA_KEEPER: "dvla-keeper",
    DVLA_VES: "dvla-ves",
    BLUE_BADGE_REGISTER: "council-blue-badge",
}
VES_STUB = "dvla-ves-stub"
PSEUDONYM_KEY_ID = "pk-dev-1"
LOG_ORIGIN = "axb.dev/consent-log"
WITNESSES = ("witness-a", "witness-b")  # served when a scheme is generated with witness ports
WITNESS_GROUP = "dev-witnesses"
LOG_OBJECT = "consent-log"  # the checkpoint key's label when it is in a token

BLUE_BADGE_CHECK = "blue-badge-automatic"
FSM_CHECK = "free-school-meals"
PARKING_CHECK = "resident-parking-permit"
CTR_CHECK = "council-tax-reduction"
CONCESSIONARY_TRAVEL_CHECK = "concessionary-travel-disabled"
TWO_YEAR_OFFER_CHECK = "two-year-offer"
UC_RULE_CHANGE = "2026-09-01"
COVENTRY_CTR_CHANGE = "2026-04-01"

_BLUE_BADGE_ATTRIBUTES = (
    "dla-higher-rate-mobility",
    "pip-moving-around-8-plus",
    "pip-planning-journeys-10",
    "registered-blind",
    "war-pensioners-mobility-supplement",
    "afcs-tariff-1-8-walking-disability",
)
_FSM_DWP = (
    "income-support",
    "jsa-income-based",
    "esa-income-related",
    "asylum-support-part-vi",
    "pension-credit-guarantee",
)
_FSM_HMRC = ("ctc-without-wtc-income-under-16190", "wtc-run-on")


def _any(*refs: str) -> dict[str, Any]:
    return {"any": [{"attribute": ref} for ref in refs]}


def reference_checks() -> list[dict[str, Any]]:
    """The reference rules of DOMAIN.md, as registry check documents."""
    fsm_common = [f"{DWP}/{a}" for a in _FSM_DWP] + [f"{HMRC}/{a}" for a in _FSM_HMRC]
    return [
        {
            "name": BLUE_BADGE_CHECK,
            "description": "Blue Badge automatic eligibility (England) through a benefit",
            "versions": [
                {
                    "version": 1,
                    "effective_from": "2019-08-30",
                    "effective_to": None,
                    "min_assurance": "P1",
                    "rule": _any(*(f"{DWP}/{a}" for a in _BLUE_BADGE_ATTRIBUTES)),
                }
            ],
        },
        {
            "name": FSM_CHECK,
            "description": "Free school meals (England): parent or carer's qualifying benefit",
            "versions": [
                {
                    "version": 1,
                    "effective_from": "2018-04-01",
                    "effective_to": "2026-08-31",
                    "min_assurance": "P1",
                    "rule": _any(*fsm_common, f"{DWP}/universal-credit-earnings-under-7400"),
                },
                {
                    "version": 2,
                    "effective_from": UC_RULE_CHANGE,
                    "effective_to": None,
                    "min_assurance": "P1",
                    "rule": _any(*fsm_common, f"{DWP}/universal-credit"),
                },
            ],
        },
        parking_check(),
        council_tax_reduction_check(),
        concessionary_travel_check(),
        two_year_offer_check(),
    ]


def _take_home_below(amount_pence: int) -> dict[str, Any]:
    return {
        "attribute": f"{DWP}/uc-take-home-pay-below",
        "parameters": {"periods": 1, "amount_pence": amount_pence},
    }


def _take_home_measure() -> dict[str, Any]:
    """UC take-home pay in the last assessment period; each band binds its ``amount_pence``."""
    return {"attribute": f"{DWP}/uc-take-home-pay-below", "parameters": {"periods": 1}}


def _ctr_bands(*bands: tuple[str, int]) -> dict[str, Any]:
    return {
        "measure": _take_home_measure(),
        "threshold": "amount_pence",
        "order": [{"band": name, "below": below} for name, below in bands],
    }


def council_tax_reduction_check() -> dict[str, Any]:
    """Working-age council tax reduction: a local scheme, each council its own bands over
    Universal Credit take-home pay in the last assessment period (in pence), date-effective.
    Coventry changed its bands on 1 April 2026; Warwick District protects residents with PIP
    points for moving around (77 %) and gives others 50 %."""
    protected = {
        "attribute": f"{DWP}/pip-moving-around-points-at-least",
        "parameters": {"points": 8},
    }
    uc = {"attribute": f"{DWP}/universal-credit"}
    coventry = [("reduction-75", 100_000), ("reduction-50", 150_000), ("reduction-25", 200_000)]
    return {
        "name": CTR_CHECK,
        "description": "Council tax reduction (working age): the band of the council's scheme",
        "versions": [
            {
                "version": 1,
                "effective_from": "2025-04-01",
                "effective_to": "2026-03-31",
                "min_assurance": "P1",
                "councils": [COUNCIL_TAX_COVENTRY],
                "rule": uc,
                "bands": _ctr_bands(
                    ("reduction-85", 70_000),
                    ("reduction-75", 100_000),
                    ("reduction-50", 150_000),
                    ("reduction-25", 200_000),
                ),
            },
            {
                "version": 2,
                "effective_from": COVENTRY_CTR_CHANGE,
                "effective_to": None,
                "min_assurance": "P1",
                "councils": [COUNCIL_TAX_COVENTRY],
                "rule": uc,
                "bands": _ctr_bands(("reduction-85", 50_000), *coventry),
            },
            {
                "version": 3,
                "effective_from": "2025-04-01",
                "effective_to": None,
                "min_assurance": "P1",
                "councils": [COUNCIL_TAX_WARWICK],
                "rule": uc,
                "bands": {
                    "measure": _take_home_measure(),
                    "threshold": "amount_pence",
                    "order": [
                        {"band": "protected-77", "below": 150_000, "when": protected},
                        {"band": "standard-50", "below": 150_000},
                    ],
                },
            },
        ],
    }


def concessionary_travel_check() -> dict[str, Any]:
    """ENCTS disabled person's bus pass: DLA higher-rate mobility, or PIP with at least 8
    points for moving around, or registered blind (DWP), or holding a Blue Badge (the
    council's own register, served as a provider)."""
    return {
        "name": CONCESSIONARY_TRAVEL_CHECK,
        "description": "Concessionary bus travel (ENCTS), disabled categories",
        "versions": [
            {
                "version": 1,
                "effective_from": "2013-04-08",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": {
                    "any": [
                        {"attribute": f"{DWP}/dla-higher-rate-mobility"},
                        {
                            "attribute": f"{DWP}/pip-moving-around-points-at-least",
                            "parameters": {"points": 8},
                        },
                        {"attribute": f"{DWP}/registered-blind"},
                        {"attribute": f"{BLUE_BADGE_REGISTER}/blue-badge-holder"},
                    ]
                },
            }
        ],
    }


def two_year_offer_check() -> dict[str, Any]:
    """The early-years offer for two-year-olds through a benefit: the legacy income benefits,
    or Universal Credit with take-home pay below 128,334 p in the last assessment period (the
    threshold DfE's eligibility engine uses, £15,400 a year)."""
    return {
        "name": TWO_YEAR_OFFER_CHECK,
        "description": "Early years: 15 hours for two-year-olds, through a parent's benefit",
        "versions": [
            {
                "version": 1,
                "effective_from": "2014-09-01",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": {
                    "any": [
                        *({"attribute": f"{DWP}/{a}"} for a in _FSM_DWP),
                        _take_home_below(128_334),
                    ]
                },
            }
        ],
    }


def parking_check() -> dict[str, Any]:
    return {
        "name": PARKING_CHECK,
        "description": "Resident parking permit: the resident keeps this vehicle and it is taxed",
        "versions": [
            {
                "version": 1,
                "effective_from": "2020-01-01",
                "effective_to": None,
                "min_assurance": "P1",
                "rule": {
                    "all": [
                        {"attribute": f"{DVLA_KEEPER}/registered-keeper"},
                        {"attribute": f"{DVLA_VES}/vehicle-taxed"},
                    ]
                },
            }
        ],
    }


def reference_purposes() -> list[dict[str, Any]]:
    return [
        {
            "id": "blue-badge-application",
            "description": "Deciding a Blue Badge application or renewal",
            "checks": [BLUE_BADGE_CHECK],
            "lawful_bases": ["public-task", "consent"],
            "consent_required": False,
        },
        {
            "id": BLUE_BADGE_ONLINE,
            "description": "Deciding a Blue Badge application made online, identity proven "
            "with the identity provider",
            "checks": [BLUE_BADGE_CHECK],
            "lawful_bases": ["public-task", "consent"],
            "consent_required": False,
            "identity": {"source": "credential", "min_vot": "P2", "max_age_s": 3600},
        },
        {
            "id": "free-school-meals-application",
            "description": "Deciding a free school meals application",
            "checks": [FSM_CHECK],
            "lawful_bases": ["public-task"],
            "consent_required": False,
        },
        {
            "id": "resident-parking-permit-application",
            "description": "Deciding a resident parking permit application",
            "checks": [PARKING_CHECK],
            "lawful_bases": ["public-task"],
            "consent_required": False,
        },
        {
            "id": "council-tax-reduction-application",
            "description": "Deciding a working-age council tax reduction claim",
            "checks": [CTR_CHECK],
            "lawful_bases": ["public-task"],
            "consent_required": False,
        },
        {
            "id": "concessionary-travel-application",
            "description": "Deciding a disabled person's bus pass application",
            "checks": [CONCESSIONARY_TRAVEL_CHECK],
            "lawful_bases": ["public-task", "consent"],
            "consent_required": False,
        },
        {
            "id": "early-years-application",
            "description": "Deciding a two-year-old's early years place",
            "checks": [TWO_YEAR_OFFER_CHECK],
            "lawful_bases": ["public-task"],
            "consent_required": False,
        },
        {
            "id": "school-uniform-grant",
            "description": "A discretionary grant offered only with the parent's consent",
            "checks": [FSM_CHECK],
            "lawful_bases": ["consent"],
            "consent_required": True,
        },
    ]


# The reference providers (not the DVLA VES adapter) take batches of up to this many items.
REFERENCE_BATCH = 250


def provider_metadata(
    endpoint: str,
    offered: Mapping[str, str],
    *,
    required: Sequence[str] = ("family_name", "date_of_birth"),
    optional: Sequence[str] = ("nino",),
    parameterised: Mapping[str, Mapping[str, Any]] | None = None,
    max_batch: int = 1,
) -> dict[str, Any]:
    """A provider's registry metadata: its ``offered`` yes/no attributes (name: description),
    its ``parameterised`` ones (name: description and parameter schema) and, above 1, how
    many items one batch request may carry (``max_batch``, sent to ``{endpoint}/batch``)."""
    matching = {"required": list(required), "optional": list(optional)}
    batching = {"max_batch": max_batch, "batch_endpoint": endpoint + "/batch"}
    return {
        "endpoint": endpoint,
        "timeout_ms": 2000,
        **(batching if max_batch > 1 else {}),
        "attributes": [
            *(
                {"name": name, "description": description, "matching": matching}
                for name, description in offered.items()
            ),
            *(
                {
                    "name": name,
                    "description": spec["description"],
                    "matching": matching,
                    "parameters": copy.deepcopy(dict(spec["parameters"])),
                }
                for name, spec in (parameterised or {}).items()
            ),
        ],
    }


def bind_loopback(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1 and not yet listening.

    With ``port`` 0 the kernel chooses a port no one holds. Whoever reads the port off this
    socket may name it in a config: the server that later serves the socket (asyncio starts
    it listening) cannot lose the port to anyone, and until then a connection to it is
    refused, as if nothing were there. A nonzero ``port`` is for a server restarted on the
    port it has just released: SO_REUSEADDR, as servers set it, binds past the TIME_WAIT of
    the old server's connections.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class SchemePorts:
    """The loopback ports a development scheme names in its registry and configs."""

    broker: int
    providers: Mapping[str, int]
    ves_stub: int
    witnesses: Mapping[str, int] = field(default_factory=dict)
    identity: int | None = None  # the reference identity provider's sign-in


class Listeners:
    """One loopback socket, bound to port 0 and held, for each server of a development
    scheme (the broker, each provider, the VES stub).

    The scheme must name its servers' ports before they start, so the ports are bound first:
    ``generate(root, ports=listeners.ports)`` writes them, then each server serves its own
    socket (``web.SockSite``) or a child process inherits it (``--listen-fd``). A socket no
    server has taken refuses connections, as a port with nothing on it would; ``close``
    releases whatever no server took over.
    """

    def __init__(
        self, provider_ids: Sequence[str] = PROVIDERS, *, witnesses: Sequence[str] = ()
    ) -> None:
        self._held: list[socket.socket] = []
        try:
            self.broker = self._bind()
            self.providers = {pid: self._bind() for pid in provider_ids}
            self.ves_stub = self._bind()
            self.witnesses = {wid: self._bind() for wid in witnesses}
            self.identity = self._bind()
        except BaseException:
            self.close()
            raise

    def _bind(self) -> socket.socket:
        sock = bind_loopback()
        self._held.append(sock)
        return sock

    @property
    def ports(self) -> SchemePorts:
        return SchemePorts(
            broker=_port_of(self.broker),
            providers={pid: _port_of(sock) for pid, sock in self.providers.items()},
            ves_stub=_port_of(self.ves_stub),
            witnesses={wid: _port_of(sock) for wid, sock in self.witnesses.items()},
            identity=_port_of(self.identity),
        )

    def close(self) -> None:
        for sock in self._held:
            sock.close()

    def __enter__(self) -> Listeners:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# A scheme for deploy/compose.yaml: every server listens on 0.0.0.0:8080 in its own container
# and is reached by its compose service name, which is its member id (the VES stub's is
# VES_STUB); members on the host reach the brokers through nginx, published on 127.0.0.1:8080.
COMPOSE_PORT = 8080
COMPOSE_BROKER_URL = "http://127.0.0.1:8080"
COMPOSE_CONSENT_LOG = "postgresql://postgres@postgres:5432/axb"
COMPOSE_REDIS_URL = "redis://redis:6379/0"
IMAGE_GID = 10001  # the image's group (deploy/Dockerfile): it must be able to read the keys


def compose_ports() -> SchemePorts:
    return SchemePorts(
        broker=COMPOSE_PORT,
        providers=dict.fromkeys(PROVIDERS, COMPOSE_PORT),
        ves_stub=COMPOSE_PORT,
    )


@dataclass(frozen=True)
class DevScheme:
    """Paths and ports of a generated scheme."""

    root: Path
    broker_port: int
    provider_ports: Mapping[str, int]
    ves_stub_port: int
    witness_ports: Mapping[str, int] = field(default_factory=dict)

    def witness_config(self, witness_id: str) -> Path:
        return self.root / "witnesses" / f"{witness_id}.toml"

    def witness_vkey(self, witness_id: str) -> Path:
        return self.root / "public" / f"{witness_id}.vkey"

    identity_port: int | None = None

    @property
    def identity_url(self) -> str | None:
        return None if self.identity_port is None else identity_url(self.identity_port)

    for_compose: bool = False

    @property
    def listen_host(self) -> str:
        return "0.0.0.0" if self.for_compose else "127.0.0.1"  # noqa: S104 - in a container

    def _url(self, service: str, port: int) -> str:
        return f"http://{service if self.for_compose else '127.0.0.1'}:{port}"

    def provider_endpoint(self, provider_id: str) -> str:
        """Loopback http, or https by service name in a compose scheme (the registry takes
        plain http on loopback only)."""
        port = self.provider_ports[provider_id]
        if self.for_compose:
            return f"https://{provider_id}:{port}/v1/attributes"
        return f"http://127.0.0.1:{port}/v1/attributes"

    @property
    def provider_endpoints(self) -> dict[str, str]:
        return {pid: self.provider_endpoint(pid) for pid in self.provider_ports}

    @property
    def ves_stub_url(self) -> str:
        return self._url(VES_STUB, self.ves_stub_port)

    @property
    def folder(self) -> SchemeFolder:
        return SchemeFolder(self.root)

    @property
    def ves_api_key(self) -> str:
        return self.folder.secret("dvla-ves-api.key").read_text().strip()

    @property
    def broker_config(self) -> Path:
        return self.folder.broker_config

    @property
    def broker_url(self) -> str:
        if self.for_compose:
            return COMPOSE_BROKER_URL
        return f"http://127.0.0.1:{self.broker_port}"

    def provider_config(self, provider_id: str) -> Path:
        return self.folder.provider_config(provider_id)

    def council_config(self, member_id: str) -> Path:
        return self.folder.council_config(member_id)

    def key_path(self, member_id: str) -> Path:
        return self.folder.key(member_id)

    @property
    def registry_path(self) -> Path:
        return self.folder.registry

    @property
    def operator_key_path(self) -> Path:
        return self.folder.operator_key


def _write(path: Path, text: str | bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    if private:
        path.chmod(0o600)


def share_with_image(scheme: DevScheme) -> list[Path]:
    """Let the image's group (``IMAGE_GID``) read the members' keys and the broker's secrets,
    as the documented convention asks (group 10001, mode 0640); the operator's key stays
    0600. Returns the files this process may not give away (it is not root): the user runs
    ``chgrp`` on them."""
    refused: list[Path] = []
    for folder in (scheme.root / "keys", scheme.root / "secrets"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                os.chown(path, -1, IMAGE_GID)
            except PermissionError:
                refused.append(path)
            path.chmod(0o640)
    return refused


def _scheme_toml(registry: str = "registry.jwt", up: str = "") -> str:
    return (
        f'scheme = "{SCHEME}"\noperator = "{OPERATOR}"\n'
        f'anchors = ["{up}anchors/{OPERATOR}-1.jwk.json"]\nregistry = "{up}{registry}"\n'
    )


def identity_url(port: int) -> str:
    """Where the reference identity provider's sign-in is served in a development scheme."""
    return f"http://127.0.0.1:{port}"


def _resident_toml(broker_url: str, identity_port: int) -> str:
    idp = identity_url(identity_port)
    return (
        f'[resident]\nidentity_provider = "{IDP}"\nauthorize_url = "{idp}/authorize"\n'
        f'token_url = "{idp}/token"\npublic_url = "{broker_url}"\n\n'
    )


def registry_members(
    keys: Mapping[str, Signer],
    provider_ports: Mapping[str, int],
    *,
    suspended: Sequence[str],
    endpoints: Mapping[str, str] | None = None,
    callbacks: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The registry's members; each provider's endpoint on loopback at its port, or as
    ``endpoints`` names it (a compose scheme: service names); a council's bulk-notice callback
    where ``callbacks`` names one."""

    def status(member_id: str) -> str:
        return "suspended" if member_id in suspended else "active"

    def endpoint(provider_id: str) -> str:
        if endpoints is not None:
            return endpoints[provider_id]
        return f"http://127.0.0.1:{provider_ports[provider_id]}/v1/attributes"

    def council(member_id: str, name: str, *purposes: str) -> dict[str, Any]:
        return member_document(
            member_id=member_id,
            name=name,
            roles=["relying-party"],
            keys=[keys[member_id].verifying_key],
            purposes=purposes,
            status=status(member_id),
            client_ids={IDP: CLIENT_IDS[member_id]} if member_id in CLIENT_IDS else None,
            bulk_callback=(callbacks or {}).get(member_id),
        )

    return [
        member_document(
            member_id=BROKER,
            name="ax-broker (development)",
            roles=["broker"],
            keys=[keys[BROKER].verifying_key],
            status=status(BROKER),
            client_ids={IDP: RESIDENT_PAGE_CLIENT_ID},
        ),
        council(
            COUNCIL_BLUE_BADGE,
            "Warwickshire County Council — Blue Badge team",
            "blue-badge-application",
            BLUE_BADGE_ONLINE,
            "concessionary-travel-application",
        ),
        council(
            COUNCIL_SCHOOLS,
            "Coventry City Council — School admissions",
            "free-school-meals-application",
            "school-uniform-grant",
        ),
        member_document(
            member_id=DWP,
            name="DWP-style reference provider (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[DWP].verifying_key],
            status=status(DWP),
            provider=provider_metadata(
                endpoint(DWP),
                DWP_ATTRIBUTES,
                parameterised=DWP_PREDICATES,
                max_batch=REFERENCE_BATCH,
            ),
        ),
        member_document(
            member_id=HMRC,
            name="HMRC-style reference provider (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[HMRC].verifying_key],
            status=status(HMRC),
            provider=provider_metadata(endpoint(HMRC), HMRC_ATTRIBUTES, max_batch=REFERENCE_BATCH),
        ),
        council(
            COUNCIL_PARKING,
            "Warwick District Council — Parking services",
            "resident-parking-permit-application",
        ),
        member_document(
            member_id=DVLA_KEEPER,
            name="DVLA-style keeper register (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[DVLA_KEEPER].verifying_key],
            status=status(DVLA_KEEPER),
            provider=provider_metadata(
                endpoint(DVLA_KEEPER),
                KEEPER_ATTRIBUTES,
                required=("family_name", "date_of_birth", "vehicle_registration"),
                optional=(),
                max_batch=REFERENCE_BATCH,
            ),
        ),
        member_document(
            member_id=DVLA_VES,
            name="DVLA Vehicle Enquiry Service (adapter)",
            roles=["attribute-provider"],
            keys=[keys[DVLA_VES].verifying_key],
            status=status(DVLA_VES),
            provider=provider_metadata(
                endpoint(DVLA_VES),
                VES_ATTRIBUTES,
                required=("vehicle_registration",),
                optional=(),
            ),
        ),
        council(
            COUNCIL_TAX_COVENTRY,
            "Coventry City Council — Council tax",
            "council-tax-reduction-application",
        ),
        council(
            COUNCIL_TAX_WARWICK,
            "Warwick District Council — Council tax",
            "council-tax-reduction-application",
        ),
        member_document(
            member_id=BLUE_BADGE_REGISTER,
            name="Warwickshire County Council — Blue Badge register (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[BLUE_BADGE_REGISTER].verifying_key],
            status=status(BLUE_BADGE_REGISTER),
            provider=provider_metadata(
                endpoint(BLUE_BADGE_REGISTER),
                BADGE_ATTRIBUTES,
                optional=("postcode",),
            ),
        ),
        member_document(
            member_id=AUDITOR,
            name="Information Commissioner's Office (development)",
            roles=["auditor"],
            keys=[keys[AUDITOR].verifying_key],
            grants=["subject-access"],
            status=status(AUDITOR),
        ),
        member_document(
            member_id=IDP,
            name="Reference identity provider, One Login-style (synthetic identities)",
            roles=["identity-provider"],
            keys=[reference_identity.did_verifying_key(keys[IDP].verifying_key)],
            status=status(IDP),
            identity_provider={"issuer": reference_identity.ISSUER, "did": reference_identity.DID},
        ),
    ]


def member_keys(scheme: DevScheme) -> dict[str, SigningKey]:
    """Every member's signing key, read from the scheme folder."""
    members = (*MEMBERS, *scheme.witness_ports)
    return {m: SigningKey.from_pem(scheme.key_path(m).read_bytes()) for m in members}


def witness_members(scheme: DevScheme, keys: Mapping[str, Signer]) -> list[dict[str, Any]]:
    """The scheme's witnesses as registry members: each with its cosignature key and URL."""
    return [
        member_document(
            member_id=wid,
            name=f"Independent witness {wid[-1].upper()} (development)",
            roles=["witness"],
            keys=[keys[wid].verifying_key],
            witness={
                "vkey": scheme.witness_vkey(wid).read_text().strip(),
                "url": f"http://127.0.0.1:{port}",
            },
        )
        for wid, port in scheme.witness_ports.items()
    ]


def witness_policy(scheme: DevScheme) -> dict[str, Any] | None:
    """Every witness of the scheme must cosign (k = n), or no policy without witnesses."""
    if not scheme.witness_ports:
        return None
    ids = list(scheme.witness_ports)
    return {"groups": [{"name": WITNESS_GROUP, "k": len(ids), "of": ids}], "quorum": WITNESS_GROUP}


def publish_registry(
    scheme: DevScheme,
    *,
    seq: int,
    suspended: Sequence[str] = (),
    lifetime: int = 30 * 86400,
    now: int | None = None,
    callbacks: Mapping[str, str] | None = None,
) -> str:
    """Sign and write a registry for ``scheme`` (the scheme operator's job); ``callbacks``: the
    bulk-notice URL of each council that has one."""
    operator = operator_signing_key(scheme.folder)
    keys = {
        m: _Registered(VerifyingKey.from_jwk(json.loads(p.read_text())))
        for m, p in ((m, scheme.folder.public_key(m)) for m in (*MEMBERS, *scheme.witness_ports))
    }
    members = registry_members(
        keys,
        scheme.provider_ports,
        suspended=suspended,
        endpoints=scheme.provider_endpoints,
        callbacks=callbacks,
    )
    members += witness_members(scheme, keys)
    policy = witness_policy(scheme)
    source = {
        "scheme": SCHEME,
        "operator": OPERATOR,
        "seq": seq,
        "members": members,
        "purposes": reference_purposes(),
        "checks": reference_checks(),
        **({"witness_policy": policy} if policy else {}),
    }
    source_file = scheme.folder.registry_source
    source_file.write_text(json.dumps(source, indent=2, ensure_ascii=False) + "\n")
    token = sign_registry(
        members=members,
        purposes=reference_purposes(),
        checks=reference_checks(),
        seq=seq,
        scheme=SCHEME,
        operator=OPERATOR,
        key=operator,
        now=int(time.time()) if now is None else now,
        lifetime=lifetime,
        witness_policy=policy,
    )
    tmp = scheme.registry_path.with_suffix(".tmp")
    _write(tmp, token + "\n")
    tmp.replace(scheme.registry_path)  # atomic: a polling broker never reads half a file
    return token


@dataclass(frozen=True, slots=True)
class _Registered:
    """A member's registered public key, as the registry needs it (no private half)."""

    verifying_key: VerifyingKey

    @property
    def kid(self) -> str:
        return self.verifying_key.kid

    def sign(self, data: bytes) -> bytes:
        raise TypeError("a registered public key cannot sign")


def _token_key(token: Pkcs11Uri, label: str) -> TokenSigningKey:
    """A new ES256 key generated inside ``token`` under ``label``."""
    from connectors.pkcs11 import generate_in_token, load_token_signing_key

    return load_token_signing_key(generate_in_token(str(token.with_object(label)), "es256"))


def generate(
    root: Path,
    *,
    ports: SchemePorts,
    redis_url: str = "",
    token: Pkcs11Uri | None = None,
    for_compose: bool = False,
) -> DevScheme:
    """Write a complete development scheme into ``root``, naming ``ports`` for its servers.

    ``for_compose``: a scheme for deploy/compose.yaml (``ports`` then ``compose_ports()``):
    servers listen on 0.0.0.0 and are named by service, the brokers share Redis and the
    PostgreSQL log, and members reach the brokers through nginx (``share_with_image`` then
    lets the image read the keys).

    The ports must belong to listening sockets the caller holds (``Listeners.ports``) until
    its servers serve them: a port merely found free may be taken by anyone before a server
    binds it. (A scheme kept on disk and served later with ``axb serve`` binds the ports its
    configs name: that is the user's machine, where nothing else is racing for them.)
    """
    root.mkdir(parents=True, exist_ok=True)
    scheme = DevScheme(
        root,
        ports.broker,
        dict(ports.providers),
        ports.ves_stub,
        dict(ports.witnesses),
        ports.identity,
        for_compose=for_compose,
    )
    consent_log = COMPOSE_CONSENT_LOG if for_compose else "log/consent-log.sqlite3"
    redis_url = COMPOSE_REDIS_URL if for_compose else redis_url
    folder = scheme.folder
    names: dict[str, str] = {}  # how the configs name each member's key, if in the token
    operator: Signer
    if token is None:
        file_operator = SigningKey.generate()
        _write(scheme.operator_key_path, file_operator.to_pem(), private=True)
        operator = file_operator
    else:
        operator = _token_key(token, OPERATOR)
        _write(folder.operator_config, f'signing_key = "{token.with_object(OPERATOR)}"\n')
    _write(folder.anchor(OPERATOR), json.dumps(dict(operator.verifying_key.jwk)))
    for member in (*MEMBERS, *scheme.witness_ports):
        if token is None:
            file_key = SigningKey.generate()
            _write(scheme.key_path(member), file_key.to_pem(), private=True)
            public = file_key.verifying_key
        else:
            public = _token_key(token, member).verifying_key
            names[member] = str(token.with_object(member))
        _write(folder.public_key(member), json.dumps(dict(public.jwk)))
    if token is not None:  # the identity provider's key too; its pairwise subs from a secret
        _write(folder.secret(f"{IDP}-sub.key"), secrets.token_hex(32) + "\n", private=True)
        _write(
            folder.identity_config(IDP),
            f'signing_key = "{names[IDP]}"\nsub_secret_file = "../secrets/{IDP}-sub.key"\n',
        )
    idp = reference_identity.load_reference_identity_provider(folder, IDP)
    _write(folder.did_document(IDP), json.dumps(idp.did_document(), indent=2))
    _write(folder.secret("dvla-ves-api.key"), secrets.token_urlsafe(24) + "\n", private=True)
    secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    _write(folder.secret(f"{PSEUDONYM_KEY_ID}.key"), secret + "\n", private=True)
    if token is None:
        log_skey, log_vkey = generate_signer(LOG_ORIGIN)
        _write(folder.secret("log.skey"), log_skey + "\n", private=True)
        log_key = "secrets/log.skey"
    else:
        from connectors.pkcs11 import generate_in_token, load_token_note_signer

        log_key = generate_in_token(str(token.with_object(LOG_OBJECT)), "ed25519")
        log_vkey = load_token_note_signer(log_key, LOG_ORIGIN).vkey
    _write(folder.log_verifier_key, log_vkey + "\n")
    for wid, port in scheme.witness_ports.items():
        w_name = f"witness.dev/{wid.removeprefix('witness-')}"
        if token is None:
            w_skey, w_vkey = generate_cosigner(w_name)
            _write(folder.secret(f"{wid}.skey"), w_skey + "\n", private=True)
            w_key = f'key_file = "../secrets/{wid}.skey"\n'
        else:  # in production each witness's own token; here labels of the scheme's one
            from connectors.pkcs11 import generate_in_token, load_token_cosigner

            w_uri = generate_in_token(str(token.with_object(f"{wid}-cosigning")), "ed25519")
            w_vkey = load_token_cosigner(w_uri, w_name).vkey
            w_key = f'key = "{w_uri}"\nname = "{w_name}"\n'
        _write(scheme.witness_vkey(wid), w_vkey + "\n")
        _write(
            scheme.witness_config(wid),
            f'# A witness run by another operator than the log\nhost = "127.0.0.1"\nport = {port}\n'
            f'{w_key}state = "{wid}/state.sqlite3"\n\n'
            '[[logs]]\nvkey_file = "../public/log.vkey"\n',
        )
    publish_registry(scheme, seq=1)

    def key_of(member: str, up: str = "") -> str:
        return names.get(member, f"{up}keys/{member}.pem")

    _write(
        scheme.broker_config,
        f'broker_id = "{BROKER}"\nhost = "{scheme.listen_host}"\nport = {scheme.broker_port}\n'
        f'signing_key = "{key_of(BROKER)}"\n' + _scheme_toml() + f'consent_log = "{consent_log}"\n'
        f'redis_url = "{redis_url}"\nrate_limit_per_second = 50\ncheck_deadline_ms = 3000\n'
        "leeway_s = 30\nregistry_poll_s = 0.5\n\n"
        # [pseudonym] stays last: operators (and tests) append [[pseudonym.previous]] to it
        + ("" if ports.identity is None else _resident_toml(scheme.broker_url, ports.identity))
        + f'[log]\nsigning_key = "{log_key}"\norigin = "{LOG_ORIGIN}"\n'
        "checkpoint_every_records = 1000\n"
        "checkpoint_every_seconds = 5.0\n\n[pseudonym]\n"
        f'key_id = "{PSEUDONYM_KEY_ID}"\nkey_file = "secrets/{PSEUDONYM_KEY_ID}.key"\n',
    )
    if for_compose:
        write_dev_tls(folder.dev_ca, tuple(scheme.provider_ports), folder.secret("tls"))
    for provider_id, port in scheme.provider_ports.items():
        tls = (
            f'tls_cert = "../secrets/tls/{provider_id}.crt"\n'
            f'tls_key = "../secrets/tls/{provider_id}.key"\n'
            if for_compose
            else ""
        )
        _write(
            scheme.provider_config(provider_id),
            f'provider_id = "{provider_id}"\nreference = "{REFERENCE_KIND[provider_id]}"\n'
            f'host = "{scheme.listen_host}"\nport = {port}\n'
            f'signing_key = "{key_of(provider_id, "../")}"\n'
            + tls
            + _scheme_toml(up="../")
            + (
                f'ves_url = "{scheme.ves_stub_url}"\n'
                'ves_api_key_file = "../secrets/dvla-ves-api.key"\n'
                if provider_id == DVLA_VES
                else ""
            ),
        )
    _write(
        folder.stub_config(VES_STUB),
        f"# A local stand-in for the DVLA Vehicle Enquiry Service test environment\n"
        f'host = "{scheme.listen_host}"\nport = {scheme.ves_stub_port}\n'
        'api_key_file = "../secrets/dvla-ves-api.key"\n',
    )
    _write(
        folder.auditor_config(AUDITOR),
        f'member_id = "{AUDITOR}"\nsigning_key = "{key_of(AUDITOR, "../")}"\n'
        f'broker_id = "{BROKER}"\nbroker_url = "{scheme.broker_url}"\n'
        'log_key = "../public/log.vkey"\n'
        + (_scheme_toml(up="../") if scheme.witness_ports else ""),
    )
    for council in COUNCILS:
        _write(
            scheme.council_config(council),
            f'member_id = "{council}"\nsigning_key = "{key_of(council, "../")}"\n'
            f'broker_id = "{BROKER}"\nbroker_url = "{scheme.broker_url}"\n'
            'log_key = "../public/log.vkey"\n'
            # with witnesses, the council reads the witness policy from the signed registry
            + (_scheme_toml(up="../") if scheme.witness_ports else ""),
        )
    return scheme
