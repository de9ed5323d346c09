"""Headless Chromium for the tests that drive a page as a person would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def headless_chromium() -> Any:
    """A Selenium driver of /usr/bin/chromium, headless, keeping the browser's console log
    (each test asserts it holds no SEVERE entry), waiting up to 15 s for elements: after a
    click the next page may still be loading, and each element looked up exists only on the
    page the click leads to, so waiting for it waits for that page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        pytest.fail("Chromium and ChromeDriver are needed: .ci/tools installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.implicitly_wait(15)
    return driver
