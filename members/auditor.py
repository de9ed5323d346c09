"""The auditor's side: ``AuditClient`` signs each audit API request (``audit-request+jwt``
bound to method, path+query and body) with the auditor's registered key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from connectors.config import member_identity, member_witness_policy
from members.council import fetch_broker_keys
from members.errors import CheckFailed, NotOpen
from trust import jws
from trust.checkpoint import NoteVerifier
from trust.errors import InvalidMessage, KeyFormatError, VerificationError
from trust.keys import Signer
from trust.log_verify import verify_record
from trust.messages import EligibilityAnswer, audit_request_claims, parse_answer
from trust.receipts import compare_with_record
from trust.witness_policy import WitnessPolicy


@dataclass(frozen=True, slots=True)
class ReceiptAudit:
    """An auditor's check of a council's answer token against the log."""

    answer: EligibilityAnswer | None  # None: not a valid answer of this broker
    problems: list[str]
    checkpoint_size: int = 0

    @property
    def ok(self) -> bool:
        return self.answer is not None and not self.problems


class AuditClient:
    def __init__(
        self,
        *,
        member_id: str,
        key: Signer,
        broker_url: str,
        broker_id: str,
        witness_policy: WitnessPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.member_id = member_id
        self.witness_policy = witness_policy  # the scheme's, when the config pins the registry
        self._key = key
        self._url = broker_url.rstrip("/")
        self._broker_id = broker_id
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, path: Path) -> AuditClient:
        policy = member_witness_policy(path, now=int(time.time()))
        return cls(**member_identity(path), witness_policy=policy)

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def authorization(self, method: str, target: str, body: bytes = b"") -> str:
        claims = audit_request_claims(
            auditor=self.member_id,
            broker=self._broker_id,
            now=int(self._clock()),
            method=method,
            target=target,
            body=body,
        )
        return "Bearer " + jws.sign(claims, self._key, jws.AUDIT_REQUEST)

    async def _request(
        self, method: str, path: str, query: Mapping[str, Any] | None = None, body: bytes = b""
    ) -> aiohttp.ClientResponse:
        if self._session is None:
            raise NotOpen("use the client as 'async with AuditClient(...)'")
        target = path + ("?" + urlencode(query) if query else "")
        headers = {"Authorization": self.authorization(method, target, body)}
        if body:
            headers["Content-Type"] = "application/json"
        # send exactly the bytes that were signed: aiohttp must not re-quote the target
        url = URL(self._url + target, encoded=True)
        response = await self._session.request(method, url, data=body or None, headers=headers)
        if response.status != 200:
            problem = await response.json(content_type=None)
            response.release()
            raise CheckFailed(response.status, problem)
        return response

    async def records(self, **filters: Any) -> dict[str, Any]:
        query = {k: v for k, v in filters.items() if v is not None}
        async with await self._request("GET", "/v1/audit/records", query) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def identity_sources(self, **period: Any) -> dict[str, Any]:
        """How many checks were credential-backed, by identity provider (``since``/``until``)."""
        query = {k: v for k, v in period.items() if v is not None}
        async with await self._request("GET", "/v1/audit/identity-sources", query) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def jobs(self, *, requester: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Bulk jobs, newest first, each with its consent records' log index range."""
        query = {"limit": str(limit), **({"requester": requester} if requester else {})}
        async with await self._request("GET", "/v1/audit/jobs", query) as response:
            result: list[dict[str, Any]] = (await response.json())["jobs"]
            return result

    async def record(self, index: int) -> dict[str, Any]:
        async with await self._request("GET", f"/v1/audit/records/{index}") as response:
            result: dict[str, Any] = await response.json()
            return result

    async def subject_access(self, identifiers: Mapping[str, str]) -> dict[str, Any]:
        body = orjson.dumps(dict(identifiers))
        async with await self._request("POST", "/v1/audit/subject-access", body=body) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def audit_receipt(self, token: str, verifier: NoteVerifier | None) -> ReceiptAudit:
        """Check an answer token a council kept: signed by this broker (as of when it was
        issued), and the log's record at its index is the one it was given on, proven against
        a checkpoint signed by the pinned log key."""
        if self._session is None:
            raise NotOpen("use the client as 'async with AuditClient(...)'")
        try:
            keys = await fetch_broker_keys(self._session, self._url)
        except KeyFormatError as exc:
            return ReceiptAudit(None, [f"the broker's JWKS is malformed: {exc}"])

        def lookup(kid: str) -> jws.TrustedKey | None:
            key = keys.get(kid)
            return None if key is None else jws.TrustedKey(self._broker_id, key)

        try:
            verified = jws.verify_as_issued(token.strip(), jws.ELIGIBILITY_RESPONSE, keys=lookup)
            answer = parse_answer(verified, requester=str(verified.claims["aud"]))
        except VerificationError as exc:
            return ReceiptAudit(None, [f"not an answer signed by this broker: {exc.reason}"])
        except InvalidMessage as exc:
            return ReceiptAudit(None, [f"not a well-formed answer: {exc}"])
        try:
            found = await self.record(answer.log_index)
        except CheckFailed as failed:
            return ReceiptAudit(answer, [f"the log has no record {answer.log_index} ({failed})"])
        if verifier is None:
            return ReceiptAudit(answer, ["no log key is pinned: set log_key in your config"])
        report = verify_record(
            found["record"],
            found["checkpoint"],
            found["inclusion_proof"],
            verifier,
            policy=self.witness_policy,
            now=int(self._clock()),
        )
        problems = report.problems + compare_with_record(answer, found["record"])
        return ReceiptAudit(answer, problems, report.verified_size)

    async def export(self) -> AsyncIterator[bytes]:
        async with await self._request("GET", "/v1/audit/export") as response:
            async for line in response.content:
                yield line
