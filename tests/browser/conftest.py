"""Real-browser fixtures: headless Chromium (Debian's `chromium` package, driven by
Playwright without a browser download) and real ASGI servers (uvicorn in threads, each on a
free loopback port).

Pages are loaded from `http://localhost:PORT`: browsers treat `localhost` as a secure
context, so `Secure` and `__Host-` cookies and Web Locks work without TLS. Each other-origin
server listens on its own port, which makes it another origin (same site, though: cookies
are not partitioned by port).

A missing Chromium skips the tests with the reason; with `CI=true` the root conftest turns
that skip into a failure.

The fixtures are package-scoped: Playwright's sync API keeps an event loop running in the
main thread while it is open, which the async tests of other packages must not meet.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn

from .app import OtherOrigin, main_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
TIMEOUT = 10.0  # seconds, for a server to start or stop


@dataclass
class Server:
    """A uvicorn server running `app` in a thread; `origin` is its `http://localhost` URL."""

    app: Any
    origin: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)


def serve(app: Any) -> Server:
    """Start `app` on a free port of 127.0.0.1 and wait until it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", ws="none", http="h11", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    return Server(app, f"http://localhost:{port}", server, thread)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def site() -> Iterator[Server]:
    """The coatcheck app (cookie pages, header pages, `/coatcheck.js`, `/api/...`)."""
    app, _ = main_app()
    server = serve(app)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def _others() -> Iterator[tuple[Server, Server]]:
    servers = (serve(OtherOrigin()), serve(OtherOrigin()))
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def third_party(_others: tuple[Server, Server]) -> Server:
    """Another origin the page's client was not told about; it records what it receives."""
    server = _others[0]
    server.app.seen.clear()
    return server


@pytest.fixture
def allowed_origin(_others: tuple[Server, Server]) -> Server:
    """Another origin the page's client lists in `allowedOrigins`."""
    server = _others[1]
    server.app.seen.clear()
    return server


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cookies, no storage, its own BroadcastChannels."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT * 1000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
