"""The applications the browser tests load: a Starlette app with coatcheck (both transports,
the JavaScript client served at `/coatcheck.js`, an open redirect, and under `/client/` a
client-side-mode API whose every write answers with a whole new token) and a bare "other
origin" app that records the headers it receives, so a test can tell whether a token leaked
to it, and answers with whatever session token it is told to, as an attacker's would."""

from __future__ import annotations

import asyncio
import hashlib
import html
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from coatcheck import ClientSide, Cookie, Header, KeyRing, ServerSide, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware, require_session
from coatcheck.session import Session
from coatcheck.stores import MemoryStore

COOKIE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>coatcheck: cookie transport</title></head>
<body><h1>Cookie transport</h1><p id="user">{user}</p></body></html>"""

# Query parameters: `storage` ("memory", "session", "local"), `allow` (an origin that may
# get the token), `nolocks` (hide Web Locks to exercise the in-page queue).
HEADER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>coatcheck: header transport</title>
<script>
  if (new URLSearchParams(location.search).has("nolocks")) {
    Object.defineProperty(navigator, "locks", { value: undefined });
  }
</script>
<script type="module">
  import { createClient } from "/coatcheck.js";
  const params = new URLSearchParams(location.search);
  const session = createClient({
    storage: params.get("storage") ?? "memory",
    allowedOrigins: params.getAll("allow"),
  });
  window.session = session;
  window.events = [];
  for (const name of ["login", "logout", "expired"]) {
    session.addEventListener(name, () => {
      window.events.push(name);
      document.getElementById("events").textContent = window.events.join(", ");
    });
  }
  session.addEventListener("change", () => {
    document.getElementById("state").textContent = session.hasToken ? "signed in" : "signed out";
  });
  // Calls through the client; the answer as plain data for the test.
  window.call = async (url, init) => {
    const response = await session.fetch(url, init);
    const text = await response.text();
    let body = null;
    try { body = JSON.parse(text); } catch { body = text; }
    return { status: response.status, body };
  };
  window.ready = session.ready.then(() => true);
</script></head>
<body><h1>Header transport</h1>
<p>Session: <span id="state">signed out</span></p><p>Events: <span id="events"></span></p>
</body></html>"""


def sess(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


def digest(value: str) -> str:
    """A short hash of a header value, so tests compare tokens without handling them."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def fingerprint(request: Request) -> str | None:
    """The digest of the Authorization header the server received, if any."""
    value = request.headers.get("authorization")
    return None if value is None else digest(value)


async def cookie_page(request: Request) -> Response:
    user = sess(request).user
    return HTMLResponse(COOKIE_PAGE.format(user=html.escape(user or "anonymous")))


async def header_page(request: Request) -> Response:
    return HTMLResponse(HEADER_PAGE)


async def me(request: Request) -> Response:
    session = sess(request)
    return JSONResponse(
        {"user": session.user, "n": session.get("n", 0), "auth": fingerprint(request)}
    )


async def count(request: Request) -> Response:
    session = sess(request)
    session["n"] = session.get("n", 0) + 1
    return JSONResponse({"n": session["n"]})


async def login(request: Request) -> Response:
    sess(request).login("alice")
    return JSONResponse({"user": "alice"})


async def regenerate(request: Request) -> Response:
    sess(request).regenerate()
    return JSONResponse({"regenerated": True})


async def logout(request: Request) -> Response:
    sess(request).logout()
    return JSONResponse({"user": None})


async def private(request: Request) -> Response:
    session = require_session(request)
    return JSONResponse({"user": session.user})


async def redirect(request: Request) -> Response:
    """An open redirect (`?to=` any URL), as many real sites have one: it lets a request
    that starts on the page's own origin end on an attacker's."""
    return RedirectResponse(request.query_params["to"], status_code=302)


class Gate:
    """Wraps the app: a request with `?after=login` is held (before its session is even
    loaded) until a login request has been answered, to stage a late, stale response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.logged_in: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.logged_in is None:
            self.logged_in = asyncio.Event()  # created in the server's event loop
        if scope["path"] == "/api/login":
            await self.app(scope, receive, send)
            self.logged_in.set()
        elif b"after=login" in scope["query_string"]:
            with anyio.fail_after(10):
                await self.logged_in.wait()
            self.logged_in.clear()
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def client_keys(request: Request) -> Response:
    return JSONResponse({"keys": sorted(sess(request))})


async def client_set(request: Request) -> Response:
    """Set one key: in client-side mode, the answer carries a whole new token holding the
    data the request's token held plus this key, and nothing any parallel write added."""
    session = sess(request)
    session[request.path_params["key"]] = True
    return JSONResponse({"keys": sorted(session)})


def client_side_app() -> Any:
    """The `/client/...` API: client-side sessions (signed tokens, no store) by header."""
    manager = SessionManager(
        ClientSide(KeyRing.generate(), store=None), transport=Header(), log_salt=b"browser"
    )
    routes = [
        Route("/client/keys", client_keys),
        Route("/client/set/{key}", client_set, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager)])


class ByPath:
    """Sends `/client/...` to the client-side app and everything else to the main one, each
    behind its own session middleware (a mount would sit behind the main app's).

    A request with `?together` is held until a second one arrives (5 s at most, then 500),
    so two of them are answered only if the page sent them in parallel."""

    def __init__(self, main: Any, client_side: Any) -> None:
        self.main = main
        self.client_side = client_side
        self.waiting: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and b"together" in scope["query_string"]:
            await self.meet()
        if scope["type"] == "http" and scope["path"].startswith("/client/"):
            await self.client_side(scope, receive, send)
        else:
            await self.main(scope, receive, send)

    async def meet(self) -> None:
        if self.waiting is not None:
            self.waiting.set()
            self.waiting = None
            return
        event = self.waiting = asyncio.Event()
        try:
            with anyio.fail_after(5):
                await event.wait()
        finally:
            if self.waiting is event:
                self.waiting = None


def main_app() -> tuple[ByPath, SessionManager]:
    """The coatcheck app: cookie pages and header-transport API (server-side sessions) on
    one origin, and the client-side API under `/client/` on the same origin."""
    manager = SessionManager(
        ServerSide(store=MemoryStore()), transport=(Cookie(), Header()), log_salt=b"browser"
    )
    routes = [
        Route("/cookie.html", cookie_page),
        Route("/header.html", header_page),
        Route("/api/me", me),
        Route("/api/count", count, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/regenerate", regenerate, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/private", private),
        Route("/redirect", redirect),
    ]
    middleware = [
        Middleware(SessionMiddleware, manager=manager, client_script_path="/coatcheck.js")
    ]
    main = Gate(Starlette(routes=routes, middleware=middleware))
    return ByPath(main, client_side_app()), manager


class OtherOrigin:
    """An ASGI app on another origin that records the session headers of every request
    (preflights apart) and allows cross-origin calls, so the page can read its answers.

    Query parameters make it answer as an attacker would: `token` sends that value (empty
    too) in a `Session-Token` header that CORS exposes to the page, `status` sets the status.
    """

    def __init__(self) -> None:
        self.seen: list[dict[str, str | None]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        origin = headers.get("origin", "*")
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-headers", b"authorization, session-transport"),
            (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-expose-headers", b"session-token"),
            (b"vary", b"origin"),
        ]
        answer = [(b"content-type", b"application/json"), *cors]
        status = 200
        if scope["method"] != "OPTIONS":
            self.seen.append(
                {
                    "authorization": headers.get("authorization"),
                    "session-transport": headers.get("session-transport"),
                }
            )
            if "token" in query:
                answer.append((b"session-token", query["token"][0].encode("latin-1")))
            status = int(query.get("status", ["200"])[0])
        body = b"{}"
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": body})
