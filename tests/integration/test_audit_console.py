"""The auditor's console, served on 127.0.0.1 in front of a real broker, used as a browser would:
signing in, reading records and proofs, a subject access request, verifying the whole log.
Its guards are attacked: no cookie, a wrong token, a rebound Host, cross-site and tokenless
forms. Tampering with the log underneath shows on the pages."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.bulk import BulkJobs
from members.console import app as audit_console
from members.console.app import COOKIE, Console, login_url, start_console
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.browser import headless_chromium
from tests.support.bulk import strangers, submit_fsm
from tests.support.councils import blue_badge_answer_token
from tests.support.logdb import edit_record, log_sql
from tests.support.servers import RunningBroker
from trust.checkpoint import Checkpoint, NoteSigner, generate_signer, sign_checkpoint


class Open(Protocol):
    """The ``open_console`` fixture: a console for a member config (the auditor's by
    default) and a browser session signed in to it."""

    async def __call__(
        self, config: Path | None = None
    ) -> tuple[Console, aiohttp.ClientSession]: ...


def auditor_config(scheme: devscheme.DevScheme) -> Path:
    return scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml"


@pytest.fixture
async def open_console(scheme: devscheme.DevScheme, broker: RunningBroker) -> AsyncIterator[Open]:
    """Start a console for a member config; returns it and a signed-in browser session."""
    runners = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(config: Path | None = None) -> tuple[Console, aiohttp.ClientSession]:
        runner, console = await start_console(config or auditor_config(scheme))
        runners.append(runner)
        browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(browser)
        async with browser.get(login_url(console), allow_redirects=False) as response:
            assert response.status == 303
        return console, browser

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


async def ask(client: EligibilityClient, who: str, **options: Any) -> int:
    options.setdefault("purpose", "blue-badge-application")
    try:
        answer = await client.check(
            options.pop("check", devscheme.BLUE_BADGE_CHECK),
            subject=subject_of(who),
            assurance="P2",
            **options,
        )
    except CheckFailed as refused:
        return int(refused.problem["log_index"])
    return answer.log_index


async def page(browser: aiohttp.ClientSession, url: str, **form: str) -> tuple[int, str]:
    if form:
        async with browser.post(url, data=form) as response:
            return response.status, await response.text()
    async with browser.get(url) as response:
        return response.status, await response.text()


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


def base(console: Console) -> str:
    return f"http://127.0.0.1:{console.port}"


async def test_the_console_lets_in_only_the_holder_of_its_link(open_console: Open) -> None:
    console, browser = await open_console()
    url = base(console)
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(f"{url}/") as response:
            assert response.status == 401
        async with stranger.get(f"{url}/login?token=wrong", allow_redirects=False) as response:
            assert response.status == 401
            assert COOKIE not in response.cookies
        async with stranger.get(f"{url}/records/0") as response:
            assert response.status == 401
    # the cookie the link sets is HttpOnly and SameSite=Strict
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.get(login_url(console), allow_redirects=False) as response,
    ):
        assert response.status == 303
        cookie = response.cookies[COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends its own Host
    async with browser.get(f"{url}/", headers={"Host": f"evil.example:{console.port}"}) as r:
        assert r.status == 421
    status, _ = await page(browser, f"{url}/")
    assert status == 200
    async with browser.get(f"{url}/") as response:
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_forms_need_the_console_origin_and_its_form_token(open_console: Open) -> None:
    console, browser = await open_console()
    url = f"{base(console)}/subject-access"
    _, html = await page(browser, url)
    token = csrf_of(html)
    person = {"family_name": "Testwell", "date_of_birth": "2016-03-14"}
    status, _ = await page(browser, url, **person)  # no form token
    assert status == 403
    status, _ = await page(browser, url, csrf="0" * 64, **person)
    assert status == 403
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{console.port + 1}"):
        headers = {"Origin": origin}
        async with browser.post(url, data={"csrf": token, **person}, headers=headers) as response:
            assert response.status == 403, origin
    status, _ = await page(browser, url, csrf=token, **person)
    assert status == 200


async def test_records_are_listed_filtered_and_paged(
    scheme: devscheme.DevScheme,
    open_console: Open,
    blue_badge_client: EligibilityClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    indices = [
        await ask(blue_badge_client, "bb-yes-dla"),
        await ask(blue_badge_client, "bb-no"),
        await ask(blue_badge_client, "no-match"),
        await ask(
            blue_badge_client,
            "fsm-no",
            check="free-school-meals",
            purpose="free-school-meals-application",
        ),  # not permitted for this council: refused, and recorded
    ]
    assert indices == [0, 1, 2, 3]
    console, browser = await open_console()
    _, html = await page(browser, f"{base(console)}/")
    rows = re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html)
    assert rows == ["0", "1", "2", "3"]
    assert "council-warwickshire-blue-badge" in html
    _, html = await page(browser, f"{base(console)}/?outcome=refused")
    assert re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html) == ["3"]
    _, html = await page(browser, f"{base(console)}/?outcome=undetermined")
    assert "No records match." in text_of(html)

    monkeypatch.setattr(audit_console, "PAGE_SIZE", 3)
    _, html = await page(browser, f"{base(console)}/")
    assert re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html) == ["0", "1", "2"]
    following = re.search(r'<a [^>]*href="([^"]+)" rel="next"', html)
    assert following is not None
    _, html = await page(browser, base(console) + following.group(1).replace("&amp;", "&"))
    assert re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html) == ["3"]
    assert 'rel="next"' not in html


async def test_banded_records_show_their_band_and_filter_by_it(
    scheme: devscheme.DevScheme, open_console: Open, broker: RunningBroker
) -> None:
    config = scheme.council_config(devscheme.COUNCIL_TAX_WARWICK)
    async with EligibilityClient.from_config(config) as council:
        for who in ("fsm-yes-uc-low-earnings", "ctr-uc-pip-protected", "fsm-no"):
            await ask(
                council,
                who,
                check=devscheme.CTR_CHECK,
                purpose="council-tax-reduction-application",
            )
    console, browser = await open_console()
    _, html = await page(browser, f"{base(console)}/")
    assert '<option value="protected-77">' in html  # the bands seen are offered as filters
    _, html = await page(browser, f"{base(console)}/?outcome=protected-77")
    assert re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html) == ["1"]
    assert "protected-77" in text_of(html)


async def test_a_record_page_proves_the_record_and_shows_tampering(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    open_console: Open,
    blue_badge_client: EligibilityClient,
) -> None:
    for who in ("bb-yes-dla", "bb-no", "no-match"):
        await ask(blue_badge_client, who)
    console, browser = await open_console()
    status, html = await page(browser, f"{base(console)}/records/1")
    assert status == 200
    assert "Verified: the record matches its digest and is leaf 1 of the checkpoint" in html
    assert subject_of("bb-no")["family_name"] not in html  # pseudonyms only

    # the operator edits record 1 in the database: no longer a "no"
    await edit_record(broker.settings, 1, outcome="yes")
    _, html = await page(browser, f"{base(console)}/records/1")
    assert "NOT verified" in html
    assert "record 1 does not match its digest (modified)" in html

    # a console pinned to another log key trusts no checkpoint the broker shows
    other = scheme.root / "auditors" / "other-key.toml"
    other.write_text(auditor_config(scheme).read_text().replace("../public/log.vkey", "other.vkey"))
    _, other_vkey = generate_signer(devscheme.LOG_ORIGIN)  # the log's name, another key
    (scheme.root / "auditors" / "other.vkey").write_text(other_vkey + "\n")
    console, browser = await open_console(other)
    _, html = await page(browser, f"{base(console)}/records/0")
    assert "NOT verified" in html
    assert "checkpoint not signed by the log&#39;s key (forged)" in html

    status, _ = await page(browser, f"{base(console)}/records/999")
    assert status == 502  # the broker's 404, shown as its refusal
    status, _ = await page(browser, f"{base(console)}/records/%C2%B2")
    assert status == 400


async def test_subject_access_lists_who_checked_a_person(
    open_console: Open, blue_badge_client: EligibilityClient
) -> None:
    mine = [await ask(blue_badge_client, "bb-yes-dla"), await ask(blue_badge_client, "bb-no")]
    mine.append(await ask(blue_badge_client, "bb-yes-dla"))
    console, browser = await open_console()
    url = f"{base(console)}/subject-access"
    _, html = await page(browser, url)
    person = subject_of("bb-yes-dla")
    status, html = await page(
        browser,
        url,
        csrf=csrf_of(html),
        family_name=person["family_name"],
        date_of_birth=person["date_of_birth"],
    )
    assert status == 200
    assert "2 records about this person" in text_of(html)
    assert re.findall(r'<a [^>]*href="/records/(\d+)"[^>]*>', html) == [str(mine[0]), str(mine[2])]
    assert "Warwickshire County Council" in html  # who, by the registry's name
    # the identifiers typed are not echoed back into the page
    assert person["family_name"] not in html
    assert person["date_of_birth"] not in html


async def test_verifying_the_whole_log_catches_edits_and_forks(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    open_console: Open,
    blue_badge_client: EligibilityClient,
) -> None:
    for who in ("bb-yes-dla", "bb-no", "no-match", "bb-yes-pip-moving"):
        await ask(blue_badge_client, who)
    console, browser = await open_console()
    url = f"{base(console)}/verify"
    _, html = await page(browser, url)
    token = csrf_of(html)
    _, html = await page(browser, url, csrf=token)
    assert "OK: the export verifies. 4 records" in text_of(html)
    kept = re.search(r'<pre class="note">(.*?)</pre>', html, re.S)
    assert kept is not None
    note = kept.group(1).replace("&#43;", "+")
    assert note.startswith(f"{devscheme.LOG_ORIGIN}\n4\n")

    # held: the note kept last time still verifies; a forked note of the same size does not
    _, html = await page(browser, url, csrf=token, held=note)
    assert "OK: the export verifies" in html
    signer = NoteSigner((scheme.root / "secrets" / "log.skey").read_text().strip())
    fork = sign_checkpoint(Checkpoint(signer.name, 4, bytes(32)), signer)
    _, html = await page(browser, url, csrf=token, held=fork)
    assert "does NOT verify" in html
    assert "fork" in text_of(html)

    await log_sql(broker.settings, "UPDATE records SET body = ? WHERE log_index = 2", b"{}")
    _, html = await page(browser, url, csrf=token)
    assert "does NOT verify" in html
    assert "record 2" in text_of(html)


async def test_a_council_answer_is_checked_against_the_log(
    broker: RunningBroker, open_console: Open, blue_badge_client: EligibilityClient
) -> None:
    kept = [
        await blue_badge_answer_token(blue_badge_client, who) for who in ("bb-yes-dla", "bb-no")
    ]
    console, browser = await open_console()
    url = f"{base(console)}/receipt"
    _, html = await page(browser, url)
    token = csrf_of(html)
    _, html = await page(browser, url, csrf=token, token=kept[0])
    assert "Proven: record" in html
    assert re.search(
        r'<a [^>]*href="/records/0"[^>]*>0</a> is the record this answer was given on', html
    )
    await edit_record(broker.settings, 1, outcome="yes")
    _, html = await page(browser, url, csrf=token, token=kept[1])
    assert "NOT proven" in html
    assert "record 1 says outcome &#39;yes&#39;, the answer &#39;no&#39;" in html
    _, html = await page(browser, url, csrf=token, token="not.a.token")
    assert "not an answer signed by this broker" in html


async def test_broker_refusals_and_outages_are_pages_not_crashes(
    scheme: devscheme.DevScheme, broker: RunningBroker, open_console: Open
) -> None:
    # a council's key is not an auditor's: the broker refuses, the console says so
    council = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    console, browser = await open_console(council)
    status, html = await page(browser, f"{base(console)}/")
    assert status == 502
    assert "The broker refused: 403" in html
    await broker.stop()
    console, browser = await open_console()
    status, html = await page(browser, f"{base(console)}/")
    assert status == 502
    assert "The broker is unreachable" in html


async def test_axb_audit_console_prints_a_sign_in_link(scheme: devscheme.DevScheme) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "audit",
        "console",
        "--config",
        str(auditor_config(scheme)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        link = re.search(r"open (http://127\.0\.0\.1:\d+/login\?token=[\w-]+)", line)
        assert link is not None, line
        async with (
            aiohttp.ClientSession() as browser,
            browser.get(link.group(1), allow_redirects=False) as response,
        ):
            assert response.status == 303
    finally:
        process.terminate()
        await process.wait()


# --- in a real browser ---------------------------------------------------------------------


def browse_as_an_auditor(link: str, person: dict[str, str]) -> dict[str, Any]:
    """Headless Chromium through the console, as an auditor clicks through it (blocking: run
    it in a thread while the test's loop serves the broker and the console)."""
    from selenium.webdriver.common.by import By

    driver = headless_chromium()
    seen: dict[str, Any] = {}
    try:
        driver.get(link)  # signs in, lands on the records page
        seen["records_title"] = driver.title
        seen["rows"] = len(driver.find_elements(By.CSS_SELECTOR, "table.records tbody tr"))
        header = driver.find_element(By.CSS_SELECTOR, "header.govuk-header")
        seen["header_background"] = header.value_of_css_property("background-color")
        seen["font"] = driver.find_element(By.TAG_NAME, "h1").value_of_css_property("font-family")
        seen["fonts_loaded"] = driver.execute_script(
            "return document.fonts.check('19px \"GDS Transport\"')"
        )

        driver.find_element(By.LINK_TEXT, "Subject access").click()
        driver.find_element(By.NAME, "family_name").send_keys(person["family_name"])
        driver.find_element(By.NAME, "date_of_birth").send_keys(person["date_of_birth"])
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        seen["subject_access"] = driver.find_element(By.TAG_NAME, "h2").text
        driver.find_element(By.CSS_SELECTOR, "table.records a").click()
        seen["record_verdict"] = driver.find_element(By.CSS_SELECTOR, ".verdict").text

        driver.find_element(By.LINK_TEXT, "Verify the whole log").click()
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        seen["verify_verdict"] = driver.find_element(By.CSS_SELECTOR, ".verdict").text
        seen["severe"] = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    return seen


async def test_an_auditor_uses_the_console_in_chromium(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    for who in ("bb-yes-dla", "bb-no", "bb-yes-dla", "no-match"):
        await ask(blue_badge_client, who)
    runner, console = await start_console(auditor_config(scheme))
    try:
        seen = await asyncio.to_thread(
            browse_as_an_auditor, login_url(console), subject_of("bb-yes-dla")
        )
    finally:
        await runner.cleanup()
    assert seen["records_title"].startswith("Records")
    assert seen["rows"] == 4
    assert seen["header_background"] == "rgba(11, 12, 12, 1)"  # the stylesheet loaded under CSP
    assert "GDS Transport" in seen["font"]  # GOV.UK Frontend's look, as the resident's page
    assert seen["fonts_loaded"] is True  # its fonts came through the console's CSP too
    assert seen["subject_access"] == "2 records about this person"
    assert seen["record_verdict"].startswith("Verified: the record matches its digest")
    assert seen["verify_verdict"].startswith("OK: the export verifies. 4 records")
    assert seen["severe"] == []  # no CSP violation, no script or resource error


async def test_bulk_jobs_are_listed_with_the_range_of_their_records_and_only_to_auditors(
    scheme: devscheme.DevScheme, open_console: Open, schools_client: EligibilityClient
) -> None:
    """The audit API's job list (``GET /v1/audit/jobs``) and the console's page of it: each
    council's jobs with their consent records' log index range, linked to those records; no
    subject, no result, no link to the council's results; a council's key may not list."""
    jobs = BulkJobs(schools_client)
    job = await submit_fsm(jobs, strangers(5))
    ended = await jobs.wait(job["id"], poll_s=0.05)
    assert ended["status"] == "completed"
    first, last = ended["log_index_range"]
    async with AuditClient.from_config(auditor_config(scheme)) as auditor:
        listed = await auditor.jobs()
        assert [j["id"] for j in listed] == [job["id"]]
        assert listed[0]["requester"] == devscheme.COUNCIL_SCHOOLS
        assert listed[0]["log_index_range"] == [first, last]
        assert "links" not in listed[0]
        assert "Resident" not in str(listed)  # the strangers' family names
        assert await auditor.jobs(requester=devscheme.COUNCIL_BLUE_BADGE) == []
    council = scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    async with AuditClient.from_config(council) as not_an_auditor:
        with pytest.raises(CheckFailed) as refused:
            await not_an_auditor.jobs()
    assert refused.value.status == 403
    console, browser = await open_console()
    status, html = await page(browser, f"{base(console)}/jobs")
    assert status == 200
    assert job["id"] in html
    assert f'href="/records/{first}"' in html
    assert f'href="/records/{last}"' in html
    assert "Resident" not in html
