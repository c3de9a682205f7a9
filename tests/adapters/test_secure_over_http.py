"""A `Secure` cookie set in answer to plain HTTP is never sent back: say so, once.

The default cookie (`__Host-session`, `Secure`) works on `http://localhost` (browsers make
an exception for it) and over HTTPS. Anywhere else over plain HTTP (a container name, a LAN
address, a test client's `http://testserver`) the browser stores it and never returns it,
so every request starts a new session and nothing says why. `Cookie.issue` logs one
warning per transport naming the fix; these tests go through real ASGI and WSGI requests.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from flask import Flask, session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import Client

from coatcheck import Cookie, RequestInfo, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.flask import SessionInterface
from coatcheck.adapters.starlette import SessionMiddleware as StarletteDropIn
from coatcheck.adapters.wsgi import SessionMiddleware as WSGIMiddleware
from coatcheck.stores import MemoryStore
from coatcheck.transports import _is_loopback
from helpers import FakeClock, manager_for

FIX = 'Cookie(name="session", secure=False)'


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.__dict__.get("event") == "cookie.secure_over_http"]


def manager(**options: Any) -> SessionManager:
    clock = FakeClock()
    return manager_for(MemoryStore(clock=clock), clock, **options)


async def count(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


def asgi_app(sessions: SessionManager) -> SessionMiddleware:
    return SessionMiddleware(Starlette(routes=[Route("/count", count)]), manager=sessions)


async def counts(app: Any, base_url: str, times: int = 3) -> list[int]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as c:
        return [(await c.get("/count")).json()["n"] for _ in range(times)]


@pytest.mark.anyio
async def test_plain_http_to_a_dev_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coatcheck")
    # The session is lost on every request: what the warning is about.
    assert await counts(asgi_app(manager()), "http://app.internal:8000") == [1, 1, 1]
    (line,) = warnings_of(caplog)  # three cookies set, one line
    message = line.getMessage()
    assert line.name == "coatcheck.session" and line.levelno == logging.WARNING
    assert "__Host-session" in message and "app.internal:8000" in message
    assert FIX in message and "HTTPS" in message


@pytest.mark.anyio
async def test_once_per_manager(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coatcheck")
    first, second = asgi_app(manager()), asgi_app(manager())
    await counts(first, "http://192.168.1.20")
    await counts(first, "http://192.168.1.20")
    await counts(second, "http://192.168.1.20")
    assert len(warnings_of(caplog)) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://app.localhost",
        "https://testserver",
        "https://app.example",
    ],
)
async def test_no_warning_where_the_cookie_comes_back(
    caplog: pytest.LogCaptureFixture, base_url: str
) -> None:
    """Over HTTPS the cookie comes back; on localhost browsers send `Secure` cookies over
    HTTP too (httpx does not, so only the log is checked there)."""
    caplog.set_level(logging.WARNING, logger="coatcheck")
    result = await counts(asgi_app(manager()), base_url)
    assert not warnings_of(caplog)
    if base_url.startswith("https"):
        assert result == [1, 2, 3]


@pytest.mark.anyio
async def test_the_named_fix_works(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coatcheck")
    dev = manager(transport=Cookie(name="session", secure=False))
    assert await counts(asgi_app(dev), "http://app.internal:8000") == [1, 2, 3]
    assert not warnings_of(caplog)


@pytest.mark.anyio
async def test_starlette_drop_in_with_https_only(caplog: pytest.LogCaptureFixture) -> None:
    app = StarletteDropIn(
        Starlette(routes=[Route("/count", count)]), secret_key="k" * 32, https_only=True
    )
    caplog.set_level(logging.WARNING, logger="coatcheck")
    assert await counts(app, "http://devbox") == [1, 1, 1]
    (line,) = warnings_of(caplog)
    assert "devbox" in line.getMessage()


def test_wsgi_middleware(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["coatcheck.session"]["seen"] = True
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    caplog.set_level(logging.WARNING, logger="coatcheck")
    middleware = WSGIMiddleware(app, manager())
    for _ in range(2):  # two visitors (werkzeug's client would send the cookie back)
        response = Client(middleware).get("/", base_url="http://devbox:5000")
        assert response.headers.get("Set-Cookie", "").startswith("__Host-session=")
    (line,) = warnings_of(caplog)
    assert "devbox:5000" in line.getMessage()
    https = Client(WSGIMiddleware(app, manager())).get("/", base_url="https://devbox")
    assert https.headers["Set-Cookie"].startswith("__Host-session=")
    assert len(warnings_of(caplog)) == 1  # none for the HTTPS request


def test_flask(caplog: pytest.LogCaptureFixture) -> None:
    flask_app = Flask(__name__)
    SessionInterface(manager()).init_app(flask_app)

    @flask_app.get("/")
    def index() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    caplog.set_level(logging.WARNING, logger="coatcheck")
    for _ in range(2):  # two visitors (Flask's test client ignores `Secure`)
        assert flask_app.test_client().get("/", base_url="http://10.0.0.7").text == "1"
    (line,) = warnings_of(caplog)
    assert "10.0.0.7" in line.getMessage() and FIX in line.getMessage()


def test_secure_over_http_without_a_request_is_not_checked() -> None:
    """`issue` without a request (a tool, a test building headers): nothing to check."""
    assert Cookie().issue("value")[0][1].startswith("__Host-session=value")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST.", True),
        ("app.localhost:3000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:8080", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("::1", True),
        (None, False),
        ("", False),
        ("localhost.example.com", False),
        ("notlocalhost", False),
        ("10.0.0.7:80", False),
        ("[2001:db8::1]:443", False),
        ("app", False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def test_warning_through_the_core(caplog: pytest.LogCaptureFixture) -> None:
    """The check is in `Cookie.issue`, so any adapter built on the manager gets it."""
    caplog.set_level(logging.WARNING, logger="coatcheck")
    cookie = Cookie()
    request = RequestInfo(scheme="http", host="devbox", headers=[("host", "devbox")])
    cookie.issue("a", request=request)
    cookie.issue("b", request=request)
    assert len(warnings_of(caplog)) == 1


def test_a_local_host_is_checked_once_and_another_host_still_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loopback verdict is kept for the host (parsing an address is not redone on every
    issue: `_local_host`), and does not silence the warning for the next host that is not
    local. (Observed through the attribute: compiled, a module function is not patchable.)"""
    caplog.set_level(logging.WARNING, logger="coatcheck")
    cookie = Cookie()
    local = RequestInfo(scheme="http", host="[::1]:8000", headers=[("host", "[::1]:8000")])
    for value in ("a", "b", "c"):
        cookie.issue(value, request=local)
    assert cookie._local_host == "[::1]:8000" and warnings_of(caplog) == []
    lan = RequestInfo(scheme="http", host="10.0.0.7", headers=[("host", "10.0.0.7")])
    cookie.issue("d", request=lan)
    cookie.issue("e", request=lan)
    assert len(warnings_of(caplog)) == 1
