"""The consent log as an auditor meets it: real checks through a live broker, then the export,
the offline verifier, the proofs, the audit API and its authorisation, subject access,
consent withdrawal and retention.

The tamper tests start from one real export (a module fixture runs a broker once, makes checks
with every outcome, collects checkpoints as an auditor would and downloads the export with
``AuditClient.export()``), change the file the way an attacker would, and require
``verify_export`` to name what was done.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yarl

from broker.app import create_app
from broker.app_keys import REGISTRY, STORES
from broker.problems import TYPE_PREFIX
from broker.scheme import dev as devscheme
from broker.settings import Settings, load_settings
from connectors.reference.population import subject_of
from connectors.reference.providers import build_reference_provider
from members.auditor import AuditClient
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.logdb import LOG_BACKENDS, config_for_log, log_backend, log_sql
from tests.support.servers import RunningBroker, RunningProvider, StartBroker, serve_on
from trust import jws
from trust.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_signer,
    open_checkpoint,
    sign_checkpoint,
)
from trust.keys import SigningKey
from trust.log_verify import VerifyReport, verify_export
from trust.merkle import leaf_hash, root_from_leaves, verify_consistency, verify_inclusion
from trust.messages import ConsentReference, audit_request_claims
from trust.records import canonical_json, leaf_input, record_digest
from trust.registry import sign_registry

BB, FSM = devscheme.BLUE_BADGE_CHECK, devscheme.FSM_CHECK
BB_PURPOSE, FSM_PURPOSE = "blue-badge-application", "free-school-meals-application"
ORIGIN = devscheme.LOG_ORIGIN
ROOT = Path(__file__).resolve().parents[2]
PERSON = {"family_name": "Testwell", "date_of_birth": "2016-03-14"}  # bb-yes-dla


@pytest.fixture
def consent_log_overrides(each_log_backend: dict[str, object]) -> dict[str, object]:
    return each_log_backend  # every broker here runs on SQLite, then on PostgreSQL


# helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What a council got back for one query: an answer or a refusal, with its receipt."""

    index: int
    jti: str
    outcome: str  # yes | no | no-match | undetermined | refused
    refusal: str | None
    requester: str
    purpose: str
    check: str
    lawful_basis: str


async def ask(
    client: EligibilityClient,
    label: str,
    *,
    check: str = BB,
    purpose: str = BB_PURPOSE,
    lawful_basis: str = "public-task",
    consent: ConsentReference | None = None,
) -> Received:
    token, jti = client.sign_query(
        check,
        purpose=purpose,
        subject=subject_of(label),
        lawful_basis=lawful_basis,
        consent=consent,
        assurance="P2",
    )
    facts = (client.member_id, purpose, check, lawful_basis)
    try:
        answer = await client.send(token, jti)
    except CheckFailed as failed:
        refused = failed
    else:
        assert answer.query_jti == jti
        return Received(answer.log_index, jti, answer.outcome, None, *facts)
    assert refused.status == 403, refused.problem
    slug = str(refused.problem["type"]).removeprefix(TYPE_PREFIX)
    return Received(int(refused.problem["log_index"]), jti, "refused", slug, *facts)


def auditor_client(root: Path) -> AuditClient:
    """The auditor as configured by the dev scheme (auditors/auditor-ico.toml)."""
    return AuditClient.from_config(root / "auditors" / f"{devscheme.AUDITOR}.toml")


def log_verifier(root: Path) -> NoteVerifier:
    return NoteVerifier((root / "public" / "log.vkey").read_text().strip())


def log_signer(root: Path) -> NoteSigner:
    return NoteSigner((root / "secrets" / "log.skey").read_text().strip())


async def download(auditor: AuditClient, path: Path) -> list[bytes]:
    lines = [line async for line in auditor.export()]
    await asyncio.to_thread(path.write_bytes, b"".join(lines))
    return lines


async def public_get(url: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
        body = orjson.loads(text) if response.content_type.endswith("json") else text
        return response.status, response.content_type, body


async def checkpoint_note(url: str) -> str:
    status, _, note = await public_get(f"{url}/v1/log/checkpoint")
    assert status == 200
    return str(note)


def consent_reference(consent_id: str) -> ConsentReference:
    return ConsentReference(
        id=consent_id,
        given_at=(datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="seconds"),
        method="online-form",
        notice_url="https://coventry.example/privacy/uniform-grant",
        notice_digest="sha256:" + "ab" * 32,
    )


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# one audited broker run, shared by the export tests -----------------------------------------


@dataclass
class Audited:
    root: Path
    export: Path
    early_export: Path
    notes: list[str] = field(default_factory=list)  # checkpoints fetched along the way
    received: list[Received] = field(default_factory=list)

    @property
    def lines(self) -> list[bytes]:
        return self.export.read_bytes().splitlines(keepends=True)


async def _audited_run(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners, out: Path, backend: str
) -> Audited:
    async with log_backend(backend) as log_settings:
        return await _audited_run_on(scheme, listeners, out, log_settings)


async def _audited_run_on(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    out: Path,
    log_settings: dict[str, object],
) -> Audited:
    audited = Audited(scheme.root, out / "export.jsonl", out / "early-export.jsonl")
    runners = {}
    for pid in (devscheme.DWP, devscheme.HMRC):  # the providers of the checks made here
        service = build_reference_provider(scheme.provider_config(pid))
        runners[pid] = await serve_on(service.app, listeners.providers[pid])
    # Checkpoints only when this run asks for one, so the export's checkpoints are known.
    quiet = {
        "signing_key": "secrets/log.skey",
        "checkpoint_every_seconds": 3600.0,
        "public_checkpoint_every_seconds": 0.0,  # each fetch below covers every record
    }
    settings = load_settings(scheme.broker_config, log=quiet, **log_settings)
    broker = await serve_on(create_app(settings), listeners.broker)
    url = scheme.broker_url
    try:
        async with (
            EligibilityClient.from_config(
                scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
            ) as bb,
            EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_SCHOOLS)) as fsm,
            auditor_client(scheme.root) as auditor,
        ):
            got = audited.received
            got.append(await ask(bb, "bb-yes-dla"))
            got.append(await ask(bb, "bb-no"))
            got.append(await ask(bb, "no-match"))
            got.append(await ask(fsm, "fsm-yes-income-support", check=FSM, purpose=FSM_PURPOSE))
            got.append(await ask(bb, "fsm-no", check=FSM, purpose=FSM_PURPOSE))  # refused
            audited.notes.append(await checkpoint_note(url))
            await download(auditor, audited.early_export)
            got.append(await ask(fsm, "fsm-no", check=FSM, purpose=FSM_PURPOSE))
            got.append(await ask(bb, "bb-yes-pip-moving"))
            got.append(
                await ask(
                    fsm,
                    "hmrc-ctc-yes",
                    check=FSM,
                    purpose="school-uniform-grant",
                    lawful_basis="consent",
                    consent=consent_reference("uniform-consent-0001"),
                )
            )
            audited.notes.append(await checkpoint_note(url))
            await runners.pop(devscheme.DWP).cleanup()  # a provider goes down
            got.append(await ask(bb, "bb-yes-dla"))  # undetermined
            got.append(await ask(bb, "bb-no-dla-lower"))  # undetermined
            audited.notes.append(await checkpoint_note(url))
            await download(auditor, audited.export)
    finally:
        await broker.cleanup()
        for runner in runners.values():
            await runner.cleanup()
    return audited


@pytest.fixture(scope="module", params=LOG_BACKENDS)
def audited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Audited:
    """One real broker run and its export, once per consent-log backend (the broker runs on its
    own loop in a thread)."""
    base = tmp_path_factory.mktemp("audited")
    with devscheme.Listeners() as listeners, ThreadPoolExecutor(1) as pool:
        scheme = devscheme.generate(base / "scheme", ports=listeners.ports)
        run = _audited_run(scheme, listeners, base, request.param)
        return pool.submit(asyncio.run, run).result()


# the export and the offline verifier --------------------------------------------------------


@dataclass
class Parsed:
    header: dict[str, Any]
    records: list[dict[str, Any]]
    checkpoints: list[str]
    proofs: list[dict[str, Any]]

    @classmethod
    def of(cls, lines: list[bytes]) -> Parsed:
        items = [orjson.loads(line) for line in lines if line.strip()]
        assert items[0]["type"] == "log"
        return cls(
            items[0],
            [i for i in items if i["type"] == "record"],
            [i["note"] for i in items if i["type"] == "checkpoint"],
            [i for i in items if i["type"] == "consistency"],
        )

    def lines(self) -> list[bytes]:
        items = [self.header, *self.records]
        items += [{"type": "checkpoint", "note": note} for note in self.checkpoints]
        items += self.proofs
        return [orjson.dumps(item) + b"\n" for item in items]


def verify(lines: list[bytes], root: Path, held: tuple[str, ...] = ()) -> VerifyReport:
    return verify_export(lines, log_verifier(root), held=held)


def checkpoint_sizes(lines: list[bytes], root: Path) -> list[int]:
    verifier = log_verifier(root)
    return [open_checkpoint(n, verifier, ORIGIN).size for n in Parsed.of(lines).checkpoints]


def reseal(record: dict[str, Any], index: int, body: dict[str, Any] | None = None) -> None:
    """Renumber a record (line and body) and recompute its digest from its own salt: what an
    attacker with the export can do to keep every record self-consistent."""
    body = dict(record["body"] if body is None else body)
    body["log_index"] = index
    salt = base64.b64decode(record["salt"])
    record.update(
        log_index=index,
        body=body,
        digest=b64(record_digest(salt, canonical_json(body))),
    )


def leaves(records: list[dict[str, Any]]) -> list[bytes]:
    return [leaf_hash(leaf_input(base64.b64decode(r["digest"]))) for r in records]


async def test_real_export_verifies_and_holds_every_answer(audited: Audited) -> None:
    lines = audited.lines
    report = verify(lines, audited.root)
    assert report.ok, report.problems
    parsed = Parsed.of(lines)
    size = parsed.header["size"]
    assert parsed.header["origin"] == ORIGIN
    assert report.records == size == len(audited.received)
    assert report.verified_size == size
    assert report.checkpoints == len(parsed.checkpoints) == 3
    assert checkpoint_sizes(lines, audited.root) == [5, 8, 10]
    assert report.pruned == []
    outcomes = {r.outcome for r in audited.received}
    assert outcomes == {"yes", "no", "no-match", "undetermined", "refused"}
    by_index = {r["log_index"]: r["body"] for r in parsed.records}
    for got in audited.received:
        body = by_index[got.index]
        assert body["query_jti"] == got.jti
        assert body["outcome"] == got.outcome
        assert body["refusal"] == got.refusal
        assert (body["requester"], body["purpose"], body["check"]) == (
            got.requester,
            got.purpose,
            got.check,
        )
        assert body["lawful_basis"] == got.lawful_basis
    # Every checkpoint an auditor collected on the way is extended by the export.
    assert verify(lines, audited.root, held=tuple(audited.notes)).ok


TAMPER_AT = 2  # a record below every checkpoint: each checkpoint then covers it


def _flip(line: bytes, marker: bytes) -> bytes:
    """Change the one byte right after ``marker`` to another base64 character."""
    at = line.index(marker) + len(marker)
    new = b"B" if line[at : at + 1] != b"B" else b"C"
    return line[:at] + new + line[at + 1 :]


def _mismatch(sizes: list[int], line_of: Callable[[int], int], above: int) -> set[str]:
    return {
        f"line {line_of(i)}: checkpoint of size {size} does not match the records (a record "
        "before it was modified, inserted, deleted or reordered)"
        for i, size in enumerate(sizes)
        if size > above
    }


_INCONSISTENT = re.compile(r"checkpoints of sizes \d+ and \d+ are not consistent.*")
# records after the last checkpoint that verifies are not covered by any signed checkpoint
_UNCOVERED = re.compile(r"records \d+ to \d+ are not covered by any signed checkpoint.*")


@dataclass(frozen=True)
class Tamper:
    name: str
    change: Callable[[list[bytes], Path], list[bytes]]
    expect: Callable[[list[bytes], Path], set[str]]
    also_allowed: tuple[re.Pattern[str], ...] = ()


def _record_line(k: int) -> int:
    return k + 2  # line 1 is the header


def _checkpoint_line(size: int) -> Callable[[int], int]:
    return lambda i: size + 2 + i


def _body_byte(lines: list[bytes], root: Path) -> list[bytes]:
    out = list(lines)
    out[1 + TAMPER_AT] = _flip(out[1 + TAMPER_AT], b'"person":"')
    return out


def _digest_byte(lines: list[bytes], root: Path) -> list[bytes]:
    out = list(lines)
    out[1 + TAMPER_AT] = _flip(out[1 + TAMPER_AT], b'"digest":"')
    return out


def _delete_line(lines: list[bytes], root: Path) -> list[bytes]:
    return lines[: 1 + TAMPER_AT] + lines[2 + TAMPER_AT :]


def _swap_lines(lines: list[bytes], root: Path) -> list[bytes]:
    out = list(lines)
    a, b = 1 + TAMPER_AT, 2 + TAMPER_AT
    out[a], out[b] = out[b], out[a]
    return out


def _swap_renumbered(lines: list[bytes], root: Path) -> list[bytes]:
    """Swap two records' contents but keep the index sequence on the lines."""
    parsed = Parsed.of(lines)
    a, b = parsed.records[TAMPER_AT], parsed.records[TAMPER_AT + 1]
    for key in ("digest", "salt", "body"):
        a[key], b[key] = b[key], a[key]
    return parsed.lines()


def _duplicate_line(lines: list[bytes], root: Path) -> list[bytes]:
    return [*lines[: 2 + TAMPER_AT], lines[1 + TAMPER_AT], *lines[2 + TAMPER_AT :]]


def _fabricated_renumbered(lines: list[bytes], root: Path) -> list[bytes]:
    """A fabricated 'yes' inserted at TAMPER_AT; every later record renumbered and resealed, the
    header's size raised: every record stands on its own, only the checkpoints can tell."""
    parsed = Parsed.of(lines)
    forged = orjson.loads(orjson.dumps(parsed.records[TAMPER_AT]))
    forged["salt"] = b64(secrets.token_bytes(32))
    forged_body = dict(forged["body"], outcome="yes", query_jti="fabricated-" + "x" * 22)
    reseal(forged, TAMPER_AT, forged_body)
    records = [*parsed.records[:TAMPER_AT], forged, *parsed.records[TAMPER_AT:]]
    for index in range(TAMPER_AT + 1, len(records)):
        reseal(records[index], index)
    parsed.records = records
    parsed.header["size"] += 1
    return parsed.lines()


def _fabricated_unsealed(lines: list[bytes], root: Path) -> list[bytes]:
    """A fabricated record with a fresh, consistent digest at TAMPER_AT; later lines renumbered
    but their bodies (which carry their own log_index) left as they were."""
    parsed = Parsed.of(lines)
    forged = orjson.loads(orjson.dumps(parsed.records[TAMPER_AT]))
    forged["salt"] = b64(secrets.token_bytes(32))
    reseal(forged, TAMPER_AT, dict(forged["body"], outcome="yes"))
    records = [*parsed.records[:TAMPER_AT], forged, *parsed.records[TAMPER_AT:]]
    for index in range(TAMPER_AT + 1, len(records)):
        records[index]["log_index"] = index
    parsed.records = records
    parsed.header["size"] += 1
    return parsed.lines()


def _altered_root(lines: list[bytes], root: Path) -> list[bytes]:
    parsed = Parsed.of(lines)
    note = parsed.checkpoints[-1]
    body_lines = note.split("\n")
    body_lines[2] = b64(bytes(32))  # the root hash line, signature left as it was
    parsed.checkpoints[-1] = "\n".join(body_lines)
    return parsed.lines()


def _impostor_key(lines: list[bytes], root: Path) -> list[bytes]:
    """A checkpoint over a fabricated history, signed by a key of the log's name that is not
    the log's key."""
    parsed = Parsed.of(lines)
    size = parsed.header["size"]
    fabricated = leaves(parsed.records)
    fabricated[TAMPER_AT] = leaf_hash(b"fabricated")
    skey, _ = generate_signer(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root_from_leaves(fabricated)), NoteSigner(skey))
    parsed.checkpoints.append(note)
    return parsed.lines()


def _smaller_after_larger(lines: list[bytes], root: Path) -> list[bytes]:
    parsed = Parsed.of(lines)
    parsed.checkpoints.append(parsed.checkpoints[0])
    return parsed.lines()


def _forked_checkpoint(lines: list[bytes], root: Path) -> list[bytes]:
    """The log's own key signs a second checkpoint of an existing size with another root."""
    parsed = Parsed.of(lines)
    size = checkpoint_sizes(lines, root)[0]
    other = leaves(parsed.records)[:size]
    other[TAMPER_AT] = leaf_hash(b"the other side of the fork")
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root_from_leaves(other)), log_signer(root))
    parsed.checkpoints.insert(1, note)
    return parsed.lines()


def _size_of(lines: list[bytes]) -> int:
    return int(Parsed.of(lines).header["size"])


TAMPERS = [
    Tamper(
        "one-byte-of-a-record-body",
        _body_byte,
        lambda lines, root: {
            f"line {_record_line(TAMPER_AT)}: record {TAMPER_AT} does not match its digest "
            "(modified)"
        },
    ),
    Tamper(
        "one-byte-of-a-digest",
        _digest_byte,
        lambda lines, root: (
            {
                f"line {_record_line(TAMPER_AT)}: record {TAMPER_AT} does not match its digest "
                "(modified)"
            }
            | _mismatch(checkpoint_sizes(lines, root), _checkpoint_line(_size_of(lines)), TAMPER_AT)
        ),
        (_INCONSISTENT,),
    ),
    Tamper(
        "a-deleted-line",
        _delete_line,
        lambda lines, root: (
            {f"record {TAMPER_AT} is missing (deleted)"}
            | {
                f"line {_size_of(lines) + 1 + i}: checkpoint of size {size} cannot be checked: "
                "records are missing below it"
                for i, size in enumerate(checkpoint_sizes(lines, root))
            }
        ),
    ),
    Tamper(
        "two-swapped-lines",
        _swap_lines,
        lambda lines, root: {
            f"line {_record_line(TAMPER_AT + 1)}: record {TAMPER_AT} comes after record "
            f"{TAMPER_AT + 1} (reordered)"
        },
    ),
    Tamper(
        "two-records-swapped-and-renumbered",
        _swap_renumbered,
        lambda lines, root: (
            {
                f"line {_record_line(TAMPER_AT)}: record {TAMPER_AT} carries log_index "
                f"{TAMPER_AT + 1} (moved or inserted)",
                f"line {_record_line(TAMPER_AT + 1)}: record {TAMPER_AT + 1} carries log_index "
                f"{TAMPER_AT} (moved or inserted)",
            }
            | _mismatch(checkpoint_sizes(lines, root), _checkpoint_line(_size_of(lines)), TAMPER_AT)
        ),
        (_INCONSISTENT,),
    ),
    Tamper(
        "a-duplicated-record-line",
        _duplicate_line,
        lambda lines, root: {
            f"line {_record_line(TAMPER_AT + 1)}: record {TAMPER_AT} appears twice (inserted)"
        },
    ),
    Tamper(
        "a-fabricated-record-resealed-and-later-records-renumbered",
        _fabricated_renumbered,
        lambda lines, root: _mismatch(
            checkpoint_sizes(lines, root), _checkpoint_line(_size_of(lines) + 1), TAMPER_AT
        ),
        (_INCONSISTENT, _UNCOVERED),
    ),
    Tamper(
        "a-fabricated-record-with-later-bodies-left-alone",
        _fabricated_unsealed,
        lambda lines, root: (
            {
                f"line {_record_line(k + 1)}: record {k + 1} carries log_index {k} "
                "(moved or inserted)"
                for k in range(TAMPER_AT, _size_of(lines))
            }
            | _mismatch(
                checkpoint_sizes(lines, root), _checkpoint_line(_size_of(lines) + 1), TAMPER_AT
            )
        ),
        (_INCONSISTENT, _UNCOVERED),
    ),
    Tamper(
        "a-checkpoint-root-altered",
        _altered_root,
        lambda lines, root: {
            f"line {_size_of(lines) + 1 + len(checkpoint_sizes(lines, root))}: checkpoint not "
            "signed by the log's key (forged): invalid signature for key "
            f"{ORIGIN}+{log_verifier(root).key_hash:08x}"
        },
        (_UNCOVERED,),
    ),
    Tamper(
        "a-checkpoint-signed-by-another-key-of-the-same-name",
        _impostor_key,
        lambda lines, root: {
            f"line {_size_of(lines) + 2 + len(checkpoint_sizes(lines, root))}: checkpoint not "
            "signed by the log's key (forged): note has no signature by key "
            f"{ORIGIN}+{log_verifier(root).key_hash:08x}"
        },
    ),
    Tamper(
        "a-smaller-checkpoint-after-a-larger-one",
        _smaller_after_larger,
        lambda lines, root: {
            f"line {_size_of(lines) + 2 + len(checkpoint_sizes(lines, root))}: checkpoint of "
            f"size {checkpoint_sizes(lines, root)[0]} follows one of size "
            f"{checkpoint_sizes(lines, root)[-1]} (rolled back)"
        },
    ),
    Tamper(
        "a-fork-two-signed-checkpoints-of-one-size",
        _forked_checkpoint,
        lambda lines, root: {
            f"fork: two signed checkpoints of size {checkpoint_sizes(lines, root)[0]} with "
            "different roots",
            f"line {_size_of(lines) + 3}: checkpoint of size {checkpoint_sizes(lines, root)[0]} "
            "does not match the records (a record before it was modified, inserted, deleted or "
            "reordered)",
        },
        (_INCONSISTENT,),  # the forged root stands for its size in the consistency check
    ),
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_verifier_names_each_tampering_precisely(
    audited: Audited, tamper: Tamper, tmp_path: Path
) -> None:
    assert checkpoint_sizes(audited.lines, audited.root)[0] > TAMPER_AT + 1
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(tamper.change(audited.lines, audited.root)))
    with tampered.open("rb") as handle:  # the real file, read as `axb audit verify` reads it
        report = verify_export(handle, log_verifier(audited.root))
    expected = tamper.expect(audited.lines, audited.root)
    assert not report.ok
    assert expected <= set(report.problems), report.problems
    unexplained = [
        p
        for p in report.problems
        if p not in expected and not any(pattern.fullmatch(p) for pattern in tamper.also_allowed)
    ]
    assert unexplained == []


def test_every_single_byte_change_to_a_real_export_is_reported(audited: Audited) -> None:
    """Change one byte anywhere (its lowest bit flipped): the export no longer verifies. This
    includes the spare bits of a base64 value's last character, which a lenient decoder
    would read back as the same digest or salt."""
    data = audited.export.read_bytes()
    verifier = log_verifier(audited.root)
    assert verify_export(data.splitlines(keepends=True), verifier).ok
    accepted = []
    for position in range(len(data)):
        changed = bytearray(data)
        changed[position] ^= 0x01
        if verify_export(bytes(changed).splitlines(keepends=True), verifier).ok:
            accepted.append((position, data[max(0, position - 20) : position + 5]))
    assert accepted == []


def test_a_record_appended_after_the_last_checkpoint_is_not_accepted(audited: Audited) -> None:
    parsed = Parsed.of(audited.lines)
    forged = orjson.loads(orjson.dumps(parsed.records[0]))
    forged["salt"] = b64(secrets.token_bytes(32))
    reseal(forged, parsed.header["size"], dict(forged["body"], outcome="yes"))
    parsed.records.append(forged)
    parsed.header["size"] += 1
    report = verify(parsed.lines(), audited.root)
    assert report.verified_size == parsed.header["size"] - 1
    assert not report.ok


def test_hiding_a_body_as_pruned_shows_in_the_pruned_ranges(audited: Audited) -> None:
    parsed = Parsed.of(audited.lines)
    hidden = parsed.records[TAMPER_AT]
    parsed.records[TAMPER_AT] = {
        "type": "record",
        "log_index": TAMPER_AT,
        "digest": hidden["digest"],
        "pruned": True,
    }
    report = verify(parsed.lines(), audited.root)
    assert report.ok  # a pruned body cannot be told from a hidden one, but it is reported
    assert report.pruned == [(TAMPER_AT, TAMPER_AT)]


def test_rolled_back_log_against_a_held_checkpoint(audited: Audited, tmp_path: Path) -> None:
    newest = audited.notes[-1]
    verifier = log_verifier(audited.root)
    held_size = open_checkpoint(newest, verifier, ORIGIN).size
    # The log serves its older state (the export taken earlier) to an auditor who holds newer.
    early = audited.early_export.read_bytes().splitlines(keepends=True)
    early_size = _size_of(early)
    assert verify(early, audited.root).ok  # on its own an older export is a fine prefix
    report = verify(early, audited.root, held=(newest,))
    assert report.problems == [
        f"rolled back: you hold a checkpoint of size {held_size}, the export has {early_size}"
    ]
    # The same with the newest export truncated to fewer records and its newer checkpoints.
    parsed = Parsed.of(audited.lines)
    sizes = checkpoint_sizes(audited.lines, audited.root)
    keep = sizes[0]
    parsed.records = parsed.records[:keep]
    parsed.header["size"] = keep
    parsed.checkpoints = [n for n, s in zip(parsed.checkpoints, sizes, strict=True) if s <= keep]
    assert verify(parsed.lines(), audited.root).ok
    report = verify(parsed.lines(), audited.root, held=(newest,))
    assert report.problems == [
        f"rolled back: you hold a checkpoint of size {held_size}, the export has {keep}"
    ]
    # Header kept at the old size but records cut: deletions are named.
    parsed = Parsed.of(audited.lines)
    parsed.records = parsed.records[:keep]
    report = verify(parsed.lines(), audited.root)
    assert f"record {keep} is missing (deleted)" in report.problems


def test_split_view_fork_against_a_held_checkpoint(audited: Audited) -> None:
    """The log (its real key) shows another auditor a different history of the same size."""
    held = audited.notes[-1]
    parsed = Parsed.of(audited.lines)
    size = parsed.header["size"]
    for record in parsed.records[TAMPER_AT:]:
        reseal(record, record["log_index"])  # same bodies ...
    fake = parsed.records[TAMPER_AT]
    fake["salt"] = b64(secrets.token_bytes(32))
    reseal(fake, TAMPER_AT, dict(fake["body"], outcome="no"))  # ... but one outcome rewritten
    signer = log_signer(audited.root)
    root = root_from_leaves(leaves(parsed.records))
    parsed.checkpoints = [sign_checkpoint(Checkpoint(ORIGIN, size, root), signer)]
    forked = parsed.lines()
    assert verify(forked, audited.root).ok  # self-consistent: only a held checkpoint tells
    report = verify(forked, audited.root, held=(held,))
    assert report.problems == [
        f"fork: the records do not extend the checkpoint of size {size} you hold"
    ]


def _axb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def axb_async(*args: str) -> tuple[int, str, str]:
    """``axb`` as a subprocess without blocking the loop a live broker runs on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def test_axb_audit_verify_passes_and_fails_with_exit_codes(
    audited: Audited, tmp_path: Path
) -> None:
    vkey = str(audited.root / "public" / "log.vkey")
    held = tmp_path / "held.note"
    held.write_text(audited.notes[-1])
    ok = _axb("audit", "verify", str(audited.export), "--log-key", vkey, "--held", str(held))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: the export verifies" in ok.stdout
    assert "PROBLEM" not in ok.stdout

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(_body_byte(audited.lines, audited.root)))
    bad = _axb("audit", "verify", str(tampered), "--log-key", vkey)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (
        f"PROBLEM line {_record_line(TAMPER_AT)}: record {TAMPER_AT} does not match its digest "
        "(modified)"
    ) in bad.stdout.splitlines()
    assert "FAILED: the export does not verify" in bad.stdout

    rolled = _axb(
        "audit", "verify", str(audited.early_export), "--log-key", vkey, "--held", str(held)
    )
    assert rolled.returncode == 1
    assert any(line.startswith("PROBLEM rolled back:") for line in rolled.stdout.splitlines())


def test_axb_audit_verify_with_a_malformed_log_key_is_a_clean_error(audited: Audited) -> None:
    done = _axb("audit", "verify", str(audited.export), "--log-key", "not-a-log-key")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "bad log key" in done.stderr


# live broker: proofs and receipts -----------------------------------------------------------


@pytest.fixture
async def auditor(scheme: devscheme.DevScheme, broker: RunningBroker) -> AsyncIterator[AuditClient]:
    async with auditor_client(scheme.root) as client:
        yield client


async def signed_checkpoint(url: str, root: Path) -> Checkpoint:
    status, _, vkey = await public_get(f"{url}/v1/log/key")
    assert status == 200
    assert vkey.strip() == (root / "public" / "log.vkey").read_text().strip()
    return open_checkpoint(await checkpoint_note(url), NoteVerifier(vkey.strip()), ORIGIN)


async def test_every_receipt_is_provably_included(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
    schools_client: EligibilityClient,
    auditor: AuditClient,
) -> None:
    received = [
        await ask(blue_badge_client, "bb-yes-dla"),
        await ask(blue_badge_client, "bb-no"),
        await ask(blue_badge_client, "no-match"),
        await ask(blue_badge_client, "fsm-no", check=FSM, purpose=FSM_PURPOSE),
    ]
    first = await signed_checkpoint(broker.url, scheme.root)
    assert first.size == 4
    await providers[devscheme.DWP].stop()
    received.append(await ask(blue_badge_client, "bb-yes-pip-moving"))
    received.append(
        await ask(schools_client, "fsm-yes-income-support", check=FSM, purpose=FSM_PURPOSE)
    )
    received.append(await ask(schools_client, "hmrc-ctc-yes", check=FSM, purpose=FSM_PURPOSE))
    assert {r.outcome for r in received} == {"yes", "no", "no-match", "undetermined", "refused"}
    latest = await signed_checkpoint(broker.url, scheme.root)
    assert latest.size == len(received) == 7

    for got in received:
        single = await auditor.record(got.index)  # record + checkpoint + inclusion proof
        record = single["record"]
        assert record["body"]["query_jti"] == got.jti
        assert record["body"]["outcome"] == got.outcome
        digest = base64.b64decode(record["digest"])
        salt = base64.b64decode(record["salt"])
        assert record_digest(salt, canonical_json(record["body"])) == digest
        leaf = leaf_hash(leaf_input(digest))
        cp = open_checkpoint(single["checkpoint"], log_verifier(scheme.root), ORIGIN)
        assert cp.size == single["tree_size"]
        proof = [base64.b64decode(h) for h in single["inclusion_proof"]]
        verify_inclusion(leaf, got.index, cp.size, proof, cp.root_hash)

        for checkpoint in (first, latest):  # and through the public proof endpoint
            if got.index >= checkpoint.size:
                continue
            status, _, found = await public_get(
                f"{broker.url}/v1/log/proof/inclusion?index={got.index}&size={checkpoint.size}"
            )
            assert status == 200
            assert base64.b64decode(found["leaf_hash"]) == leaf
            public_proof = [base64.b64decode(h) for h in found["proof"]]
            verify_inclusion(leaf, got.index, checkpoint.size, public_proof, checkpoint.root_hash)

    status, _, found = await public_get(
        f"{broker.url}/v1/log/proof/consistency?from={first.size}&to={latest.size}"
    )
    assert status == 200
    proof = [base64.b64decode(h) for h in found["proof"]]
    verify_consistency(first.size, latest.size, first.root_hash, latest.root_hash, proof)
    for edge in ((0, latest.size), (latest.size, latest.size)):
        status, _, found = await public_get(
            f"{broker.url}/v1/log/proof/consistency?from={edge[0]}&to={edge[1]}"
        )
        assert (status, found["proof"]) == (200, [])


BAD_PROOF_QUERIES = [
    "inclusion?index=3&size=3",  # index not below size
    "inclusion?index=0&size=99",  # size beyond the tree
    "inclusion?index=-1&size=3",
    "inclusion?index=one&size=3",
    "inclusion?index=0x1&size=3",
    "inclusion?index=1.0&size=3",
    "inclusion?index=1",
    "inclusion?size=3",
    "inclusion",
    "inclusion?index=0&size=" + "9" * 30,
    "consistency?from=3&to=2",
    "consistency?from=0&to=99",
    "consistency?from=1",
    "consistency?to=2",
    "consistency?from=-1&to=2",
    "consistency?from=a&to=2",
]


async def test_anonymous_callers_cannot_make_the_log_sign_a_checkpoint_per_record(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
) -> None:
    broker = await start_broker(public_checkpoint_every_seconds=1.0)  # the default
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    started = time.monotonic()
    async with EligibilityClient.from_config(config) as client:
        for _ in range(30):  # a check, then the public checkpoint, thirty times over
            await ask(client, "bb-no")
            status, _, _ = await public_get(f"{broker.url}/v1/log/checkpoint")
            assert status == 200
    elapsed = time.monotonic() - started
    stored = await broker.app[STORES].consent_log.checkpoints()
    assert len(stored) <= elapsed + 2, (len(stored), elapsed)  # not one per record
    await asyncio.sleep(1.1)
    _, _, note = await public_get(f"{broker.url}/v1/log/checkpoint")
    assert open_checkpoint(note, log_verifier(scheme.root), ORIGIN).size == 30  # fresh again


async def test_bad_proof_requests_are_400_problems(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    for label in ("bb-yes-dla", "bb-no", "no-match"):
        await ask(blue_badge_client, label)
    for query in BAD_PROOF_QUERIES:
        status, content_type, body = await public_get(f"{broker.url}/v1/log/proof/{query}")
        assert status == 400, (query, body)
        assert content_type == "application/problem+json"
        assert body["type"] in {TYPE_PREFIX + "bad-request", TYPE_PREFIX + "invalid-proof-request"}
        assert body["status"] == 400


async def test_unicode_digit_in_a_proof_request_is_a_400(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    await ask(blue_badge_client, "bb-no")
    status, _, _ = await public_get(f"{broker.url}/v1/log/proof/inclusion?index=0&size=%C2%B2")
    assert status == 400


# live broker: who may read the log ----------------------------------------------------------


async def raw_audit(
    url: str,
    method: str,
    target: str,
    *,
    authorization: str | None,
    body: bytes = b"",
) -> tuple[int, Any]:
    """Send exactly ``target`` (no re-quoting) with the given Authorization header."""
    headers = {} if authorization is None else {"Authorization": authorization}
    if body:
        headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, yarl.URL(url + target, encoded=True), data=body or None, headers=headers
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


def _problem(body: Any) -> str:
    return str(body.get("type", "")).removeprefix(TYPE_PREFIX)


async def test_audit_api_refuses_the_unauthenticated_the_replayed_and_the_rebound(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    auditor: AuditClient,
) -> None:
    await ask(blue_badge_client, "bb-yes-dla")
    url, records = broker.url, "/v1/audit/records?limit=10"
    identifiers = orjson.dumps(PERSON)

    status, body = await raw_audit(url, "GET", records, authorization=None)
    assert (status, _problem(body)) == (401, "invalid-token")
    status, body = await raw_audit(url, "GET", records, authorization="Basic YXVkaXRvcjpwdw==")
    assert status == 401

    token = auditor.authorization("GET", records)
    status, body = await raw_audit(url, "GET", records, authorization=token)
    assert status == 200
    assert len(body["records"]) == 1
    status, body = await raw_audit(url, "GET", records, authorization=token)  # replayed
    assert (status, _problem(body)) == (401, "invalid-token")

    rebound = [
        ("GET", "/v1/audit/records?limit=10&requester=x", auditor.authorization("GET", records)),
        ("GET", "/v1/audit/records?limit=11", auditor.authorization("GET", records)),
        ("GET", "/v1/audit/export", auditor.authorization("GET", records)),
        ("GET", "/v1/audit/records/0", auditor.authorization("GET", "/v1/audit/records/1")),
        ("GET", records, auditor.authorization("POST", records)),
    ]
    for method, target, authorization in rebound:
        status, body = await raw_audit(url, method, target, authorization=authorization)
        # InvalidMessage renders as 400 invalid-query; a verification failure as 401.
        assert status in (400, 401), (method, target, status, body)
        assert "records" not in body
    # A token signed for GET used for POST subject access, and a body altered after signing.
    sa = "/v1/audit/subject-access"
    status, body = await raw_audit(
        url,
        "POST",
        sa,
        authorization=auditor.authorization("GET", sa, identifiers),
        body=identifiers,
    )
    assert status in (400, 401)
    other = orjson.dumps({"family_name": "Exampleby", "date_of_birth": "1972-04-11"})
    status, body = await raw_audit(
        url, "POST", sa, authorization=auditor.authorization("POST", sa, identifiers), body=other
    )
    assert status in (400, 401)
    assert "records" not in body
    # The same token with its own body is accepted (so the refusals above were the binding).
    status, body = await raw_audit(
        url,
        "POST",
        sa,
        authorization=auditor.authorization("POST", sa, identifiers),
        body=identifiers,
    )
    assert status == 200
    assert [r["log_index"] for r in body["records"]] == [0]

    # A token for another broker (aud) or expired is refused like any failed verification.
    auditor_key = SigningKey.from_pem(scheme.key_path(devscheme.AUDITOR).read_bytes())
    for claims in (
        audit_request_claims(
            auditor=devscheme.AUDITOR,
            broker="another-broker",
            now=int(datetime.now(UTC).timestamp()),
            method="GET",
            target=records,
        ),
        audit_request_claims(
            auditor=devscheme.AUDITOR,
            broker=devscheme.BROKER,
            now=int(datetime.now(UTC).timestamp()) - 600,
            method="GET",
            target=records,
        ),
    ):
        bearer = "Bearer " + jws.sign(claims, auditor_key, jws.AUDIT_REQUEST)
        status, body = await raw_audit(url, "GET", records, authorization=bearer)
        assert (status, _problem(body)) == (401, "invalid-token")


async def test_only_auditors_read_the_log_and_auditors_make_no_checks(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
) -> None:
    await ask(blue_badge_client, "bb-yes-dla")
    council = devscheme.COUNCIL_BLUE_BADGE
    as_council = AuditClient(
        member_id=council,
        key=SigningKey.from_pem(scheme.key_path(council).read_bytes()),
        broker_url=broker.url,
        broker_id=devscheme.BROKER,
    )
    async with as_council:
        with pytest.raises(CheckFailed) as refused:
            await as_council.records()
        assert refused.value.status == 403
        assert _problem(refused.value.problem) == "not-an-auditor"
        with pytest.raises(CheckFailed) as refused:
            await as_council.subject_access(
                {"family_name": "Testwell", "date_of_birth": "2016-03-14"}
            )
        assert (refused.value.status, _problem(refused.value.problem)) == (403, "not-an-auditor")

    # An auditor's key cannot make an eligibility check.
    auditor_key = SigningKey.from_pem(scheme.key_path(devscheme.AUDITOR).read_bytes())
    async with EligibilityClient(
        member_id=devscheme.AUDITOR,
        key=auditor_key,
        broker_url=broker.url,
        broker_id=devscheme.BROKER,
    ) as as_auditor:
        with pytest.raises(CheckFailed) as refused:
            await as_auditor.check(
                BB, purpose=BB_PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
            )
    assert refused.value.status == 403
    assert _problem(refused.value.problem) == "role-not-permitted"
    async with auditor_client(scheme.root) as auditor:
        index = refused.value.problem["log_index"]
        record = (await auditor.record(index))["record"]["body"]
        assert (record["requester"], record["outcome"], record["refusal"]) == (
            devscheme.AUDITOR,
            "refused",
            "role-not-permitted",
        )


async def test_auditor_without_the_subject_access_grant(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    await ask(blue_badge_client, "bb-yes-dla")
    keys = devscheme.member_keys(scheme)
    members = devscheme.registry_members(keys, scheme.provider_ports, suspended=())
    for member in members:
        if member["id"] == devscheme.AUDITOR:
            member["permissions"]["grants"] = []
    token = sign_registry(
        members=members,
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=2,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=SigningKey.from_pem(scheme.operator_key_path.read_bytes()),
        now=int(datetime.now(UTC).timestamp()),
    )
    scheme.registry_path.write_text(token + "\n")
    broker.app[REGISTRY].reload()  # (or the watcher did already)
    assert broker.app[REGISTRY].snapshot.seq == 2
    async with auditor_client(scheme.root) as auditor:
        with pytest.raises(CheckFailed) as refused:
            await auditor.subject_access(PERSON)
        assert refused.value.status == 403
        assert _problem(refused.value.problem) == "subject-access-not-granted"
        listed = await auditor.records()
        assert [r["log_index"] for r in listed["records"]] == [0]
        assert (await auditor.record(0))["record"]["log_index"] == 0


# live broker: finding records ---------------------------------------------------------------


async def test_record_filters_and_pagination_return_exactly_the_right_records(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    schools_client: EligibilityClient,
    auditor: AuditClient,
) -> None:
    first = [
        await ask(blue_badge_client, "bb-yes-dla"),
        await ask(blue_badge_client, "bb-no"),
        await ask(blue_badge_client, "fsm-no", check=FSM, purpose=FSM_PURPOSE),  # refused
        await ask(schools_client, "fsm-yes-income-support", check=FSM, purpose=FSM_PURPOSE),
    ]
    await asyncio.sleep(0.02)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.02)
    second = [
        await ask(schools_client, "fsm-no", check=FSM, purpose=FSM_PURPOSE),
        await ask(
            blue_badge_client,
            "bb-yes-pip-moving",
            lawful_basis="consent",
            consent=consent_reference("bb-consent-0042"),
        ),
        await ask(blue_badge_client, "no-match"),
        await ask(
            schools_client,
            "hmrc-ctc-yes",
            check=FSM,
            purpose="school-uniform-grant",
            lawful_basis="consent",
            consent=consent_reference("uniform-consent-0042"),
        ),
    ]
    everything = first + second
    assert [r.index for r in everything] == list(range(8))

    async def listed(**query: str) -> list[int]:
        target = "/v1/audit/records"
        if query:
            # Sign the exact bytes sent: ':' stays unencoded, as aiohttp would send it.
            target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        status, body = await raw_audit(
            broker.url, "GET", target, authorization=auditor.authorization("GET", target)
        )
        assert status == 200, body
        return [r["log_index"] for r in body["records"]]

    def expected(predicate: Callable[[Received], bool]) -> list[int]:
        return [r.index for r in everything if predicate(r)]

    assert await listed() == list(range(8))
    assert await listed(requester=devscheme.COUNCIL_SCHOOLS) == expected(
        lambda r: r.requester == devscheme.COUNCIL_SCHOOLS
    )
    assert await listed(purpose=FSM_PURPOSE) == expected(lambda r: r.purpose == FSM_PURPOSE)
    assert await listed(check=BB) == expected(lambda r: r.check == BB)
    for outcome in ("yes", "no", "no-match", "refused"):
        assert await listed(outcome=outcome) == expected(lambda r, o=outcome: r.outcome == o)
    assert await listed(lawful_basis="consent") == expected(lambda r: r.lawful_basis == "consent")
    assert await listed(requester=devscheme.COUNCIL_BLUE_BADGE, outcome="yes") == expected(
        lambda r: r.requester == devscheme.COUNCIL_BLUE_BADGE and r.outcome == "yes"
    )
    stamp = middle.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert await listed(since=stamp) == [r.index for r in second]
    assert await listed(until=stamp) == [r.index for r in first]
    assert await listed(since=stamp, requester=devscheme.COUNCIL_SCHOOLS) == [4, 7]
    assert await listed(until=(middle - timedelta(days=1)).date().isoformat()) == []
    assert await listed(purpose="no-such-purpose") == []

    # Pagination: follow `next` until it is absent; the pages tile the filtered list exactly.
    for filters, limit in (({}, 3), ({}, 4), ({"requester": devscheme.COUNCIL_BLUE_BADGE}, 2)):
        pages: list[list[int]] = []
        cursor: int | None = None
        while True:
            page = await auditor.records(**filters, limit=limit, after=cursor)
            pages.append([r["log_index"] for r in page["records"]])
            assert len(pages[-1]) <= limit
            cursor = page.get("next")
            if cursor is None:
                break
            assert cursor == pages[-1][-1] + 1
        flat = [i for p in pages for i in p]
        assert flat == await listed(**filters)

    # Records carry what an auditor needs; withdrawn or not, nothing personal.
    page = await auditor.records(outcome="refused")
    (refused,) = page["records"]
    assert refused["body"]["refusal"] == "purpose-not-permitted"
    listing = orjson.dumps(await auditor.records(limit=100)).decode()
    for label in ("bb-yes-dla", "bb-no", "fsm-no", "bb-yes-pip-moving", "hmrc-ctc-yes"):
        for value in subject_of(label).values():
            assert value not in listing


async def test_audit_client_can_filter_by_time(
    broker: RunningBroker, blue_badge_client: EligibilityClient, auditor: AuditClient
) -> None:
    await ask(blue_badge_client, "bb-no")
    page = await auditor.records(since="2020-01-01T00:00:00Z")
    assert [r["log_index"] for r in page["records"]] == [0]


async def test_a_zero_limit_is_not_a_server_error(
    broker: RunningBroker, blue_badge_client: EligibilityClient, auditor: AuditClient
) -> None:
    await ask(blue_badge_client, "bb-no")
    status, body = await raw_audit(
        broker.url,
        "GET",
        "/v1/audit/records?limit=0",
        authorization=auditor.authorization("GET", "/v1/audit/records?limit=0"),
    )
    assert (status, body.get("records")) in ((400, None), (200, []))


async def test_a_record_index_beyond_64_bits_is_not_a_server_error(
    broker: RunningBroker, blue_badge_client: EligibilityClient, auditor: AuditClient
) -> None:
    await ask(blue_badge_client, "bb-no")
    target = "/v1/audit/records/" + "9" * 25
    status, _ = await raw_audit(
        broker.url, "GET", target, authorization=auditor.authorization("GET", target)
    )
    assert status in (400, 404)


# live broker: subject access ----------------------------------------------------------------


async def test_subject_access_returns_exactly_that_persons_records(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    schools_client: EligibilityClient,
    auditor: AuditClient,
) -> None:
    about = [
        await ask(blue_badge_client, "bb-yes-dla"),
        await ask(schools_client, "bb-yes-dla", check=FSM, purpose=FSM_PURPOSE),
        await ask(blue_badge_client, "bb-yes-dla", check=FSM, purpose=FSM_PURPOSE),  # refused
        await ask(
            blue_badge_client,
            "bb-yes-dla",
            lawful_basis="consent",
            consent=consent_reference("bb-consent-7"),
        ),
    ]
    others = [
        await ask(blue_badge_client, "bb-no-dla-lower"),  # same family name, another birthday
        await ask(blue_badge_client, "bb-no"),
        await ask(schools_client, "fsm-yes-income-support", check=FSM, purpose=FSM_PURPOSE),
    ]
    about.append(await ask(schools_client, "bb-yes-dla", check=FSM, purpose=FSM_PURPOSE))
    # Spelling and case as a resident might write it still find the same person.
    for identifiers in (PERSON, {"family_name": "  TESTWELL ", "date_of_birth": "2016-03-14"}):
        result = await auditor.subject_access(identifiers)
        entries = result["records"]
        assert [e["log_index"] for e in entries] == [r.index for r in about]
        assert result["pseudonym_keys"] == 1
        for entry, got in zip(entries, about, strict=True):
            assert entry["who"] == got.requester
            assert entry["purpose"] == got.purpose
            assert entry["check"] == got.check
            assert entry["lawful_basis"] == got.lawful_basis
            assert entry["outcome"] == got.outcome
            assert entry["who_name"]
            assert datetime.fromisoformat(entry["when"]) <= datetime.now(UTC)
    assert not {e["log_index"] for e in entries} & {r.index for r in others}
    # Someone with a NINO: the nino pseudonym matches too; nobody else's records leak.
    nino_person = await ask(blue_badge_client, "bb-yes-pip-moving")
    subject = subject_of("bb-yes-pip-moving")
    result = await auditor.subject_access(
        {
            "family_name": subject["family_name"],
            "date_of_birth": subject["date_of_birth"],
            "nino": subject["nino"],
        }
    )
    assert [e["log_index"] for e in result["records"]] == [nino_person.index]
    assert (await auditor.subject_access({"family_name": "Nobody", "date_of_birth": "1900-01-01"}))[
        "records"
    ] == []
    with pytest.raises(CheckFailed) as bad:
        await auditor.subject_access({"family_name": "Testwell"})
    assert bad.value.status == 400


async def test_subject_access_survives_a_pseudonym_key_rotation(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
) -> None:
    broker = await start_broker()
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    async with EligibilityClient.from_config(config) as client:
        before = [await ask(client, "bb-yes-dla"), await ask(client, "bb-no")]
    await broker.stop()

    new_key = scheme.root / "secrets" / "pk-dev-2.key"
    new_key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    text = scheme.broker_config.read_text()
    old = f'[pseudonym]\nkey_id = "{devscheme.PSEUDONYM_KEY_ID}"\n'
    old += f'key_file = "secrets/{devscheme.PSEUDONYM_KEY_ID}.key"\n'
    assert old in text
    scheme.broker_config.write_text(
        text.replace(
            old,
            '[pseudonym]\nkey_id = "pk-dev-2"\nkey_file = "secrets/pk-dev-2.key"\n\n'
            + f'[[pseudonym.previous]]\nkey_id = "{devscheme.PSEUDONYM_KEY_ID}"\n'
            + f'key_file = "secrets/{devscheme.PSEUDONYM_KEY_ID}.key"\n',
        )
    )
    broker = await start_broker()
    async with EligibilityClient.from_config(config) as client:
        after = await ask(client, "bb-yes-dla")
    assert after.index == 2  # the same log, continued
    async with auditor_client(scheme.root) as auditor:
        result = await auditor.subject_access(PERSON)
        assert result["pseudonym_keys"] == 2
        assert [e["log_index"] for e in result["records"]] == [before[0].index, after.index]
        old_body = (await auditor.record(before[0].index))["record"]["body"]
        new_body = (await auditor.record(after.index))["record"]["body"]
    assert old_body["subject"]["key_id"] == devscheme.PSEUDONYM_KEY_ID
    assert new_body["subject"]["key_id"] == "pk-dev-2"
    assert old_body["subject"]["person"] != new_body["subject"]["person"]


# live broker: consent withdrawal ------------------------------------------------------------


async def test_a_withdrawn_consent_refuses_later_checks_and_is_itself_a_record(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    schools_client: EligibilityClient,
    blue_badge_client: EligibilityClient,
    auditor: AuditClient,
) -> None:
    consent = consent_reference("uniform-consent-1234")
    grant = dict(check=FSM, purpose="school-uniform-grant", lawful_basis="consent")
    earlier = await ask(schools_client, "hmrc-ctc-yes", consent=consent, **grant)
    assert earlier.outcome == "yes"
    withdrawn_at = datetime.now(UTC).isoformat(timespec="seconds")
    withdrawal_index = await schools_client.withdraw_consent(consent.id, withdrawn_at=withdrawn_at)
    assert withdrawal_index == earlier.index + 1

    later = await ask(schools_client, "hmrc-ctc-yes", consent=consent, **grant)
    assert (later.outcome, later.refusal) == ("refused", "consent-withdrawn")
    other_consent = await ask(
        schools_client, "hmrc-ctc-yes", consent=consent_reference("uniform-consent-5678"), **grant
    )
    assert other_consent.outcome == "yes"
    # A withdrawal is the council's own: another council citing the same id is not refused.
    elsewhere = await ask(blue_badge_client, "bb-yes-dla", lawful_basis="consent", consent=consent)
    assert elsewhere.outcome == "yes"

    kept = (await auditor.record(earlier.index))["record"]
    assert kept["body"]["outcome"] == "yes"
    assert kept["body"]["consent"]["id"] == consent.id
    withdrawal = (await auditor.record(withdrawal_index))["record"]["body"]
    assert withdrawal == {
        "kind": "consent-withdrawal",
        "log_index": withdrawal_index,
        "recorded_at": withdrawal["recorded_at"],
        "requester": devscheme.COUNCIL_SCHOOLS,
        "consent_id": consent.id,
        "withdrawn_at": withdrawn_at,
        "request_jti": withdrawal["request_jti"],
    }
    refused = (await auditor.record(later.index))["record"]["body"]
    assert (refused["outcome"], refused["refusal"], refused["query_jti"]) == (
        "refused",
        "consent-withdrawn",
        later.jti,
    )
    listed = await auditor.records(kind="consent-withdrawal")
    assert [r["log_index"] for r in listed["records"]] == [withdrawal_index]
    # The withdrawal is in the verifiable log like any other record.
    lines = [line async for line in auditor.export()]
    report = verify(lines, scheme.root)
    assert report.ok, report.problems
    assert report.records == 5


# live broker: retention ---------------------------------------------------------------------


async def test_pruned_log_still_verifies_and_proves(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> None:
    broker = await start_broker()
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    async with EligibilityClient.from_config(config) as client:
        received = [await ask(client, label) for label in ("bb-yes-dla", "bb-no", "no-match")]
        received.append(await ask(client, "fsm-no", check=FSM, purpose=FSM_PURPOSE))
    before = await signed_checkpoint(broker.url, scheme.root)
    await broker.stop()

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    log_config = config_for_log(scheme, broker.settings)
    code, stdout, stderr = await axb_async(
        "audit", "prune", "--config", str(log_config), "--before", tomorrow
    )
    assert code == 0, stderr
    assert f"pruned {len(received)} record bodies" in stdout

    broker = await start_broker()
    async with EligibilityClient.from_config(config) as client:
        fresh = await ask(client, "bb-yes-dla")  # recorded after the cut: kept whole
    export = tmp_path / "after-prune.jsonl"
    code, _, stderr = await axb_async(
        "audit",
        "export",
        "--config",
        str(scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml"),
        "--out",
        str(export),
    )
    assert code == 0, stderr
    report = verify(export.read_bytes().splitlines(), scheme.root)
    assert report.ok, report.problems
    assert report.pruned == [(0, len(received) - 1)]
    assert report.records == len(received) + 1
    parsed = Parsed.of(export.read_bytes().splitlines())
    assert all(r.get("pruned") is True and "body" not in r for r in parsed.records[:-1])
    assert parsed.records[-1]["body"]["query_jti"] == fresh.jti

    latest = await signed_checkpoint(broker.url, scheme.root)
    _, _, found = await public_get(
        f"{broker.url}/v1/log/proof/consistency?from={before.size}&to={latest.size}"
    )
    proof = [base64.b64decode(h) for h in found["proof"]]
    verify_consistency(before.size, latest.size, before.root_hash, latest.root_hash, proof)
    async with auditor_client(scheme.root) as auditor:
        for got in received:
            single = await auditor.record(got.index)
            assert single["record"] == {
                "log_index": got.index,
                "digest": single["record"]["digest"],
                "pruned": True,
            }
            cp = open_checkpoint(single["checkpoint"], log_verifier(scheme.root), ORIGIN)
            leaf = leaf_hash(leaf_input(base64.b64decode(single["record"]["digest"])))
            proof = [base64.b64decode(h) for h in single["inclusion_proof"]]
            verify_inclusion(leaf, got.index, cp.size, proof, cp.root_hash)
        # Subject access shows nothing of a pruned record but that it was pruned.
        subject = await auditor.subject_access(PERSON)
        for entry in subject["records"]:
            if entry["log_index"] < len(received):
                assert entry == {"log_index": entry["log_index"], "pruned": True}
        assert subject["records"][-1]["log_index"] == fresh.index


# No answer without its record, on each backend ---------------------------------------------


async def rename_records(settings: Settings, old: str, new: str) -> None:
    """Hide or restore the records table under a running broker: its commits fail meanwhile."""
    await log_sql(settings, f"ALTER TABLE {old} RENAME TO {new}")


async def test_no_answer_without_its_record_while_the_log_cannot_commit(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    log = broker.app[STORES].consent_log
    async with EligibilityClient.from_config(config) as client:
        received = await asyncio.gather(
            *(ask(client, label) for label in ("bb-yes-dla", "bb-no", "no-match") * 10)
        )
        stored = {
            r.index: (body["query_jti"], body["outcome"])
            for r in await log.entries(0, 100)
            for body in [orjson.loads(r.body or b"{}")]
        }
        assert sorted(stored) == list(range(30))
        for got in received:
            assert stored[got.index] == (got.jti, got.outcome)

        await rename_records(broker.settings, "records", "records_hidden")  # commits now fail
        token, jti = client.sign_query(
            BB, purpose=BB_PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
        with pytest.raises(CheckFailed) as failed:
            await client.send(token, jti)
        assert failed.value.status == 503
        assert _problem(failed.value.problem) == "log-unavailable"
        await rename_records(broker.settings, "records_hidden", "records")
        assert await log.size() == 30  # the refused commit left nothing behind
        again = await ask(client, "bb-yes-dla")  # the writer recovers, with no gap
        assert again.index == 30
    async with auditor_client(scheme.root) as auditor:
        lines = [line async for line in auditor.export()]
    report = verify(lines, scheme.root)
    assert report.ok, report.problems
    assert report.records == 31
