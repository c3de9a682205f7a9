"""Views and URLs of the tiny Django project of `test_django.py` (settings: in
`django_settings.py`, applied before this module is imported)."""

from __future__ import annotations

import threading

from django.contrib import auth
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from coatcheck.adapters.django import SessionStore
from faults import act

#: Set by a test to make `/set` wait until every racing request has loaded the session.
BARRIER: list[threading.Barrier] = []


def store(request: HttpRequest) -> SessionStore:
    session = request.session
    assert isinstance(session, SessionStore)
    return session


def dump(request: HttpRequest) -> HttpResponse:
    session = store(request)
    return JsonResponse({"data": dict(session.items()), "user": session.coatcheck.user})


def set_value(request: HttpRequest) -> HttpResponse:
    session = store(request)
    session.get("x")  # load before waiting, so that racing requests share one version
    if BARRIER:
        BARRIER[0].wait(timeout=10)
    session[request.GET["key"]] = request.GET.get("value", "")
    return HttpResponse("ok")


async def aset_value(request: HttpRequest) -> HttpResponse:
    session = store(request)
    await session.aset(request.GET["key"], request.GET.get("value", ""))
    return HttpResponse("ok")


def login(request: HttpRequest, username: str) -> HttpResponse:
    user = User.objects.get(username=username)
    auth.login(request, user)
    return HttpResponse("ok")


def logout(request: HttpRequest) -> HttpResponse:
    auth.logout(request)
    return HttpResponse("ok")


def whoami(request: HttpRequest) -> HttpResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


def change_password(request: HttpRequest) -> HttpResponse:
    """Changes the password and keeps this session, as Django's password views do."""
    user = request.user
    assert isinstance(user, User)
    user.set_password(request.GET["password"])
    user.save()
    auth.update_session_auth_hash(request, user)
    return HttpResponse("ok")


def expiry(request: HttpRequest) -> HttpResponse:
    store(request).set_expiry(int(request.GET["seconds"]))
    return HttpResponse("ok")


def cycle(request: HttpRequest) -> HttpResponse:
    store(request).cycle_key()
    return HttpResponse("ok")


def bind(request: HttpRequest) -> HttpResponse:
    """Writes the auth user key by hand, as custom login code might, without cycle_key."""
    store(request)["_auth_user_id"] = request.GET["pk"]
    return HttpResponse("ok")


def act_view(request: HttpRequest, action: str) -> HttpResponse:
    """The view of `tests/adapters/test_failures.py` (`faults.act`)."""
    return HttpResponse(act(action, request.GET.dict(), store(request)), content_type="text/plain")


urlpatterns = [
    path("act/<str:action>", act_view),
    path("dump", dump),
    path("set", set_value),
    path("aset", aset_value),
    path("login/<str:username>", login),
    path("logout", logout),
    path("whoami", whoami),
    path("password", change_password),
    path("expiry", expiry),
    path("cycle", cycle),
    path("bind", bind),
]
