"""`SessionMiddleware`: Django's session middleware, handing the request's client IP and
user agent to the session (shown when a user's sessions are listed), and answering what
the session's save raises as every coatcheck adapter does (`coatcheck.adapters.failures`):

- a write conflict (the request changed a key that another request changed since it was
  read) is `409 Conflict`, nothing saved, no cookie;
- a value that cannot be serialised is `500` with one `session.unserialisable` error
  line carrying the session's hash, and no traceback;

whether the save runs at the end (the session was modified) or in the view
(`request.session.save()`, `cycle_key()` in `django.contrib.auth.login`).

Use it in place of `django.contrib.sessions.middleware.SessionMiddleware`. With the plain
Django middleware, listings show no IP or agent, a conflict surfaces as Django's own
`SessionInterrupted` (its answer to a save that a concurrent request made impossible: a
400 through the project's `handler400`, logged on `django.security.SessionInterrupted`),
since the engine raises it as an `UpdateError`, and a value that cannot be serialised is
an ordinary 500 with a traceback, as with Django's own engines.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse

from ...exceptions import ConfigurationError, WriteConflict
from ...request import RequestInfo
from ..failures import COMMIT_ERRORS, CommitError, refusal

__all__ = ["SessionMiddleware", "request_info"]


def request_info(request: HttpRequest) -> RequestInfo:
    """The few facts of a Django request that sessions record: method, user agent and
    client IP (no cookies; Django's own middleware handles CSRF)."""
    meta = request.META
    agent = meta.get("HTTP_USER_AGENT")
    return RequestInfo(
        method=request.method or "GET",
        headers=[("user-agent", agent)] if agent else (),
        client_ip=meta.get("REMOTE_ADDR") or None,
    )


class SessionMiddleware(DjangoSessionMiddleware):
    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        from .store import SessionStore

        engine = self.SessionStore
        if not issubclass(engine, SessionStore):
            raise ConfigurationError(
                "coatcheck.adapters.django.SessionMiddleware needs "
                'SESSION_ENGINE = "coatcheck.adapters.django"'
            )
        self._engine: type[SessionStore] = engine

    def process_request(self, request: HttpRequest) -> None:
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        request.session = self._engine(session_key, request=request_info(request))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> Any:
        if getattr(request, _REFUSED, False):
            return response  # the session's save already failed in the view: not again
        try:
            return super().process_response(request, response)
        except SessionInterrupted as exc:
            if not isinstance(exc.__context__, WriteConflict):
                raise  # deleted meanwhile: Django's own answer
            return self._refuse(request, exc.__context__)
        except COMMIT_ERRORS as exc:
            return self._refuse(request, exc)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        """The same answers when the view's own `save()` or `cycle_key()` (Django's
        `login()`) raised them."""
        if isinstance(exception, COMMIT_ERRORS):
            return self._refuse(request, exception)
        return None

    def _refuse(self, request: HttpRequest, exc: CommitError) -> HttpResponse:
        setattr(request, _REFUSED, True)
        session = request.session
        assert isinstance(session, self._engine)  # noqa: S101 - set by process_request
        answer = refusal(session.manager, session.coatcheck, exc)
        refused = HttpResponse(
            answer.body, status=answer.status, content_type="text/plain; charset=utf-8"
        )
        refused["Cache-Control"] = "no-store"
        return refused


#: Set on a request whose session save was refused, so that it is not tried again.
_REFUSED = "_coatcheck_refused"
