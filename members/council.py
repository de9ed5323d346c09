"""The council side: ``EligibilityClient`` signs queries and verifies the broker's answers.

    async with EligibilityClient.from_config(Path("councils/my-council.toml")) as client:
        answer = await client.check(
            "blue-badge-automatic", purpose="blue-badge-application",
            subject={"family_name": "...", "date_of_birth": "1950-01-31"}, assurance="P2",
        )
        answer.outcome   # "yes" | "no" | "no-match" | "undetermined"
        receipt = await client.prove_receipt(answer)  # its consent record is in the log

An answer is returned only after its signature (a broker key from the broker's JWKS, or keys
you pin), ``typ``, ``aud`` (your member id), lifetime and binding to your query are verified.
``prove_receipt`` checks, against a checkpoint signed by the log key you pin (``log_key`` in
the config), that the log holds the record the answer names (:mod:`trust.receipts`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from connectors.config import member_identity, member_log_key
from members.errors import AnswerNotTrusted, CheckFailed, NotOpen
from trust import jws
from trust.checkpoint import NoteVerifier
from trust.errors import InvalidMessage, KeyFormatError, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import SigningKey, VerifyingKey, b64_decode, load_jwks
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
        key: SigningKey,
        broker_url: str,
        broker_id: str,
        broker_keys: tuple[VerifyingKey, ...] | None = None,
        log_key: NoteVerifier | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.member_id = member_id
        self._log_key = log_key
        self._key = key
        self._url = broker_url.rstrip("/")
        self._broker_id = broker_id
        self._pinned = broker_keys
        self._keys: dict[str, VerifyingKey] = {k.kid: k for k in broker_keys or ()}
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    @classmethod
    def from_config(cls, path: Path, **kwargs: Any) -> EligibilityClient:
        kwargs.setdefault("log_key", member_log_key(path))
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

    async def verify_answer(self, token: bytes, query_jti: str) -> EligibilityAnswer:
        try:
            kid = jws.decode_compact(token).header.get("kid")
        except VerificationError as exc:
            raise AnswerNotTrusted(exc.reason) from exc
        if kid not in self._keys:
            await self._refresh_keys()
        try:
            verified = jws.verify(
                token,
                jws.ELIGIBILITY_RESPONSE,
                keys=self._lookup,
                audience=self.member_id,
                now=int(self._clock()),
            )
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
            note = await self._log_text("/v1/log/checkpoint")
            size = open_log_checkpoint(note, self._log_key).size
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
            answer.log_index, answer.record_digest, note=note, verifier=self._log_key, proof=proof
        )

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
