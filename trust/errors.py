"""One exception root for the trust framework; the broker maps each kind to HTTP in one place."""

from __future__ import annotations


class TrustError(Exception):
    """Root of every error raised by :mod:`trust`."""


class VerificationError(TrustError):
    """A signed message failed verification.

    The caller learns nothing more than that: ``reason`` is for the operator's log and never
    leaves the process in a response.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("verification failed")
        self.reason = reason


class KeyFormatError(TrustError):
    """A key (JWK, JWKS, PEM) is malformed or not of the one kind we accept."""


class KeyUnavailable(TrustError):
    """A signing key cannot be used now: its token went away, refused the PIN, lost the object.

    Raised by a :class:`~trust.keys.Signer` that lives outside the process (a PKCS#11 token);
    the broker answers 503 and never falls back to another key."""


class RegistryError(TrustError):
    """A trust registry document is invalid, stale, rolled back or wrongly signed."""


class InvalidMessage(TrustError):
    """A verified message's claims do not have the shape its type requires."""


class PolicyRefusal(TrustError):
    """The trust framework does not allow this query. ``code`` is a stable slug."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        # the verified identity credential the refused query carried, if any (recorded)
        self.identity: object | None = None


class LogProofError(TrustError):
    """A Merkle inclusion or consistency proof does not verify against the roots it claims."""


class ProofRequestError(LogProofError, ValueError):
    """A request to the log tree is out of range or malformed (a caller's error, HTTP 400)."""


class TileMissing(TrustError):
    """A tree computation needed a hash tile its caller did not read: the caller's fault (or
    its store's), never the requester's."""


class CheckpointError(TrustError):
    """A signed checkpoint is malformed, not signed by the log's key, or for another log."""


class DateFormatError(TrustError, ValueError):
    """A date or time is not in the one form the profile documents (``YYYY-MM-DD``, RFC 3339
    with a zone). Also a ``ValueError``, so parsers that refuse any bad value catch it."""
