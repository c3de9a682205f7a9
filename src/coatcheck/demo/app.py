"""The demo web app: one replica of a small shop with a cart, logins and a device list.

A plain ASGI application wrapped in coatcheck's `SessionMiddleware`, so what it shows is
exactly what the library does. Every page says which replica served it.

With a cookie (strategies whose `carrier` is "cookie") the page is server-rendered and its
unsafe requests are form posts; the scripted client of `--check` sends the same posts with
`Accept: application/json` and gets the state as JSON instead of a redirect. With the
header transport ("header") the browser cannot attach the token to a navigation, so `/`
is a shell whose script (`coatcheck.js`, served by the middleware at `/coatcheck.js`)
sends every request with `fetch`, token attached, and asks for JSON that carries the
rendered sections (`?view=html`).

Routes::

    GET  /                       the page (cookie) or the page's shell (header)
    GET  /coatcheck.js           the JavaScript client (header strategies only)
    GET  /api/state              everything the page shows, as JSON (?view=html: + "html")
    GET  /api/session            only who this session is, without creating one (probes)
    GET  /api/metrics            this replica's event counts by kind (`metrics.EventCounts`)
    POST /login                  user=alice|bob
    POST /logout
    POST /cart/add               item=...
    POST /cart/clear
    POST /sessions/revoke        id=<handle of one of my sessions>
    POST /sessions/logout-others
    POST /admin/revoke           id=<handle of any session>
    WS   /ws                     a live socket, closed (4401) when the session ends
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from ..adapters.asgi import Message, Receive, Scope, Send, SessionMiddleware
from ..admin import AsyncSessionAdmin
from ..manager import SessionManager
from ..session import Session, SessionInfo
from . import page
from .metrics import EventCounts
from .strategies import STRATEGIES

__all__ = ["CLIENT_SCRIPT", "DEMO_USERS", "MAX_CART", "DemoApp", "build_app"]

DEMO_USERS = ("alice", "bob")
MAX_BODY = 64 * 1024  # bytes; demo forms are tiny
MAX_ITEM = 40  # characters of a cart item name
#: Items a cart keeps (the oldest drop off): a client-side session travels with every
#: request, so it must stay small (a cookie holds about 4 KB).
MAX_CART = 50
CLIENT_SCRIPT = "/coatcheck.js"

Action = Callable[[Session, dict[str, str]], Awaitable[int]]


class DemoApp:
    """The application behind `SessionMiddleware`; `scope["session"]` is a `Session`."""

    def __init__(self, manager: SessionManager, *, replica: str, strategy: str) -> None:
        self.manager = manager
        self.admin = AsyncSessionAdmin(manager)
        self.replica = replica
        self.strategy = strategy
        self.metrics = EventCounts(manager)
        known = STRATEGIES.get(strategy)
        self.summary = known.summary if known is not None else ""
        self.carrier = known.carrier if known is not None else "cookie"
        mode = manager.client_mode
        self.tokens: dict[str, Any] | None = None
        if mode is not None and manager.mode.name == "client":
            self.tokens = {
                "format": "JWE" if mode.encrypted else "JWS",
                "staleness_ms": round(mode.staleness * 1000),
            }
        self.actions: dict[str, Action] = {
            "/login": self.login,
            "/logout": self.logout,
            "/cart/add": self.cart_add,
            "/cart/clear": self.cart_clear,
            "/sessions/revoke": self.revoke_mine,
            "/sessions/logout-others": self.logout_others,
            "/admin/revoke": self.revoke_any,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.live(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        session: Session = scope["session"]
        method, path = scope["method"], scope["path"]
        wants_json = b"application/json" in _header(scope, b"accept")
        with_html = b"view=html" in scope.get("query_string", b"").split(b"&")
        if method in ("GET", "HEAD") and path == "/api/metrics":
            await self.respond(send, 200, "application/json", self.metrics_json)
            return
        if method in ("GET", "HEAD") and path == "/api/session":
            await self.respond(send, 200, "application/json", lambda: self.whoami_json(session))
            return
        if method in ("GET", "HEAD") and path == "/" and self.carrier == "header":
            # The token is in the page's script, which this navigation request did not run.
            await self.respond(send, 200, "text/html", self.shell)
            return
        if method in ("GET", "HEAD") and path in ("/", "/api/state"):
            status = 200
        elif method == "POST" and path in self.actions:
            status = await self.actions[path](session, await _read_form(receive))
            if not wants_json:
                if status == 200:
                    await self.plain(send, 303, b"", [(b"location", b"/")])
                else:
                    await self.plain(send, status, b"rejected")
                return
        else:
            await self.plain(send, 404, b"not found")
            return
        # Asked before the response starts, so that a new session is saved with its token.
        # Only a cookie needs one: a browser never attaches a header on its own (no CSRF).
        ambient = session.transport is None or session.transport.ambient
        csrf = session.csrf_token if ambient and not session.ended else None
        if path == "/":
            await self.respond(send, status, "text/html", lambda: self.page(session, csrf))
        else:
            await self.respond(
                send,
                status,
                "application/json",
                lambda: self.state_json(session, csrf, html=with_html),
            )

    async def live(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/ws`, the page's live socket: open while the logged-in session lives. The
        middleware closes it with 4401 when the session is revoked, logged out or expires
        (on any replica), and the page says so (docs/websockets.md)."""
        session: Session = scope["session"]
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"] != "/ws" or session.user is None:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        hello = {"user": session.user, "replica": self.replica}
        await send({"type": "websocket.send", "text": json.dumps(hello)})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def respond(
        self, send: Send, status: int, content_type: str, render: Callable[[], Awaitable[str]]
    ) -> None:
        # The body is rendered after the response has started: the middleware commits the
        # session at that moment, so the body shows the session as saved (after a login,
        # under its new ID). Without a content-length the server sends it chunked.
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", f"{content_type}; charset=utf-8".encode()),
                    (b"x-served-by", self.replica.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        body = (await render()).encode()
        await send({"type": "http.response.body", "body": body})

    async def plain(
        self, send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-served-by", self.replica.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # -- actions: each returns the HTTP status of its outcome ---------------------------

    async def login(self, session: Session, form: dict[str, str]) -> int:
        user = form.get("user", "")
        if user not in DEMO_USERS:
            return 400
        session.login(user)
        return 200

    async def logout(self, session: Session, form: dict[str, str]) -> int:
        session.logout()
        return 200

    async def cart_add(self, session: Session, form: dict[str, str]) -> int:
        item = form.get("item", "").strip()[:MAX_ITEM]
        if not item:
            return 400
        session["cart"] = [*session.get("cart", []), item][-MAX_CART:]
        return 200

    async def cart_clear(self, session: Session, form: dict[str, str]) -> int:
        session.pop("cart", None)
        return 200

    async def revoke_mine(self, session: Session, form: dict[str, str]) -> int:
        # Only sessions of the same user: "my devices" must not revoke other people.
        mine = {info.id for info in await self.my_sessions(session)}
        if form.get("id") not in mine:
            return 404
        await self.admin.revoke(form["id"])
        return 200

    async def logout_others(self, session: Session, form: dict[str, str]) -> int:
        if session.user is None:
            return 400
        session.logout_other_devices()
        return 200

    async def revoke_any(self, session: Session, form: dict[str, str]) -> int:
        if not form.get("id"):
            return 400
        await self.admin.revoke(form["id"])
        return 200

    # -- views --------------------------------------------------------------------------

    async def my_sessions(self, session: Session) -> list[SessionInfo]:
        return [] if session.user is None else await self.admin.sessions(session.user)

    async def state(self, session: Session, csrf: str | None) -> dict[str, Any]:
        admin = {user: [_info(i) for i in await self.admin.sessions(user)] for user in DEMO_USERS}
        return {
            **self.whoami(session),
            "strategy": self.strategy,
            "summary": self.summary,
            "carrier": self.carrier,
            "tokens": self.tokens,
            "csrf_token": csrf,
            "my_sessions": [_info(i) for i in await self.my_sessions(session)],
            "admin": admin,
            "metrics": self.metrics.snapshot(),
            "now": time.time(),
        }

    def whoami(self, session: Session) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "session": {
                "id": session.id,
                "new": session.is_new,
                "user": session.user,
                "data": dict(session),
                "created_at": session.created_at,
            },
        }

    async def state_json(self, session: Session, csrf: str | None, *, html: bool = False) -> str:
        state = await self.state(session, csrf)
        if html:
            state["html"] = page.sections(state, users=DEMO_USERS)
        return json.dumps(state)

    async def metrics_json(self) -> str:
        return json.dumps({"replica": self.replica, **self.metrics.snapshot()})

    async def whoami_json(self, session: Session) -> str:
        return json.dumps(self.whoami(session))

    async def page(self, session: Session, csrf: str | None) -> str:
        return page.render(await self.state(session, csrf), users=DEMO_USERS)

    async def shell(self) -> str:
        return page.render_shell(
            strategy=self.strategy, summary=self.summary, replica=self.replica, script=CLIENT_SCRIPT
        )


def build_app(manager: SessionManager, *, replica: str, strategy: str) -> SessionMiddleware:
    """The demo app for one replica, with sessions; header strategies also get the
    JavaScript client served at `CLIENT_SCRIPT`."""
    app = DemoApp(manager, replica=replica, strategy=strategy)
    script = CLIENT_SCRIPT if app.carrier == "header" else None
    # A revoked session's live socket closes within a second (`websocket_recheck`).
    return SessionMiddleware(app, manager, client_script_path=script, websocket_recheck=1.0)


def _info(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user": info.user,
        "ip": info.ip,
        "user_agent": info.user_agent,
        "created_at": info.created_at,
        "last_seen": info.last_seen,
    }


def _header(scope: Scope, name: bytes) -> bytes:
    return next((v for k, v in scope.get("headers", ()) if k == name), b"")


async def _read_form(receive: Receive) -> dict[str, str]:
    body = b""
    while True:
        message: Message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > MAX_BODY:
            break
    fields = parse_qs(body[:MAX_BODY].decode("utf-8", "replace"), max_num_fields=20)
    return {key: values[0] for key, values in fields.items()}
