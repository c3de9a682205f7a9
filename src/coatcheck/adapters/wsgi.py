"""`SessionMiddleware`: sessions for any WSGI application (Flask, Bottle, Pyramid, ...).

The WSGI twin of `coatcheck.adapters.asgi.SessionMiddleware`: the session is loaded before
the application runs and put in `environ["coatcheck.session"]`, and it is committed when
the application calls `start_response`, before the status and headers leave, so a client
never sees a cookie for a session that was not saved. Bodies stream through untouched;
changes made to the session after `start_response` (while the body is generated) are
therefore not saved, as with any session cookie. Failures are answered, not raised, as in
the ASGI middleware (see `coatcheck.adapters.failures`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .. import csrf
from ..drivers import commit_session, open_session
from ..exceptions import CSRFError, StoreError
from ..manager import SessionManager
from ..request import RequestInfo
from ..responses import Answer, merge_headers, title_case
from ..session import Session
from . import failures

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "check_csrf", "request_info"]

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
    headers = [(key[5:].replace("_", "-").lower(), value)
               for key, value in environ.items() if key.startswith("HTTP_")]  # fmt: skip
    headers += [(key.replace("_", "-").lower(), environ[key])
                for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if environ.get(key)]  # fmt: skip
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


def check_csrf(manager: SessionManager, request: RequestInfo, session: Session,
               environ: Environ) -> None:  # fmt: skip
    """The manager's CSRF check, also accepting the token from a urlencoded form body.

    Only on the rare path where the origin check failed and no `X-CSRF-Token` header came
    is the form read, as far as `coatcheck.csrf.form_limit` allows (a missing
    `CONTENT_LENGTH` means no body), and put back as `wsgi.input`, so the application
    still reads it whole.
    """
    try:
        manager.check_csrf(request, session)
    except CSRFError:
        content_type = environ.get("CONTENT_TYPE")
        limit = csrf.form_limit(content_type, environ.get("CONTENT_LENGTH") or "0")
        if not limit:
            raise
        body = environ["wsgi.input"].read(limit)
        environ["wsgi.input"] = io.BytesIO(body)
        submitted = csrf.form_token(content_type, body)
        if submitted is None:
            raise
        manager.check_csrf(request, session, submitted)


class SessionMiddleware:
    """Load, expose and commit sessions around a WSGI application.

    With `fail_open=True` a store failure is never a 503 (an anonymous unsaved session at
    load, the write dropped at commit). `load_failures` and `commit_failures` count the
    requests whose session the store failed to load or to save; each logs one line per
    10 s at most.
    """

    def __init__(self, app: WSGIApp, manager: SessionManager, *, fail_open: bool = False) -> None:
        self.app = app
        self.manager = manager
        self.fail_open = fail_open
        self.failures = failures.StoreFailures(fail_open)
        self.load_failures, self.commit_failures = self.failures.load, self.failures.commit

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        request = request_info(environ)
        try:
            session = open_session(manager, request)
        except StoreError as exc:
            if not self.failures.at_load(manager, exc):
                return _refuse(start_response, failures.UNREACHABLE)
            environ[ENVIRON_KEY] = manager.anonymous(request)
            return self.app(environ, start_response)
        environ[ENVIRON_KEY] = session
        if manager.csrf:
            try:
                check_csrf(manager, request, session, environ)
            except CSRFError:
                return _refuse(start_response, failures.FORBIDDEN)
        return _Response(self, session, environ, start_response)


class _Response:
    """The application's response, with the session committed at `start_response`.

    If the commit fails, the client gets the failure's answer instead (503, 409, 413 or
    500) and the application's body is dropped (and closed), whether the application
    called `start_response` before returning its body or lazily, from its first iteration.
    """

    def __init__(self, middleware: SessionMiddleware, session: Session, environ: Environ,
                 start_response: StartResponse) -> None:  # fmt: skip
        self._middleware = middleware
        self._session = session
        self._start_response = start_response
        self._failed: Answer | None = None
        self._extra: Headers | None = None
        self._body: Iterable[bytes] = middleware.app(environ, self._start)

    def _start(self, status: str, headers: Headers, exc_info: ExcInfo | None = None
               ) -> Callable[[bytes], object]:  # fmt: skip
        if self._failed is None and self._extra is None:  # a second call commits nothing
            self._extra = self._commit(exc_info)
        if self._failed is not None:
            return lambda data: None
        return self._start_response(status, merge_headers(headers, self._extra or []), exc_info)

    def _commit(self, exc_info: ExcInfo | None) -> Headers:
        """The session's headers; or, if the commit is refused, its answer, sent at once."""
        manager, session = self._middleware.manager, self._session
        try:
            return title_case(commit_session(manager, session))
        except failures.COMMIT_FAILURES as exc:
            self._failed = self._middleware.failures.at_commit(manager, session, exc)
            if self._failed is not None:
                _refuse(self._start_response, self._failed, exc_info)
            return title_case(failures.unsaved_headers(manager, session))

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


def _refuse(start_response: StartResponse, answer: Answer,
            exc_info: ExcInfo | None = None) -> list[bytes]:  # fmt: skip
    """Answer `answer` instead of the application's response."""
    start_response(answer.status_line, answer.headers(), exc_info)
    return [answer.body]
