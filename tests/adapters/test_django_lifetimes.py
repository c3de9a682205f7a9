"""Remember me in Django: `request.session.coatcheck.set_persistent()` makes the session
live by `Lifetimes.persistent_absolute` / `persistent_idle` (within Django's own
`SESSION_COOKIE_AGE`, which still applies), through Django's test client and
`django.contrib.auth`; the time left is on `request.session.coatcheck`."""

from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
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

from coatcheck import Lifetimes  # noqa: E402
from coatcheck.adapters.django import SessionStore  # noqa: E402
from coatcheck.stores import MemoryStore  # noqa: E402
from helpers import FakeClock, manager_for  # noqa: E402

DAY = 86400
LIFETIMES = Lifetimes(renewal=None, persistent_absolute=30 * DAY, persistent_idle=7 * DAY)


def remember(request: HttpRequest) -> HttpResponse:
    auth.login(request, User.objects.get(username="ada"))
    session = request.session
    assert isinstance(session, SessionStore)
    session.coatcheck.set_persistent()
    return HttpResponse("ok")


def whoami(request: HttpRequest) -> HttpResponse:
    session = request.session
    assert isinstance(session, SessionStore)
    user = request.user  # set by AuthenticationMiddleware
    return JsonResponse(
        {
            "user": user.get_username() if user.is_authenticated else None,
            "remaining": session.coatcheck.remaining(),
        }
    )


urlpatterns = [path("remember", remember), path("whoami", whoami)]


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    User.objects.get_or_create(username="ada")
    clock = FakeClock()
    clock.now = timezone.now().timestamp()  # Django's own expiry maths reads the real time
    manager = manager_for(MemoryStore(clock=clock), clock, lifetimes=LIFETIMES)
    with override_settings(COATCHECK={"manager": manager}, ROOT_URLCONF=__name__):
        yield clock


def test_a_remembered_django_session_outlives_the_absolute_timeout(clock: FakeClock) -> None:
    browser = Client(HTTP_USER_AGENT="pytest-browser")
    assert browser.get("/remember").status_code == 200
    for day in (6, 12, 18, 24):  # past the ordinary 12 hours, a request every 6 days
        clock.advance(6 * DAY)
        body = browser.get("/whoami").json()
        assert body["user"] == "ada", day
        assert body["remaining"] == min(7 * DAY, (30 - day) * DAY)
    clock.advance(6 * DAY)  # day 30: its own absolute deadline
    assert browser.get("/whoami").json()["user"] is None
