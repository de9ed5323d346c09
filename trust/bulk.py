"""Bulk checks, the pure part: the signed job manifest, the items file read row by row, the
results files and the signed results manifest.

A council signs a **bulk manifest** (``typ`` ``bulk-manifest+jwt``, the same JWS profile as a
query) naming the check, purpose, lawful basis, ``as_of``, the item count, the items file's
format and its SHA-256. The items file travels beside it, one subject a row (NDJSON or CSV) with
the council's own row reference and, where the purpose needs it, a consent reference.

:class:`ItemsReader` is fed the file's bytes as they arrive and hands back validated rows; it
holds one line at a time (and the row references seen, to refuse duplicates), so memory is
bounded by the item limit, never by the file. The first bad row raises :class:`InvalidItems`
naming the row number and the field, never the value. At the end the digest and the count must
match the manifest.

Results are the row reference and the outcome, nothing more; the CSV form is safe to open in a
spreadsheet (no cell starts with ``= + - @``, tab or carriage return). The broker signs a
**results manifest** (``bulk-results+jwt``) binding the job, the digests of both results files
and the consent-log index range the job's records occupy; :func:`verify_results_file` checks a
downloaded file against it. A job whose manifest says ``notify`` ends with a **notice**
(``bulk-notice+jwt``): the same statement with the counts per outcome and the reason, which
the broker posts to the council's registered callback (:func:`parse_notice` checks one).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, get_args

import orjson

from trust import jws
from trust.dates import parse_date
from trust.errors import DateFormatError, InvalidMessage, VerificationError
from trust.messages import (
    ASSURANCE_LEVELS,
    SUBJECT_FIELDS,
    ConsentReference,
    EligibilityQuery,
    Subject,
    new_jti,
    normalise_subject_field,
    parse_consent,
)
from trust.policy import Decision, decide
from trust.registry import Registry

BULK_MANIFEST = jws.Profile("bulk-manifest+jwt", 300)
BULK_RESULTS = jws.Profile("bulk-results+jwt", 300)
# The broker's signed notice that a job ended, posted to the council's registered callback.
BULK_NOTICE = jws.Profile("bulk-notice+jwt", 300)
# A council's signed request about one of its jobs: the audit request's claims (method,
# path+query, body digest) under a ``typ`` of its own.
BULK_REQUEST = jws.Profile("bulk-request+jwt", 300)

ItemsFormat = Literal["ndjson", "csv"]
ITEMS_FORMATS: tuple[ItemsFormat, ...] = get_args(ItemsFormat)
MEDIA_TYPES: dict[ItemsFormat, str] = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
BulkOutcome = Literal["yes", "no", "no-match", "undetermined", "refused"]
BULK_OUTCOMES: tuple[BulkOutcome, ...] = get_args(BulkOutcome)
JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

MAX_LINE_BYTES = 16 * 1024
CONSENT_COLUMNS = (
    "consent_id",
    "consent_given_at",
    "consent_method",
    "consent_notice_url",
    "consent_notice_digest",
)
CSV_COLUMNS = ("ref", *SUBJECT_FIELDS, *CONSENT_COLUMNS)
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}")
_ROW_MEMBERS = frozenset({"ref", "subject", "consent"})
_SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class InvalidItems(InvalidMessage):
    """The items file is refused: ``row`` (1 = the first item; 0 = the file as a whole) and
    ``field`` say where. The message never holds the caller's values."""

    def __init__(self, row: int, field: str | None, reason: str) -> None:
        where = f"row {row}" if row else "the items file"
        super().__init__(f"{where}: {field + ' ' if field else ''}{reason}")
        self.row, self.field, self.reason = row, field, reason


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidMessage(message)


def _slug(value: Any, name: str) -> str:
    _require(isinstance(value, str) and _SLUG.fullmatch(value) is not None, f"{name} is invalid")
    return str(value)


def digest_of(data: bytes) -> str:
    """A SHA-256 as the manifests write it: ``sha256:`` and 64 lowercase hex digits."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex_digest(value: Any, name: str) -> str:
    _require(
        isinstance(value, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", value) is not None,
        f"{name} must be sha256:<64 hex digits>",
    )
    return str(value)


@dataclass(frozen=True, slots=True)
class BulkManifest:
    """A council's verified bulk job: one check, one purpose, one basis, many subjects."""

    requester: str
    jti: str
    issued_at: int
    expires_at: int
    check: str
    purpose: str
    lawful_basis: str | None
    as_of: date
    assurance: str | None
    items: int
    items_sha256: str
    format: ItemsFormat
    notify: bool = False  # post a signed notice to the council's registered callback at the end


def manifest_claims(
    *,
    requester: str,
    broker: str,
    now: int,
    check: str,
    purpose: str,
    items: int,
    items_sha256: str,
    format: ItemsFormat,
    lawful_basis: str | None = "public-task",
    as_of: date | None = None,
    assurance: str | None = None,
    notify: bool = False,
    lifetime: int = 120,
) -> dict[str, Any]:
    """The claims a council signs for one bulk job (used by the SDK and the CLI)."""
    claims: dict[str, Any] = {
        "iss": requester,
        "aud": broker,
        "iat": now,
        "exp": now + lifetime,
        "jti": new_jti(),
        "check": check,
        "purpose": purpose,
        "items": items,
        "items_sha256": items_sha256,
        "format": format,
    }
    if lawful_basis is not None:
        claims["lawful_basis"] = lawful_basis
    if as_of is not None:
        claims["as_of"] = as_of.isoformat()
    if assurance is not None:
        claims["assurance"] = assurance
    if notify:
        claims["notify"] = True
    return claims


_MANIFEST_MEMBERS = frozenset(
    {"iss", "aud", "iat", "exp", "jti", "nbf", "check", "purpose", "lawful_basis", "as_of"}
    | {"assurance", "items", "items_sha256", "format", "notify"}
)


def manifest_json(manifest: BulkManifest) -> dict[str, Any]:
    """A verified manifest's claims as the job store keeps them (no personal data)."""
    return {
        "requester": manifest.requester,
        "jti": manifest.jti,
        "issued_at": manifest.issued_at,
        "expires_at": manifest.expires_at,
        "check": manifest.check,
        "purpose": manifest.purpose,
        "lawful_basis": manifest.lawful_basis,
        "as_of": manifest.as_of.isoformat(),
        "assurance": manifest.assurance,
        "items": manifest.items,
        "items_sha256": manifest.items_sha256,
        "format": manifest.format,
        "notify": manifest.notify,
    }


def manifest_from_json(value: Mapping[str, Any]) -> BulkManifest:
    """The manifest :func:`manifest_json` kept (it was verified when the job was accepted)."""
    return BulkManifest(**{**value, "as_of": date.fromisoformat(value["as_of"])})


def parse_manifest(verified: jws.Verified, *, today: date, max_items: int) -> BulkManifest:
    """Shape-check a verified bulk manifest; ``today`` is the default and latest ``as_of``."""
    claims = verified.claims
    unknown = set(claims) - _MANIFEST_MEMBERS
    _require(not unknown, f"manifest has {len(unknown)} unknown member(s)")
    items = claims.get("items")
    if type(items) is not int or items < 1:
        raise InvalidMessage("items must be an integer >= 1")
    _require(items <= max_items, f"a job holds at most {max_items} items")
    fmt = claims.get("format")
    _require(fmt in ITEMS_FORMATS, "format must be ndjson or csv")
    as_of = today
    if "as_of" in claims:
        as_of = _manifest_date(claims["as_of"])
    _require(as_of <= today, "as_of may not be in the future")
    assurance = claims.get("assurance")
    _require(assurance is None or assurance in ASSURANCE_LEVELS, "assurance must be P0..P4")
    basis = claims.get("lawful_basis")
    notify = claims.get("notify", False)
    _require(isinstance(notify, bool), "notify must be true or false")
    return BulkManifest(
        requester=verified.issuer,
        jti=verified.jti,
        issued_at=verified.issued_at,
        expires_at=verified.expires_at,
        check=_slug(claims.get("check"), "check"),
        purpose=_slug(claims.get("purpose"), "purpose"),
        lawful_basis=None if basis is None else _slug(basis, "lawful_basis"),
        as_of=as_of,
        assurance=assurance,
        items=items,
        items_sha256=_hex_digest(claims.get("items_sha256"), "items_sha256"),
        format=fmt,  # type: ignore[arg-type]
        notify=notify,
    )


def _manifest_date(value: Any) -> date:
    try:
        return parse_date(value, "as_of")
    except DateFormatError as exc:
        raise InvalidMessage(str(exc)) from None


@dataclass(frozen=True, slots=True)
class JobDecision:
    """The policy decision a whole job shares, and what each of its rows must then carry."""

    decision: Decision
    required_fields: tuple[str, ...]
    consent_required: bool


# What a row always carries, as a single query's subject does.
ALWAYS_REQUIRED = ("family_name", "date_of_birth")
_PLACEHOLDER_CONSENT = ConsentReference(
    "per-row", "1970-01-01T00:00:00Z", "per-row", "https://per-row.invalid", "sha256:" + "0" * 64
)


def job_query(
    manifest: BulkManifest,
    *,
    jti: str,
    subject: Subject,
    consent: ConsentReference | None,
) -> EligibilityQuery:
    """One item of the job as the query a single check would have made: the manifest's check,
    purpose, basis, ``as_of`` and assurance, the row's subject and consent, its own ``jti``."""
    return EligibilityQuery(
        requester=manifest.requester,
        jti=jti,
        issued_at=manifest.issued_at,
        expires_at=manifest.expires_at,
        check=manifest.check,
        purpose=manifest.purpose,
        lawful_basis=manifest.lawful_basis,
        consent=consent,
        as_of=manifest.as_of,
        assurance=manifest.assurance,
        subject=subject,
    )


def decide_job(registry: Registry, manifest: BulkManifest, *, now: int) -> JobDecision:
    """``trust.policy.decide`` once for the whole job (raises ``PolicyRefusal``).

    Every subject field counts as present, so the plan names each provider's declared fields;
    each item's call then carries only those its row holds (``Subject.select``). The fields a
    provider requires become required of every row; where the purpose needs consent, every
    row must carry its own consent reference."""
    purpose = registry.purposes.get(manifest.purpose)
    consent_required = manifest.lawful_basis == "consent" or bool(
        purpose is not None and purpose.consent_required
    )
    every_field = Subject(dict.fromkeys(SUBJECT_FIELDS, ""))
    query = job_query(
        manifest,
        jti=manifest.jti,
        subject=every_field,
        consent=_PLACEHOLDER_CONSENT if consent_required else None,
    )
    decision = decide(registry, query, now=now)
    required = list(ALWAYS_REQUIRED)
    for call in decision.calls:
        info = registry.members[call.provider].provider
        for name in call.attributes:
            spec = None if info is None else info.attributes.get(name)
            for needed in () if spec is None else spec.required_fields:
                if needed not in required:
                    required.append(needed)
    return JobDecision(decision, tuple(required), consent_required)


def item_jti(job_id: str, seq: int) -> str:
    """The ``query_jti`` of an item's consent record: the job id, a dot, the item's number."""
    return f"{job_id}.{seq}"


@dataclass(frozen=True, slots=True)
class BulkRow:
    """One item: its row number, the council's reference, the subject, the consent if any.
    Never logged: ``repr`` shows the row number only."""

    row: int
    ref: str
    subject: Subject
    consent: ConsentReference | None

    def __repr__(self) -> str:
        return f"BulkRow(row={self.row})"

    def subject_key(self) -> bytes:
        """The same person asked on the same consent: such rows are checked once."""
        consent = None if self.consent is None else self.consent.to_json()
        payload = orjson.dumps([dict(self.subject.fields), consent], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).digest()[:16]


def _row_subject(row: int, value: Any, required: Sequence[str]) -> Subject:
    if not isinstance(value, dict):
        raise InvalidItems(row, "subject", "must be an object")
    fields: dict[str, str] = {}
    for name, raw in value.items():
        if name not in SUBJECT_FIELDS:
            raise InvalidItems(row, "subject", "has a field that is not a subject field")
        try:
            fields[name] = normalise_subject_field(name, raw)
        except InvalidMessage:
            raise InvalidItems(row, name, "is invalid") from None
    for name in required:
        if name not in fields:
            raise InvalidItems(row, name, "is missing (this check needs it)")
    return Subject(fields)


def _row_consent(
    row: int, value: Any, *, consent_required: bool, today: date
) -> ConsentReference | None:
    if value is None:
        if consent_required:
            raise InvalidItems(row, "consent", "is missing (this purpose needs consent)")
        return None
    try:
        return parse_consent(value, today=today)
    except InvalidMessage:
        raise InvalidItems(row, "consent", "is invalid") from None


def _ref(row: int, value: Any) -> str:
    if not isinstance(value, str) or _REF.fullmatch(value) is None:
        raise InvalidItems(
            row, "ref", "must be 1-64 letters, digits or _.:/- (a letter or digit first)"
        )
    return value


class ItemsReader:
    """Reads an items file fed in pieces: :meth:`feed` returns the rows completed so far,
    :meth:`finish` the last one and checks the manifest's digest and count. Raises
    :class:`InvalidItems` at the first fault."""

    def __init__(
        self,
        manifest: BulkManifest,
        *,
        required_fields: Sequence[str],
        consent_required: bool,
        today: date,
        max_items: int,
    ) -> None:
        self._manifest = manifest
        self._required = tuple(required_fields)
        self._consent_required = consent_required
        self._today = today
        self._max_items = min(max_items, manifest.items)
        self._hash = hashlib.sha256()
        self._pending = b""
        self._rows = 0
        self._refs: set[bytes] = set()
        self._columns: tuple[str, ...] | None = None if manifest.format == "csv" else ()
        self.size = 0

    @property
    def rows(self) -> int:
        return self._rows

    def feed(self, data: bytes) -> list[BulkRow]:
        self._hash.update(data)
        self.size += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE_BYTES:
            raise InvalidItems(self._rows + 1, None, f"is longer than {MAX_LINE_BYTES} bytes")
        return [row for line in lines if (row := self._line_row(line)) is not None]

    def finish(self) -> list[BulkRow]:
        rows = []
        if self._pending:
            last = self._line_row(self._pending)
            self._pending = b""
            if last is not None:
                rows.append(last)
        if self._columns is None:
            raise InvalidItems(0, None, "has no CSV header row")
        if "sha256:" + self._hash.hexdigest() != self._manifest.items_sha256:
            raise InvalidItems(0, "items_sha256", "does not match the items file's SHA-256")
        if self._rows != self._manifest.items:
            raise InvalidItems(
                0, "items", f"says {self._manifest.items} but the file holds {self._rows} rows"
            )
        return rows

    def _line_row(self, line: bytes) -> BulkRow | None:
        row = self._rows + 1
        if len(line) > MAX_LINE_BYTES:
            raise InvalidItems(row, None, f"is longer than {MAX_LINE_BYTES} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidItems(row, None, "is not UTF-8") from None
        text = text.removesuffix("\r")
        if self._columns is None:
            self._columns = _csv_header(text.removeprefix("\ufeff"))
            return None
        if not text.strip():
            raise InvalidItems(row, None, "is empty")
        if row > self._max_items:
            raise InvalidItems(row, None, f"is beyond the {self._max_items} items the job holds")
        parsed = self._csv_row(row, text) if self._columns else self._json_row(row, text)
        digest = hashlib.blake2b(parsed.ref.encode(), digest_size=12).digest()
        if digest in self._refs:
            raise InvalidItems(row, "ref", "repeats the reference of an earlier row")
        self._refs.add(digest)
        self._rows = row
        return parsed

    def _json_row(self, row: int, text: str) -> BulkRow:
        try:
            value = jws.parse_json_object(text.encode())
        except ValueError:
            raise InvalidItems(row, None, "is not a JSON object") from None
        if set(value) - _ROW_MEMBERS:
            raise InvalidItems(row, None, "has members other than ref, subject and consent")
        return self._row(row, value.get("ref"), value.get("subject"), value.get("consent"))

    def _csv_row(self, row: int, text: str) -> BulkRow:
        columns = self._columns or ()
        try:
            cells = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration):
            raise InvalidItems(row, None, "is not one CSV record") from None
        if len(cells) != len(columns):
            raise InvalidItems(row, None, f"has {len(cells)} cells, the header {len(columns)}")
        values = {name: cell for name, cell in zip(columns, cells, strict=True) if cell != ""}
        subject = {name: values[name] for name in SUBJECT_FIELDS if name in values}
        consent_cells = {name: values[name] for name in CONSENT_COLUMNS if name in values}
        consent: dict[str, str] | None = None
        if consent_cells:
            consent = {
                name.removeprefix("consent_"): value for name, value in consent_cells.items()
            }
        return self._row(row, values.get("ref"), subject, consent)

    def _row(self, row: int, ref: Any, subject: Any, consent: Any) -> BulkRow:
        return BulkRow(
            row=row,
            ref=_ref(row, ref),
            subject=_row_subject(row, subject, self._required),
            consent=_row_consent(
                row, consent, consent_required=self._consent_required, today=self._today
            ),
        )


def _csv_header(text: str) -> tuple[str, ...]:
    try:
        columns = tuple(next(csv.reader([text], strict=True)))
    except (csv.Error, StopIteration):
        raise InvalidItems(0, "header", "is not one CSV record") from None
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown or len(set(columns)) != len(columns) or "ref" not in columns:
        raise InvalidItems(
            0, "header", f"must name distinct columns among {', '.join(CSV_COLUMNS)}, with ref"
        )
    return columns


def items_ndjson(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """An NDJSON items file from rows ``{"ref", "subject", "consent"?}`` (the SDK's writer)."""
    return b"".join(orjson.dumps(dict(row)) + b"\n" for row in rows)


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading formula character gets a ``'``."""
    return "'" + cell if cell.startswith(_SPREADSHEET_TRIGGERS) else cell


def _csv_line(cells: Sequence[str]) -> bytes:
    quoted = []
    for cell in map(spreadsheet_safe, cells):
        if any(ch in cell for ch in ',"\r\n'):
            cell = '"' + cell.replace('"', '""') + '"'
        quoted.append(cell)
    return (",".join(quoted) + "\r\n").encode()


RESULTS_CSV_HEADER = _csv_line(("ref", "outcome"))


def result_ndjson(ref: str, outcome: str) -> bytes:
    return orjson.dumps({"ref": ref, "outcome": outcome}) + b"\n"


def result_csv(ref: str, outcome: str) -> bytes:
    return _csv_line((ref, outcome))


class ResultsDigests:
    """SHA-256 of both results files, computed as their lines are produced."""

    def __init__(self) -> None:
        self._ndjson = hashlib.sha256()
        self._csv = hashlib.sha256(RESULTS_CSV_HEADER)
        self.count = 0

    def add(self, ref: str, outcome: str) -> None:
        self._ndjson.update(result_ndjson(ref, outcome))
        self._csv.update(result_csv(ref, outcome))
        self.count += 1

    def digests(self) -> dict[str, str]:
        return {
            "ndjson": "sha256:" + self._ndjson.hexdigest(),
            "csv": "sha256:" + self._csv.hexdigest(),
        }


@dataclass(frozen=True, slots=True)
class BulkResults:
    """The broker's signed statement of a finished job's results: which job, how it ended,
    the digest of each results file, and the consent-log indices its records occupy (the
    job's records are among those, each with its own ``query_jti``: job id, ``.``, item)."""

    broker: str
    requester: str
    jti: str
    job: str
    manifest_jti: str
    status: str
    items: int
    results: int
    records: int
    sha256: Mapping[str, str]
    first_index: int | None
    last_index: int | None


def results_claims(results: BulkResults, *, now: int, lifetime: int = 300) -> dict[str, Any]:
    return {
        "iss": results.broker,
        "aud": results.requester,
        "iat": now,
        "exp": now + lifetime,
        "jti": results.jti,
        "job": results.job,
        "manifest_jti": results.manifest_jti,
        "status": results.status,
        "items": results.items,
        "results": results.results,
        "records": results.records,
        "sha256": dict(results.sha256),
        "log_index_range": None
        if results.first_index is None
        else [results.first_index, results.last_index],
    }


def parse_results(verified: jws.Verified, *, requester: str) -> BulkResults:
    claims = verified.claims
    counts = [claims.get(name) for name in ("items", "results", "records")]
    _require(all(type(c) is int and c >= 0 for c in counts), "counts must be integers >= 0")
    status = claims.get("status")
    _require(status in TERMINAL, "status must be completed, failed or cancelled")
    sha = claims.get("sha256")
    if not isinstance(sha, dict) or set(sha) != set(ITEMS_FORMATS):
        raise InvalidMessage("sha256 must hold one digest per format")
    for value in sha.values():
        _hex_digest(value, "sha256")
    span = claims.get("log_index_range")
    first = last = None
    if span is not None:
        _require(
            isinstance(span, list)
            and len(span) == 2
            and all(type(i) is int and i >= 0 for i in span)
            and span[0] <= span[1],
            "log_index_range must be [first, last]",
        )
        first, last = span
    return BulkResults(
        broker=verified.issuer,
        requester=requester,
        jti=verified.jti,
        job=str(_require_str(claims.get("job"), "job")),
        manifest_jti=str(_require_str(claims.get("manifest_jti"), "manifest_jti")),
        status=str(status),
        items=counts[0],  # type: ignore[arg-type]
        results=counts[1],  # type: ignore[arg-type]
        records=counts[2],  # type: ignore[arg-type]
        sha256=dict(sha),
        first_index=first,
        last_index=last,
    )


def _require_str(value: Any, name: str) -> str:
    _require(isinstance(value, str) and jws.JTI_PATTERN.fullmatch(value) is not None, name)
    return str(value)


def verify_results_file(results: BulkResults, body: bytes, fmt: ItemsFormat) -> None:
    """The downloaded results file is the one the manifest signs, and holds one line a result.
    Raises ``VerificationError``."""
    if digest_of(body) != results.sha256[fmt]:
        raise VerificationError("results file does not match the signed digest")
    lines = body.count(b"\n") - (1 if fmt == "csv" else 0)
    if lines != results.results:
        raise VerificationError("results file does not hold the signed number of results")


def read_results_ndjson(body: bytes) -> Iterator[tuple[str, str]]:
    """``(ref, outcome)`` of each line of a verified NDJSON results file."""
    for line in body.splitlines():
        value = orjson.loads(line)
        yield str(value["ref"]), str(value["outcome"])


@dataclass(frozen=True, slots=True)
class BulkNotice:
    """The broker's signed notice that a job ended: the results manifest's statement (which
    job, how it ended, the results files' digests, the log index range), the counts per
    outcome and, for a job that failed or was cancelled, why. Posted once the job is terminal,
    retried until the council's callback takes it; its ``jti`` is the same on every attempt,
    so a receiver that has seen it can ignore the repeat."""

    results: BulkResults
    counts: Mapping[str, int]
    reason: str | None


def notice_jti(job_id: str) -> str:
    """The one ``jti`` of a job's notice (every delivery attempt carries it)."""
    return f"{job_id}.notice"


def notice_claims(notice: BulkNotice, *, now: int, lifetime: int = 300) -> dict[str, Any]:
    claims = results_claims(notice.results, now=now, lifetime=lifetime)
    claims["counts"] = {outcome: notice.counts.get(outcome, 0) for outcome in BULK_OUTCOMES}
    claims["reason"] = notice.reason
    return claims


def parse_notice(verified: jws.Verified, *, requester: str) -> BulkNotice:
    """Shape-check a verified notice (its signature, ``typ``, audience and times were checked by
    ``jws.verify``). Raises ``InvalidMessage``."""
    results = parse_results(verified, requester=requester)
    _require(verified.jti == notice_jti(results.job), "the notice's jti is not its job's")
    counts = verified.claims.get("counts")
    _require(
        isinstance(counts, dict)
        and set(counts) == set(BULK_OUTCOMES)
        and all(type(n) is int and n >= 0 for n in counts.values()),
        "counts must hold an integer >= 0 per outcome",
    )
    assert isinstance(counts, dict)
    _require(sum(counts.values()) == results.results, "the counts do not add up to the results")
    reason = verified.claims.get("reason")
    _require(reason is None or (isinstance(reason, str) and len(reason) <= 200), "reason")
    return BulkNotice(results=results, counts=dict(counts), reason=reason)
