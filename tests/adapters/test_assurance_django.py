"""Django: `@recent_login_required(max_age=..., assurance=...)` answers a stale or weak
login with a step-up 401 (JSON body, RFC 9470 challenge, `Vary: Cookie`), through Django's
test client, with `django.contrib.auth` logging in, on MemoryStore and SQLite (the Django
engine is server-side only)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterator
from pathlib import Path

import django
import pytest
from asgiref.sync import markcoroutinefunction
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.contrib import auth  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import timezone  # noqa: E402

from coatcheck import SessionAdmin  # noqa: E402
from coatcheck.adapters.django import SessionStore  # noqa: E402
from coatcheck.adapters.django.decorators import (  # noqa: E402
    reauthenticate,
    recent_login_required,
)
from coatcheck.stores import MemoryStore, SQLiteStore  # noqa: E402
from coatcheck.stores.base import Store  # noqa: E402
from helpers import FakeClock, manager_for  # noqa: E402


def login(request: HttpRequest, username: str) -> HttpResponse:
    auth.login(request, User.objects.get(username=username))
    return HttpResponse("ok")


def login_with_second_factor(request: HttpRequest, username: str) -> HttpResponse:
    auth.login(request, User.objects.get(username=username))
    reauthenticate(request, assurance="aal2")  # in the same request as the login
    return HttpResponse("ok")


def reauth(request: HttpRequest) -> HttpResponse:
    reauthenticate(request, assurance=request.GET.get("level", "aal1"))
    return HttpResponse("ok")


@recent_login_required(max_age=300, assurance="aal2")
def strong(request: HttpRequest) -> HttpResponse:
    session = request.session
    assert isinstance(session, SessionStore)
    return JsonResponse({"user": request.user.get_username(), "level": session.coatcheck.assurance})


@recent_login_required(max_age=300)
async def recent(request: HttpRequest) -> HttpResponse:  # async views too
    return JsonResponse({"ok": True})


urlpatterns = [
    path("login/<str:username>", login),
    path("login2/<str:username>", login_with_second_factor),
    path("reauth", reauth),
    path("strong", strong),
    path("recent", recent),
]


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    for name in ("ada", "grace"):
        User.objects.get_or_create(username=name)


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = timezone.now().timestamp()  # Django's own expiry maths reads the real time
    return clock


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Store]:
    backend: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "sessions.db", clock=clock)
    )
    yield backend
    backend.close()


def test_step_up_through_a_django_decorator(store: Store, clock: FakeClock) -> None:
    manager = manager_for(store, clock)
    with override_settings(
        COATCHECK={"manager": manager}, ROOT_URLCONF="adapters.test_assurance_django"
    ):
        browser = Client()
        refused = browser.get("/recent")
        assert refused.status_code == 401 and refused.json()["reason"] == "login_required"
        assert browser.get("/login/ada").status_code == 200
        assert browser.get("/recent").json() == {"ok": True}
        weak = browser.get("/strong")
        assert weak.status_code == 401
        assert weak["Content-Type"] == "application/json"
        assert weak.json() == {
            "error": "insufficient_user_authentication",
            "reason": "assurance_too_low",
            "max_age": 300,
            "acr_values": "aal2 aal3",
        }
        assert weak["WWW-Authenticate"] == (
            'Session error="insufficient_user_authentication", '
            'error_description="assurance_too_low", max_age="300", acr_values="aal2 aal3"'
        )
        assert "Cookie" in weak["Vary"] and weak["Cache-Control"] == "no-store"
        before = browser.cookies["sessionid"].value
        assert browser.get("/reauth?level=aal2").status_code == 200
        assert browser.cookies["sessionid"].value != before  # a new secret, same handle
        assert browser.get("/strong").json() == {"user": "ada", "level": "aal2"}
        user = str(User.objects.get(username="ada").pk)
        [info] = SessionAdmin(manager).sessions(user)
        assert info.assurance == "aal2"
        clock.advance(301)
        stale = browser.get("/strong")
        assert stale.status_code == 401 and stale.json()["reason"] == "login_too_old"


def test_login_and_step_up_in_one_request(store: Store, clock: FakeClock) -> None:
    manager = manager_for(store, clock)
    with override_settings(
        COATCHECK={"manager": manager}, ROOT_URLCONF="adapters.test_assurance_django"
    ):
        browser = Client()
        browser.get("/recent")  # an anonymous session first: the login must rotate it
        assert browser.get("/login2/ada").status_code == 200
        assert browser.get("/strong").json() == {"user": "ada", "level": "aal2"}
        # Another user's plain login: the lowest level. (The same user's would keep the
        # session's authentication: Django only cycles the key, see docs/policies.md.)
        assert browser.get("/login/grace").status_code == 200
        assert browser.get("/strong").json()["reason"] == "assurance_too_low"


def test_a_view_marked_as_a_coroutine_function_gets_the_async_guard() -> None:
    """A view that Django calls as async (`markcoroutinefunction`: asgiref's test, which
    Django's own is) is guarded by a coroutine function, whose refusal Django can await."""

    async def answer(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    def marked(request: HttpRequest) -> Awaitable[HttpResponse]:
        return answer(request)

    guarded = recent_login_required(max_age=300)(markcoroutinefunction(marked))
    assert inspect.iscoroutinefunction(guarded)
