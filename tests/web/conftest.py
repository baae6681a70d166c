"""Fixtures for end-to-end tests of the chat page in headless Chromium.

Chromium is Debian's package, driven through Playwright's Python package with an
explicit ``executable_path`` (Playwright's own browser downloads are never used).
Without Chromium or Playwright the tests skip, except under ``CI=true``, where a
missing browser is a broken install and fails.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daehwa.api.app import WEB_DIR
from tests.web.server import PageServer

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_names = itertools.count(1)


def chromium_path() -> str | None:
    """Debian's Chromium, or one named by DAEHWA_CHROMIUM."""
    for candidate in (os.environ.get("DAEHWA_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true; `make install` installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if importlib.util.find_spec("playwright") is None:
        _missing("the playwright Python package is not installed")
    executable = chromium_path()
    if executable is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    libraries = WEB_DIR / "node_modules"
    for package in ("marked", "dompurify"):
        if not (libraries / package / "package.json").is_file():
            _missing("the page's npm packages are missing: run `npm ci` in src/daehwa/web")
    page_server = PageServer(tmp_path_factory.mktemp("web")).start()
    try:
        yield page_server
    finally:
        page_server.stop()


class Visitor:
    """One browser context (cookies of its own) with a fresh user, and its page."""

    def __init__(self, browser: Any, server: PageServer, *, width: int, height: int) -> None:
        self.server = server
        self.name = f"user{next(_names)}"
        self.key = server.new_user(self.name)
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, locale="ko-KR"
        )
        self.context.set_default_timeout(15_000)
        self.outside: list[str] = []
        self.dialogs: list[str] = []
        # Nothing may leave 127.0.0.1 unless a test routes it on purpose.
        self.context.route(lambda url: not url.startswith(server.url), self._block)
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )

    def _block(self, route: Any) -> None:
        self.outside.append(route.request.url)
        route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str = "/") -> Any:
        self.page.goto(self.server.url + path)
        return self.page

    def login(self) -> Any:
        """Log in with the API key through the form."""
        page = self.open()
        page.fill("#login-key", self.key)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("body[data-ready]")
        return page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visitor(browser: Any, server: PageServer) -> Iterator[Visitor]:
    v = Visitor(browser, server, width=1280, height=800)
    try:
        yield v
    finally:
        v.close()


@pytest.fixture
def phone(browser: Any, server: PageServer) -> Iterator[Visitor]:
    v = Visitor(browser, server, width=360, height=740)
    try:
        yield v
    finally:
        v.close()
