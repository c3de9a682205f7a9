"""`SessionMiddleware`: sessions for any WSGI application (Flask, Bottle, Pyramid, ...).

The WSGI twin of `coatcheck.adapters.asgi.SessionMiddleware`: the session is loaded before
the application runs and put in `environ["coatcheck.session"]`, and it is committed when
the application calls `start_response`, before the status and headers leave, so a client
never sees a cookie for a session that was not saved. Bodies stream through untouched;
changes made to the session after `start_response` (while the body is generated) are
therefore not saved, as with any session cookie.

Failures are answered, not raised, as in the ASGI middleware (see
`coatcheck.adapters.failures`): a store that is down gives `503 Service Unavailable`, a
failed CSRF check `403`, a write conflict `409`, a session too large `413`, one that cannot
be serialised `500`, with nothing saved. With `fail_open=True` a store failure is never a
503: an anonymous unsaved session at load, the write dropped at commit; both are counted
(`load_failures.total`, `commit_failures.total`) and logged once per 10 s. All session
logic lives in the manager and the drivers; this module only maps the environ onto a
`RequestInfo` and headers back onto the response.
"""

from __future__ import annotations

import io
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
from .failures import COMMIT_ERRORS, Answer, refusal, store_failure_logs, unsaved_headers

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "form_token", "request_info"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Where the middleware puts the request's `Session`.
ENVIRON_KEY = "coatcheck.session"


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
    """Load, expose and commit sessions around a WSGI application.

    `load_failures` and `commit_failures` count the requests whose session the store
    failed to load or to save; each logs one line per 10 s at most.
    """

    def __init__(self, app: WSGIApp, manager: SessionManager, *, fail_open: bool = False) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open
        self.load_failures, self.commit_failures = store_failure_logs(fail_open)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        request = request_info(environ)
        try:
            session = open_session(manager, request)
        except StoreError as exc:
            self.load_failures.record(manager.clock(), str(exc))
            if not self.fail_open:
                return _respond(start_response, "503 Service Unavailable",
                                b"Service Unavailable: session store unreachable")  # fmt: skip
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


#: The answer when the store fails at commit (without `fail_open`).
_UNAVAILABLE = Answer(503, "Service Unavailable", b"Service Unavailable: session not saved")


class _Response:
    """The application's response, with the session committed at `start_response`.

    If the commit fails, the client gets the failure's answer instead (503, 409, 413 or
    500) and the application's body is dropped (and closed), whether the application
    called `start_response` before returning its body or lazily, from its first iteration.
    """

    def __init__(self, middleware: SessionMiddleware, session: Session, environ: Environ,
                 start_response: StartResponse) -> None:  # fmt: skip
        self._middleware = middleware
        self._manager = middleware.manager
        self._session = session
        self._start_response = start_response
        self._failed: Answer | None = None
        self._extra: Headers | None = None
        self._body: Iterable[bytes] = middleware.app(environ, self._start)

    def _start(self, status: str, headers: Headers, exc_info: ExcInfo | None = None
               ) -> Callable[[bytes], object]:  # fmt: skip
        if self._failed is not None:
            return lambda data: None
        if self._extra is None:  # a second call (an error page, with exc_info) commits nothing
            manager = self._manager
            try:
                self._extra = commit_session(manager, self._session)
            except StoreError as exc:
                self._middleware.commit_failures.record(manager.clock(), str(exc))
                if self._middleware.fail_open:
                    self._extra = unsaved_headers(manager, self._session)
                else:
                    return self._refuse(_UNAVAILABLE, exc_info)
            except COMMIT_ERRORS as exc:
                return self._refuse(refusal(manager, self._session, exc), exc_info)
        return self._start_response(status, _merge(headers, self._extra), exc_info)

    def _refuse(self, answer: Answer, exc_info: ExcInfo | None) -> Callable[[bytes], object]:
        self._failed = answer
        self._start_response(answer.status_line, answer.headers(), exc_info)
        return lambda data: None

    def __iter__(self) -> Iterator[bytes]:
        if self._failed is None:
            for chunk in self._body:
                if self._failed is not None:  # start_response came with the first chunk
                    break
                yield chunk
        if self._failed is not None:
            yield self._failed.body

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
