"""The broker's settings: one TOML file, read once into a frozen object and passed in."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import SettingsError
from broker.stores.consent_log.location import (
    POSTGRES_SCHEMES,
    LogLocation,
    PostgresLocation,
    SqliteLocation,
)
from connectors.config import (
    SchemeFiles,
    configured_note_signer,
    configured_signer,
    read_toml,
    require_str,
    resolve,
    scheme_files,
)
from connectors.errors import ConfigError
from trust.checkpoint import NoteSigner
from trust.jws import MAX_LEEWAY_SECONDS
from trust.keys import Signer
from trust.pseudonym import PseudonymKey


@dataclass(frozen=True, slots=True)
class ResidentPageSettings:
    """The "who checked my data" page (``[resident]``): the identity provider residents sign
    in with (its member id; the broker's client id there is in the registry), where its
    sign-in and token endpoints are, and the page's own public URL (its redirect URI)."""

    identity_provider: str
    authorize_url: str
    token_url: str
    public_url: str


def _resident(table: object) -> ResidentPageSettings | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise SettingsError("[resident] must be a table")
    urls = {name: require_str(table, name) for name in ("authorize_url", "token_url", "public_url")}
    for name, url in urls.items():
        if not url.startswith(("https://", "http://127.", "http://localhost")):
            raise SettingsError(f"resident.{name} must be https (or loopback http)")
    return ResidentPageSettings(require_str(table, "identity_provider"), **urls)


@dataclass(frozen=True, slots=True)
class Settings:
    broker_id: str
    host: str
    port: int
    signing_key: Signer
    scheme: SchemeFiles
    pseudonym_key: PseudonymKey
    consent_log: LogLocation
    redis_url: str | None
    rate_limit_per_second: int
    check_deadline_ms: int
    leeway_s: int
    registry_poll_s: float
    registry_url: str | None
    log_signer: NoteSigner
    checkpoint_every_records: int
    checkpoint_every_seconds: float
    public_checkpoint_every_seconds: float
    max_checks_in_flight: int = 64
    max_check_wait_ms: int = 100
    max_loop_lag_ms: int = 50
    previous_pseudonym_keys: tuple[PseudonymKey, ...] = ()
    redis_prefix: str = "axb"
    log_json: bool = True
    # connection hygiene (connectors.connections): timeouts and a limit on open connections
    keepalive_timeout_s: float = 15.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1000
    resident: ResidentPageSettings | None = None
    # bulk jobs (broker.bulk): items per job, bytes per items file, items checked at once,
    # how long a process holds a job without renewing, how long results are kept
    bulk_max_items: int = 100_000
    bulk_max_bytes: int = 64 * 1024 * 1024
    bulk_chunk_items: int = 500
    bulk_items_in_flight: int = 250
    bulk_lease_s: float = 30.0
    bulk_poll_s: float = 1.0
    bulk_retention_days: int = 30
    bulk_run_jobs: bool = True
    # end-of-job notices (broker.bulk.notices): attempts before giving up, the first retry's
    # wait (doubling, at most an hour), and each POST's time limit
    bulk_notice_attempts: int = 10
    bulk_notice_backoff_s: float = 5.0
    bulk_notice_timeout_s: float = 10.0
    # `axb serve --workers N`: how long the supervisor waits for its workers' orderly stop
    # under the 10 s Docker and podman give a container between SIGTERM and SIGKILL
    shutdown_timeout_s: float = 8.0
    # after SIGTERM, /readyz answers 503 for this long before the broker stops accepting
    drain_s: float = 0.0
    # broker.coalesce: concurrent calls to one provider within this window go as one batch
    coalesce_window_ms: float = 1.0
    # OpenTelemetry (the optional extra ax-broker[otel]): spans exported by OTLP/HTTP here
    tracing_otlp_endpoint: str | None = None
    tracing_service_name: str = "ax-broker"

    @property
    def consent_log_path(self) -> Path:
        """The SQLite file of an embedded consent log."""
        if not isinstance(self.consent_log, SqliteLocation):
            raise SettingsError("the consent log is not an SQLite file")
        return self.consent_log.path


def _int(table: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = table.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise SettingsError(f"{name} must be an integer in {low}..{high}")
    return value


def _identifier(value: object) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise SettingsError("consent_log_schema and redis_prefix must be plain identifiers")
    return value


def _log_location(base: Path, value: object, schema: str) -> LogLocation:
    """A ``postgresql://`` URL as it is, or an SQLite path resolved beside the config."""
    if isinstance(value, str) and value.startswith(POSTGRES_SCHEMES):
        return PostgresLocation(value, schema)
    return SqliteLocation(resolve(base, value, "consent_log"))


def load_pseudonym_key(path: Path, key_id: str) -> PseudonymKey:
    try:
        secret = base64.b64decode(path.read_text().strip(), validate=True)
        return PseudonymKey(key_id, secret)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read pseudonym key {path}: {exc}") from exc


# What broker.stores.admission.redis_client connects to: one server, a Cluster, or Sentinels.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "redis+sentinel://")


def load_settings(path: Path, **overrides: Any) -> Settings:
    """Read ``path`` (TOML); ``overrides`` (e.g. ``port``, ``redis_url``) win over the file.
    Raises :class:`SettingsError` naming what is wrong."""
    try:
        return _load_settings(path, overrides)
    except ConfigError as exc:  # a shared reader (keys, anchors, paths) refused a file
        raise SettingsError(str(exc)) from exc


def _float(table: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = table.get(name, default)
    if type(value) not in (int, float) or not low <= value <= high:
        raise SettingsError(f"{name} must be a number in {low}..{high}")
    return float(value)


def _load_settings(path: Path, overrides: dict[str, Any]) -> Settings:
    table = read_toml(path)
    table.update({k: v for k, v in overrides.items() if v is not None})
    base = path.parent
    redis_url = table.get("redis_url") or None
    if redis_url is not None and not str(redis_url).startswith(REDIS_SCHEMES):
        raise SettingsError(f"redis_url must start with one of {', '.join(REDIS_SCHEMES)}")
    pseudonym = table.get("pseudonym")
    if not isinstance(pseudonym, dict):
        raise SettingsError("a [pseudonym] table with key_id and key_file is required")
    log_table = table.get("log")
    if not isinstance(log_table, dict):
        raise SettingsError("a [log] table with the checkpoint signing_key is required")
    previous = pseudonym.get("previous", [])
    if not isinstance(previous, list) or not all(isinstance(p, dict) for p in previous):
        raise SettingsError("[[pseudonym.previous]] entries need key_id and key_file")
    return Settings(
        broker_id=require_str(table, "broker_id"),
        host=str(table.get("host", "127.0.0.1")),
        port=_int(table, "port", 8080, 0, 65535),
        signing_key=configured_signer(base, table.get("signing_key"), "signing_key"),
        scheme=scheme_files(base, table),
        pseudonym_key=load_pseudonym_key(
            resolve(base, pseudonym.get("key_file"), "pseudonym.key_file"),
            require_str(pseudonym, "key_id"),
        ),
        consent_log=_log_location(
            base,
            table.get("consent_log"),
            _identifier(table.get("consent_log_schema", "axb")),
        ),
        redis_url=redis_url,
        rate_limit_per_second=_int(table, "rate_limit_per_second", 50, 1, 1_000_000),
        check_deadline_ms=_int(table, "check_deadline_ms", 5000, 100, 60_000),
        # load shedding: checks in flight at once, and how long one may wait for a place
        max_checks_in_flight=_int(table, "max_checks_in_flight", 64, 1, 100_000),
        max_check_wait_ms=_int(table, "max_check_wait_ms", 100, 0, 60_000),
        max_loop_lag_ms=_int(table, "max_loop_lag_ms", 50, 1, 60_000),
        leeway_s=_int(table, "leeway_s", 30, 0, MAX_LEEWAY_SECONDS),
        registry_poll_s=_float(table, "registry_poll_s", 2.0, 0.01, 3600),
        registry_url=table.get("registry_url") or None,
        log_signer=configured_note_signer(
            base, log_table.get("signing_key"), "log.signing_key", log_table.get("origin")
        ),
        checkpoint_every_records=_int(log_table, "checkpoint_every_records", 1000, 1, 10**7),
        checkpoint_every_seconds=_float(log_table, "checkpoint_every_seconds", 5.0, 0.01, 86400),
        # GET /v1/log/checkpoint signs a fresh checkpoint at most this often
        public_checkpoint_every_seconds=_float(
            log_table, "public_checkpoint_every_seconds", 1.0, 0, 3600
        ),
        previous_pseudonym_keys=tuple(
            load_pseudonym_key(
                resolve(base, p.get("key_file"), "pseudonym.previous.key_file"),
                require_str(p, "key_id"),
            )
            for p in previous
        ),
        log_json=bool(table.get("log_json", True)),
        redis_prefix=_identifier(table.get("redis_prefix", "axb")),
        keepalive_timeout_s=_float(table, "keepalive_timeout_s", 15.0, 0.1, 3600),
        header_timeout_s=_float(table, "header_timeout_s", 10.0, 0.1, 3600),
        body_timeout_s=_float(table, "body_timeout_s", 10.0, 0.1, 3600),
        max_connections=_int(table, "max_connections", 1000, 1, 1_000_000),
        resident=_resident(table.get("resident")),
        **_bulk_settings(table),
        shutdown_timeout_s=_float(table, "shutdown_timeout_s", 8.0, 0.1, 3600),
        drain_s=_float(table, "drain_s", 0.0, 0, 600),
        coalesce_window_ms=_float(table, "coalesce_window_ms", 1.0, 0, 2),
        **_tracing_settings(table),
    )


def _tracing_settings(table: dict[str, Any]) -> dict[str, Any]:
    """``[tracing] otlp_endpoint`` (an OTLP/HTTP traces URL) turns OpenTelemetry spans on."""
    tracing = table.get("tracing", {})
    if not isinstance(tracing, dict) or not set(tracing) <= {"otlp_endpoint", "service_name"}:
        raise SettingsError("[tracing] holds otlp_endpoint and service_name only")
    endpoint = tracing.get("otlp_endpoint")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise SettingsError("[tracing] otlp_endpoint must be an http(s) URL")
    name = tracing.get("service_name", "ax-broker")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise SettingsError("[tracing] service_name must be a short string")
    return {"tracing_otlp_endpoint": endpoint, "tracing_service_name": name}


def _bulk_settings(table: dict[str, Any]) -> dict[str, Any]:
    bulk = table.get("bulk", {})
    if not isinstance(bulk, dict):
        raise SettingsError("[bulk] must be a table")
    return {
        "bulk_max_items": _int(bulk, "max_items", 100_000, 1, 1_000_000),
        "bulk_max_bytes": _int(bulk, "max_bytes", 64 * 1024 * 1024, 1024, 2**34),
        "bulk_chunk_items": _int(bulk, "chunk_items", 500, 1, 10_000),
        "bulk_items_in_flight": _int(bulk, "items_in_flight", 250, 1, 10_000),
        "bulk_lease_s": _float(bulk, "lease_s", 30.0, 0.5, 3600),
        "bulk_poll_s": _float(bulk, "poll_s", 1.0, 0.01, 60),
        "bulk_retention_days": _int(bulk, "retention_days", 30, 0, 3650),
        "bulk_run_jobs": _bool(bulk, "run_jobs", True),
        "bulk_notice_attempts": _int(bulk, "notice_attempts", 10, 1, 100),
        "bulk_notice_backoff_s": _float(bulk, "notice_backoff_s", 5.0, 0.01, 3600),
        "bulk_notice_timeout_s": _float(bulk, "notice_timeout_s", 10.0, 0.1, 120),
    }


def _bool(table: dict[str, Any], name: str, default: bool) -> bool:
    value = table.get(name, default)
    if type(value) is not bool:
        raise SettingsError(f"{name} must be true or false")
    return value
