"""The members' one exception root. Nothing here derives from the server's errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MembersError(Exception):
    """Root of every error raised by :mod:`members`."""


class CheckFailed(MembersError):
    """The broker refused the request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('type')}: {problem.get('detail', '')}")
        self.status, self.problem = status, dict(problem)


class AnswerNotTrusted(MembersError):
    """The broker's answer failed verification; treat it as no answer at all."""


class NotOpen(MembersError):
    """A client used outside ``async with``."""
