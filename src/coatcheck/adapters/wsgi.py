"""`SessionMiddleware`: sessions for any WSGI application (Flask, Bottle, Pyramid, ...).

The WSGI twin of `coatcheck.adapters.asgi.SessionMiddleware`: the session is loaded before
the application runs and put in `environ["coatcheck.session"]`, and it is committed when
the application calls `start_response`, before the status and headers leave, so a client
never sees a cookie for a session that was not saved. Bodies stream through untouched;
changes made to the session after `start_response` (while the body is generated) are
therefore not saved, as with any session cookie.

Failures are answered, not raised: a store that is down gives `503 Service Unavailable`
(or, with `fail_open=True`, an anonymous session that is not saved) and a failed CSRF
check gives `403 Forbidden`. All session logic lives in the manager and the drivers; this
module only maps the environ onto a `RequestInfo` and headers back onto the response.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .. import csrf
from ..csrf import MAX_FORM_BYTES
from ..drivers import commit_session, open_session
from ..exceptions import CSRFError, StoreError
from ..manager import SessionManager
from ..request import RequestInfo
from ..session import Session

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "form_token", "request_info"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Where the middleware puts the request's `Session`.
ENVIRON_KEY = "coatcheck.session"

log = logging.getLogger("coatcheck")


def request_info(environ: Environ) -> RequestInfo:
    """The `RequestInfo` of a WSGI environ (PEP 3333: headers are `HTTP_*` keys, except
    `CONTENT_TYPE` and `CONTENT_LENGTH`)."""
    headers: Headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-").lower(), value))
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME")
        port = environ.get("SERVER_PORT")
        scheme = environ.get("wsgi.url_scheme", "http")
        if host and port and (scheme, str(port)) not in (("http", "80"), ("https", "443")):
            host = f"{host}:{port}"
    return RequestInfo(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        headers=headers,
        scheme=environ.get("wsgi.url_scheme", "http"),
        host=host,
        path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/",
        client_ip=environ.get("REMOTE_ADDR") or None,
    )


def form_token(environ: Environ) -> str | None:
    """The `csrf_token` field of a urlencoded form body, or None.

    The body is read (up to `MAX_FORM_BYTES`) and put back as `wsgi.input`, so the
    application still reads the whole form, and searched by `coatcheck.csrf.form_token`,
    as in every adapter: a form it cannot search gives None (a 403), never an exception.
    Only called on the rare path where the origin check failed and no `X-CSRF-Token`
    header came.
    """
    content_type = environ.get("CONTENT_TYPE")
    if not csrf.is_form(content_type):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= MAX_FORM_BYTES:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return csrf.form_token(content_type, body)


def check_csrf(manager: SessionManager, request: RequestInfo, session: Session,
               environ: Environ) -> None:  # fmt: skip
    """The manager's CSRF check, also accepting the token from a urlencoded form."""
    try:
        manager.check_csrf(request, session)
    except CSRFError:
        submitted = form_token(environ)
        if submitted is None:
            raise
        manager.check_csrf(request, session, submitted)


class SessionMiddleware:
    """Load, expose and commit sessions around a WSGI application."""

    def __init__(self, app: WSGIApp, manager: SessionManager, *, fail_open: bool = False) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        request = request_info(environ)
        try:
            session = open_session(manager, request)
        except StoreError as exc:
            if not self.fail_open:
                log.error("session store unavailable: %s", exc)
                return _respond(start_response, "503 Service Unavailable",
                                b"Service Unavailable: session store unreachable")  # fmt: skip
            log.warning("session store unavailable, serving an anonymous session: %s", exc)
            environ[ENVIRON_KEY] = _anonymous(manager, request)
            return self.app(environ, start_response)
        environ[ENVIRON_KEY] = session
        if manager.csrf:
            try:
                check_csrf(manager, request, session, environ)
            except CSRFError:
                return _respond(start_response, "403 Forbidden",
                                b"Forbidden: cross-origin request rejected (CSRF)")  # fmt: skip
        return _Response(self, session, environ, start_response)


def _anonymous(manager: SessionManager, request: RequestInfo) -> Session:
    """A fresh session that is never saved (the store is down and `fail_open` is set)."""
    anonymous = manager.attach(manager.open(RequestInfo(method=request.method)), None)
    assert isinstance(anonymous, Session)  # noqa: S101 - no key: always a fresh session
    return anonymous


class _Response:
    """The application's response, with the session committed at `start_response`.

    If the commit fails, the client gets a 503 instead and the application's body is
    dropped (and closed), whether the application called `start_response` before
    returning its body or lazily, from its first iteration.
    """

    def __init__(self, middleware: SessionMiddleware, session: Session, environ: Environ,
                 start_response: StartResponse) -> None:  # fmt: skip
        self._manager = middleware.manager
        self._session = session
        self._start_response = start_response
        self._failed = False
        self._extra: Headers | None = None
        self._body: Iterable[bytes] = middleware.app(environ, self._start)

    def _start(self, status: str, headers: Headers, exc_info: ExcInfo | None = None
               ) -> Callable[[bytes], object]:  # fmt: skip
        if self._failed:
            return lambda data: None
        if self._extra is None:  # a second call (an error page, with exc_info) commits nothing
            try:
                self._extra = commit_session(self._manager, self._session)
            except StoreError as exc:
                log.error("session commit failed: %s", exc)
                self._failed = True
                body = b"Service Unavailable: session not saved"
                self._start_response("503 Service Unavailable", _plain(body), exc_info)
                return lambda data: None
        return self._start_response(status, _merge(headers, self._extra), exc_info)

    def __iter__(self) -> Iterator[bytes]:
        if not self._failed:
            for chunk in self._body:
                if self._failed:  # start_response came with the first chunk
                    break
                yield chunk
        if self._failed:
            yield b"Service Unavailable: session not saved"

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _merge(headers: Headers, extra: Headers) -> Headers:
    merged = list(headers)
    names = {name for name, _ in extra}
    if "cache-control" in names:
        merged = [(k, v) for k, v in merged if k.lower() != "cache-control"]
    for name, value in extra:
        if name == "vary":
            merged = _add_vary(merged, value)
        else:
            merged.append((_title(name), value))
    return merged


def _add_vary(headers: Headers, value: str) -> Headers:
    for i, (name, current) in enumerate(headers):
        if name.lower() == "vary":
            present = {v.strip().lower() for v in current.split(",")}
            if value.lower() not in present and "*" not in present:
                headers[i] = (name, f"{current}, {value}")
            return headers
    return [*headers, ("Vary", value)]


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _plain(body: bytes) -> Headers:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


def _respond(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(status, _plain(body))
    return [body]
