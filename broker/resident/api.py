"""The API form of "who checked my data", for councils' own portals.

A council portal where the resident has just signed in with an identity provider sends
``POST /v1/resident/checks`` a ``resident-access+jwt`` signed with its registered key, carrying
the resident's core identity credential (issued to that council's client id, at most ten
minutes old). The broker verifies both and answers with every check of that person, as the
resident page shows them: found by pseudonyms, never by the name the credential holds.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from broker.app_keys import CLOCK, GATE, SETTINGS
from broker.resident.page import CREDENTIAL_MAX_AGE_S, checks_of, person_pseudonyms
from connectors.base import read_jwt_body
from trust import jws, policy
from trust.credential import verify_credential
from trust.messages import parse_resident_access

log = structlog.get_logger("broker.resident")


async def post_resident_checks(request: web.Request) -> web.Response:
    body = await read_jwt_body(request)
    app = request.app
    passed = await app[GATE].admit(
        body,
        jws.RESIDENT_ACCESS,
        lambda verified, _: parse_resident_access(verified),
        authorize=policy.authorize_resident_access,
    )
    identity = verify_credential(
        passed.message.credential,
        registry=passed.registry,
        relying_party=passed.sender,
        now=int(app[CLOCK]()),
        max_age_s=CREDENTIAL_MAX_AGE_S,
    )
    entries = await checks_of(request, person_pseudonyms(app[SETTINGS], identity))
    log.info(
        "resident_api_view",
        requester=passed.sender,
        identity_provider=identity.provider,
        records=len(entries),
    )
    return web.json_response({"records": entries})
