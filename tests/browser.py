"""Real-browser tests: headless Chromium (Debian's ``chromium`` package, ``make tools``) driven
by Playwright, static pages served from an origin of their own, and screenshots kept as test
artifacts.

Playwright never downloads a browser here (``playwright install`` is never run): the fixture
launches the system Chromium by path. A missing Chromium or Playwright skips the test locally
and fails it with ``TAILOR_REQUIRE_SERVICES=1`` (CI), as :mod:`tests.services` does for every
tool. Use the fixture by importing it into the test module::

    from tests.browser import browser  # noqa: F401  (a fixture)
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.services import require_package, require_tool
from tests.test_layers import ROOT

#: Screenshots and other files a test keeps for a person to look at (gitignored; CI may upload).
ARTIFACTS = ROOT / ".artifacts"

#: Chromium's flags for a machine with no display, no GPU, no sandbox (root in a container) and
#: no network but the loopback: nothing of Chromium's own (updates, sync, QUIC probes) goes out.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the test module (a ``playwright.sync_api.Browser``); each test
    opens its own context (cookies, storage) with ``browser.new_context()`` and closes it.

    Module scope, not session: each module that imports the fixture gets its own definition, and
    Playwright's sync API runs an event loop in the main thread while it lives, so a second one,
    or a later test's ``asyncio.run``, fails while the first is still open."""
    why = "the browser tests drive a real Chromium through Playwright"
    require_tool("chromium", why)
    require_package("playwright", why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=list(CHROMIUM_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``.artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def serve_pages(pages: dict[str, str]) -> Iterator[str]:
    """Serve ``{path: html}`` from ``http://127.0.0.1:<free port>`` until the block exits;
    yields that origin. Another path is a 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            html = pages.get(self.path.split("?", 1)[0])
            body = (html if html is not None else "not found").encode()
            self.send_response(200 if html is not None else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
