"""Time remaining in a real browser: `coatcheck.js` reads the `Session-Expires` header the
header transport sends (`Header(expiry_header=...)`), fires "expiring" `warnBefore` ms
before the session's deadline and "expired" at it (forgetting the token), and `extend()`
posts to `ExtendSession`, which moves the deadline. Lifetimes of a few seconds, so the
events come by themselves; the test waits for them, never for a fixed time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from coatcheck import ClientSide, Header, KeyRing, Lifetimes, ServerSide, SessionManager
from coatcheck.adapters.asgi import ExtendSession, SessionMiddleware
from coatcheck.session import Session
from coatcheck.stores import MemoryStore

from .conftest import Server, serve

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.browser

IDLE = 3.0  # seconds
WARN_MS = 2000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>coatcheck: time remaining</title>
<script type="module">
  import { createClient } from "/coatcheck.js";
  const session = createClient({ warnBefore: WARN_MS });
  window.session = session;
  window.events = [];
  for (const name of ["login", "logout", "expiring", "expired"]) {
    session.addEventListener(name, () => window.events.push(name));
  }
  window.call = async (url, init) => {
    const response = await session.fetch(url, init);
    return { status: response.status, body: await response.text() };
  };
  window.ready = session.ready.then(() => true);
</script></head><body></body></html>""".replace("WARN_MS", str(WARN_MS))


def sess(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def login(request: Request) -> Response:
    sess(request).login("alice")
    return JSONResponse({"user": "alice"})


async def me(request: Request) -> Response:
    return JSONResponse({"user": sess(request).user})


def app(mode: str) -> Any:
    lifetimes = Lifetimes(idle=IDLE, absolute=3600, renewal=None, touch_interval=0.5)
    manager = SessionManager(
        ServerSide(store=MemoryStore())
        if mode == "server"
        else ClientSide(KeyRing.generate(), store=None),
        transport=Header(expiry_header="Session-Expires"),
        lifetimes=lifetimes,
        log_salt=b"browser",
    )
    routes = [
        Route("/page.html", page),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/me", me),
        Route("/session/extend", ExtendSession(), methods=["POST"]),
    ]
    middleware = [
        Middleware(SessionMiddleware, manager=manager, client_script_path="/coatcheck.js")
    ]
    return Starlette(routes=routes, middleware=middleware)


@pytest.fixture(params=["server", "client"])
def site(request: pytest.FixtureRequest) -> Iterator[Server]:
    server = serve(app(request.param))
    yield server
    server.stop()


def open_page(context: BrowserContext, site: Server) -> Page:
    tab = context.new_page()
    tab.goto(f"{site.origin}/page.html")
    tab.wait_for_function("window.ready !== undefined")
    assert tab.evaluate("window.ready") is True
    return tab


def call(tab: Page, url: str, method: str = "GET") -> Any:
    return tab.evaluate("([url, method]) => window.call(url, {method})", [url, method])


def test_the_client_warns_before_the_session_expires_and_extend_keeps_it(
    context: BrowserContext, site: Server
) -> None:
    tab = open_page(context, site)
    assert tab.evaluate("session.expiresAt") is None  # no session: nothing said yet
    assert call(tab, "/api/login", "POST")["status"] == 200
    left = tab.evaluate("session.remaining()")
    assert 0 < left <= IDLE * 1000
    tab.wait_for_function("window.events.includes('expiring')")
    assert tab.evaluate("window.events") == ["login", "expiring"]
    assert tab.evaluate("session.hasToken") is True

    before = tab.evaluate("session.expiresAt")
    assert tab.evaluate("async () => (await session.extend()).status") == 204
    assert tab.evaluate("session.expiresAt") > before  # the server moved the deadline
    assert tab.evaluate("window.events.includes('expired')") is False
    assert call(tab, "/api/me")["body"] == '{"user":"alice"}'

    tab.wait_for_function("window.events.includes('expired')")
    assert tab.evaluate("session.hasToken") is False
    assert tab.evaluate("session.expiresAt") is None
    assert tab.evaluate("window.events")[-1] == "expired"


def test_extend_without_a_session_is_a_401(context: BrowserContext, site: Server) -> None:
    tab = open_page(context, site)
    assert tab.evaluate("async () => (await session.extend()).status") == 401
    assert tab.evaluate("session.expiresAt") is None
