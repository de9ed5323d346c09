"""What a change to the registry source would change, for whom and from when.

``axb scheme review --scheme DIR`` compares the checks of the registry in force (the signed
``registry.jwt``) with those of the source about to be published, version by version, and says
in one line each what is new, what ends or changes, and what goes: which councils it is for
(``every council`` for a national version) and the dates it is in force. A version that has
not changed is not mentioned. Pure functions over parsed checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trust.rules import (
    AnyOf,
    AttributeRef,
    Check,
    CheckVersion,
    Rule,
    parse_check,
    version_document,
)


def _whom(version: CheckVersion) -> str:
    return ", ".join(sorted(version.councils)) if version.councils else "every council"


def _when(version: CheckVersion) -> str:
    end = "open-ended" if version.effective_to is None else f"to {version.effective_to}"
    return f"from {version.effective_from} {end}"


def _rule_text(rule: Rule) -> str:
    if isinstance(rule, AttributeRef):
        return str(rule)
    kind = "any" if isinstance(rule, AnyOf) else "all"
    return f"{kind} of [{'; '.join(_rule_text(t) for t in rule.terms)}]"


def describe(version: CheckVersion) -> str:
    """One version in a line: number, for whom, when, its rule and its bands."""
    text = f"v{version.version} for {_whom(version)} {_when(version)}: {_rule_text(version.rule)}"
    if version.bands is not None:
        bands = []
        for band in version.bands.order:
            parts = [] if band.below is None else [f"below {band.below}"]
            if band.when is not None:
                parts.append(f"when {_rule_text(band.when)}")
            bands.append(f"{band.name} ({' and '.join(parts)})")
        text += f"; bands in order: {', '.join(bands)}"
    return text


def _by_number(check: Check | None) -> dict[int, CheckVersion]:
    return {} if check is None else {v.version: v for v in check.versions}


def _changed(before: CheckVersion, after: CheckVersion) -> list[str]:
    old, new = version_document(before), version_document(after)
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def review_changes(published: Iterable[Check], source: Iterable[Check]) -> list[str]:
    """Lines saying what publishing ``source`` changes against ``published``."""
    old: Mapping[str, Check] = {c.name: c for c in published}
    new: Mapping[str, Check] = {c.name: c for c in source}
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        entries: list[str] = []
        if after is None:
            entries.append("  - the check is removed")
        elif before is None:
            owner = f" (local to {after.owner})" if after.owner else ""
            entries.append(f"  + a new check{owner}")
        elif before.owner != after.owner:
            entries.append(f"  ~ owner {before.owner or 'none'} -> {after.owner or 'none'}")
        versions_before, versions_after = _by_number(before), _by_number(after)
        for number in sorted(set(versions_before) | set(versions_after)):
            was, now = versions_before.get(number), versions_after.get(number)
            if now is None and was is not None:
                entries.append(f"  - {describe(was)}")
            elif was is None and now is not None:
                entries.append(f"  + {describe(now)}")
            elif was is not None and now is not None and (keys := _changed(was, now)):
                entries.append(f"  ~ {describe(now)} (changed: {', '.join(keys)})")
        if entries:
            lines.append(f"check {name}:")
            lines.extend(entries)
    return lines or ["no change to any check"]


def parse_checks(documents: Iterable[Any]) -> list[Check]:
    """Check documents as parsed checks; raises ``ValueError`` as the registry would."""
    return [parse_check(document) for document in documents]
