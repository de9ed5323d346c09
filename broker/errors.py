"""The broker's one exception root. Each kind maps to HTTP in :mod:`broker.problems` only."""

from __future__ import annotations

from trust.errors import PolicyRefusal


class BrokerError(Exception):
    """Root of every error raised by :mod:`broker`."""


class SettingsError(BrokerError):
    """The broker's config is missing, unreadable or invalid; the message says which setting."""


class BadRequest(BrokerError):
    """The HTTP request itself is wrong (media type, size, encoding)."""

    def __init__(self, slug: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.slug, self.detail, self.status = slug, detail, status


class Replayed(BrokerError):
    """A verified query whose ``jti`` was seen before. Answered like any failed verification."""


class RateLimited(BrokerError):
    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = retry_after


class Overloaded(BrokerError):
    """The broker has no place for another check now: 503 with ``Retry-After``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("overloaded")
        self.retry_after = retry_after


class ClientGone(BrokerError):
    """The client left before its check got a place: nothing is done, nothing is answered."""


class StoreUnavailable(BrokerError):
    """The replay/rate-limit store cannot be reached: fail closed."""


class LogUnavailable(BrokerError):
    """The consent log cannot commit: no answer may leave without its record."""


class LogGap(LogUnavailable):
    """The committed indices are not contiguous: the log cannot be proven, so it serves
    nothing until an operator looks (503, like any unavailable log)."""


class Refused(BrokerError):
    """A policy refusal that has been recorded in the consent log at ``log_index``."""

    def __init__(
        self, refusal: PolicyRefusal, log_index: int, *, check: str = "", requester: str = ""
    ) -> None:
        super().__init__(refusal.detail)
        self.refusal, self.log_index = refusal, log_index
        self.check, self.requester = check, requester  # for the metrics, as the query named


class BadInput(BrokerError):
    """A file or value given to the ``axb`` command line is missing, unreadable or of the wrong
    shape; the message names the file and what is wrong with it."""


class ShutdownIncomplete(BrokerError):
    """The orderly stop abandoned steps that outlasted ``shutdown_timeout_s`` (named in
    ``steps``): the process exits 1 rather than claiming a clean stop."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__("abandoned after the shutdown timeout: " + ", ".join(steps))
        self.steps = list(steps)
