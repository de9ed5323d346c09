"""Which checks a council may ask, with the versions that answer it: ``GET
/v1/members/{member}/checks``.

Derived from the registry in force, which is public to the scheme (``GET /v1/registry``): the
page adds nothing secret, it saves each council from re-implementing the policy. A check is
listed when one of the council's purposes allows it, no other council owns it, and some version
is for this council (scoped to it, or to everyone). Each version says from when, until when,
for whom, the assurance it needs and, for a banded check, its bands in order.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.app_keys import REGISTRY
from broker.errors import BadRequest
from trust.registry import Registry
from trust.rules import Check, CheckVersion


def _version(version: CheckVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "effective_from": version.effective_from.isoformat(),
        "effective_to": None if version.effective_to is None else version.effective_to.isoformat(),
        "scope": "local" if version.councils else "national",
        "min_assurance": version.min_assurance,
        "bands": None if version.bands is None else [b.name for b in version.bands.order],
    }


def _for_council(check: Check, council: str) -> list[CheckVersion]:
    return [v for v in check.versions if not v.councils or council in v.councils]


def checks_for(registry: Registry, council: str) -> list[dict[str, Any]]:
    """The checks ``council`` may ask under the registry, each with its purposes and the
    versions that can answer it (a pure function of the snapshot)."""
    member = registry.members.get(council)
    if member is None or "relying-party" not in member.roles:
        raise BadRequest("not-found", "no relying party of that id in the registry", 404)
    listed = []
    for name in sorted({c for p in member.purposes for c in registry.purposes[p].checks}):
        check = registry.checks[name]
        versions = _for_council(check, council)
        if not check.may_ask(council) or not versions:
            continue
        purposes = sorted(p for p in member.purposes if name in registry.purposes[p].checks)
        listed.append(
            {
                "name": check.name,
                "description": check.description,
                "owner": check.owner,
                "purposes": purposes,
                "versions": [_version(v) for v in versions],
            }
        )
    return listed


async def get_member_checks(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY].snapshot
    council = request.match_info["member"]
    body = {
        "member": council,
        "active": council in registry.members and registry.members[council].active,
        "registry_seq": registry.seq,
        "checks": checks_for(registry, council),
    }
    return web.json_response(body)
