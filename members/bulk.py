"""The council side of bulk checks: submit a signed job, poll it, fetch verified results.

    async with EligibilityClient.from_config(path) as client:
        async for result in client.bulk(
            "free-school-meals", purpose="free-school-meals-application", rows=rows
        ):
            result.ref, result.outcome

:class:`BulkJobs` does each step on its own (the ``axb bulk`` commands use it): ``submit`` an
items file (NDJSON or CSV, its SHA-256 and row count signed into the manifest), ``status`` and
``cancel`` (each a signed ``bulk-request+jwt`` bound to its method and path), ``wait`` until the
job ends, ``results``: the results file *and* the signed results manifest, returned only once
the manifest's signature, audience, job, binding to the submitted manifest and the file's
digest and line count all verify.

A job submitted with ``notify=True`` ends with the broker posting a signed ``bulk-notice+jwt``
to the council's ``bulk_callback`` (named in the registry). :class:`NoticeReceiver` is an
aiohttp handler for that address: it verifies each notice (``BulkJobs.verify_notice``), hands
each job's notice to the council's code once (the broker retries until it gets a 2xx, with the
same ``jti``) and answers 204; a notice that does not verify gets 400 and is not handed on.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO

import aiohttp
import orjson
from aiohttp import web

from members.errors import AnswerNotTrusted, CheckFailed
from trust import bulk, jws
from trust.errors import InvalidMessage, VerificationError
from trust.messages import audit_request_claims

if TYPE_CHECKING:
    from members.council import EligibilityClient

SUBMIT_TIMEOUT = aiohttp.ClientTimeout(total=900)
Progress = Callable[[Mapping[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class BulkResult:
    """One row's answer: the council's own reference and the outcome."""

    ref: str
    outcome: str


@dataclass(frozen=True, slots=True)
class ItemsFile:
    """An items file as the manifest describes it: how many rows, and its SHA-256."""

    format: bulk.ItemsFormat
    items: int
    sha256: str


def describe_items(stream: BinaryIO, fmt: bulk.ItemsFormat) -> ItemsFile:
    """Count the rows of an items file and hash it, reading it in pieces (the CSV header
    is not a row)."""
    digest = hashlib.sha256()
    lines = 0
    last = b"\n"
    while piece := stream.read(1 << 20):
        digest.update(piece)
        lines += piece.count(b"\n")
        last = piece[-1:]
    if last != b"\n":
        lines += 1
    return ItemsFile(fmt, lines - (1 if fmt == "csv" else 0), "sha256:" + digest.hexdigest())


class BulkJobs:
    """Bulk jobs of one council, through its open :class:`EligibilityClient`."""

    def __init__(self, client: EligibilityClient) -> None:
        self._client = client

    def _authorization(self, method: str, target: str) -> str:
        client = self._client
        claims = audit_request_claims(
            auditor=client.member_id,
            broker=client.broker_id,
            now=int(client.clock()),
            method=method,
            target=target,
        )
        return "Bearer " + jws.sign(claims, client.signing_key, bulk.BULK_REQUEST)

    async def _call(self, method: str, target: str) -> tuple[int, bytes]:
        client = self._client
        headers = {"Authorization": self._authorization(method, target)}
        async with client.session.request(
            method, client.broker_url + target, headers=headers
        ) as response:
            body = await response.read()
            if response.status >= 400:
                raise CheckFailed(response.status, _problem(body))
            return response.status, body

    async def submit(
        self,
        items: bytes | BinaryIO,
        described: ItemsFile,
        *,
        check: str,
        purpose: str,
        lawful_basis: str | None = "public-task",
        as_of: date | None = None,
        assurance: str | None = None,
        notify: bool = False,
    ) -> dict[str, Any]:
        """Sign the manifest and send it with the items; the accepted job's status document.
        A refused job raises ``CheckFailed`` (its problem names the row and field).
        ``notify``: the broker posts a signed notice to the council's registered callback when
        the job ends."""
        client = self._client
        claims = bulk.manifest_claims(
            requester=client.member_id,
            broker=client.broker_id,
            now=int(client.clock()),
            check=check,
            purpose=purpose,
            items=described.items,
            items_sha256=described.sha256,
            format=described.format,
            lawful_basis=lawful_basis,
            as_of=as_of,
            assurance=assurance,
            notify=notify,
        )
        manifest = jws.sign(claims, client.signing_key, bulk.BULK_MANIFEST)
        headers = {
            "Bulk-Manifest": manifest,
            "Content-Type": bulk.MEDIA_TYPES[described.format],
        }
        body_stream = io.BytesIO(items) if isinstance(items, bytes) else items
        async with client.session.post(
            client.broker_url + "/v1/bulk/jobs",
            data=body_stream,
            headers=headers,
            timeout=SUBMIT_TIMEOUT,  # the broker reads every row before it answers
        ) as response:
            body = await response.read()
            if response.status != 202:
                raise CheckFailed(response.status, _problem(body))
        job: dict[str, Any] = orjson.loads(body)
        job["manifest_jti"] = claims["jti"]
        return job

    async def status(self, job_id: str) -> dict[str, Any]:
        _, body = await self._call("GET", f"/v1/bulk/jobs/{job_id}")
        document: dict[str, Any] = orjson.loads(body)
        return document

    async def cancel(self, job_id: str) -> dict[str, Any]:
        _, body = await self._call("DELETE", f"/v1/bulk/jobs/{job_id}")
        document: dict[str, Any] = orjson.loads(body)
        return document

    async def wait(
        self, job_id: str, *, poll_s: float = 0.5, on_progress: Progress | None = None
    ) -> dict[str, Any]:
        """Poll until the job has ended; ``on_progress`` sees each status document."""
        while True:
            document = await self.status(job_id)
            if on_progress is not None:
                shown = on_progress(document)
                if shown is not None:
                    await shown
            if document["status"] in bulk.TERMINAL:
                return document
            await asyncio.sleep(poll_s)

    async def results(
        self,
        job_id: str,
        fmt: bulk.ItemsFormat = "ndjson",
        *,
        manifest_jti: str | None = None,
    ) -> tuple[bulk.BulkResults, bytes]:
        """The ended job's results file and its verified, signed results manifest. Raises
        ``AnswerNotTrusted`` if anything does not verify (``manifest_jti``: the job must be the
        one that manifest submitted)."""
        _, token = await self._call("GET", f"/v1/bulk/jobs/{job_id}/manifest")
        suffix = "results.csv" if fmt == "csv" else "results"
        _, body = await self._call("GET", f"/v1/bulk/jobs/{job_id}/{suffix}")
        try:
            verified = await self._client.verify_broker_token(token, bulk.BULK_RESULTS)
            signed = bulk.parse_results(verified, requester=self._client.member_id)
            if signed.job != job_id:
                raise VerificationError("the results manifest is for another job")
            if manifest_jti is not None and signed.manifest_jti != manifest_jti:
                raise VerificationError("the results manifest is for another submission")
            bulk.verify_results_file(signed, body, fmt)
        except (VerificationError, InvalidMessage) as exc:
            raise AnswerNotTrusted(str(getattr(exc, "reason", exc))) from exc
        return signed, body

    async def verify_notice(self, token: bytes) -> bulk.BulkNotice:
        """An end-of-job notice the broker posted to this council's callback, verified: the
        broker's signature, ``typ``, this council as its audience, its times, its ``jti`` its
        job's, its counts adding up. Raises ``AnswerNotTrusted``."""
        try:
            verified = await self._client.verify_broker_token(token, bulk.BULK_NOTICE)
            return bulk.parse_notice(verified, requester=self._client.member_id)
        except (VerificationError, InvalidMessage) as exc:
            raise AnswerNotTrusted(str(getattr(exc, "reason", exc))) from exc


NoticeHandler = Callable[[bulk.BulkNotice], Awaitable[None]]
MAX_NOTICE_BYTES = 64 * 1024  # a notice is about 1 KB


class NoticeReceiver:
    """The council's end of the notices: ``app.router.add_post(path, receiver.handle)``.

    Each verified notice reaches ``on_notice`` once per job (it remembers the last
    ``remember`` jobs' notices, so the broker's retries are answered 204 without repeating the
    work); ``on_notice`` raising answers 500, and the broker tries again later."""

    def __init__(self, jobs: BulkJobs, on_notice: NoticeHandler, *, remember: int = 10_000):
        self._jobs = jobs
        self._on_notice = on_notice
        self._seen: dict[str, None] = {}
        self._remember = remember

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != jws.JWT_MEDIA_TYPE:
            return web.Response(status=415)
        if (request.content_length or 0) > MAX_NOTICE_BYTES:
            return web.Response(status=413)
        token = await request.read()
        try:
            notice = await self._jobs.verify_notice(token.strip())
        except AnswerNotTrusted:
            return web.Response(status=400)
        jti = notice.results.jti
        if jti not in self._seen:
            await self._on_notice(notice)
            self._seen[jti] = None
            if len(self._seen) > self._remember:
                del self._seen[next(iter(self._seen))]
        return web.Response(status=204)


async def run_bulk(
    client: EligibilityClient,
    check: str,
    *,
    purpose: str,
    rows: list[Mapping[str, Any]],
    poll_s: float = 0.5,
    on_progress: Progress | None = None,
    **options: Any,
) -> tuple[bulk.BulkResults, list[BulkResult]]:
    """Submit ``rows`` (``{"ref", "subject", "consent"?}``) as one job, wait, verify."""
    jobs = BulkJobs(client)
    items = bulk.items_ndjson(rows)
    described = ItemsFile("ndjson", len(rows), bulk.digest_of(items))
    job = await jobs.submit(items, described, check=check, purpose=purpose, **options)
    await jobs.wait(job["id"], poll_s=poll_s, on_progress=on_progress)
    signed, body = await jobs.results(job["id"], manifest_jti=job["manifest_jti"])
    if signed.items != len(rows):
        raise AnswerNotTrusted("the results manifest names another number of items")
    return signed, [BulkResult(ref, outcome) for ref, outcome in bulk.read_results_ndjson(body)]


def _problem(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"detail": "no problem document"}
    return value if isinstance(value, dict) else {"detail": "no problem document"}
