"""Headless Chromium for the tests that drive the demo (Debian's package: nothing is
downloaded; tests skip only when it is missing). conftest.py makes these fixtures global."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = Path(os.environ.get("GLIMPSE_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 90_000  # the first request on a fresh gateway traces the model


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        # No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        # The browser only ever loads our own gateway on 127.0.0.1.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page; fails the test on any script error or CSP violation it logs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))

    def on_console(msg) -> None:
        # Chromium logs the API's error statuses too; some tests ask for those on purpose.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            problems.append(msg.text)

    page.on("console", on_console)
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()
    assert not problems, problems
