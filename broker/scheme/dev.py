"""A development scheme: every key, a signed registry and every config, written to a folder.

``axb demo`` builds one in a temporary folder (or keeps it with ``--keep DIR``); tests build
their own. Nothing here is for production: keys are unencrypted PEM files on disk.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.reference import identity as reference_identity
from connectors.reference.attributes import DWP_ATTRIBUTES, HMRC_ATTRIBUTES
from connectors.reference.keepers import KEEPER_ATTRIBUTES, VES_ATTRIBUTES
from connectors.scheme_folder import SchemeFolder
from trust.checkpoint import generate_signer
from trust.keys import SigningKey
from trust.registry import member_document, sign_registry

SCHEME = "urn:ax-broker:scheme:dev"
OPERATOR = "scheme-operator"
BROKER = "axb-broker"
COUNCIL_BLUE_BADGE = "council-warwickshire-blue-badge"
COUNCIL_SCHOOLS = "council-coventry-schools"
COUNCIL_PARKING = "council-warwick-district-parking"
DWP = "dwp-reference"
HMRC = "hmrc-reference"
DVLA_KEEPER = "dvla-keeper-reference"
DVLA_VES = "dvla-ves"
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
)
COUNCILS = (COUNCIL_BLUE_BADGE, COUNCIL_SCHOOLS, COUNCIL_PARKING)
PROVIDERS = (DWP, HMRC, DVLA_KEEPER, DVLA_VES)
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
REFERENCE_KIND = {DWP: "dwp", HMRC: "hmrc", DVLA_KEEPER: "dvla-keeper", DVLA_VES: "dvla-ves"}
VES_STUB = "dvla-ves-stub"
PSEUDONYM_KEY_ID = "pk-dev-1"
LOG_ORIGIN = "axb.dev/consent-log"

BLUE_BADGE_CHECK = "blue-badge-automatic"
FSM_CHECK = "free-school-meals"
PARKING_CHECK = "resident-parking-permit"
UC_RULE_CHANGE = "2026-09-01"

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
    ]


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
            "id": "school-uniform-grant",
            "description": "A discretionary grant offered only with the parent's consent",
            "checks": [FSM_CHECK],
            "lawful_bases": ["consent"],
            "consent_required": True,
        },
    ]


def provider_metadata(
    endpoint: str,
    offered: Mapping[str, str],
    *,
    required: Sequence[str] = ("family_name", "date_of_birth"),
    optional: Sequence[str] = ("nino",),
) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "timeout_ms": 2000,
        "attributes": [
            {
                "name": name,
                "description": description,
                "matching": {"required": list(required), "optional": list(optional)},
            }
            for name, description in offered.items()
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

    def __init__(self, provider_ids: Sequence[str] = PROVIDERS) -> None:
        self._held: list[socket.socket] = []
        try:
            self.broker = self._bind()
            self.providers = {pid: self._bind() for pid in provider_ids}
            self.ves_stub = self._bind()
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


@dataclass(frozen=True)
class DevScheme:
    """Paths and ports of a generated scheme."""

    root: Path
    broker_port: int
    provider_ports: Mapping[str, int]
    ves_stub_port: int
    identity_port: int | None = None

    @property
    def identity_url(self) -> str | None:
        return None if self.identity_port is None else identity_url(self.identity_port)

    @property
    def ves_stub_url(self) -> str:
        return f"http://127.0.0.1:{self.ves_stub_port}"

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
    keys: Mapping[str, SigningKey], provider_ports: Mapping[str, int], *, suspended: Sequence[str]
) -> list[dict[str, Any]]:
    def status(member_id: str) -> str:
        return "suspended" if member_id in suspended else "active"

    def endpoint(provider_id: str) -> str:
        return f"http://127.0.0.1:{provider_ports[provider_id]}/v1/attributes"

    return [
        member_document(
            member_id=BROKER,
            name="ax-broker (development)",
            roles=["broker"],
            keys=[keys[BROKER].verifying_key],
            status=status(BROKER),
            client_ids={IDP: RESIDENT_PAGE_CLIENT_ID},
        ),
        member_document(
            member_id=COUNCIL_BLUE_BADGE,
            name="Warwickshire County Council — Blue Badge team",
            roles=["relying-party"],
            keys=[keys[COUNCIL_BLUE_BADGE].verifying_key],
            purposes=["blue-badge-application", BLUE_BADGE_ONLINE],
            status=status(COUNCIL_BLUE_BADGE),
            client_ids={IDP: CLIENT_IDS[COUNCIL_BLUE_BADGE]},
        ),
        member_document(
            member_id=COUNCIL_SCHOOLS,
            name="Coventry City Council — School admissions",
            roles=["relying-party"],
            keys=[keys[COUNCIL_SCHOOLS].verifying_key],
            purposes=["free-school-meals-application", "school-uniform-grant"],
            status=status(COUNCIL_SCHOOLS),
            client_ids={IDP: CLIENT_IDS[COUNCIL_SCHOOLS]},
        ),
        member_document(
            member_id=DWP,
            name="DWP-style reference provider (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[DWP].verifying_key],
            status=status(DWP),
            provider=provider_metadata(endpoint(DWP), DWP_ATTRIBUTES),
        ),
        member_document(
            member_id=HMRC,
            name="HMRC-style reference provider (synthetic data)",
            roles=["attribute-provider"],
            keys=[keys[HMRC].verifying_key],
            status=status(HMRC),
            provider=provider_metadata(endpoint(HMRC), HMRC_ATTRIBUTES),
        ),
        member_document(
            member_id=COUNCIL_PARKING,
            name="Warwick District Council — Parking services",
            roles=["relying-party"],
            keys=[keys[COUNCIL_PARKING].verifying_key],
            purposes=["resident-parking-permit-application"],
            status=status(COUNCIL_PARKING),
            client_ids={IDP: CLIENT_IDS[COUNCIL_PARKING]},
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
            keys=[reference_identity.did_signing_key(keys[IDP]).verifying_key],
            status=status(IDP),
            identity_provider={"issuer": reference_identity.ISSUER, "did": reference_identity.DID},
        ),
    ]


def member_keys(scheme: DevScheme) -> dict[str, SigningKey]:
    """Every member's signing key, read from the scheme folder."""
    return {m: SigningKey.from_pem(scheme.key_path(m).read_bytes()) for m in MEMBERS}


def publish_registry(
    scheme: DevScheme,
    *,
    seq: int,
    suspended: Sequence[str] = (),
    lifetime: int = 30 * 86400,
    now: int | None = None,
) -> str:
    """Sign and write a registry for ``scheme`` (the scheme operator's job)."""
    operator = SigningKey.from_pem(scheme.operator_key_path.read_bytes())
    keys = member_keys(scheme)
    members = registry_members(keys, scheme.provider_ports, suspended=suspended)
    source = {
        "scheme": SCHEME,
        "operator": OPERATOR,
        "seq": seq,
        "members": members,
        "purposes": reference_purposes(),
        "checks": reference_checks(),
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
    )
    tmp = scheme.registry_path.with_suffix(".tmp")
    _write(tmp, token + "\n")
    tmp.replace(scheme.registry_path)  # atomic: a polling broker never reads half a file
    return token


def generate(root: Path, *, ports: SchemePorts, redis_url: str = "") -> DevScheme:
    """Write a complete development scheme into ``root``, naming ``ports`` for its servers.

    The ports must belong to listening sockets the caller holds (``Listeners.ports``) until
    its servers serve them: a port merely found free may be taken by anyone before a server
    binds it. (A scheme kept on disk and served later with ``axb serve`` binds the ports its
    configs name: that is the user's machine, where nothing else is racing for them.)
    """
    root.mkdir(parents=True, exist_ok=True)
    scheme = DevScheme(root, ports.broker, dict(ports.providers), ports.ves_stub, ports.identity)
    operator = SigningKey.generate()
    _write(scheme.operator_key_path, operator.to_pem(), private=True)
    folder = scheme.folder
    _write(folder.anchor(OPERATOR), json.dumps(dict(operator.verifying_key.jwk)))
    for member in MEMBERS:
        key = SigningKey.generate()
        _write(scheme.key_path(member), key.to_pem(), private=True)
        _write(folder.public_key(member), json.dumps(dict(key.verifying_key.jwk)))
    idp = reference_identity.ReferenceIdentityProvider.from_pem(scheme.key_path(IDP).read_bytes())
    _write(folder.did_document(IDP), json.dumps(idp.did_document(), indent=2))
    _write(folder.secret("dvla-ves-api.key"), secrets.token_urlsafe(24) + "\n", private=True)
    secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    _write(folder.secret(f"{PSEUDONYM_KEY_ID}.key"), secret + "\n", private=True)
    log_skey, log_vkey = generate_signer(LOG_ORIGIN)
    _write(folder.secret("log.skey"), log_skey + "\n", private=True)
    _write(folder.log_verifier_key, log_vkey + "\n")
    publish_registry(scheme, seq=1)
    _write(
        scheme.broker_config,
        f'broker_id = "{BROKER}"\nhost = "127.0.0.1"\nport = {scheme.broker_port}\n'
        f'signing_key = "keys/{BROKER}.pem"\n'
        + _scheme_toml()
        + 'consent_log = "log/consent-log.sqlite3"\n'
        f'redis_url = "{redis_url}"\nrate_limit_per_second = 50\ncheck_deadline_ms = 3000\n'
        "leeway_s = 30\nregistry_poll_s = 0.5\n\n"
        # [pseudonym] stays last: operators (and tests) append [[pseudonym.previous]] to it
        + ("" if ports.identity is None else _resident_toml(scheme.broker_url, ports.identity))
        + '[log]\nsigning_key = "secrets/log.skey"\ncheckpoint_every_records = 1000\n'
        "checkpoint_every_seconds = 5.0\n\n[pseudonym]\n"
        f'key_id = "{PSEUDONYM_KEY_ID}"\nkey_file = "secrets/{PSEUDONYM_KEY_ID}.key"\n',
    )
    for provider_id, port in scheme.provider_ports.items():
        _write(
            scheme.provider_config(provider_id),
            f'provider_id = "{provider_id}"\nreference = "{REFERENCE_KIND[provider_id]}"\n'
            f'host = "127.0.0.1"\nport = {port}\n'
            f'signing_key = "../keys/{provider_id}.pem"\n'
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
        f'host = "127.0.0.1"\nport = {scheme.ves_stub_port}\n'
        'api_key_file = "../secrets/dvla-ves-api.key"\n',
    )
    _write(
        folder.auditor_config(AUDITOR),
        f'member_id = "{AUDITOR}"\nsigning_key = "../keys/{AUDITOR}.pem"\n'
        f'broker_id = "{BROKER}"\nbroker_url = "{scheme.broker_url}"\n'
        'log_key = "../public/log.vkey"\n',
    )
    for council in COUNCILS:
        _write(
            scheme.council_config(council),
            f'member_id = "{council}"\nsigning_key = "../keys/{council}.pem"\n'
            f'broker_id = "{BROKER}"\nbroker_url = "{scheme.broker_url}"\n'
            'log_key = "../public/log.vkey"\n',
        )
    return scheme
