"""`SessionMiddleware`: sessions for any ASGI application (Starlette, FastAPI, Quart, ...).

Pure ASGI, in the shape of Starlette's own session middleware: the session is loaded before
the application runs and put in `scope["session"]` (so `request.session` works), and it is
committed when the response starts, before its headers leave, so a client never sees a
cookie for a session that was not saved. Bodies stream through untouched.

Failures are answered, not raised: a store that is down gives `503 Service Unavailable`
(or, with `fail_open=True`, an anonymous session that is not saved) and a failed CSRF
check gives `403 Forbidden`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from ..csrf import TOKEN_FIELD
from ..drivers import acommit_session, aopen_session
from ..exceptions import CSRFError, StoreError
from ..manager import SessionManager
from ..request import RequestInfo
from ..session import Session

__all__ = ["SessionMiddleware", "request_info"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("coatcheck")
MAX_FORM_BYTES = 1024 * 1024  # a form larger than this is not searched for a CSRF token
MAX_FORM_FIELDS = 1000  # nor is a form with more fields than this


def request_info(scope: Scope) -> RequestInfo:
    """The `RequestInfo` of an ASGI HTTP or WebSocket scope."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
    host = next((v for k, v in headers if k == "host"), None)
    client = scope.get("client")
    return RequestInfo(
        method=scope.get("method", "GET"),
        headers=headers,
        scheme=scope.get("scheme", "http"),
        host=host,
        path=scope.get("path", "/"),
        client_ip=client[0] if client else None,
    )


class SessionMiddleware:
    """Load, expose and commit sessions around an ASGI application."""

    def __init__(self, app: ASGIApp, manager: SessionManager, *, fail_open: bool = False) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        manager = self.manager
        request = request_info(scope)
        try:
            session = await aopen_session(manager, request)
        except StoreError as exc:
            if not self.fail_open or scope["type"] != "http":
                log.error("session store unavailable: %s", exc)
                await _respond(scope, send, 503, b"Service Unavailable: session store unreachable")
                return
            log.warning("session store unavailable, serving an anonymous session: %s", exc)
            anonymous = manager.attach(manager.open(RequestInfo(method=request.method)), None)
            assert isinstance(anonymous, Session)  # noqa: S101 - no key: always a fresh session
            session = anonymous
            scope["session"] = session
            await self.app(scope, receive, send)
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if manager.csrf:
            try:
                receive = await self._check_csrf(request, session, scope, receive)
            except CSRFError:
                await _respond(scope, send, 403, b"Forbidden: cross-origin request rejected (CSRF)")
                return

        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start":
                try:
                    extra = await acommit_session(manager, session)
                except StoreError as exc:
                    log.error("session commit failed: %s", exc)
                    failed = True
                    await _respond(scope, send, 503, b"Service Unavailable: session not saved")
                    return
                if extra:
                    message["headers"] = _merge(message.get("headers", []), extra)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _check_csrf(
        self, request: RequestInfo, session: Session, scope: Scope, receive: Receive
    ) -> Receive:
        """Run the CSRF check; for a urlencoded form, read the body to find `csrf_token`
        and return a `receive` that replays it to the application."""
        try:
            self.manager.check_csrf(request, session)
            return receive
        except CSRFError:
            content_type = (request.header("content-type") or "").lower()
            if not content_type.startswith("application/x-www-form-urlencoded"):
                raise
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise CSRFError("client went away before the form arrived")
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM_BYTES:
                raise CSRFError("form too large to look for a CSRF token")
        try:
            fields = parse_qs(body.decode("latin-1"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:  # more fields than allowed: refuse, never a 500
            raise CSRFError("form has too many fields to look for a CSRF token") from None
        submitted = fields.get(TOKEN_FIELD, [None])[0]
        self.manager.check_csrf(request, session, submitted or "")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _merge(headers: Any, extra: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    merged = list(headers)
    if any(name == "cache-control" for name, _ in extra):
        merged = [(k, v) for k, v in merged if k.lower() != b"cache-control"]
    merged += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra]
    return merged


async def _respond(scope: Scope, send: Send, status: int, body: bytes) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
