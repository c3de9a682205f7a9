"""`SessionMiddleware`: sessions for any ASGI application (Starlette, FastAPI, Litestar, ...).

Pure ASGI, in the shape of Starlette's own session middleware: the session is loaded before
the application runs and put in `scope["session"]`, and it is committed when the response
starts, before its headers leave, so a client never sees a cookie for a session that was
not saved. Bodies stream through untouched. Frameworks whose request reads
`scope["session"]` (Starlette's and Litestar's `request.session`) get the coatcheck
session; in Quart it is `request.scope["session"]`, while `quart.session` stays Quart's own
cookie session (docs/asgi.md).

Failures are answered, not raised, before the application's response leaves and with
nothing saved (`coatcheck.adapters.failures`: 503 for a store that is down, 403 for a
failed CSRF check, 409, 413 or 500 for a session that cannot be committed); with
`fail_open=True` a store failure is never a 503. The session's headers join the
application's as `coatcheck.responses.merge_headers` says.

A route that needs an established session calls `require_session(request)`; without one
the middleware answers `401 Unauthorized`, with the challenge of
`coatcheck.responses.challenge` (RFC 6750). With `client_script_path="/coatcheck.js"` the
middleware also serves the JavaScript client for the header transport at that path.

Routes in `exclude=[...]` (paths, prefixes, patterns: `coatcheck.routes`) or whose endpoint
is marked `@no_session` (Starlette and FastAPI routers) are passed straight to the app: no
session loaded, no store touched, no token verified, no header added; `scope["session"]`
is `coatcheck.routes.NO_SESSION`, which raises `SessionExcluded` on any use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from .._mypyc import mypyc_attr
from ..assurance import DEFAULT_LADDER, Ladder, Requirement
from ..csrf import SAFE_METHODS, form_limit, form_token
from ..drivers import acommit_session, aopen_session
from ..exceptions import ConfigurationError, CSRFError, SessionRequired, StoreError
from ..manager import SessionManager
from ..request import RequestInfo
from ..request import from_asgi as request_info
from ..responses import Answer, ClientScript, challenge, client_script, latin1, merge_headers
from ..routes import NO_SESSION, ExcludeSpec, RouteFilter, no_session
from ..session import Session
from . import failures, websocket

__all__ = [
    "ExtendSession",
    "SessionMiddleware",
    "SessionRequired",
    "challenge",
    "client_script",
    "no_session",
    "request_info",
    "require_session",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_session(
    connection: Any,
    *,
    authenticated: bool = False,
    max_age: float | None = None,
    assurance: str | None = None,
    ladder: Ladder = DEFAULT_LADDER,
) -> Session:
    """The request's session, if it is established (or, with `authenticated=True`, logged
    in); otherwise raise `SessionRequired`, which `SessionMiddleware` turns into a 401.

    With `max_age` (seconds) or `assurance` (a level on `ladder`), the session's latest
    authentication must also be that recent and that strong (`coatcheck.assurance`);
    otherwise `StepUpRequired`, which the middleware answers with a 401 carrying an RFC
    9470 challenge and a JSON body whose `reason` is `"login_required"`, `"login_too_old"`
    or `"assurance_too_low"`.

    `connection` is an ASGI scope or anything with a `.scope` (Starlette's `Request` and
    `WebSocket`). In Starlette, add the middleware with `Middleware(SessionMiddleware, ...)`
    so that it sees the exception before Starlette's error handler turns it into a 500.
    """
    scope = connection if isinstance(connection, Mapping) else connection.scope
    session = scope.get("session")
    if not isinstance(session, Session):
        if session is NO_SESSION:
            NO_SESSION.refuse()  # SessionExcluded: the route has no session, by design
        raise ConfigurationError(
            "no coatcheck session in this request: add "
            "coatcheck.adapters.asgi.SessionMiddleware(app, manager=...) around the app"
        )
    if max_age is not None or assurance is not None:
        return Requirement.of(max_age, assurance, ladder).check(session)
    if session.is_new or session.ended or (authenticated and session.user is None):
        raise SessionRequired(challenge(session))
    return session


class ExtendSession:
    """An ASGI endpoint that keeps the request's session alive, for `coatcheck.js`'s
    `extend()`: a `POST` records a request on the session (its idle deadline moves to now
    plus its idle limit; client side, at most once per `touch_interval`, as any request)
    and answers 204, with the session's headers (the transport's `expiry_header`, if
    configured, says the new time left). Without an established session it raises
    `SessionRequired` (the middleware answers 401); other methods get 405. It never
    lengthens a session past its absolute deadline. In Starlette:
    `Route("/session/extend", ExtendSession(), methods=["POST"])`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            await _send(send, 405, [("allow", "POST")], b"")
            return
        require_session(scope).modified = True
        await _send(send, 204, [], b"")


# Applications may subclass it (e.g. to wrap `__call__`): compiled, the class must allow it.
@mypyc_attr(allow_interpreted_subclasses=True)
class SessionMiddleware:
    """Load, expose and commit sessions around an ASGI application.

    `client_script_path` (e.g. `"/coatcheck.js"`; default None: not served) is where the
    middleware serves the JavaScript client, before and without loading a session.

    `load_failures` and `commit_failures` count the requests whose session the store
    failed to load or to save (with `fail_open`: served anonymously, writes dropped); each
    logs one line per 10 s at most, with the count since the line before.

    `exclude` lists the routes that have no session (`coatcheck.routes.Exclusions`: exact
    paths, prefixes ending in `/`, `re.Pattern`s, callables); endpoints marked with
    `no_session` in a Starlette or FastAPI router are excluded too (collected at the first
    request). An excluded request costs what the bare app costs, plus the path test.

    `jwks_path` (e.g. `"/.well-known/jwks.json"`; default None: not served) is where the
    middleware serves the public JWK set of EdDSA / ES256 client-side tokens
    (`coatcheck.asymmetric.PublicKeySet`: `Cache-Control` max-age `jwks_max_age` seconds
    and an ETag), without loading a session; with any other mode it is a
    `ConfigurationError`.

    `websocket_recheck` (seconds, default 5) bounds how long a WebSocket of a session that
    was revoked, logged out or expired stays open: `self.websockets`, a
    `coatcheck.adapters.websocket.SessionWatcher`, re-checks every open socket's session
    that often and closes it with code 4401 (docs/websockets.md).
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: SessionManager,
        *,
        fail_open: bool = False,
        client_script_path: str | None = None,
        exclude: Iterable[ExcludeSpec] | None = None,
        jwks_path: str | None = None,
        jwks_max_age: int = 300,
        websocket_recheck: float = 5.0,
    ) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open
        self.client_script_path = client_script_path
        self.failures = failures.StoreFailures(fail_open)
        self.load_failures, self.commit_failures = self.failures.load, self.failures.commit
        self._script = ClientScript() if client_script_path is not None else None
        self._exclude = RouteFilter(exclude)
        self.jwks_path = jwks_path
        self._jwks: Any = None
        if jwks_path is not None:
            from ..asymmetric import PublicKeySet

            self._jwks = PublicKeySet.of(getattr(manager.mode, "codec", None), max_age=jwks_max_age)
        #: Closes the WebSockets of sessions that end (`coatcheck.adapters.websocket`).
        self.websockets = websocket.SessionWatcher(websocket_recheck)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._script is not None and scope.get("path") == self.client_script_path:
            if scope["type"] == "http":
                await _send(send, *self._script.answer(request_info(scope)))
                return
        if self._jwks is not None and scope.get("path") == self.jwks_path:
            if scope["type"] == "http":
                request = request_info(scope)
                await _send(
                    send, *self._jwks.answer(request.method, request.header_values("if-none-match"))
                )
                return
        if self._exclude.active and self._exclude.excluded(scope, self.app):
            scope["session"] = NO_SESSION
            await self.app(scope, receive, send)
            return
        manager = self.manager
        request = request_info(scope)
        try:
            session = await aopen_session(manager, request)
        except StoreError as exc:
            if not self.failures.at_load(manager, exc) or scope["type"] != "http":
                await _refuse(scope, send, failures.UNREACHABLE)
                return
            scope["session"] = manager.anonymous(request)
            await self.app(scope, receive, send)
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            # A handshake is a GET that browsers send cross-site, cookies included, with no
            # CORS preflight (cross-site WebSocket hijacking): check it as unsafe. Nothing
            # is committed: no response carries the session's headers.
            try:
                manager.check_csrf(request._replace(method="WEBSOCKET"), session)
            except CSRFError:
                await _refuse(scope, send, failures.FORBIDDEN)
                return
            scope[websocket.MANAGER_KEY] = manager
            app = self.app

            async def handler(receive: Receive, send: Send) -> None:
                await app(scope, receive, send)

            try:
                await self.websockets.serve(manager, session, handler, receive, send)
            except SessionRequired as exc:
                await _refuse(scope, send, failures.unauthorized(exc))
            websocket.warn_unsaved(scope.get("session"))
            return
        if manager.csrf and request.method not in SAFE_METHODS:
            try:
                manager.check_csrf(request, session)  # safe methods pass at once
            except CSRFError:
                replay = await _form_checked(manager, request, session, receive)
                if replay is None:
                    await _refuse(scope, send, failures.FORBIDDEN)
                    return
                receive = replay

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
                except failures.COMMIT_FAILURES as exc:
                    answer = self.failures.at_commit(manager, session, exc)
                    if answer is not None:
                        failed = True
                        await _refuse(scope, send, answer)
                        return
                    extra = failures.unsaved_headers(manager, session)
                if extra:
                    headers = message.get("headers", ())
                    message["headers"] = merge_headers(headers, extra, encode=True)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except SessionRequired as exc:
            if started:
                raise
            failures.step_up(manager, session, exc)
            await _refuse(scope, send_wrapper, failures.unauthorized(exc))


async def _form_checked(
    manager: SessionManager, request: RequestInfo, session: Session, receive: Receive
) -> Receive | None:
    """The request failed the CSRF check on its headers, but a urlencoded form may carry the
    session's `csrf_token`: read the body (as far as `csrf.form_limit` allows) and return a
    `receive` that replays it to the application, or None if it carries no valid token."""
    content_type = request.header("content-type")
    limit = form_limit(content_type, request.header("content-length"))
    body = b""
    more = limit > 0
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    submitted = form_token(content_type, body)
    if submitted is None:
        return None
    try:
        manager.check_csrf(request, session, submitted)
    except CSRFError:
        return None
    whole = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def replay() -> Message:
        return next(whole, None) or await receive()

    return replay


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": latin1(headers)})
    await send({"type": "http.response.body", "body": body})


async def _refuse(scope: Scope, send: Send, answer: Answer) -> None:
    """Send `answer` instead of the application's response (which has not started); a
    WebSocket is closed instead (1011 for a server error, 1008 for a refusal)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011 if answer.status >= 500 else 1008})
    else:
        await _send(send, answer.status, answer.headers(), answer.body)
