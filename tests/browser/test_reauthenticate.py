"""`coatcheck.js` and the step-up 401 in a real browser: headless Chromium loads a page
from a real ASGI server (uvicorn), logs in through the header transport, and meets routes
that need a recent login at `aal2`. The client dispatches `reauthenticate` with the reason,
`max_age` and `acr_values`, keeps its token (no `expired`, no logout), and the request
retried after a step-up passes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from coatcheck import Header, Lifetimes, ServerSide, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware, require_session
from coatcheck.stores import MemoryStore
from helpers import FakeClock

from .conftest import Server, serve

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>coatcheck: step-up</title>
<script type="module">
  import { createClient } from "/coatcheck.js";
  const session = createClient();
  window.session = session;
  window.events = [];
  window.prompts = [];
  for (const name of ["login", "logout", "expired"]) {
    session.addEventListener(name, () => window.events.push(name));
  }
  session.addEventListener("reauthenticate", (event) => {
    window.events.push("reauthenticate");
    window.prompts.push(event.detail);
  });
  window.call = async (url, method = "GET") => {
    const response = await session.fetch(url, { method });
    return { status: response.status, body: await response.json() };
  };
  window.ready = session.ready.then(() => true);
</script></head><body><h1>Step-up</h1></body></html>"""


def make_app(clock: FakeClock) -> Any:
    manager = SessionManager(
        ServerSide(MemoryStore(clock=clock)),
        transport=Header(),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"browser",
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def login(request: Request) -> Response:
        request.scope["session"].login("alice")
        return JSONResponse({"user": "alice"})

    async def reauth(request: Request) -> Response:
        request.scope["session"].reauthenticate(assurance=request.query_params["level"])
        return JSONResponse({"ok": True})

    async def strong(request: Request) -> Response:
        session = require_session(request, max_age=300, assurance="aal2")
        return JSONResponse({"user": session.user, "level": session.assurance})

    routes = [
        Route("/", page),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/reauth", reauth, methods=["POST"]),
        Route("/api/strong", strong),
    ]
    middleware = [
        Middleware(SessionMiddleware, manager=manager, client_script_path="/coatcheck.js")
    ]
    return Starlette(routes=routes, middleware=middleware)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def stepup_site(clock: FakeClock) -> Iterator[Server]:
    server = serve(make_app(clock))
    yield server
    server.stop()


def test_step_up_401_dispatches_reauthenticate_and_keeps_the_token(
    context: BrowserContext, stepup_site: Server, clock: FakeClock
) -> None:
    page = context.new_page()
    page.goto(f"{stepup_site.origin}/")
    page.wait_for_function("window.ready !== undefined")
    assert page.evaluate("window.ready") is True

    def call(url: str, method: str = "GET") -> Any:
        return page.evaluate("([url, method]) => window.call(url, method)", [url, method])

    assert call("/api/login", "POST")["status"] == 200
    refused = call("/api/strong")
    assert refused["status"] == 401
    assert refused["body"]["reason"] == "assurance_too_low"
    assert page.evaluate("window.events") == ["login", "reauthenticate"]
    assert page.evaluate("window.prompts") == [
        {
            "reason": "assurance_too_low",
            "maxAge": 300,
            "acrValues": ["aal2", "aal3"],
            "url": f"{stepup_site.origin}/api/strong",
        }
    ]
    assert page.evaluate("window.session.hasToken") is True  # not forgotten

    # The page prompts for the second factor, records it, and retries.
    assert call("/api/reauth?level=aal2", "POST")["status"] == 200
    assert call("/api/strong") == {"status": 200, "body": {"user": "alice", "level": "aal2"}}

    clock.advance(301)
    stale = call("/api/strong")
    assert stale["status"] == 401
    prompts = page.evaluate("window.prompts")
    assert prompts[-1]["reason"] == "login_too_old" and prompts[-1]["maxAge"] == 300
    assert page.evaluate("window.events") == ["login", "reauthenticate", "reauthenticate"]
    assert page.evaluate("window.session.hasToken") is True
    assert call("/api/reauth?level=aal3", "POST")["status"] == 200
    assert call("/api/strong")["body"] == {"user": "alice", "level": "aal3"}
