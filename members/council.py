"""The council side: ``EligibilityClient`` signs queries and verifies the broker's answers.

    async with EligibilityClient.from_config(Path("councils/my-council.toml")) as client:
        answer = await client.check(
            "blue-badge-automatic", purpose="blue-badge-application",
            subject={"family_name": "...", "date_of_birth": "1950-01-31"}, assurance="P2",
        )
        answer.outcome   # "yes" | "no" | "no-match" | "undetermined"
        receipt = await client.prove_receipt(answer)  # its consent record is in the log

For a check that declares bands (a council tax reduction scheme) ``answer.outcome`` names the one
band that applies in place of ``yes`` (``answer.band`` is that name, or ``None`` for the four
outcomes). ``await client.available_checks()`` lists the checks this council may ask, with the
versions that answer it (local or national, dates, bands), from the registry in force.

An answer is returned only after its signature (a broker key from the broker's JWKS, or keys
you pin), ``typ``, ``aud`` (your member id), lifetime and binding to your query are verified.
``prove_receipt`` checks, against a checkpoint signed by the log key you pin (``log_key`` in
the config), that the log holds the record the answer names (:mod:`trust.receipts`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from connectors.config import member_identity, member_log_key, member_witness_policy
from members.bulk import BulkResult, Progress, run_bulk
from members.errors import AnswerNotTrusted, CheckFailed, NotOpen
from trust import jws
from trust.checkpoint import NoteVerifier
from trust.errors import InvalidMessage, KeyFormatError, TrustError, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import Signer, VerifyingKey, b64_decode, load_jwks
from trust.messages import (
    ConsentReference,
    EligibilityAnswer,
    parse_answer,
    query_claims,
    resident_access_claims,
    withdrawal_claims,
)
from trust.receipts import (
    ProvenReceipt,
    ReceiptNotProven,
    open_log_checkpoint,
    prove_receipt,
)
from trust.witness_policy import WitnessPolicy, open_witnessed_checkpoint


async def fetch_broker_keys(
    session: aiohttp.ClientSession, broker_url: str
) -> dict[str, VerifyingKey]:
    """The broker's published answer-signing keys (its JWKS), by ``kid``. Raises
    KeyFormatError for a JWKS that is not one."""
    async with session.get(f"{broker_url}/.well-known/jwks.json") as response:
        response.raise_for_status()
        document = await response.json()
    return {key.kid: key for key in load_jwks(document)}


class EligibilityClient:
    def __init__(
        self,
        *,
        member_id: str,
        key: Signer,
        broker_url: str,
        broker_id: str,
        broker_keys: tuple[VerifyingKey, ...] | None = None,
        log_key: NoteVerifier | None = None,
        witness_policy: WitnessPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.member_id = member_id
        self._log_key = log_key
        self._witness_policy = witness_policy
        self._key = key
        self._url = broker_url.rstrip("/")
        self._broker_id = broker_id
        self._pinned = broker_keys
        self._keys: dict[str, VerifyingKey] = {k.kid: k for k in broker_keys or ()}
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    @property
    def witness_policy(self) -> WitnessPolicy | None:
        """The witness policy receipts are proven under (``None``: the log key alone)."""
        return self._witness_policy

    @classmethod
    def from_config(cls, path: Path, **kwargs: Any) -> EligibilityClient:
        kwargs.setdefault("log_key", member_log_key(path))
        clock = kwargs.get("clock", time.time)
        kwargs.setdefault("witness_policy", member_witness_policy(path, now=int(clock())))
        return cls(**member_identity(path), **kwargs)

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def broker_id(self) -> str:
        return self._broker_id

    @property
    def broker_url(self) -> str:
        return self._url

    @property
    def signing_key(self) -> Signer:
        return self._key

    def clock(self) -> float:
        return self._clock()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise NotOpen("use the client as 'async with EligibilityClient(...)'")
        return self._session

    def sign_query(
        self, check: str, *, purpose: str, subject: Mapping[str, str], **options: Any
    ) -> tuple[str, str]:
        """The signed query and its ``jti`` (also usable without sending it)."""
        claims = query_claims(
            requester=self.member_id,
            broker=self._broker_id,
            now=int(self._clock()),
            check=check,
            purpose=purpose,
            subject=subject,
            **options,
        )
        return jws.sign(claims, self._key, jws.ELIGIBILITY_QUERY), claims["jti"]

    async def _refresh_keys(self) -> None:
        if self._pinned is not None:
            return
        try:
            self._keys = await fetch_broker_keys(self.session, self._url)
        except KeyFormatError as exc:
            raise AnswerNotTrusted(f"broker JWKS refused: {exc}") from exc

    def _lookup(self, kid: str) -> jws.TrustedKey | None:
        key = self._keys.get(kid)
        return None if key is None else jws.TrustedKey(self._broker_id, key)

    async def verify_broker_token(self, token: bytes, profile: jws.Profile) -> jws.Verified:
        """A message the broker signed for this council, verified against its keys (fetched
        from its JWKS on an unknown ``kid``, unless pinned). Raises ``VerificationError``."""
        kid = jws.decode_compact(token).header.get("kid")
        if kid not in self._keys:
            await self._refresh_keys()
        return jws.verify(
            token, profile, keys=self._lookup, audience=self.member_id, now=int(self._clock())
        )

    async def verify_answer(self, token: bytes, query_jti: str) -> EligibilityAnswer:
        try:
            verified = await self.verify_broker_token(token, jws.ELIGIBILITY_RESPONSE)
            answer = parse_answer(verified, requester=self.member_id)
        except (VerificationError, InvalidMessage) as exc:
            raise AnswerNotTrusted(str(getattr(exc, "reason", exc))) from exc
        if answer.query_jti != query_jti:
            raise AnswerNotTrusted("the answer is bound to another query")
        return answer

    async def check(
        self,
        check: str,
        *,
        purpose: str,
        subject: Mapping[str, str],
        lawful_basis: str = "public-task",
        consent: ConsentReference | None = None,
        as_of: date | None = None,
        assurance: str | None = None,
        credential: str | None = None,
    ) -> EligibilityAnswer:
        """``credential``: the resident's core identity credential (One Login's
        ``coreIdentityJWT``, issued to your client id); the broker then takes the name and
        birth date from it, and ``subject`` need carry only what it lacks."""
        token, jti = self.sign_query(
            check,
            purpose=purpose,
            subject=subject,
            lawful_basis=lawful_basis,
            consent=consent,
            as_of=as_of,
            assurance=assurance,
            credential=credential,
        )
        return await self.send(token, jti)

    async def send(self, token: str, jti: str) -> EligibilityAnswer:
        answer, _ = await self.exchange(token, jti)
        return answer

    async def exchange(self, token: str, jti: str) -> tuple[EligibilityAnswer, str]:
        """Send a signed query; the verified answer and the answer token itself (keep it: it is
        the council's evidence, which an auditor can check with ``axb audit receipt``)."""
        async with self.session.post(
            f"{self._url}/v1/checks",
            data=token,
            headers={"Content-Type": JWT_MEDIA_TYPE, "Accept": JWT_MEDIA_TYPE},
        ) as response:
            body = await response.read()
            if response.status != 200:
                try:
                    problem = await response.json(content_type=None)
                except ValueError:
                    problem = {"detail": "no problem document"}
                raise CheckFailed(response.status, problem)
        answer = await self.verify_answer(body, jti)
        return answer, body.decode("ascii")

    async def prove_receipt(
        self, answer: EligibilityAnswer, *, wait_s: float = 15.0, poll_s: float = 0.5
    ) -> ProvenReceipt:
        """Prove that the log holds the consent record behind ``answer``: an inclusion proof
        from its ``record_digest`` at its ``log_index`` to a checkpoint signed by the pinned
        log key. The broker checkpoints every few seconds; this waits up to ``wait_s`` for a
        checkpoint covering the record. Raises ``ReceiptNotProven`` (``ReceiptNotCovered``
        when no checkpoint covers it yet)."""
        if self._log_key is None:
            raise ReceiptNotProven("no log key is pinned: set log_key in the council config")
        give_up = time.monotonic() + wait_s
        while True:
            note = await self._log_text("/v1/log/checkpoint")  # a fresh one, cosigned soon
            size = open_log_checkpoint(note, self._log_key).size
            if self._witness_policy is not None:
                note, size = await self._witnessed(note, size)
            if size > answer.log_index or time.monotonic() >= give_up:
                break
            await asyncio.sleep(poll_s)
        proof: list[bytes] = []
        if size > answer.log_index:
            target = f"/v1/log/proof/inclusion?index={answer.log_index}&size={size}"
            text = await self._log_text(target)
            try:
                proof = [b64_decode(h) for h in orjson.loads(text)["proof"]]
            except (TypeError, KeyError, ValueError) as exc:
                raise ReceiptNotProven(f"malformed inclusion proof: {exc!r}") from exc
        return prove_receipt(
            answer.log_index,
            answer.record_digest,
            note=note,
            verifier=self._log_key,
            proof=proof,
            policy=self._witness_policy,
            now=int(self._clock()),
        )

    async def _witnessed(self, fresh: str, fresh_size: int) -> tuple[str, int]:
        """The largest checkpoint the witnesses cosigned with a quorum, or the fresh one if
        none has a quorum yet (``prove_receipt`` then says it is not witnessed)."""
        if self._witness_policy is None or self._log_key is None:
            return fresh, fresh_size
        async with self.session.get(f"{self._url}/v1/log/checkpoint/cosigned") as response:
            body = await response.read()
            if response.status != 200:
                return fresh, -1
        try:
            note = body.decode("utf-8")
            witnessed = open_witnessed_checkpoint(
                note, self._log_key, self._witness_policy, now=int(self._clock())
            )
        except (UnicodeDecodeError, TrustError):
            return fresh, -1
        return (note, witnessed.size) if witnessed.quorum else (fresh, -1)

    async def _log_text(self, target: str) -> str:
        async with self.session.get(f"{self._url}{target}") as response:
            body = await response.read()
            if response.status != 200:
                raise ReceiptNotProven(f"the broker answered {response.status} to {target}")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReceiptNotProven(f"the broker's {target} is not UTF-8") from exc

    async def resident_checks(self, credential: str) -> list[dict[str, Any]]:
        """Who checked the data of the resident signed in to your portal: pass the core
        identity credential you just received for them (issued to your client id)."""
        claims = resident_access_claims(
            requester=self.member_id,
            broker=self._broker_id,
            now=int(self._clock()),
            credential=credential,
        )
        body = await self._post_signed("/v1/resident/checks", claims, jws.RESIDENT_ACCESS)
        records: list[dict[str, Any]] = body["records"]
        return records

    async def available_checks(self) -> list[dict[str, Any]]:
        """The checks this council may ask, each with its purposes and the versions that answer
        it (``GET /v1/members/{id}/checks``)."""
        async with self.session.get(f"{self._url}/v1/members/{self.member_id}/checks") as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise CheckFailed(response.status, body)
        checks: list[dict[str, Any]] = body["checks"]
        return checks

    async def bulk(
        self,
        check: str,
        *,
        purpose: str,
        rows: Iterable[Mapping[str, Any]],
        lawful_basis: str = "public-task",
        as_of: date | None = None,
        assurance: str | None = None,
        poll_s: float = 0.5,
        on_progress: Progress | None = None,
    ) -> AsyncIterator[BulkResult]:
        """Check many residents as one signed bulk job (rows ``{"ref", "subject",
        "consent"?}``); yields each row's result once the job has ended and its signed results
        manifest verified (:mod:`members.bulk`). ``BulkJobs(client)`` does each step apart."""
        _, results = await run_bulk(
            self,
            check,
            purpose=purpose,
            rows=list(rows),
            poll_s=poll_s,
            on_progress=on_progress,
            lawful_basis=lawful_basis,
            as_of=as_of,
            assurance=assurance,
        )
        for result in results:
            yield result

    async def _post_signed(
        self, path: str, claims: Mapping[str, Any], profile: jws.Profile
    ) -> dict[str, Any]:
        """Sign ``claims`` as ``profile``, POST them to ``path``; the JSON answer, or
        CheckFailed with the problem document."""
        async with self.session.post(
            f"{self._url}{path}",
            data=jws.sign(claims, self._key, profile),
            headers={"Content-Type": JWT_MEDIA_TYPE},
        ) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise CheckFailed(response.status, body)
        return body

    async def withdraw_consent(self, consent_id: str, *, withdrawn_at: str) -> int:
        """Record that the resident withdrew ``consent_id``; returns the record's log index.
        Later checks citing that consent are refused (403 consent-withdrawn)."""
        claims = withdrawal_claims(
            requester=self.member_id,
            broker=self._broker_id,
            now=int(self._clock()),
            consent_id=consent_id,
            withdrawn_at=withdrawn_at,
        )
        body = await self._post_signed("/v1/consents/withdrawals", claims, jws.CONSENT_WITHDRAWAL)
        return int(body["log_index"])
