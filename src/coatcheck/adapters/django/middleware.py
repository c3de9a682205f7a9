"""`SessionMiddleware`: Django's session middleware, handing the request's client IP and
user agent to the session (shown when a user's sessions are listed), and answering what
the session's save raises as every coatcheck adapter does (`coatcheck.adapters.failures`):

- a write conflict (the request changed a key that another request changed since it was
  read) is `409 Conflict`, nothing saved, no cookie;
- a value that cannot be serialised is `500` with one `session.unserialisable` error
  line carrying the session's hash, and no traceback;
- a store that fails (`StoreError`: down, timing out, a missing table) is `503 Service
  Unavailable`, logged once per 10 s with the count (`store.load_failed` when the view
  met it, loading the session or saving it through `login()`; `store.commit_failed` when
  the save at the end did), never a traceback;

whether the save runs at the end (the session was modified) or in the view
(`request.session.save()`, `cycle_key()` in `django.contrib.auth.login`). A store failure
in another middleware's own code (before or after the view) is Django's to answer.

Paths in `COATCHECK["exclude"]` (`coatcheck.routes`; matched against `request.path_info`)
get no session: `request.session` is `coatcheck.routes.NO_SESSION`, which raises
`SessionExcluded` on use, and the response gets no cookie and no `Vary: Cookie`. Views
decorated with `coatcheck.adapters.django.no_session` get the same from the moment they
are called.

Use it in place of `django.contrib.sessions.middleware.SessionMiddleware`. With the plain
Django middleware, listings show no IP or agent, a conflict surfaces as Django's own
`SessionInterrupted` (its answer to a save that a concurrent request made impossible: a
400 through the project's `handler400`, logged on `django.security.SessionInterrupted`),
since the engine raises it as an `UpdateError`, and a value that cannot be serialised is
an ordinary 500 with a traceback, as with Django's own engines.
"""

from __future__ import annotations

import time
from http.cookies import Morsel
from typing import TYPE_CHECKING, Any

from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from ...exceptions import ConfigurationError, StoreError, WriteConflict
from ...ids import SECRET_LENGTH
from ...request import RequestInfo, new_request
from ...responses import Answer
from ...routes import NO_SESSION, NoSession
from ..failures import (
    COMMIT_ERRORS,
    UNAVAILABLE,
    UNREACHABLE,
    CommitError,
    refusal,
    store_failure_logs,
)
from .config import SETTINGS

if TYPE_CHECKING:
    from .store import SessionStore

__all__ = ["SessionMiddleware", "request_info"]


def request_info(request: HttpRequest) -> RequestInfo:
    """The few facts of a Django request that sessions record: method, user agent and
    client IP (no cookies; Django's own middleware handles CSRF)."""
    return info_of(request.method, request.META)


def info_of(method: str | None, meta: dict[str, Any]) -> RequestInfo:
    """`request_info` of a request's method and `META`."""
    agent = meta.get("HTTP_USER_AGENT")
    headers = [("user-agent", agent)] if agent else ()
    # RequestInfo(method=..., headers=..., client_ip=...), positionally (a third cheaper).
    return new_request(
        (method or "GET", headers, "https", None, "/", meta.get("REMOTE_ADDR") or None)
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
        #: Store failures met in views and at the save, each logged once per interval.
        self.load_failures, self.commit_failures = store_failure_logs(False)
        if not SETTINGS.loaded:
            SETTINGS.load()
        if SETTINGS.exclude_error is not None:
            raise SETTINGS.exclude_error

    def __call__(self, request: HttpRequest) -> Any:
        """`MiddlewareMixin.__call__`, without its two `hasattr` tests (this class has
        both hooks)."""
        if self.async_mode:
            return self.__acall__(request)
        response = self.process_request(request)  # type: ignore[func-returns-value]
        response = response or self.get_response(request)
        return self.process_response(request, response)  # type: ignore[arg-type]

    def process_request(self, request: HttpRequest) -> None:
        exclude = SETTINGS.exclude
        if exclude is not None and exclude.excluded(request.path_info):
            request.session = NO_SESSION  # type: ignore[assignment]
            return
        session = self._engine(_cookies(request).get(SETTINGS.SESSION_COOKIE_NAME))
        # What `request_info` reads, for the session to build it if it is loaded (not the
        # request itself: a request <-> session cycle would leave every request to the
        # garbage collector).
        session._http = (request.method, request.META)
        request.session = session

    def process_response(self, request: HttpRequest, response: HttpResponse) -> Any:
        """Django's `process_response`, with the settings read once (`SETTINGS`) and the
        engine's state read directly; the same decisions, cookie and `Vary`."""
        if getattr(request, _REFUSED, False):
            return response  # the session's save already failed in the view: not again
        try:
            session = request.session
        except AttributeError:
            return response
        if not isinstance(session, self._engine):
            if isinstance(session, NoSession):
                return response  # an excluded route: nothing to save, no header to add
            return self._django_response(request, response)
        conf = SETTINGS
        name = conf.SESSION_COOKIE_NAME
        empty = not session._key and session.is_empty()
        if empty and name in request.COOKIES:
            response.delete_cookie(
                name,
                path=conf.SESSION_COOKIE_PATH,
                domain=conf.SESSION_COOKIE_DOMAIN,
                samesite=conf.SESSION_COOKIE_SAMESITE,
            )
            vary = True
        else:
            vary = session.accessed
            modified = session._modified or session._due  # (`session.modified`)
            if (modified or conf.SESSION_SAVE_EVERY_REQUEST) and not empty:
                max_age = session.cookie_max_age()
                expires = None if max_age is None else _http_date(time.time() + max_age)
                if response.status_code < 500:  # no save for 5xx responses
                    try:
                        session.save()
                    except UpdateError as exc:
                        if isinstance(exc, WriteConflict):
                            return self._refuse(request, exc)
                        raise SessionInterrupted(
                            "The request's session was deleted before the request completed. "
                            "The user may have logged out in a concurrent request, for example."
                        ) from exc
                    except COMMIT_ERRORS as exc:
                        return self._refuse(request, exc)
                    except StoreError as exc:
                        self.commit_failures.record(session.manager.clock(), str(exc))
                        return self._answer(request, UNAVAILABLE)
                    key = session._key
                    template = _cookie_template()
                    if (
                        template is None
                        or key is None
                        or len(key) != SECRET_LENGTH  # (a coatcheck secret needs no quoting)
                        or name in response.cookies  # (the view set it: Django merges)
                    ):
                        _set_cookie(response, name, key, max_age, expires)
                    else:
                        dict.__setitem__(
                            response.cookies, name, _morsel(template, name, key, max_age, expires)
                        )
                    vary = True
        if vary:
            _vary_on_cookie(response)
        return response

    def _django_response(self, request: HttpRequest, response: HttpResponse) -> Any:
        """Django's own `process_response`, for a session this engine did not make."""
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
        if isinstance(exception, StoreError):
            session = getattr(request, "session", None)
            if isinstance(session, self._engine):
                self.load_failures.record(session.manager.clock(), str(exception))
                return self._answer(request, UNREACHABLE)
        return None

    def _refuse(self, request: HttpRequest, exc: CommitError) -> HttpResponse:
        session = request.session
        assert isinstance(session, self._engine)  # noqa: S101 - set by process_request
        return self._answer(request, refusal(session.manager, session.coatcheck, exc))

    def _answer(self, request: HttpRequest, answer: Answer) -> HttpResponse:
        """`answer` in place of the application's response: nothing of the session is
        saved again, no cookie is set, and it is not cached."""
        setattr(request, _REFUSED, True)
        refused = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
        refused["Cache-Control"] = "no-store"
        for name, value in answer.extra:
            refused[name] = value
        return refused


#: Set on a request whose session save was refused, so that it is not tried again.
_REFUSED = "_coatcheck_refused"


def _cookies(request: HttpRequest) -> dict[str, str]:
    """`request.COOKIES`. Django parses it on first use (`parse_cookie`, after a round
    trip of the header through bytes); for an ASCII header without quotes, where that
    round trip and `_unquote` change nothing, the same dict is built here at a third of
    the cost, and kept as `request.COOKIES` for whatever reads it next (CSRF, views)."""
    cookies: dict[str, str] | None = request.__dict__.get("COOKIES")
    if cookies is not None:
        return cookies
    raw = request.META.get("HTTP_COOKIE", "")
    if request.__class__ not in _PARSED or raw.__class__ is not str or not raw.isascii():
        return request.COOKIES
    if '"' in raw:
        return request.COOKIES
    cookies = {}
    for chunk in raw.split(";"):  # (`django.http.parse_cookie`)
        key, equals, value = chunk.partition("=")
        if not equals:
            key, value = "", chunk
        key, value = key.strip(), value.strip()
        if key or value:
            cookies[key] = value
    request.COOKIES = cookies
    return cookies


#: The request classes whose `COOKIES` is `parse_cookie` of the `Cookie` header.
_PARSED = frozenset({WSGIRequest, ASGIRequest})


def _set_cookie(
    response: HttpResponse, name: str, key: Any, max_age: int | None, expires: str | None
) -> None:
    """The session cookie, as Django's middleware sets it."""
    conf = SETTINGS
    response.set_cookie(  # (as Django's, whose stubs disagree with it)
        name,
        key,
        max_age=max_age,
        expires=expires,
        domain=conf.SESSION_COOKIE_DOMAIN,
        path=conf.SESSION_COOKIE_PATH,
        secure=conf.SESSION_COOKIE_SECURE or None,  # type: ignore[arg-type]
        httponly=conf.SESSION_COOKIE_HTTPONLY or None,  # type: ignore[arg-type]
        samesite=conf.SESSION_COOKIE_SAMESITE,
    )


def _morsel(
    template: Morsel[str], name: str, value: str, max_age: int | None, expires: str | None
) -> Morsel[str]:
    """The `Morsel` `_set_cookie` puts in `response.cookies` for a value that needs no
    quoting: `template` (the settings' attributes) copied, without `Morsel()`'s loop over
    its attributes, `set`'s key check and `set_cookie`'s ~8 `Morsel.__setitem__` calls
    (40k instructions of a 50k `set_cookie`). `_cookie_template` checks it against
    `set_cookie` itself."""
    morsel: Morsel[str] = Morsel.__new__(Morsel)
    dict.update(morsel, template)
    morsel.__dict__.update(_key=name, _value=value, _coded_value=value)
    if expires is not None:
        dict.__setitem__(morsel, "expires", expires)
    if max_age is not None:
        dict.__setitem__(morsel, "max-age", int(max_age))
    return morsel


def _cookie_template() -> Morsel[str] | None:
    """A `Morsel` with the session cookie's attributes from the settings (kept with
    `SETTINGS`), or None if `_morsel` built from it would not be exactly the cookie
    `set_cookie` makes (then `set_cookie` it is)."""
    kept = SETTINGS.derived
    template: Morsel[str] | None = kept.get("cookie_template", _UNSET)
    if template is not _UNSET:
        return template
    conf = SETTINGS
    template = Morsel()
    if conf.SESSION_COOKIE_PATH is not None:
        template["path"] = conf.SESSION_COOKIE_PATH
    if conf.SESSION_COOKIE_DOMAIN is not None:
        template["domain"] = conf.SESSION_COOKIE_DOMAIN
    if conf.SESSION_COOKIE_SECURE:
        template["secure"] = True
    if conf.SESSION_COOKIE_HTTPONLY:
        template["httponly"] = True
    samesite = conf.SESSION_COOKIE_SAMESITE
    if samesite:
        if samesite.lower() not in ("lax", "none", "strict"):
            return None  # set_cookie raises its ValueError, on each response, as Django's
        template["samesite"] = samesite
    name, value = conf.SESSION_COOKIE_NAME, "x" * SECRET_LENGTH
    for max_age, expires in ((None, None), (60, "Thu, 01 Jan 2026 00:00:00 GMT")):
        reference = HttpResponse()
        _set_cookie(reference, name, value, max_age, expires)
        made, morsel = reference.cookies[name], _morsel(template, name, value, max_age, expires)
        if (made.key, made.value, made.coded_value, dict(made), made.output()) != (
            morsel.key,
            morsel.value,
            morsel.coded_value,
            dict(morsel),
            morsel.output(),
        ):
            template = None
            break
    kept["cookie_template"] = template
    return template


_UNSET: Any = object()


def _vary_on_cookie(response: HttpResponse) -> None:
    """`patch_vary_headers(response, ("Cookie",))`: when the response has no `Vary` yet
    (the usual case), the header is stored as `ResponseHeaders.__setitem__` would store
    it, without its ~8 Python calls and the KeyError of `has_header`."""
    store = getattr(response.headers, "_store", None)
    if store.__class__ is dict and "vary" not in store:
        store["vary"] = ("Vary", "Cookie")
    else:
        patch_vary_headers(response, ("Cookie",))


_last_date: tuple[int, str] = (0, "")


def _http_date(epoch: float) -> str:
    """`http_date(epoch)`, kept for the second it names: every response that sets the
    cookie formats its expiry, and `email.utils` takes several calls to."""
    global _last_date
    second = int(epoch)
    if epoch - second >= 0.999:  # (`http_date` may round it up to the next second)
        return http_date(epoch)
    last, text = _last_date
    if last != second:
        text = http_date(epoch)
        _last_date = (second, text)
    return text
