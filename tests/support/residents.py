"""A resident in a test: signing in to the resident page with the reference identity provider
over plain HTTP, and reading the checks page."""

from __future__ import annotations

import re

import aiohttp


async def sign_in(browser: aiohttp.ClientSession, broker_url: str, who: str) -> str:
    """The resident's journey over HTTP: start, the provider's page, back; the checks page."""
    async with browser.get(f"{broker_url}/resident/sign-in") as page:
        assert page.status == 200  # redirected to the provider's sign-in
        form = await page.text()
        action = str(page.url.with_path("/authorize").with_query(None))
    fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', form))
    async with browser.post(action, data={**fields, "identity": who}) as landed:
        assert landed.status == 200
        assert landed.url.path == "/resident/checks"
        return await landed.text()


def rows(page: str) -> int:
    body = page.split('<tbody class="govuk-table__body">', 1)
    return 0 if len(body) == 1 else body[1].split("</tbody>")[0].count("<tr")
