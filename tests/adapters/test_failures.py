"""What every adapter answers when a request's session cannot be committed, and how the
degraded modes serve (issue 11, items 2, 3, 6, 7 and 8).

One table of cases, run through each framework's own test client: the ASGI middleware
(httpx over `ASGITransport`, which raises what escapes the app), the WSGI middleware and
Flask (werkzeug's test client) and Django (its `Client`). Every case holds in each adapter
alike: a write conflict is a 409, a session too large a 413, one that JSON cannot carry a
500 without a traceback, each before the application's response leaves, with nothing
saved and no cookie; with `fail_open` a store failure is never a 503 and is logged once
per interval, not once per request. Time comes from the injected clock, so "once per
10 s" is checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio
import django
import flask
import httpx
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402
from werkzeug.test import Client as WerkzeugClient  # noqa: E402

from coatcheck import ClientSide, KeyRing, Lifetimes, SessionManager  # noqa: E402
from coatcheck.adapters import asgi, wsgi  # noqa: E402
from coatcheck.adapters import flask as flask_adapter  # noqa: E402
from coatcheck.adapters import starlette as dropin  # noqa: E402
from coatcheck.audit import ThrottledLog  # noqa: E402
from coatcheck.ids import handle_of  # noqa: E402
from coatcheck.stores import MemoryStore  # noqa: E402
from faults import (  # noqa: E402
    RacedStore,
    SwitchRevocations,
    SwitchStore,
    act,
    conflicting_manager,
)
from helpers import COOKIE, FakeClock, client, manager_for  # noqa: E402

BASE = "https://testserver"
DJANGO_COOKIE = "sessionid"
COATCHECK_MIDDLEWARE = "coatcheck.adapters.django.SessionMiddleware"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # names in lower case
    body: bytes

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def cookie(self, name: str) -> str | None:
        """The value `Set-Cookie` gives cookie `name` ("" when it clears it), or None."""
        for key, value in self.headers:
            if key == "set-cookie" and value.startswith(f"{name}="):
                return value.split(";", 1)[0].split("=", 1)[1].strip('"')
        return None

    def has_cookies(self) -> bool:
        return any(k == "set-cookie" for k, _ in self.headers)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class App:
    """One adapter around `faults.act`: `get("set?key=a&value=1", secret)`."""

    call: Callable[[str, str | None], Reply]
    cookie: str  # the session cookie's name
    adapter: Any  # the middleware or interface (its failure counters), None for Django

    def get(self, action: str, secret: str | None = None) -> Reply:
        return self.call(f"/act/{action}", secret)


def _lower(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers]


def asgi_app(manager: SessionManager, fail_open: bool = False) -> App:
    async def view(request: Request) -> Response:
        params = dict(request.query_params)
        return PlainTextResponse(act(request.path_params["action"], params, request.session))

    middleware = asgi.SessionMiddleware(
        Starlette(routes=[Route("/act/{action}", view)]), manager, fail_open=fail_open
    )

    def call(path: str, secret: str | None) -> Reply:
        return asgi_get(middleware, path, {"cookie": f"{COOKIE}={secret}"} if secret else {})

    return App(call, COOKIE, middleware)


def asgi_get(app: Any, path: str, headers: dict[str, str]) -> Reply:
    async def get() -> Reply:
        async with client(app) as http:
            response = await http.get(path, headers=headers)
        return Reply(response.status_code, _lower(response.headers.multi_items()), response.content)

    return asyncio.run(get())


def wsgi_app(manager: SessionManager, fail_open: bool = False) -> App:
    def view(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        action = environ["PATH_INFO"].rsplit("/", 1)[1]
        body = act(action, params, environ[wsgi.ENVIRON_KEY]).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    middleware = wsgi.SessionMiddleware(view, manager, fail_open=fail_open)

    def call(path: str, secret: str | None) -> Reply:
        headers = [("Cookie", f"{COOKIE}={secret}")] if secret else []
        browser = WerkzeugClient(middleware, use_cookies=False)
        response = browser.get(path, base_url=BASE, headers=headers)
        return Reply(
            response.status_code, _lower(response.headers.to_wsgi_list()), response.get_data()
        )

    return App(call, COOKIE, middleware)


def flask_app(manager: SessionManager, fail_open: bool = False) -> App:
    app = flask.Flask(__name__)  # not TESTING: errors become responses, as in production
    interface = flask_adapter.SessionInterface(manager, fail_open=fail_open)
    app.session_interface = interface

    @app.get("/act/<action>")
    def view(action: str) -> str:
        return act(action, flask.request.args, flask.session)

    def call(path: str, secret: str | None) -> Reply:
        headers = [("Cookie", f"{COOKIE}={secret}")] if secret else []
        browser = app.test_client(use_cookies=False)
        response = browser.get(path, base_url=BASE, headers=headers)
        return Reply(
            response.status_code, _lower(response.headers.to_wsgi_list()), response.get_data()
        )

    return App(call, COOKIE, interface)


def django_app(manager: SessionManager, middleware: str = COATCHECK_MIDDLEWARE) -> App:
    def call(path: str, secret: str | None) -> Reply:
        with override_settings(COATCHECK={"manager": manager}, MIDDLEWARE=[middleware]):
            client = DjangoClient()
            if secret:
                client.cookies[DJANGO_COOKIE] = secret
            response = client.get(path)
        headers = _lower(response.items())
        headers += [("set-cookie", m.OutputString()) for m in response.cookies.values()]
        return Reply(response.status_code, headers, response.content)

    return App(call, DJANGO_COOKIE, None)


SERVER_SIDE: dict[str, Callable[[SessionManager], App]] = {
    "asgi": asgi_app,
    "wsgi": wsgi_app,
    "flask": flask_app,
    "django": django_app,
}
#: The adapters with `fail_open` (Django's engine has none) and client-side mode.
FAIL_OPEN: dict[str, Callable[[SessionManager, bool], App]] = {
    "asgi": asgi_app,
    "wsgi": wsgi_app,
    "flask": flask_app,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def assert_refused(reply: Reply, status: int, start: bytes) -> None:
    """The adapter's own answer: nothing of the application's, no cookie, not cached."""
    assert reply.status == status
    assert reply.body.startswith(start) and len(reply.body) < 200
    assert (reply.get("content-type") or "").startswith("text/plain")
    assert reply.get("cache-control") == "no-store"
    assert not reply.has_cookies()


# -- errors stay answers -----------------------------------------------------------------


@pytest.mark.parametrize("adapter", SERVER_SIDE)
def test_a_write_conflict_is_409_before_the_response_leaves_and_nothing_is_saved(
    adapter: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """`WriteConflict`, raised by the rebase inside the commit's loop (here: every rebase
    conflicts, and another request writes just before each commit), becomes a 409."""
    manager = conflicting_manager(RacedStore(clock=clock), clock)
    app = SERVER_SIDE[adapter](manager)
    secret = app.get("set?key=n&value=1").cookie(app.cookie)
    assert secret
    assert_refused(app.get("bump", secret), 409, b"Conflict")
    assert json.loads(app.get("read", secret).body) == {"n": "1"}  # the bump was not applied
    assert tracebacks(caplog) == []


@pytest.mark.anyio
async def test_a_stale_read_modify_write_with_the_real_core_is_409_and_undoes_nothing(
    clock: FakeClock,
) -> None:
    """The race of issue 11, item 3, through the ASGI middleware and the real manager: a
    slow request reads `n`, a fast one increments it and is acknowledged, then the slow
    one writes `n + 1` from its stale read. Parked on an event, not a sleep."""
    read, release = asyncio.Event(), asyncio.Event()

    async def bump(request: Request) -> Response:
        session = request.scope["session"]
        n = int(session.get("n", "0"))
        if request.query_params.get("park"):
            read.set()
            await release.wait()
        session["n"] = str(n + 1)
        return PlainTextResponse("ok")

    async def read_n(request: Request) -> Response:
        return PlainTextResponse(request.scope["session"].get("n"))

    routes = [Route("/bump", bump), Route("/read", read_n)]
    app = asgi.SessionMiddleware(
        Starlette(routes=routes), manager_for(MemoryStore(clock=clock), clock)
    )
    replies: dict[str, httpx.Response] = {}
    async with client(app) as http:
        assert (await http.get("/bump")).status_code == 200  # n = 1

        async def slow() -> None:
            replies["slow"] = await http.get("/bump?park=1")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slow)
            await read.wait()
            replies["fast"] = await http.get("/bump")  # n = 2, acknowledged
            release.set()
        assert replies["fast"].status_code == 200
        refused = replies["slow"]
        assert refused.status_code == 409 and refused.text.startswith("Conflict")
        assert refused.headers["cache-control"] == "no-store"
        assert "set-cookie" not in refused.headers
        assert (await http.get("/read")).text == "2"  # the acknowledged write stands


def test_a_write_conflict_in_djangos_login_cycle_key_is_409(clock: FakeClock) -> None:
    """`cycle_key()` (Django's `login()`) saves inside the view: the middleware's
    `process_exception` gives the same answer, and the session is not saved again after."""
    store = RacedStore(clock=clock)
    app = django_app(conflicting_manager(store, clock))
    secret = app.get("set?key=n&value=1").cookie(DJANGO_COOKIE)
    assert secret
    assert_refused(app.call("/cycle", secret), 409, b"Conflict")
    assert json.loads(app.get("read", secret).body) == {"n": "1"}  # the old key still works


def test_with_djangos_own_middleware_a_conflict_is_its_session_interrupted(
    clock: FakeClock,
) -> None:
    """Django's middleware answers a save that a concurrent request made impossible with
    `SessionInterrupted` (400, the project's handler400): so does a conflict under it."""
    app = django_app(conflicting_manager(RacedStore(clock=clock), clock), DJANGO_MIDDLEWARE)
    secret = app.get("set?key=n&value=1").cookie(DJANGO_COOKIE)
    assert secret
    reply = app.get("bump", secret)
    assert reply.status == 400 and not reply.has_cookies()
    assert json.loads(app.get("read", secret).body) == {"n": "1"}


def client_manager(clock: FakeClock, **options: Any) -> SessionManager:
    return SessionManager(
        ClientSide(KeyRing([b"K" * 32]), **options),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"test-salt",
    )


@pytest.mark.parametrize("adapter", FAIL_OPEN)
def test_a_1_mb_client_side_session_is_413_logged_once_with_its_hash(
    adapter: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = client_manager(clock, store=None)
    app = FAIL_OPEN[adapter](manager, False)
    token = app.get("set?key=a&value=1").cookie(app.cookie)
    assert token
    caplog.set_level(logging.INFO)
    assert_refused(app.get("big", token), 413, b"Content Too Large")
    [line] = events(caplog, "session.too_large")
    assert isinstance(manager.mode, ClientSide)
    sid = manager.mode.codec.decode(token).claims["sid"]
    assert line.session_hash == manager.audit.hash(sid)  # type: ignore[attr-defined]
    assert tracebacks(caplog) == []
    assert app.get("read", token).json() == {"a": "1"}  # the token it had still holds


@pytest.mark.parametrize("adapter", SERVER_SIDE)
def test_a_value_json_cannot_carry_is_500_without_traceback_and_not_saved(
    adapter: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchStore(clock=clock)
    manager = manager_for(store, clock)
    app = SERVER_SIDE[adapter](manager)
    secret = app.get("set?key=a&value=1").cookie(app.cookie)
    assert secret
    caplog.set_level(logging.INFO)
    assert_refused(app.get("bad", secret), 500, b"Internal Server Error")
    [line] = events(caplog, "session.unserialisable")
    assert line.session_hash == manager.audit.hash(handle_of(secret))  # type: ignore[attr-defined]
    assert tracebacks(caplog) == []
    assert app.get("read", secret).json() == {"a": "1"}


@pytest.mark.parametrize(("action", "status"), [("big", 413), ("bad", 500)])
def test_the_starlette_drop_in_answers_too(
    action: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def view(request: Request) -> Response:
        return PlainTextResponse(act(request.path_params["action"], {}, request.session))

    app = dropin.SessionMiddleware(Starlette(routes=[Route("/act/{action}", view)]), "k" * 32)
    reply = asgi_get(app, f"/act/{action}", {})
    assert reply.status == status and not reply.has_cookies()
    assert reply.get("cache-control") == "no-store"
    assert tracebacks(caplog) == []


# -- fail_open: a store failure is never a 503, and is logged once per interval ---------


@pytest.mark.parametrize("adapter", FAIL_OPEN)
def test_fail_open_drops_writes_when_the_store_dies_after_the_load(
    adapter: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchStore(clock=clock)
    app = FAIL_OPEN[adapter](manager_for(store, clock), True)
    secret = app.get("set?key=a&value=1").cookie(app.cookie)
    assert secret
    store.writes_down = True  # loads work, the commit fails: the store died in between
    caplog.set_level(logging.INFO)
    for _ in range(20):
        reply = app.get("set?key=b&value=2", secret)
        assert reply.status == 200 and reply.body == b"ok" and not reply.has_cookies()
    counter: ThrottledLog = app.adapter.commit_failures
    assert counter.total == 20
    [line] = events(caplog, "store.write_dropped")
    assert line.levelno == logging.WARNING and "fail_open" in line.getMessage()
    clock.advance(10)
    assert app.get("set?key=b&value=2", secret).status == 200
    first, second = events(caplog, "store.write_dropped")
    assert (second.count, second.total) == (20, 21)  # type: ignore[attr-defined]
    store.writes_down = False
    assert app.get("read", secret).json() == {"a": "1"}  # dropped: not saved, not half-saved


@pytest.mark.parametrize("adapter", FAIL_OPEN)
def test_fail_open_logout_that_cannot_reach_the_store_still_clears_the_cookie(
    adapter: str, clock: FakeClock
) -> None:
    store = SwitchStore(clock=clock)
    app = FAIL_OPEN[adapter](manager_for(store, clock), True)
    secret = app.get("set?key=a&value=1").cookie(app.cookie)
    store.writes_down = True
    reply = app.get("logout", secret)
    assert reply.status == 200 and reply.cookie(app.cookie) == ""
    assert app.adapter.commit_failures.total == 1


@pytest.mark.parametrize("fail_open", [False, True], ids=["503", "fail_open"])
@pytest.mark.parametrize("adapter", FAIL_OPEN)
def test_a_store_down_at_load_is_counted_and_logged_once_per_interval(
    adapter: str, fail_open: bool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchStore(clock=clock)
    app = FAIL_OPEN[adapter](manager_for(store, clock), fail_open)
    secret = app.get("set?key=a&value=1").cookie(app.cookie)
    store.down = True
    caplog.set_level(logging.INFO)
    for _ in range(20):
        reply = app.get("read", secret)
        if fail_open:
            assert reply.status == 200 and reply.json() == {}  # anonymous, not saved
        else:
            assert reply.status == 503
        assert not reply.has_cookies()
    lines = [r for r in caplog.records if r.name == "coatcheck"]
    assert len(lines) == 1 and getattr(lines[0], "event", None) == "store.load_failed"
    assert app.adapter.load_failures.total == 20
    clock.advance(9.9)
    app.get("read", secret)
    assert len(events(caplog, "store.load_failed")) == 1
    clock.advance(0.1)
    app.get("read", secret)
    assert [r.count for r in events(caplog, "store.load_failed")] == [1, 21]  # type: ignore[attr-defined]


# -- client-side mode keeps serving while its store is down ------------------------------


@pytest.mark.parametrize("adapter", FAIL_OPEN)
def test_client_side_serves_valid_tokens_while_its_store_is_down_up_to_max_staleness(
    adapter: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry, revocations = SwitchStore(clock=clock), SwitchRevocations(clock=clock)
    # Anonymous sessions listed too: a new visitor's session makes a registry write.
    manager = client_manager(
        clock, store=registry, revocations=revocations, list_anonymous=True
    )  # max_staleness: 60 s by default
    app = FAIL_OPEN[adapter](manager, False)
    token = app.get("set?key=a&value=1").cookie(app.cookie)  # synced the list: t = 0
    assert token
    registry.down = revocations.down = True
    caplog.set_level(logging.INFO)
    clock.advance(5)
    reply = app.get("read", token)
    assert reply.status == 200 and reply.json() == {"a": "1"}
    fresh = app.get("set?key=b&value=2")  # a new visitor: its registry write is dropped
    assert fresh.status == 200 and fresh.cookie(app.cookie)
    assert isinstance(manager.mode, ClientSide)
    assert manager.mode.dropped_registry_writes.total == 1
    [dropped] = events(caplog, "registry.write_dropped")
    assert "accepted => listed" in dropped.getMessage()
    assert events(caplog, "revocations.stale")
    clock.advance(54.9)  # 59.9 s since the last sync
    assert app.get("read", token).json() == {"a": "1"}
    clock.advance(0.1)  # 60 s: revocations can no longer be trusted
    assert app.get("read", token).status == 503
    registry.down = revocations.down = False
    clock.advance(1)
    assert app.get("read", token).json() == {"a": "1"}
    assert tracebacks(caplog) == []
