"""The bulk API's handlers: parse, call, render.

Everything after the submission is a council's signed request about one of its own jobs
(``bulk-request+jwt`` in ``Authorization: Bearer``, bound to the method and path as an audit
request is). A job of another council answers 404 exactly as a job that does not exist:
existence is not disclosed. Results (row reference and outcome, nothing more) are readable once
the job has ended, every row's consent record committed; the signed results manifest binds
both files' digests and the log index range of the job's records.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from broker.app_keys import CLOCK, GATE, SETTINGS
from broker.bulk.intake import receive_job
from broker.bulk.runner import RESULTS_PAGE, job_results
from broker.bulk.service import BULK
from broker.errors import BadRequest, Replayed
from broker.stores.consent_log.jobs import Job, Notice
from trust import bulk, jws, policy
from trust.errors import InvalidMessage, PolicyRefusal, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.messages import AuditRequest, new_jti, parse_audit_request
from trust.records import iso_ms
from trust.registry import Registry

_JOB_ID = re.compile(r"[0-9a-f]{32}")
BASE = "/v1/bulk/jobs"


def authorize_council(registry: Registry, member_id: str) -> None:
    """An active relying party reads and cancels its own jobs."""
    member = registry.members.get(member_id)
    if member is None or not member.active:
        raise PolicyRefusal(policy.MEMBER_SUSPENDED, "the member is not active in the scheme")
    if "relying-party" not in member.roles:
        raise PolicyRefusal(policy.ROLE_NOT_PERMITTED, "only relying parties run bulk checks")


async def authenticate_council(request: web.Request) -> str:
    """The council's signed request through the gate; returns its member id."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Replayed("no bulk request token")  # the same 401 as any failed verification
    token = header.removeprefix("Bearer ").strip().encode("ascii", "replace")

    def parse(verified: jws.Verified, _: float) -> AuditRequest:
        try:
            return parse_audit_request(
                verified, method=request.method, target=request.path_qs, body=b""
            )
        except InvalidMessage as exc:  # bound to another request
            raise VerificationError("bulk request binding") from exc

    passed = await request.app[GATE].admit(
        token, bulk.BULK_REQUEST, parse, authorize=authorize_council
    )
    return passed.sender


async def _own_job(request: web.Request) -> Job:
    member = await authenticate_council(request)
    job_id = request.match_info["job_id"]
    job = await request.app[BULK].store.get(job_id) if _JOB_ID.fullmatch(job_id) else None
    if job is None or job.requester != member or job.status == "receiving":
        raise BadRequest("not-found", "no such job", 404)
    return job


def job_document(job: Job, notice: Notice | None = None) -> dict[str, Any]:
    """A job's status as the council reads it: no subject, only counts and links."""
    base = f"{BASE}/{job.job_id}"
    manifest = job.manifest
    return {
        "id": job.job_id,
        "status": job.status,
        "reason": job.reason,
        "check": manifest["check"],
        "purpose": manifest["purpose"],
        "as_of": manifest["as_of"],
        "items": job.items,
        "processed": job.done_rows,
        "progress": round(job.done_rows / job.items, 4) if job.items else 1.0,
        "counts": job.counts,
        "subjects": job.subjects,
        "records": job.done_subjects,
        "log_index_range": None if job.first_index is None else [job.first_index, job.last_index],
        "created_at": iso_ms(job.created_ms),
        "finished_at": None if job.finished_ms is None else iso_ms(job.finished_ms),
        "results_deleted": job.results_deleted,
        "notify": bool(manifest.get("notify", False)),
        "notice": None if notice is None else {"state": notice.state, "attempts": notice.attempts},
        "links": {
            "self": base,
            "results": f"{base}/results",
            "results_csv": f"{base}/results.csv",
            "manifest": f"{base}/manifest",
        },
    }


def audited_job(job: Job) -> dict[str, Any]:
    """A job as an auditor lists it: whose, what for, how far, and its records' range — no
    links to the council's results."""
    document = job_document(job)
    del document["links"]
    lawful_basis = job.manifest.get("lawful_basis")
    return {**document, "requester": job.requester, "lawful_basis": lawful_basis}


async def post_job(request: web.Request) -> web.Response:
    job = await receive_job(request)
    document = job_document(job)
    return web.json_response(document, status=202, headers={"Location": document["links"]["self"]})


async def get_job(request: web.Request) -> web.Response:
    job = await _own_job(request)
    notice = None
    if job.manifest.get("notify") and job.status in bulk.TERMINAL:
        notice = await request.app[BULK].store.notice_of(job.job_id)
    return web.json_response(job_document(job, notice))


async def delete_job(request: web.Request) -> web.Response:
    job = await _own_job(request)
    ended = await request.app[BULK].store.cancel(
        job.job_id,
        now_ms=int(request.app[CLOCK]() * 1000),
        unstarted_sha256=bulk.ResultsDigests().digests(),  # a queued job has no results yet
    )
    request.app[BULK].notifier.wake()
    return web.json_response(job_document(ended or job))


def _ended(job: Job) -> Job:
    if job.status not in bulk.TERMINAL or job.sha256 is None:
        raise BadRequest("bulk-job-unfinished", "the job has not ended: poll its status", 409)
    if job.results_deleted:
        raise BadRequest("not-found", "the results were deleted after the retention period", 404)
    return job


async def _results(request: web.Request, fmt: bulk.ItemsFormat) -> web.StreamResponse:
    job = _ended(await _own_job(request))
    store = request.app[BULK].store
    media = "text/csv; charset=utf-8" if fmt == "csv" else bulk.MEDIA_TYPES["ndjson"]
    response = web.StreamResponse(headers={"Content-Type": media})
    await response.prepare(request)
    line = bulk.result_csv if fmt == "csv" else bulk.result_ndjson
    if fmt == "csv":
        await response.write(bulk.RESULTS_CSV_HEADER)
    after = 0
    while page := await store.results(job.job_id, after=after, limit=RESULTS_PAGE):
        await response.write(b"".join(line(ref, outcome) for _, ref, outcome in page))
        after = page[-1][0]
    await response.write_eof()
    return response


async def get_results(request: web.Request) -> web.StreamResponse:
    return await _results(request, "ndjson")


async def get_results_csv(request: web.Request) -> web.StreamResponse:
    return await _results(request, "csv")


async def get_results_manifest(request: web.Request) -> web.Response:
    job = _ended(await _own_job(request))
    settings = request.app[SETTINGS]
    results = job_results(job, broker=settings.broker_id, jti=new_jti())
    claims = bulk.results_claims(results, now=int(request.app[CLOCK]()))
    token = jws.sign(claims, settings.signing_key, bulk.BULK_RESULTS)
    return web.Response(text=token, content_type=JWT_MEDIA_TYPE)
