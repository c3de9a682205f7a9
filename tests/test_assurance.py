"""Recent login and assurance level (`coatcheck.assurance`): recorded at login, raised by
`reauthenticate`, kept across renewals and in listings, required by `require_session(...,
max_age=..., assurance=...)`, and never taken from the client. Through real HTTP (httpx
on the ASGI middleware, Starlette routes), in both modes, on MemoryStore and SQLite."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, SessionAdmin, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware, require_session
from coatcheck.assurance import (
    ASSURANCE_TOO_LOW,
    LOGIN_REQUIRED,
    LOGIN_TOO_OLD,
    Ladder,
    Requirement,
    challenge,
    unmet,
)
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import ConfigurationError, StepUpRequired
from coatcheck.ids import handle_of
from coatcheck.records import decode, encode
from coatcheck.session import Session
from coatcheck.stores import MemoryStore, SQLiteStore
from coatcheck.transports import Header
from helpers import COOKIE, FakeClock, client, request

pytestmark = pytest.mark.anyio

KEY = b"K" * 32
MAX_AGE = 300


# -- the app ----------------------------------------------------------------------------


async def login(request: Request) -> Response:
    level = request.query_params.get("level")
    session = request.scope["session"]
    if level is None:
        session.login(request.query_params["user"])
    else:
        session.login(request.query_params["user"], assurance=level)
    return JSONResponse({"ok": True})


async def reauth(request: Request) -> Response:
    request.scope["session"].reauthenticate(assurance=request.query_params.get("level", "aal1"))
    return JSONResponse({"ok": True})


async def recent(request: Request) -> Response:
    session = require_session(request, max_age=MAX_AGE)
    return JSONResponse({"user": session.user})


async def strong(request: Request) -> Response:
    session = require_session(request, max_age=MAX_AGE, assurance="aal2")
    return JSONResponse({"user": session.user, "assurance": session.assurance})


async def me(request: Request) -> Response:
    session = request.scope["session"]
    info = session.info()
    return JSONResponse(
        {
            "user": session.user,
            "assurance": session.assurance,
            "authenticated_at": session.authenticated_at,
            "info": info.assurance,
        }
    )


async def touch(request: Request) -> Response:
    request.scope["session"]["n"] = request.scope["session"].get("n", 0) + 1
    return JSONResponse({"ok": True})


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/reauth", reauth, methods=["POST"]),
    Route("/recent", recent),
    Route("/strong", strong),
    Route("/me", me),
    Route("/touch", touch, methods=["POST"]),
]


def make_app(manager: SessionManager) -> Starlette:
    """As docs/asgi.md recommends: the middleware inside Starlette's error handling, so a
    `SessionRequired` reaches it rather than a 500 page."""
    return Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, manager=manager)])


MODES = ["server-memory", "server-sqlite", "client-memory", "client-sqlite"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def build(kind: str, clock: FakeClock, tmp_path: Path, lifetimes: Lifetimes) -> SessionManager:
    mode_name, store_name = kind.split("-")
    mode: Any
    if mode_name == "server":
        store: Any = (
            MemoryStore(clock=clock)
            if store_name == "memory"
            else SQLiteStore(tmp_path / "sessions.db", clock=clock)
        )
        mode = ServerSide(store)
    else:
        url = "memory://" if store_name == "memory" else f"sqlite:///{tmp_path / 'sessions.db'}"
        mode = ClientSide(KeyRing([KEY]), store=url)
    return SessionManager(mode, lifetimes=lifetimes, clock=clock, log_salt=b"test-salt")


@pytest.fixture(params=MODES)
def manager(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> SessionManager:
    return build(request.param, clock, tmp_path, Lifetimes(renewal=None))


@pytest.fixture
async def http(manager: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(manager)
    async with client(app) as http:
        yield http


def challenge_params(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Session"  # a cookie-carried session
    found = {}
    for part in params.split(", "):
        name, _, value = part.partition("=")
        found[name] = value.strip('"')
    return found


def assert_step_up(response: httpx.Response, reason: str, acr_values: str | None = None) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body == {
        "error": "insufficient_user_authentication",
        "reason": reason,
        "max_age": MAX_AGE,
        "acr_values": acr_values,
    }
    params = challenge_params(response)
    assert params["error"] == "insufficient_user_authentication"
    assert params["error_description"] == reason
    assert params["max_age"] == str(MAX_AGE)
    assert params.get("acr_values") == acr_values


# -- through HTTP, both modes, memory and SQLite ----------------------------------------------


async def test_fresh_login_passes_and_goes_stale(
    http: httpx.AsyncClient, clock: FakeClock, manager: SessionManager
) -> None:
    assert_step_up(await http.get("/recent"), LOGIN_REQUIRED)
    assert (await http.post("/login", params={"user": "alice"})).status_code == 200
    assert (await http.get("/recent")).json() == {"user": "alice"}
    clock.advance(MAX_AGE)
    assert (await http.get("/recent")).status_code == 200  # max_age itself is still fresh
    clock.advance(1)
    stale = await http.get("/recent")
    assert_step_up(stale, LOGIN_TOO_OLD)
    assert "Cookie" in stale.headers["vary"]  # the session's headers, as on any response
    # A re-authentication passes again, without a new login: same handle, new secret.
    before = http.cookies[COOKIE]
    [info] = SessionAdmin(manager).sessions("alice")
    assert (await http.post("/reauth")).status_code == 200
    assert http.cookies[COOKIE] != before
    assert (await http.get("/recent")).json() == {"user": "alice"}
    [after] = SessionAdmin(manager).sessions("alice")
    assert after.id == info.id
    assert after.authenticated_at == pytest.approx(clock.now, abs=1)


async def test_assurance_too_low_until_stepped_up(
    http: httpx.AsyncClient, clock: FakeClock, manager: SessionManager
) -> None:
    await http.post("/login", params={"user": "alice"})
    assert (await http.get("/me")).json()["assurance"] == "aal1"
    assert_step_up(await http.get("/strong"), ASSURANCE_TOO_LOW, "aal2 aal3")
    await http.post("/reauth", params={"level": "aal2"})
    assert (await http.get("/strong")).json() == {"user": "alice", "assurance": "aal2"}
    assert [i.assurance for i in SessionAdmin(manager).sessions("alice")] == ["aal2"]
    # A password alone afterwards lowers the level: both describe the latest proof.
    await http.post("/reauth", params={"level": "aal1"})
    assert_step_up(await http.get("/strong"), ASSURANCE_TOO_LOW, "aal2 aal3")
    # A login at aal3 satisfies aal2; and it too goes stale.
    await http.post("/login", params={"user": "alice", "level": "aal3"})
    assert (await http.get("/strong")).json()["assurance"] == "aal3"
    clock.advance(MAX_AGE + 1)
    assert_step_up(await http.get("/strong"), LOGIN_TOO_OLD, "aal2 aal3")


async def test_logout_and_new_login_reset_the_level(http: httpx.AsyncClient) -> None:
    await http.post("/login", params={"user": "alice", "level": "aal2"})
    await http.post("/login", params={"user": "bob"})  # a new login: its own level
    assert (await http.get("/me")).json()["assurance"] == "aal1"
    assert_step_up(await http.get("/strong"), ASSURANCE_TOO_LOW, "aal2 aal3")


@pytest.mark.parametrize("kind", MODES)
async def test_assurance_and_login_time_survive_renewal_and_are_listed(
    kind: str, clock: FakeClock, tmp_path: Path
) -> None:
    manager = build(kind, clock, tmp_path, Lifetimes(renewal=60, idle=3600))
    app = make_app(manager)
    async with client(app) as http:
        await http.post("/login", params={"user": "alice", "level": "aal2"})
        logged_in = (await http.get("/me")).json()
        for _ in range(4):
            clock.advance(90)  # past the renewal age: each request gets a new secret
            before = http.cookies[COOKIE]
            assert (await http.post("/touch")).status_code == 200
            assert http.cookies[COOKIE] != before
        now = (await http.get("/me")).json()
        assert now["assurance"] == now["info"] == "aal2"
        assert now["authenticated_at"] == logged_in["authenticated_at"]
        [info] = SessionAdmin(manager).sessions("alice")
        assert info.assurance == "aal2"
        assert info.authenticated_at == pytest.approx(logged_in["authenticated_at"], abs=1)
        assert_step_up(await http.get("/strong"), LOGIN_TOO_OLD, "aal2 aal3")


# -- nothing the client sends raises its level ------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("kind", ["client-memory", "client-sqlite"])
async def test_a_token_edited_to_claim_a_higher_level_is_refused(
    kind: str, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = build(kind, clock, tmp_path, Lifetimes(renewal=None))
    app = make_app(manager)
    async with client(app) as http:
        await http.post("/login", params={"user": "alice"})
        token = http.cookies[COOKIE]
        header, payload, signature = token.split(".")
        claims = json.loads(_unb64(payload))
        assert "acr" not in claims and claims["auth_time"]
        claims["acr"] = "aal3"
        forged = ".".join((header, _b64(json.dumps(claims).encode()), signature))
        http.cookies.clear()
        with caplog.at_level(logging.WARNING, "coatcheck.security"):
            response = await http.get("/strong", headers={"cookie": f"{COOKIE}={forged}"})
        assert_step_up(response, LOGIN_REQUIRED, "aal2 aal3")
        assert "token.invalid" in caplog.text
        assert forged not in caplog.text and token not in caplog.text


@pytest.mark.parametrize("acr", [3, "", ["aal3"]])
async def test_a_signed_token_with_a_malformed_level_is_refused(
    clock: FakeClock, tmp_path: Path, acr: Any
) -> None:
    """Even signed with the app's key (what only a bug could write), `acr` must be a
    non-empty str on a token with a user: anything else is no session."""
    manager = build("client-memory", clock, tmp_path, Lifetimes(renewal=None))
    mode = manager.mode
    assert isinstance(mode, ClientSide)
    app = make_app(manager)
    async with client(app) as http:
        await http.post("/login", params={"user": "alice", "level": "aal2"})
        claims = mode.codec.decode(http.cookies[COOKIE]).claims
        assert claims["acr"] == "aal2"
        claims["acr"] = acr
        bad = mode.codec.encode(claims)
        http.cookies.clear()
        response = await http.get("/strong", headers={"cookie": f"{COOKIE}={bad}"})
        assert_step_up(response, LOGIN_REQUIRED, "aal2 aal3")
        anonymous = dict(claims)
        del anonymous["sub"]
        anonymous["acr"] = "aal3"  # a level without a user
        response = await http.get(
            "/me", headers={"cookie": f"{COOKIE}={mode.codec.encode(anonymous)}"}
        )
        assert response.json()["assurance"] is None


@pytest.mark.parametrize("kind", ["server-memory", "server-sqlite"])
@pytest.mark.parametrize("level", [3, "", ["aal3"], None])
async def test_a_record_with_a_malformed_level_is_refused(
    kind: str, level: Any, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record is written by the server only; one planted or damaged with a level of the
    wrong type (or a level without a user) reads as corrupted: a fresh anonymous session."""
    manager = build(kind, clock, tmp_path, Lifetimes(renewal=None))
    mode = manager.mode
    assert isinstance(mode, ServerSide)
    app = make_app(manager)
    async with client(app) as http:
        await http.post("/login", params={"user": "alice"})
        key = handle_of(http.cookies[COOKIE])
        record = mode.store.load(key)
        assert record is not None
        doc = json.loads(record.data)
        assert "l" not in doc  # the lowest level is left out
        if level is None:
            del doc["u"]
            doc["l"] = "aal3"
        else:
            doc["l"] = level
        assert mode.store.save(
            key, json.dumps(doc).encode(), version=record.version, ttl=600, user="alice"
        )
        with caplog.at_level(logging.WARNING, "coatcheck.security"):
            response = await http.get("/strong")
        assert_step_up(response, LOGIN_REQUIRED, "aal2 aal3")
        assert "session.corrupted" in caplog.text


# -- the header transport: the Bearer challenge ------------------------------------------------


async def test_header_transport_gets_a_bearer_challenge(clock: FakeClock) -> None:
    manager = SessionManager(
        ServerSide(MemoryStore(clock=clock)),
        transport=Header(),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
    )
    app = make_app(manager)
    async with client(app) as http:
        response = await http.post("/login", params={"user": "alice"})
        token = response.headers["session-token"]
        auth = {"authorization": f"Bearer {token}"}
        clock.advance(MAX_AGE + 1)
        response = await http.get("/strong", headers=auth)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer error="insufficient_user_authentication", '
            'error_description="assurance_too_low", max_age="300", acr_values="aal2 aal3"'
        )
        assert response.json()["reason"] == ASSURANCE_TOO_LOW


# -- sans-IO: the session, the record, the requirement -----------------------------------------


def test_reauthenticate_needs_a_user_and_levels_are_strings() -> None:
    session = Session.create(now=100.0)
    with pytest.raises(ValueError, match="logged-in"):
        session.reauthenticate(assurance="aal2")
    with pytest.raises(TypeError):
        session.login("alice", assurance="")
    session.login("alice", assurance="aal2")
    assert session.assurance == "aal2" and session.authenticated_at == 100.0
    assert session.is_fresh(0) and not session.is_fresh(-1)
    session.unbind_user()
    assert session.assurance is None and not session.is_fresh(10)


def test_the_record_keeps_a_level_above_the_lowest_only() -> None:
    session = Session.create(now=100.0, user="alice", authenticated_at=100.0)
    assert session.assurance == "aal1"
    assert b'"l"' not in encode(session)
    assert decode(encode(session)).assurance is None
    session.assurance = "aal2"
    assert decode(encode(session)).assurance == "aal2"
    anonymous = Session.create(now=100.0, assurance="aal3")
    assert b'"l"' not in encode(anonymous)


def test_requirement_is_checked_where_it_is_declared() -> None:
    with pytest.raises(ConfigurationError, match="ladder"):
        Requirement.of(assurance="aal4")
    with pytest.raises(ConfigurationError, match="seconds"):
        Requirement.of(max_age=-1)
    with pytest.raises(ConfigurationError):
        Ladder(["pwd", "pwd"])
    with pytest.raises(ConfigurationError):
        Ladder(["a b"])
    assert Requirement.of(max_age=2.5).max_age == 2


def test_custom_ladder_and_unknown_levels_fail_closed() -> None:
    ladder = Ladder(["password", "otp", "webauthn"])
    session = Session.create(now=100.0)
    session.login("alice")  # the default "aal1": not on this ladder
    assert unmet(session, assurance="password", ladder=ladder) == ASSURANCE_TOO_LOW
    session.reauthenticate(assurance="otp")
    assert unmet(session, assurance="otp", ladder=ladder) is None
    assert unmet(session, assurance="webauthn", ladder=ladder) == ASSURANCE_TOO_LOW
    requirement = Requirement.of(60, "otp", ladder)
    assert requirement.acr_values == "otp webauthn"
    with pytest.raises(StepUpRequired) as raised:
        Requirement.of(60, "webauthn", ladder).check(session)
    assert raised.value.reason == ASSURANCE_TOO_LOW
    assert json.loads(raised.value.body)["acr_values"] == "webauthn"
    assert "alice" not in str(raised.value) and "alice" not in raised.value.body.decode()
    assert challenge(session, LOGIN_TOO_OLD, None, None) == [
        (
            "www-authenticate",
            'Session error="insufficient_user_authentication", error_description="login_too_old"',
        )
    ]


def test_a_reauthentication_survives_a_concurrent_write(clock: FakeClock) -> None:
    """Two requests load the session; the other one writes first (a new record version):
    the re-authentication's commit is rebased on it and keeps its own login time and
    level, and the other one's data."""
    manager = SessionManager(
        ServerSide(MemoryStore(clock=clock)), lifetimes=Lifetimes(renewal=None), clock=clock
    )
    first = open_session(manager, request())
    first.login("alice")
    headers = commit_session(manager, first)
    secret = next(v for k, v in headers if k == "set-cookie").split(";")[0].split("=", 1)[1]
    clock.advance(MAX_AGE + 10)
    stepping_up = open_session(manager, request(secret))
    other = open_session(manager, request(secret))
    other["cart"] = ["apple"]
    commit_session(manager, other)
    stepping_up.reauthenticate(assurance="aal2")
    commit_session(manager, stepping_up)
    [info] = SessionAdmin(manager).sessions("alice")
    assert info.assurance == "aal2" and info.authenticated_at == clock.now
    mode = manager.mode
    assert isinstance(mode, ServerSide)
    record = mode.store.load(info.id)
    assert record is not None and decode(record.data).data == {"cart": ["apple"]}
