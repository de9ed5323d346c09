"""What a conformance run found: one result per check, and the text table the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Group = Literal["ACCEPTS", "ANSWER", "REFUSES", "HYGIENE"]
GROUPS: Final[tuple[Group, ...]] = ("ACCEPTS", "ANSWER", "REFUSES", "HYGIENE")


@dataclass(frozen=True, slots=True)
class CheckResult:
    id: str
    group: Group
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ConformanceReport:
    provider_id: str
    endpoint: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(result.id for result in self.failures)

    def render(self) -> str:
        """A text table: group, check id, PASS/FAIL, one-line detail; then a summary line."""
        id_width = max([len("CHECK"), *(len(r.id) for r in self.results)])
        group_width = max(len(g) for g in GROUPS)
        lines = [
            f"Provider conformance: {self.provider_id} at {self.endpoint}",
            "",
            f"{'GROUP':<{group_width}}  {'CHECK':<{id_width}}  RESULT  DETAIL",
            f"{'-' * group_width}  {'-' * id_width}  ------  {'-' * 40}",
        ]
        for result in self.results:
            verdict = "PASS" if result.passed else "FAIL"
            lines.append(
                f"{result.group:<{group_width}}  {result.id:<{id_width}}  {verdict:<6}  "
                f"{result.detail}"
            )
        failed = len(self.failures)
        total = len(self.results)
        lines.append("")
        if failed:
            names = ", ".join(r.id for r in self.failures[:8])
            if failed > 8:
                names += f" and {failed - 8} more"
            lines.append(
                f"{total} checks: {total - failed} passed, {failed} failed "
                f"({names}): NOT CONFORMANT"
            )
        else:
            lines.append(f"{total} checks: {total} passed, 0 failed: CONFORMANT")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def one_line(text: str, limit: int = 110) -> str:
    """A detail as one table cell: whitespace folded, cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
