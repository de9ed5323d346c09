"""GOV.UK Frontend for our pages for people — the resident's "who checked my data" page and
the auditor's console: the stylesheet, its fonts and images, vendored from npm by
``.ci/vendor-govuk-frontend`` into ``govuk_frontend/`` beside this module (nothing is fetched
at run time). The stylesheet names its fonts and images by relative URLs, so each app serves
the assets under a prefix of its own with :func:`add_asset_route`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

ASSETS = Path(__file__).resolve().parent / "govuk_frontend"
STYLESHEET = "govuk-frontend.min.css"
_TYPES = {".css": "text/css", ".woff2": "font/woff2", ".woff": "font/woff"}
_TYPES |= {".svg": "image/svg+xml", ".ico": "image/x-icon"}
_SERVED = {  # name under the prefix -> the file: nothing else in the folder is served
    path.relative_to(ASSETS).as_posix(): path
    for path in sorted(ASSETS.rglob("*"))
    if path.is_file() and path.suffix in _TYPES
}


async def _asset(request: web.Request) -> web.Response:
    path = _SERVED.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=path.read_bytes(),
        content_type=_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def add_asset_route(app: web.Application, prefix: str) -> None:
    """Serve GOV.UK Frontend's assets at ``{prefix}/{name}`` (``prefix`` without a trailing
    slash, e.g. ``/resident/assets``)."""
    app.router.add_get(prefix + "/{name:.+}", _asset)
