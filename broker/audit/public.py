"""The public log endpoints: anyone may fetch the latest checkpoint, the log's key, and
inclusion and consistency proofs, and so verify the log trusting only its key."""

from __future__ import annotations

from aiohttp import web

from broker.app_keys import SETTINGS, TRANSPARENCY
from broker.audit.export import b64
from broker.audit.params import int_param


async def get_checkpoint(request: web.Request) -> web.Response:
    _, note = await request.app[TRANSPARENCY].on_demand()
    return web.Response(text=note, content_type="text/plain")


async def get_cosigned_checkpoint(request: web.Request) -> web.Response:
    cosigned = await request.app[TRANSPARENCY].latest_cosigned()
    if cosigned is None:
        raise web.HTTPNotFound()
    return web.Response(text=cosigned[1], content_type="text/plain")


async def get_log_key(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[SETTINGS].log_signer.vkey + "\n", content_type="text/plain"
    )


async def get_inclusion_proof(request: web.Request) -> web.Response:
    index, size = int_param(request, "index"), int_param(request, "size")
    transparency = request.app[TRANSPARENCY]
    proof = await transparency.inclusion_proof(index, size)
    return web.json_response(
        {
            "index": index,
            "tree_size": size,
            "leaf_hash": b64(await transparency.leaf(index)),
            "proof": [b64(h) for h in proof],
        }
    )


async def get_consistency_proof(request: web.Request) -> web.Response:
    old, new = int_param(request, "from"), int_param(request, "to")
    proof = await request.app[TRANSPARENCY].consistency_proof(old, new)
    return web.json_response({"from": old, "to": new, "proof": [b64(h) for h in proof]})


# A tile's bytes never change once the tree has them (a partial tile of width W is the first W
# hashes of its tile): mirrors and caches may keep them for ever.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


async def get_tile(request: web.Request) -> web.Response:
    """C2SP tlog-tiles: a hash tile ``tile/<L>/<N>[.p/<W>]`` or an entry bundle
    ``tile/entries/<N>[.p/<W>]``, each only once the tree has it."""
    path = "tile/" + request.match_info["tile"]
    transparency = request.app[TRANSPARENCY]
    if path.startswith("tile/entries/"):
        data = await transparency.entry_bundle(path)
    else:
        data = await transparency.tile(path)
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="application/octet-stream", headers=IMMUTABLE)
