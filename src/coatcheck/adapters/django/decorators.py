"""Django view decorators: `recent_login_required(max_age=..., assurance=...)` with
`reauthenticate(request, ...)`, and `no_session`.

::

    from coatcheck.adapters.django.decorators import recent_login_required

    @recent_login_required(max_age=300, assurance="aal2")
    def change_password(request): ...

The view runs only if the session's user authenticated (logged in with
`django.contrib.auth.login`, or re-authenticated with `reauthenticate(request,
assurance=...)`) at most `max_age` seconds ago, at a high enough assurance level
(`coatcheck.assurance`). Otherwise the answer is `401 Unauthorized` with an RFC 9470
`WWW-Authenticate` challenge and a JSON body saying why (`StepUpRequired`); coatcheck's
middleware then adds `Vary: Cookie` as to any response that read the session. The user is
the one `django.contrib.auth` bound to the session, at the lowest level until
`reauthenticate` records a higher one (in the login's own request, or later).

`no_session` makes a view that has no session::

    from coatcheck.adapters.django import no_session

    @no_session
    def healthz(request):
        return HttpResponse("ok")

When the view is called, `request.session` becomes `coatcheck.routes.NO_SESSION` (any use
raises `SessionExcluded`), and coatcheck's `SessionMiddleware` (or Django's own) then
saves nothing and adds no cookie and no `Vary: Cookie`. The engine loads lazily, so the
store is not touched, unless a middleware read the session before the view ran (in its
`process_request` or `process_view`): list such paths in `COATCHECK["exclude"]` instead,
which the middleware tests before anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from ...assurance import DEFAULT_LADDER, Ladder, Requirement
from ...exceptions import ConfigurationError
from ...routes import NO_SESSION
from ...routes import no_session as mark
from ...session import DEFAULT_ASSURANCE
from .. import failures
from .rules import AUTH_USER_KEY, bind_user

__all__ = ["no_session", "reauthenticate", "recent_login_required"]

_View = TypeVar("_View", bound=Callable[..., Any])


def recent_login_required(
    max_age: float | None = None,
    assurance: str | None = None,
    *,
    ladder: Ladder = DEFAULT_LADDER,
) -> Callable[[_View], _View]:
    """A view decorator: the view runs only if the session's latest authentication is at
    most `max_age` seconds old and at level `assurance` or above on `ladder` (either may be
    None: any); otherwise a 401 (see the module). The requirement is checked when the view
    is decorated (`ConfigurationError`). Sync and async views alike."""
    requirement = Requirement.of(max_age, assurance, ladder)

    def decorate(view: _View) -> _View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def guarded_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                from asgiref.sync import sync_to_async

                refusal = await sync_to_async(_unmet, thread_sensitive=True)(request, requirement)
                return refusal if refusal is not None else await view(request, *args, **kwargs)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = _unmet(request, requirement)
            return refusal if refusal is not None else view(request, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def reauthenticate(request: HttpRequest, *, assurance: str = DEFAULT_ASSURANCE) -> None:
    """Record that the user logged in to `request`'s session has just proved who they are
    again, at level `assurance` (`Session.reauthenticate`: now, that level, a new secret
    under the same handle), and mark the session for saving, as Django's API wants
    (`request.session.modified`). Right after `django.contrib.auth.login` in the same
    request, it first binds the user that login stored (as the save would), so a login
    that checked a second factor is recorded at its level at once. `ValueError` if no user
    is logged in."""
    store = _store(request)
    session = store.coatcheck
    user = session.data().get(AUTH_USER_KEY)
    if user is not None and str(user) != session.user:
        bind_user(session, store.manager.clock(), cycled=store._cycled)
    session.reauthenticate(assurance=assurance)
    store.modified = True


def _store(request: HttpRequest) -> Any:
    from .store import SessionStore

    store = getattr(request, "session", None)
    if not isinstance(store, SessionStore):
        raise ConfigurationError(
            'coatcheck\'s Django decorators need SESSION_ENGINE = "coatcheck.adapters.django"'
        )
    return store


def _unmet(request: HttpRequest, requirement: Requirement) -> HttpResponse | None:
    """The 401 for `request` if its session fails `requirement`, else None."""
    answer = failures.unmet(requirement, _store(request).coatcheck)
    if answer is None:
        return None
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    response["Cache-Control"] = "no-store"
    for name, value in answer.extra:
        response[name] = value
    return response


def no_session(view: _View) -> _View:
    """`view`, with no session: a function view, `Some_View.as_view()`, sync or async."""
    if iscoroutinefunction(view):

        async def excluded_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            request.session = NO_SESSION  # type: ignore[assignment]
            return await view(request, *args, **kwargs)

        wrapper: Any = markcoroutinefunction(functools.wraps(view)(excluded_async))
    else:

        def excluded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            request.session = NO_SESSION  # type: ignore[assignment]
            return view(request, *args, **kwargs)

        wrapper = functools.wraps(view)(excluded)
    return mark(wrapper)  # type: ignore[no-any-return]
