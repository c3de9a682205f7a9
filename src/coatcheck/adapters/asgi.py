"""`SessionMiddleware`: sessions for any ASGI application (Starlette, FastAPI, Quart, ...).

Pure ASGI, in the shape of Starlette's own session middleware: the session is loaded before
the application runs and put in `scope["session"]` (so `request.session` works), and it is
committed when the response starts, before its headers leave, so a client never sees a
cookie for a session that was not saved. Bodies stream through untouched.

Failures are answered, not raised (see `coatcheck.adapters.failures`): a store that is
down gives `503 Service Unavailable`, a failed CSRF check `403 Forbidden`, a write computed
from a value another request has replaced since `409 Conflict`, a session too large for its
transport `413`, one that cannot be serialised `500`, each before the application's
response leaves and with nothing saved. With `fail_open=True` a store failure is never a
503: at load the request gets an anonymous session that is not saved, at commit the write
is dropped and the application's response goes out without a new cookie. Store failures are
counted (`load_failures.total`, `commit_failures.total`) and logged once per 10 s at most.

A route that needs an established session calls `require_session(request)`; without one
the middleware answers `401 Unauthorized`, with `WWW-Authenticate: Bearer
error="invalid_token"` when the `Authorization` header carried an expired, revoked or
unknown token (RFC 6750). With `client_script_path="/coatcheck.js"` the middleware also
serves the JavaScript client for the header transport at that path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from importlib.resources import files
from typing import Any

from ..csrf import MAX_FORM_BYTES, SAFE_METHODS, form_token, is_form
from ..drivers import acommit_session, aopen_session
from ..exceptions import ConfigurationError, CSRFError, SessionRequired, StoreError
from ..manager import SessionManager
from ..request import RawHeaders, RequestInfo
from ..session import Session
from ..transports import Header
from .failures import COMMIT_ERRORS, Answer, refusal, store_failure_logs, unsaved_headers

__all__ = [
    "SessionMiddleware",
    "SessionRequired",
    "challenge",
    "client_script",
    "request_info",
    "require_session",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_new_tuple = tuple.__new__


def request_info(scope: Scope) -> RequestInfo:
    """The `RequestInfo` of an ASGI HTTP or WebSocket scope; headers are decoded when read."""
    headers = RawHeaders(scope.get("headers", ()))
    client = scope.get("client")
    # tuple.__new__: the NamedTuple's own __new__ is one Python call more, every request.
    return _new_tuple(RequestInfo, (
        scope.get("method", "GET"), headers, scope.get("scheme", "http"), headers.get("host"),
        scope.get("path", "/"), client[0] if client else None,
    ))  # fmt: skip


def challenge(session: Session) -> list[tuple[str, str]]:
    """The `WWW-Authenticate` header of a 401 for `session` (RFC 6750, section 3).

    For a session whose request used a `Header` transport with a scheme: `Bearer
    error="invalid_token"` if the request carried a token that resolved to nothing
    (expired, revoked, unknown or malformed), a bare `Bearer` challenge if it carried none.
    Cookie-carried sessions get no challenge: no HTTP authentication scheme describes them.
    """
    transport = session.transport
    if not isinstance(transport, Header) or transport.scheme is None:
        return []
    if session.client_stale:
        return [("www-authenticate", f'{transport.scheme} error="invalid_token"')]
    return [("www-authenticate", transport.scheme)]


def require_session(connection: Any, *, authenticated: bool = False) -> Session:
    """The request's session, if it is established (or, with `authenticated=True`, logged
    in); otherwise raise `SessionRequired`, which `SessionMiddleware` turns into a 401.

    `connection` is an ASGI scope or anything with a `.scope` (Starlette's `Request` and
    `WebSocket`). In Starlette, add the middleware with `Middleware(SessionMiddleware, ...)`
    so that it sees the exception before Starlette's error handler turns it into a 500.
    """
    scope = connection if isinstance(connection, Mapping) else connection.scope
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no coatcheck session in this request: add "
            "coatcheck.adapters.asgi.SessionMiddleware(app, manager=...) around the app"
        )
    if session.is_new or session.ended or (authenticated and session.user is None):
        raise SessionRequired(challenge(session))
    return session


def client_script() -> bytes:
    """The JavaScript client for the header transport (`coatcheck/static/coatcheck.js`)."""
    return files("coatcheck").joinpath("static/coatcheck.js").read_bytes()


class SessionMiddleware:
    """Load, expose and commit sessions around an ASGI application.

    `client_script_path` (e.g. `"/coatcheck.js"`; default None: not served) is where the
    middleware serves the JavaScript client, before and without loading a session.

    `load_failures` and `commit_failures` count the requests whose session the store
    failed to load or to save (with `fail_open`: served anonymously, writes dropped); each
    logs one line per 10 s at most, with the count since the line before.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: SessionManager,
        *,
        fail_open: bool = False,
        client_script_path: str | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open
        self.client_script_path = client_script_path
        self.load_failures, self.commit_failures = store_failure_logs(fail_open)
        self._script: tuple[bytes, bytes] | None = None
        if client_script_path is not None:
            body = client_script()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'.encode()
            self._script = (body, etag)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._script is not None and scope["type"] == "http":
            if scope.get("path") == self.client_script_path:
                await _serve_script(scope, send, *self._script)
                return
        manager = self.manager
        request = request_info(scope)
        try:
            session = await aopen_session(manager, request)
        except StoreError as exc:
            self.load_failures.record(manager.clock(), str(exc))
            if not self.fail_open or scope["type"] != "http":
                await _respond(scope, send, 503, b"Service Unavailable: session store unreachable")
                return
            anonymous = manager.attach(manager.open(RequestInfo(method=request.method)), None)
            assert isinstance(anonymous, Session)  # noqa: S101 - no key: always a fresh session
            session = anonymous
            scope["session"] = session
            await self.app(scope, receive, send)
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            if manager.csrf:
                # A handshake is a GET that browsers send cross-site, cookies included, with
                # no CORS preflight (cross-site WebSocket hijacking): check it as unsafe.
                try:
                    manager.check_csrf(request._replace(method="WEBSOCKET"), session)
                except CSRFError:
                    await _respond(scope, send, 403, b"")
                    return
            try:
                await self.app(scope, receive, send)
            except SessionRequired:
                await _respond(scope, send, 401, b"")
            return
        if manager.csrf and request.method not in SAFE_METHODS:
            try:
                try:
                    manager.check_csrf(request, session)  # safe methods pass at once
                except CSRFError:
                    receive = await self._check_csrf_form(request, session, receive)
            except CSRFError:
                await _respond(scope, send, 403, b"Forbidden: cross-origin request rejected (CSRF)")
                return

        failed = False
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed, started
            if failed:
                return
            if message["type"] == "http.response.start":
                started = True
                try:
                    extra = await acommit_session(manager, session)
                except StoreError as exc:
                    self.commit_failures.record(manager.clock(), str(exc))
                    if not self.fail_open:
                        failed = True
                        await _respond(scope, send, 503, b"Service Unavailable: session not saved")
                        return
                    extra = unsaved_headers(manager, session)
                except COMMIT_ERRORS as exc:
                    failed = True
                    await _answer(send, refusal(manager, session, exc))
                    return
                if extra:
                    message["headers"] = _merge(message.get("headers", []), extra)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except SessionRequired as exc:
            if started:
                raise
            body = b"Unauthorized: this route requires a session"
            await _respond(scope, send_wrapper, 401, body, exc.headers)

    async def _check_csrf_form(
        self, request: RequestInfo, session: Session, receive: Receive
    ) -> Receive:
        """The request failed the CSRF check on its headers; a urlencoded form may still carry
        the session's `csrf_token`. Read the body, check the token, and return a `receive`
        that replays the body to the application; `CSRFError` if there is no valid token.
        The form is searched by `coatcheck.csrf.form_token`, as in every adapter."""
        content_type = request.header("content-type")
        if not is_form(content_type):
            raise CSRFError("cross-origin request without a valid CSRF token")
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
        submitted = form_token(content_type, body)  # None for a form it cannot search
        self.manager.check_csrf(request, session, submitted or "")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


#: The headers the manager sends on most responses, encoded once.
_ENCODED = {
    ("vary", "Cookie"): (b"vary", b"Cookie"),
    ("cache-control", "no-store"): (b"cache-control", b"no-store"),
}


def _merge(headers: Any, extra: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The application's response headers plus the session's; a session `Cache-Control`
    replaces the application's."""
    merged = list(headers)
    for name, _ in extra:
        if name == "cache-control":
            merged = [(k, v) for k, v in merged if k.lower() != b"cache-control"]
            break
    for pair in extra:
        encoded = _ENCODED.get(pair)
        merged.append(
            (pair[0].encode("latin-1"), pair[1].encode("latin-1")) if encoded is None else encoded
        )
    return merged


async def _respond(
    scope: Scope, send: Send, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()
) -> None:
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
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, answer: Answer) -> None:
    """Send `answer` instead of the application's response (which has not started)."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _serve_script(scope: Scope, send: Send, body: bytes, etag: bytes) -> None:
    """Answer a request for the JavaScript client: `no-cache` with an ETag, so browsers
    revalidate (a cheap 304) and pick up a new version as soon as the package changes."""
    headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
    method = scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await _respond(scope, send, 405, b"Method Not Allowed", [("allow", "GET, HEAD")])
        return
    if_none_match = [v for k, v in scope.get("headers", ()) if k == b"if-none-match"]
    tags = {t.strip().removeprefix(b"W/") for v in if_none_match for t in v.split(b",")}
    if etag in tags or b"*" in tags:
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [
        (b"content-type", b"text/javascript; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
