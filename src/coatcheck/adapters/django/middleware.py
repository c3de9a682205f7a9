"""`SessionMiddleware`: Django's session middleware, handing the request's client IP and
user agent to the session (shown when a user's sessions are listed).

Use it in place of `django.contrib.sessions.middleware.SessionMiddleware`; with the plain
Django middleware everything works the same, except that listings show no IP or agent.
"""

from __future__ import annotations

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest

from ...exceptions import ConfigurationError
from ...request import RequestInfo

__all__ = ["SessionMiddleware", "request_info"]


def request_info(request: HttpRequest) -> RequestInfo:
    """The few facts of a Django request that sessions record (no cookies, no headers
    beyond the user agent)."""
    agent = request.META.get("HTTP_USER_AGENT")
    return RequestInfo(
        method=request.method or "GET",
        headers=[("user-agent", agent)] if agent else [],
        scheme=request.scheme or "http",
        path=request.path,
        client_ip=request.META.get("REMOTE_ADDR") or None,
    )


class SessionMiddleware(DjangoSessionMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        from .store import SessionStore

        if not issubclass(self.SessionStore, SessionStore):
            raise ConfigurationError(
                "coatcheck.adapters.django.SessionMiddleware needs "
                'SESSION_ENGINE = "coatcheck.adapters.django"'
            )
        session_key = request.COOKIES.get(self._cookie_name())
        request.session = self.SessionStore(session_key, request=request_info(request))

    @staticmethod
    def _cookie_name() -> str:
        from django.conf import settings

        name: str = settings.SESSION_COOKIE_NAME
        return name
