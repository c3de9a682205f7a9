"""`SessionMiddleware`: sessions for any WSGI application (Flask, Bottle, Pyramid, ...).

The WSGI twin of `coatcheck.adapters.asgi.SessionMiddleware`: the session is put in
`environ["coatcheck.session"]` and committed when the application calls `start_response`,
before the headers leave, so a client never sees a cookie for a session that was not saved.
Bodies stream through untouched (changes made to the session while the body is generated
are not saved, as with any session cookie). Failures are answered as in the ASGI middleware.

Paths in `exclude=[...]` (`coatcheck.routes`; matched against `PATH_INFO`) are passed
straight to the application: no session loaded, no header added, the response untouched;
`environ["coatcheck.session"]` is `coatcheck.routes.NO_SESSION` there.
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
from ..request import from_wsgi as request_info
from ..responses import Answer, merge_headers, title_case
from ..routes import NO_SESSION, ExcludeSpec, exclusions
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


def check_csrf(
    manager: SessionManager, request: RequestInfo, session: Session, environ: Environ
) -> None:
    """The manager's CSRF check, also accepting the token from a urlencoded form body: read
    (only when the headers failed, as far as `coatcheck.csrf.form_limit` allows) and put
    back as `wsgi.input`, so the application still reads the whole form."""
    try:
        manager.check_csrf(request, session)
    except CSRFError:
        content_type = environ.get("CONTENT_TYPE")
        limit = csrf.form_limit(content_type, environ.get("CONTENT_LENGTH") or "0")
        body = environ["wsgi.input"].read(limit)  # 0 (nothing) for what is not a form
        environ["wsgi.input"] = io.BytesIO(body)
        submitted = csrf.form_token(content_type, body)
        if submitted is None:
            raise
        manager.check_csrf(request, session, submitted)


def path_info(environ: Environ) -> str:
    """`PATH_INFO`, decoded as UTF-8 (PEP 3333 hands it over as latin-1)."""
    path: str = environ.get("PATH_INFO") or "/"
    if path.isascii():
        return path
    return path.encode("latin-1", "replace").decode("utf-8", "replace")


class SessionMiddleware:
    """Load, expose and commit sessions around a WSGI application; `fail_open`,
    `load_failures`, `commit_failures`, `exclude`, `jwks_path` and `jwks_max_age` as in
    the ASGI middleware."""

    def __init__(
        self,
        app: WSGIApp,
        manager: SessionManager,
        *,
        fail_open: bool = False,
        exclude: Iterable[ExcludeSpec] | None = None,
        jwks_path: str | None = None,
        jwks_max_age: int = 300,
    ) -> None:
        self.app = app
        self.exclude = exclusions(exclude)
        self.jwks_path = jwks_path
        self._jwks: Any = None
        if jwks_path is not None:
            from ..asymmetric import PublicKeySet

            self._jwks = PublicKeySet.of(getattr(manager.mode, "codec", None), max_age=jwks_max_age)
        self.manager = manager
        self.fail_open = fail_open
        self.failures = failures.StoreFailures(fail_open)
        self.load_failures, self.commit_failures = self.failures.load, self.failures.commit

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._jwks is not None and path_info(environ) == self.jwks_path:
            method = environ.get("REQUEST_METHOD", "GET")
            tags = [environ["HTTP_IF_NONE_MATCH"]] if "HTTP_IF_NONE_MATCH" in environ else []
            status, headers, body = self._jwks.answer(method, tags)
            reason = {200: "OK", 304: "Not Modified", 405: "Method Not Allowed"}[status]
            start_response(f"{status} {reason}", title_case(headers))
            return [body]
        if self.exclude is not None and self.exclude.excluded(path_info(environ)):
            environ[ENVIRON_KEY] = NO_SESSION
            return self.app(environ, start_response)
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
    """The application's response, with the session committed at `start_response`. If the
    commit is refused, the client gets the refusal instead and the application's body is
    dropped (and closed), whether `start_response` came before the body or with it."""

    def __init__(
        self,
        middleware: SessionMiddleware,
        session: Session,
        environ: Environ,
        start_response: StartResponse,
    ) -> None:
        self._middleware = middleware
        self._session = session
        self._start_response = start_response
        self._failed: Answer | None = None
        self._extra: Headers | None = None
        self._body: Iterable[bytes] = middleware.app(environ, self._start)

    def _start(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        manager, session = self._middleware.manager, self._session
        if self._failed is None and self._extra is None:  # a second call commits nothing
            try:
                self._extra = title_case(commit_session(manager, session))
            except failures.COMMIT_FAILURES as exc:
                self._failed = self._middleware.failures.at_commit(manager, session, exc)
                if self._failed is None:
                    self._extra = title_case(failures.unsaved_headers(manager, session))
                else:
                    _refuse(self._start_response, self._failed, exc_info)
        if self._failed is not None:
            return lambda data: None  # the application's body is dropped
        return self._start_response(status, merge_headers(headers, self._extra or []), exc_info)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body if self._failed is None else ():
            if self._failed is not None:  # start_response came with the first chunk
                break
            yield chunk
        if self._failed is not None:
            yield self._failed.body

    def close(self) -> None:
        getattr(self._body, "close", lambda: None)()  # PEP 3333: the body's close, if any


def _refuse(
    start_response: StartResponse, answer: Answer, exc_info: ExcInfo | None = None
) -> list[bytes]:
    """Answer `answer` instead of the application's response."""
    start_response(answer.status_line, answer.headers(), exc_info)
    return [answer.body]
