"""Per-route opt-out in Django, through Django's test client: `COATCHECK["exclude"]` (the
middleware tests the path first) and the `no_session` view decorator (function views,
async views, class-based views). Excluded routes touch no store (a recording store),
verify no cookie (a forged one logs nothing), get no `Set-Cookie` / `Vary` /
`Cache-Control`, and a session cookie sent to them is left alone. Django's engine is
server-side only: memory and SQLite stores. Bad settings are `manage.py check` errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.core.checks import run_checks  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path, re_path  # noqa: E402
from django.views import View  # noqa: E402

from coatcheck.adapters.django import SessionMiddleware, no_session  # noqa: E402
from coatcheck.exceptions import ConfigurationError, SessionExcluded  # noqa: E402
from coatcheck.routes import NoSession  # noqa: E402
from helpers import FakeClock  # noqa: E402

from .optout_support import (  # noqa: E402
    COATCHECK_HEADERS,
    forged,
    manager_in,
    security_events,
    watch_security,
)

COOKIE = "sessionid"
EXCLUDE: list[Any] = ["/healthz", "/static/", re.compile(r"^/assets/.*\.js$")]


def plain(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    assert isinstance(request.session, NoSession)
    return HttpResponse("plain")


def dump(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    return JsonResponse({"data": dict(request.session.items())})


def set_value(request: HttpRequest) -> HttpResponse:
    request.session["x"] = "1"
    return HttpResponse("ok")


@no_session
def marked(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.session, NoSession)
    return HttpResponse("marked")


@no_session
async def marked_async(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.session, NoSession)
    return HttpResponse("marked async")


class MarkedView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("marked class")


@no_session
def marked_uses(request: HttpRequest) -> HttpResponse:
    request.session["x"] = "lost"
    return HttpResponse("unreachable")


urlpatterns = [
    path("", dump),
    path("set", set_value),
    path("healthz", plain),
    path("healthz/", dump),
    path("static", dump),
    path("static/<path:rest>", plain),
    re_path(r"^assets/(?P<name>.+)$", dump),
    path("marked", marked),
    path("marked-async", marked_async),
    path("marked-class", no_session(MarkedView.as_view())),
    path("marked-uses", marked_uses),
]

EXCLUDED = [
    "/healthz",
    "/static/app.css",
    "/static/a/b.png",
    "/marked",
    "/marked-async",
    "/marked-class",
]
NOT_EXCLUDED = ["/", "/healthz/", "/static", "/assets/app.css"]


@pytest.fixture(scope="module", autouse=True)
def urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def untouched(response: Any) -> None:
    for name in COATCHECK_HEADERS:
        assert not response.has_header(name), (name, response.headers)
    assert COOKIE not in response.cookies


@pytest.mark.parametrize("mode", ["server-memory", "server-sqlite"])
def test_django(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    manager, store = manager_in(mode, tmp_path, clock)
    watch_security(caplog)
    with override_settings(COATCHECK={"manager": manager, "exclude": EXCLUDE}):
        http = Client()
        http.get("/set")
        secret = http.cookies[COOKIE].value
        assert secret
        calls = list(store.calls)
        for cookie in (secret, forged(secret)):
            http.cookies[COOKIE] = cookie
            for url in EXCLUDED:
                response = http.get(url)
                assert response.status_code == 200, url
                untouched(response)
        assert security_events(caplog) == []
        assert store.calls == calls
        http.cookies[COOKIE] = secret
        for url in NOT_EXCLUDED:
            response = http.get(url)
            assert response.json() == {"data": {"x": "1"}}, url
            assert response.has_header("vary")
        http.cookies[COOKIE] = forged(secret)
        http.get("/")
        assert security_events(caplog)
        assert store.calls != calls


def test_django_pattern_and_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    manager, store = manager_in("server-memory", tmp_path, clock)
    with override_settings(COATCHECK={"manager": manager, "exclude": EXCLUDE}):
        http = Client()
        http.cookies[COOKIE] = "x" * 40
        with pytest.raises(SessionExcluded, match="excluded from sessions"):
            http.get("/assets/app.js")  # excluded by the pattern; `dump` uses the session
        with pytest.raises(SessionExcluded):
            http.get("/marked-uses")
        quiet = Client(raise_request_exception=False)
        response = quiet.get("/marked-uses")
        assert response.status_code == 500
        untouched(response)
        assert store.calls == []


def test_django_decorator_under_djangos_own_middleware(tmp_path: Path, clock: FakeClock) -> None:
    manager, store = manager_in("server-memory", tmp_path, clock)
    own = ["django.contrib.sessions.middleware.SessionMiddleware"]
    with override_settings(COATCHECK={"manager": manager}, MIDDLEWARE=own):
        http = Client()
        http.cookies[COOKIE] = "x" * 40
        response = http.get("/marked")
        assert response.status_code == 200
        untouched(response)
        assert store.calls == []


def test_django_bad_exclude_is_a_check_error_and_refused_at_startup(
    tmp_path: Path, clock: FakeClock
) -> None:
    for bad in ("/healthz", ["healthz"], ["/"], [3]):
        with override_settings(COATCHECK={"store": "memory://", "exclude": bad}):
            found = run_checks(tags=["coatcheck"])
            assert [e.id for e in found] == ["coatcheck.E009"], [str(e) for e in found]
            with pytest.raises(ConfigurationError):
                SessionMiddleware(lambda request: HttpResponse())
    with override_settings(COATCHECK={"store": "memory://", "exclude": EXCLUDE}):
        assert run_checks(tags=["coatcheck"]) == []
