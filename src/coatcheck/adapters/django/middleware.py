"""`SessionMiddleware`: Django's session middleware, handing the request's client IP and
user agent to the session (shown when a user's sessions are listed).

Use it in place of `django.contrib.sessions.middleware.SessionMiddleware`; with the plain
Django middleware everything works the same, except that listings show no IP or agent.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest

from ...exceptions import ConfigurationError
from ...request import RequestInfo

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
