"""The "who checked my data" page: a resident signs in with the reference identity provider and
sees exactly their own checks; in headless Chromium too. Its session and CSRF defences are
attacked over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import aiohttp
import pytest

from broker.scheme import dev as devscheme
from connectors.reference.identity import ReferenceIdentityProvider
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.browser import headless_chromium
from tests.support.residents import rows, sign_in
from tests.support.servers import RunningBroker

BB = devscheme.BLUE_BADGE_CHECK


async def checks_of_residents(client: EligibilityClient, scheme: devscheme.DevScheme) -> None:
    """bb-yes-dla checked twice (from a credential online, then face to face), bb-no once."""
    provider = ReferenceIdentityProvider.from_pem(scheme.key_path(devscheme.IDP).read_bytes())
    client_id = devscheme.CLIENT_IDS[devscheme.COUNCIL_BLUE_BADGE]
    credential = provider.issue("bb-yes-dla", client_id=client_id, now=int(time.time()))
    await client.check(BB, purpose=devscheme.BLUE_BADGE_ONLINE, subject={}, credential=credential)
    for who in ("bb-yes-dla", "bb-no"):
        await client.check(
            BB, purpose="blue-badge-application", subject=subject_of(who), assurance="P2"
        )


@pytest.fixture
async def checked(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    identity_provider: str,
    blue_badge_client: EligibilityClient,
) -> RunningBroker:
    """A broker with the resident page, after the checks of :func:`checks_of_residents`."""
    await checks_of_residents(blue_badge_client, scheme)
    return broker


async def test_a_resident_sees_exactly_their_own_checks(checked: RunningBroker) -> None:
    broker = checked
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        page = await sign_in(browser, broker.url, "bb-yes-dla")
    assert rows(page) == 2
    assert "2 checks of your data were recorded" in page
    assert "Warwickshire County Council" in page
    assert "Deciding a Blue Badge application made online" in page
    assert "Public task (UK GDPR Article 6(1)(e))" in page
    assert "Testwell" not in page  # the page never shows the name it was given
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        nobody = await sign_in(browser, broker.url, "fsm-no")
    assert rows(nobody) == 0
    assert "No one has checked your data" in nobody


async def test_the_resident_page_refuses_forged_state_sessions_and_cross_site_sign_out(
    scheme: devscheme.DevScheme, broker: RunningBroker, identity_provider: str
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        # a callback this browser did not start (login CSRF): no state cookie, or another one
        async with browser.get(
            f"{broker.url}/resident/callback?code=x&state=y", allow_redirects=False
        ) as response:
            assert response.status == 400
        # a made-up session cookie sees no records
        browser.cookie_jar.update_cookies(
            {"axb_resident": "forged"}, response_url=aiohttp.client.URL(broker.url + "/resident")
        )
        async with browser.get(f"{broker.url}/resident/checks", allow_redirects=False) as page:
            assert (page.status, page.headers["Location"]) == (303, "/resident")
        page_text = await sign_in(browser, broker.url, "bb-no")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page_text)
        assert csrf is not None
        for form, headers in (
            ({}, {}),  # no form token
            ({"csrf": "guess"}, {}),
            ({"csrf": csrf.group(1)}, {"Origin": "https://attacker.example"}),
        ):
            async with browser.post(
                f"{broker.url}/resident/sign-out", data=form, headers=headers
            ) as response:
                assert response.status == 403
        async with browser.get(f"{broker.url}/resident/checks") as still:
            assert still.url.path == "/resident/checks"  # still signed in
        async with browser.post(
            f"{broker.url}/resident/sign-out", data={"csrf": csrf.group(1)}
        ) as response:
            assert response.url.path == "/resident"
        async with browser.get(f"{broker.url}/resident/checks") as gone:
            assert gone.url.path == "/resident"
        async with browser.get(f"{broker.url}/resident") as start:
            assert "default-src 'none'" in start.headers["Content-Security-Policy"]
            assert start.headers["Referrer-Policy"] == "same-origin"


async def test_a_sign_in_code_works_once(
    scheme: devscheme.DevScheme, broker: RunningBroker, identity_provider: str
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{broker.url}/resident/sign-in") as page:
            form = await page.text()
            action = str(page.url.with_path("/authorize").with_query(None))
        fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', form))
        async with browser.post(
            action, data={**fields, "identity": "bb-no"}, allow_redirects=False
        ) as redirected:
            back = redirected.headers["Location"]
        async with browser.get(back, allow_redirects=False) as first:
            assert first.status == 303
        async with browser.get(f"{broker.url}/resident/sign-in", allow_redirects=False) as again:
            state = re.search(r"state=([^&]+)", again.headers["Location"])
        assert state is not None
        replayed = re.sub(r"state=[^&]+", f"state={state.group(1)}", back)
        async with browser.get(replayed, allow_redirects=False) as second:
            assert second.status == 403  # the provider refuses the used code


# --- in a real browser ---------------------------------------------------------------------


def browse_as_a_resident(start: str, who: str) -> dict[str, Any]:
    """Headless Chromium: start page, sign in as ``who`` at the provider, the checks page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    seen: dict[str, Any] = {}
    try:
        driver.get(start)
        seen["start_title"] = driver.title
        driver.find_element(By.CSS_SELECTOR, "a.govuk-button--start").click()
        driver.find_element(By.ID, f"i-{who}").click()
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        seen["summary"] = driver.find_element(By.ID, "summary").text
        driver.implicitly_wait(0)  # the page is here: a table that is not there is not awaited
        seen["rows"] = len(driver.find_elements(By.CSS_SELECTOR, "table.checks tbody tr"))
        seen["cells"] = [
            c.text for c in driver.find_elements(By.CSS_SELECTOR, "table.checks tbody td")
        ]
        header = driver.find_element(By.CSS_SELECTOR, "header.govuk-header")
        seen["header_background"] = header.value_of_css_property("background-color")
        seen["font"] = driver.find_element(By.TAG_NAME, "h1").value_of_css_property("font-family")
        driver.implicitly_wait(15)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()  # sign out
        # the click returns before the next page has loaded: wait for the start page's title
        # (reading it at once read the checks page's, now and then)
        with contextlib.suppress(TimeoutException):
            WebDriverWait(driver, 15).until(
                lambda d: d.title.startswith("Find out who checked your data")
            )
        seen["after_sign_out"] = driver.title
        seen["severe"] = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    return seen


async def test_a_resident_uses_the_page_in_chromium(checked: RunningBroker) -> None:
    start = f"{checked.url}/resident"
    seen = await asyncio.to_thread(browse_as_a_resident, start, "bb-yes-dla")
    nobody = await asyncio.to_thread(browse_as_a_resident, start, "fsm-no")
    assert seen["start_title"].startswith("Find out who checked your data")
    assert seen["rows"] == 2
    assert seen["summary"] == "2 checks of your data were recorded."
    assert "Yes" in seen["cells"]
    assert seen["header_background"] == "rgba(11, 12, 12, 1)"  # GOV.UK Frontend loaded
    assert "GDS Transport" in seen["font"]
    assert seen["after_sign_out"].startswith("Find out who checked your data")
    assert seen["severe"] == []
    assert nobody["rows"] == 0
    assert nobody["summary"] == "No one has checked your data through this service."


async def test_a_council_portal_shows_a_signed_in_resident_who_checked_them(
    checked: RunningBroker, scheme: devscheme.DevScheme, blue_badge_client: EligibilityClient
) -> None:
    provider = ReferenceIdentityProvider.from_pem(scheme.key_path(devscheme.IDP).read_bytes())
    client_id = devscheme.CLIENT_IDS[devscheme.COUNCIL_BLUE_BADGE]
    now = int(time.time())
    found = await blue_badge_client.resident_checks(
        provider.issue("bb-yes-dla", client_id=client_id, now=now)
    )
    assert [(r["purpose"], r["outcome"]) for r in found] == [
        ("blue-badge-application", "yes"),
        (devscheme.BLUE_BADGE_ONLINE, "yes"),
    ]
    assert found[0]["who_name"].startswith("Warwickshire County Council")
    nobody = await blue_badge_client.resident_checks(
        provider.issue("fsm-no", client_id=client_id, now=now)
    )
    assert nobody == []
    # a credential issued to another council, or long ago, shows nothing
    other = provider.issue(
        "bb-yes-dla", client_id=devscheme.CLIENT_IDS[devscheme.COUNCIL_SCHOOLS], now=now
    )
    stale = provider.issue("bb-yes-dla", client_id=client_id, now=now - 3600, lifetime=7200)
    for credential in (other, stale):
        with pytest.raises(CheckFailed) as refused:
            await blue_badge_client.resident_checks(credential)
        assert refused.value.status == 403
        assert refused.value.problem["type"] == "urn:ax-broker:problem:credential-invalid"
