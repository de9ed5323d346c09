"""Bulk jobs end to end on a real broker and reference providers on loopback: submitted with a
signed manifest, polled, cancelled, results verified against the signed results manifest, every
item's consent record in the log; and the attacks of the issue's "bad input" list."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from broker.app_keys import STORES
from broker.bulk.service import BULK
from broker.cli import main
from broker.scheme import dev as devscheme
from broker.stores.consent_log import RecordFilter
from connectors.reference.population import subject_of
from members.bulk import BulkJobs, ItemsFile
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.bulk import strangers, submit_fsm
from tests.support.logdb import log_backend
from tests.support.servers import RunningBroker, RunningProvider, StartBroker
from trust import bulk, jws
from trust.errors import VerificationError

FSM = devscheme.FSM_CHECK
PURPOSE = "free-school-meals-application"
IDENTITIES = ("fsm-yes-income-support", "fsm-no", "no-match", "fsm-yes-pension-credit")
PROBLEM = "urn:ax-broker:problem:"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "councils.md"
BULK_SETTINGS = {"poll_s": 0.05, "chunk_items": 3, "lease_s": 2}


def rows(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``n`` rows cycling through the test identities (so subjects repeat)."""
    return [
        {"ref": f"row-{i}", "subject": subject_of(IDENTITIES[i % len(IDENTITIES)])}
        for i in range(start, start + n)
    ]


def described(items: bytes, fmt: bulk.ItemsFormat = "ndjson", **changes: Any) -> ItemsFile:
    lines = items.count(b"\n") - (1 if fmt == "csv" else 0)
    return ItemsFile(fmt, changes.get("count", lines), changes.get("sha256", bulk.digest_of(items)))


@dataclass
class Council:
    broker: RunningBroker
    client: EligibilityClient

    @property
    def jobs(self) -> BulkJobs:
        return BulkJobs(self.client)

    async def submit(self, items: bytes, fmt: bulk.ItemsFormat = "ndjson", **kw: Any) -> Any:
        return await self.jobs.submit(
            items, described(items, fmt, **kw), check=FSM, purpose=PURPOSE, assurance="P2"
        )

    async def refused(self, items: bytes, fmt: bulk.ItemsFormat = "ndjson", **kw: Any) -> Any:
        with pytest.raises(CheckFailed) as refused:
            await self.submit(items, fmt, **kw)
        return refused.value

    async def records_of(self, job_id: str) -> list[dict[str, Any]]:
        found = await self.broker.app[STORES].consent_log.find(
            RecordFilter(requester=devscheme.COUNCIL_SCHOOLS), after=-1, limit=100_000
        )
        bodies = [orjson.loads(r.body) for r in found if r.body is not None]
        return [b for b in bodies if str(b.get("query_jti", "")).startswith(job_id + ".")]


@pytest.fixture
async def council(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: dict[str, RunningProvider]
) -> AsyncIterator[Council]:
    broker = await start_broker(bulk=BULK_SETTINGS)
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        yield Council(broker, client)


async def test_a_job_answers_every_row_as_single_checks_do(council: Council) -> None:
    client = council.client
    single = {
        who: (
            await client.check(FSM, purpose=PURPOSE, subject=subject_of(who), assurance="P2")
        ).outcome
        for who in IDENTITIES
    }
    assert set(single.values()) == {"yes", "no", "no-match"}
    job_rows = rows(22)
    progress: list[float] = []
    results = [
        r
        async for r in client.bulk(
            FSM,
            purpose=PURPOSE,
            rows=job_rows,
            assurance="P2",
            poll_s=0.05,
            on_progress=lambda doc: progress.append(doc["progress"]),
        )
    ]
    assert [r.ref for r in results] == [row["ref"] for row in job_rows]
    for i, result in enumerate(results):
        assert result.outcome == single[IDENTITIES[i % len(IDENTITIES)]]
    assert progress[-1] == 1.0


async def test_a_jobs_items_travel_to_providers_as_signed_batches(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: dict[str, RunningProvider]
) -> None:
    """Concurrent items share the single checks' path, coalescer included: fewer signed requests
    reach each provider than there are items, and every item is still answered and recorded."""
    broker = await start_broker(bulk={**BULK_SETTINGS, "chunk_items": 60})
    kits = [providers[p].service.kit for p in (devscheme.DWP, devscheme.HMRC)]
    before = [(kit.answered, kit.batches_answered) for kit in kits]
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        jobs = BulkJobs(client)
        job = await submit_fsm(jobs, strangers(60))
        ended = await jobs.wait(job["id"], poll_s=0.05)
        assert ended["status"] == "completed"
        assert ended["counts"]["no-match"] == 60
        records = await Council(broker, client).records_of(job["id"])
    assert len(records) == 60
    asked = [kit.answered - answered for kit, (answered, _) in zip(kits, before, strict=True)]
    batches = [kit.batches_answered - n for kit, (_, n) in zip(kits, before, strict=True)]
    assert max(asked) == 60  # a no-match from one provider ends an item: others may be spared
    assert all(b >= 1 for b, a in zip(batches, asked, strict=True) if a > 1)
    assert sum(batches) < sum(asked) / 4  # one signature in and out for many items


async def test_duplicate_subjects_are_checked_once_and_answered_for_each_row(
    council: Council,
) -> None:
    job = await council.submit(bulk.items_ndjson(rows(12)))
    assert job["status"] == "queued"
    ended = await council.jobs.wait(job["id"], poll_s=0.05)
    assert ended["status"] == "completed"
    assert (ended["items"], ended["subjects"], ended["records"]) == (12, 4, 4)
    assert ended["counts"] == {"yes": 6, "no": 3, "no-match": 3, "undetermined": 0, "refused": 0}
    signed, body = await council.jobs.results(job["id"], manifest_jti=job["manifest_jti"])
    records = await council.records_of(job["id"])
    assert len(records) == signed.records == 4
    assert sorted(r["query_jti"] for r in records) == sorted(
        f"{job['id']}.{n}" for n in (1, 2, 3, 4)
    )
    indices = sorted(r["log_index"] for r in records)
    assert [signed.first_index, signed.last_index] == [indices[0], indices[-1]]
    assert len(body.splitlines()) == signed.results == 12


async def test_csv_in_and_spreadsheet_safe_csv_out(council: Council) -> None:
    header = "ref,family_name,date_of_birth,nino\r\n"
    lines = [
        f"{r['ref']},{r['subject']['family_name']},{r['subject']['date_of_birth']},"
        f"{r['subject'].get('nino', '')}\r\n"
        for r in rows(5)
    ]
    items = (header + "".join(lines)).encode()
    job = await council.submit(items, "csv")
    await council.jobs.wait(job["id"], poll_s=0.05)
    signed, body = await council.jobs.results(job["id"], "csv")
    assert body.startswith(b"ref,outcome\r\n")
    assert body.count(b"\r\n") == 6
    assert signed.sha256["csv"] == bulk.digest_of(body)
    with pytest.raises(VerificationError) as tampered:
        bulk.verify_results_file(signed, body.replace(b",no", b",yes"), "csv")
    assert "digest" in tampered.value.reason


async def test_a_cancelled_job_ends_cancelled_with_a_record_for_every_result(
    council: Council,
) -> None:
    job = await council.submit(bulk.items_ndjson(rows(600)))
    with pytest.raises(CheckFailed) as early:
        await council.jobs.results(job["id"])
    assert early.value.status == 409
    assert early.value.problem["type"] == PROBLEM + "bulk-job-unfinished"
    cancelled = await council.jobs.cancel(job["id"])
    assert cancelled["status"] in ("queued", "running", "cancelled")
    ended = await council.jobs.wait(job["id"], poll_s=0.05)
    assert ended["status"] == "cancelled"
    signed, body = await council.jobs.results(job["id"])
    assert signed.status == "cancelled"
    assert len(body.splitlines()) == ended["processed"] < 600
    assert len(await council.records_of(job["id"])) == ended["records"]


# --- bad input: each refused with the row and field named, nothing started ----------------


async def nothing_started(council: Council, before: int) -> None:
    assert await council.broker.app[STORES].consent_log.size() == before
    listed = await council.broker.app[BULK].store.jobs_of(devscheme.COUNCIL_SCHOOLS)
    assert listed == []


def with_subject(job_rows: list[dict[str, Any]], row: int, **fields: str) -> bytes:
    job_rows[row - 1]["subject"] = {**job_rows[row - 1]["subject"], **fields}
    return bulk.items_ndjson(job_rows)


async def test_bad_items_files_are_refused_naming_row_and_field_and_start_nothing(
    council: Council,
) -> None:
    three = bulk.items_ndjson(rows(3))
    duplicate_ref = rows(3)
    duplicate_ref[2]["ref"] = duplicate_ref[0]["ref"]
    formula = b"ref,family_name,date_of_birth\r\n=cmd|' /C calc'!A0,Sampleton,1961-07-02\r\n"
    cases: list[tuple[bytes, bulk.ItemsFormat, dict[str, Any], int, str | None, str]] = [
        (three, "ndjson", {"sha256": bulk.digest_of(b"other")}, 0, "items_sha256", ""),
        (three, "ndjson", {"count": 4}, 0, "items", ""),
        (bulk.items_ndjson(duplicate_ref), "ndjson", {}, 3, "ref", ""),
        (
            with_subject(rows(5000), 4322, date_of_birth="1980-02-30"),
            "ndjson",
            {},
            4322,
            "date_of_birth",
            "1980-02-30",
        ),
        (three.replace(b"row-1", b"row-\xff1"), "ndjson", {}, 2, None, ""),
        (
            with_subject(rows(2), 2, family_name="N" * 10_000),
            "ndjson",
            {},
            2,
            "family_name",
            "NNNN",
        ),
        (formula, "csv", {}, 1, "ref", "cmd"),
    ]
    for items, fmt, changes, row, field, secret in cases:
        refused = await council.refused(items, fmt, **changes)
        assert refused.status == 400
        assert refused.problem["type"] == PROBLEM + "invalid-items"
        assert (refused.problem["row"], refused.problem["field"]) == (row, field)
        if secret:  # the caller's value is never echoed
            assert secret not in orjson.dumps(refused.problem).decode()
    await nothing_started(council, 0)


async def test_rows_over_the_limit_and_a_twenty_megabyte_file_are_refused(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: object
) -> None:
    limits = {**BULK_SETTINGS, "max_items": 10, "max_bytes": 8 * 1024 * 1024}
    broker = await start_broker(bulk=limits)
    line = bulk.items_ndjson(rows(1))
    twenty_mb = line * (20 * 1024 * 1024 // len(line))  # every ref the same: never read
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        over = Council(broker, client)
        refused = await over.refused(bulk.items_ndjson(rows(11)))
        assert refused.status == 400
        assert "at most 10" in refused.problem["detail"]
        refused = await over.refused(bulk.items_ndjson(rows(11)), count=10)
        assert (refused.problem["row"], refused.problem["field"]) == (11, None)
        refused = await over.refused(twenty_mb, count=10)
        assert refused.status == 413
        assert refused.problem["type"] == PROBLEM + "too-large"
        await nothing_started(over, 0)


async def test_a_replayed_manifest_is_refused(council: Council) -> None:
    items = bulk.items_ndjson(rows(2))
    client = council.client
    claims = bulk.manifest_claims(
        requester=client.member_id,
        broker=client.broker_id,
        now=int(client.clock()),
        check=FSM,
        purpose=PURPOSE,
        items=2,
        items_sha256=bulk.digest_of(items),
        format="ndjson",
        assurance="P2",
    )
    manifest = jws.sign(claims, client.signing_key, bulk.BULK_MANIFEST)
    headers = {"Bulk-Manifest": manifest, "Content-Type": "application/x-ndjson"}
    statuses = []
    for _ in range(2):
        async with client.session.post(
            client.broker_url + "/v1/bulk/jobs", data=items, headers=headers
        ) as response:
            statuses.append(response.status)
    assert statuses == [202, 401]


async def test_another_councils_job_is_not_found_to_read_or_cancel(
    council: Council, scheme: devscheme.DevScheme
) -> None:
    job = await council.submit(bulk.items_ndjson(rows(2)))
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as other:
        for attempt in (BulkJobs(other).status, BulkJobs(other).cancel, BulkJobs(other).results):
            with pytest.raises(CheckFailed) as hidden:
                await attempt(job["id"])
            assert hidden.value.status == 404
        with pytest.raises(CheckFailed) as unknown:
            await BulkJobs(other).status("0" * 32)
        assert unknown.value.problem == hidden.value.problem
    ended = await council.jobs.wait(job["id"], poll_s=0.05)
    assert ended["status"] == "completed"


async def test_a_provider_down_halfway_leaves_its_items_undetermined_the_rest_answered(
    council: Council, providers: dict[str, RunningProvider]
) -> None:
    distinct = strangers(150)
    job = await council.submit(bulk.items_ndjson(distinct))
    while (status := await council.jobs.status(job["id"]))["progress"] < 0.3:
        assert status["status"] in ("queued", "running")
        await asyncio.sleep(0.03)
    await providers[devscheme.DWP].stop()
    ended = await council.jobs.wait(job["id"], poll_s=0.05)
    assert ended["status"] == "completed"
    counts = ended["counts"]
    assert counts["no-match"] >= 45  # answered before the provider went down
    assert counts["undetermined"] > 0  # answered after: the provider's part is unknown
    assert counts["no-match"] + counts["undetermined"] == 150
    assert len(await council.records_of(job["id"])) == 150


async def axb(*args: str) -> tuple[int, str, str]:
    """``axb ARGS`` on a thread of its own (it runs its own event loop, as from a shell),
    while the test's broker serves on this one."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    return result.exit_code, result.stdout, result.stderr


def documents(stdout: str) -> list[Any]:
    """The JSON documents ``axb`` printed (the in-process broker's log lines share stdout)."""
    found, block = [], None
    for line in stdout.splitlines():
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                found.append(json.loads("\n".join(block)))
                block = None
    return found


async def test_axb_bulk_takes_a_spreadsheet_export_and_writes_verified_csv_results(
    council: Council, scheme: devscheme.DevScheme, tmp_path: Path
) -> None:
    config = str(scheme.council_config(devscheme.COUNCIL_SCHOOLS))
    export = tmp_path / "caseload.csv"
    header = "ref,family_name,date_of_birth,nino\n"
    export.write_text(
        header
        + "".join(
            f"{r['ref']},{r['subject']['family_name']},{r['subject']['date_of_birth']},"
            f"{r['subject'].get('nino', '')}\n"
            for r in rows(9)
        )
    )
    out = tmp_path / "results.csv"
    options = ["--check", FSM, "--purpose", PURPOSE, "--assurance", "P2"]
    code, stdout, stderr = await axb(
        "bulk", "submit", "--config", config, *options, "--wait", "--out", str(out), str(export)
    )
    assert code == 0, stderr
    assert "9/9 (100%)" in stderr  # not a terminal: plain progress lines
    lines = out.read_text().splitlines()
    assert lines[0] == "ref,outcome"
    assert [line.split(",")[0] for line in lines[1:]] == [f"row-{i}" for i in range(9)]
    ended, written = documents(stdout)
    assert (ended["status"], written["verified"], written["results"]) == ("completed", True, 9)
    code, stdout, _ = await axb("bulk", "status", "--config", config, ended["id"])
    assert (code, documents(stdout)[0]["counts"]) == (0, ended["counts"])

    bad = tmp_path / "bad.csv"
    bad.write_text(header + "r1,Sampleton,1961-02-30,\n")
    code, stdout, _ = await axb("bulk", "submit", "--config", config, *options, str(bad))
    assert code == 2
    (problem,) = documents(stdout)
    assert (problem["row"], problem["field"]) == (1, "date_of_birth")


async def test_the_worked_auto_enrolment_example_in_the_councils_guide_holds(
    council: Council,
) -> None:
    guide = GUIDE.read_text()
    example = guide[guide.index("### Worked example") :]
    caseload, enrolled = re.findall(r"```csv\n(.*?)```", example, flags=re.DOTALL)[:2]
    job = await council.submit(caseload.encode(), "csv")
    ended = await council.jobs.wait(job["id"], poll_s=0.05)
    assert (ended["items"], ended["subjects"], ended["records"]) == (7, 6, 6)
    _, body = await council.jobs.results(job["id"], "csv")
    assert body.decode().splitlines() == enrolled.splitlines()


async def test_a_broker_that_runs_no_jobs_takes_them_and_a_worker_on_its_log_runs_them(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: object
) -> None:
    front = await start_broker(bulk={**BULK_SETTINGS, "run_jobs": False})
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        council = Council(front, client)
        job = await council.submit(bulk.items_ndjson(rows(6)))
        await asyncio.sleep(0.5)
        assert (await council.jobs.status(job["id"]))["status"] == "queued"  # nobody runs it
        await start_broker(port=0, bulk=BULK_SETTINGS)  # a worker: no traffic reaches it
        ended = await council.jobs.wait(job["id"], poll_s=0.05)
        assert ended["status"] == "completed"
        assert len(await council.records_of(job["id"])) == 4


async def processed(jobs: BulkJobs, job_id: str, *, at_least: int) -> None:
    """Wait until the job has at least ``at_least`` rows done (and has not ended)."""
    for _ in range(600):
        status = await jobs.status(job_id)
        assert status["status"] in ("queued", "running")
        if status["processed"] >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the job never got there")


@pytest.mark.postgres
async def test_on_postgresql_another_broker_takes_over_a_job_whose_owner_stopped(
    scheme: devscheme.DevScheme, start_broker: StartBroker, providers: object
) -> None:
    """The owner stops mid-chunk (its runner cancelled, its lease left to run out): a second
    broker on the same PostgreSQL log reconciles with the records already committed and
    finishes the job, every subject recorded exactly once."""
    distinct = strangers(90)
    async with log_backend("postgres") as on_postgres:
        first = await start_broker(**on_postgres, bulk=BULK_SETTINGS)
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_SCHOOLS)
        ) as client:
            owner = Council(first, client)
            job = await owner.submit(bulk.items_ndjson(distinct))
            await processed(owner.jobs, job["id"], at_least=30)
            await first.stop()
            second = await start_broker(**on_postgres, port=0, bulk=BULK_SETTINGS)
            taker = Council(second, client)
            client_url = client.broker_url
            assert client_url == first.url  # the council's config names the first broker
            second_jobs = BulkJobs(
                EligibilityClient(
                    member_id=client.member_id,
                    key=client.signing_key,
                    broker_url=second.url,
                    broker_id=client.broker_id,
                    session=client.session,
                )
            )
            ended = await second_jobs.wait(job["id"], poll_s=0.1)
            records = await taker.records_of(job["id"])
        assert ended["status"] == "completed"
        assert ended["processed"] == ended["records"] == 90
        assert sorted(r["query_jti"] for r in records) == sorted(
            f"{job['id']}.{n}" for n in range(1, 91)
        )
