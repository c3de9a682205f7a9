"""The concurrent-session limit (`SessionLimit`), through real HTTP: an ASGI app behind
`SessionMiddleware` driven by httpx, in both modes, on MemoryStore and SQLiteStore. N logins
of one user are admitted; the next ends the oldest session (its cookie no longer opens it,
the others still do) or is refused (403, nothing stored, nothing sent). Also: the
configuration errors, the `session.limit` log lines (salted hashes only), a hypothesis
state machine over login/logout/expiry, and what a store failure at login gives (503)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import (
    ClientSide,
    ConfigurationError,
    KeyRing,
    Lifetimes,
    ServerSide,
    SessionAdmin,
    SessionLimit,
    SessionLimitReached,
    SessionManager,
)
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import StoreUnavailable
from coatcheck.session import Session
from coatcheck.stores import (
    MemoryRevocationStore,
    MemoryStore,
    SQLiteRevocationStore,
    SQLiteStore,
)
from helpers import COOKIE, DownStore, FakeClock, client, request

pytestmark = pytest.mark.anyio

KEY = b"K" * 32
LIMIT = 2
USER = "alice"


def sess(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


async def login(request: Request) -> Response:
    sess(request).login(request.query_params.get("user", USER))
    return JSONResponse({"ok": True})


async def whoami(request: Request) -> Response:
    return JSONResponse({"user": sess(request).user})


async def logout(request: Request) -> Response:
    sess(request).logout()
    return JSONResponse({"ok": True})


def app_for(manager: SessionManager) -> Any:
    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/whoami", whoami),
    ]
    return SessionMiddleware(Starlette(routes=routes), manager=manager)


def stores_for(kind: str, tmp_path: Path, clock: FakeClock) -> tuple[Any, Any]:
    """A registry / session store and a revocation store of `kind`, on `clock`."""
    if kind == "memory":
        return MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
    path = tmp_path / "sessions.db"
    return SQLiteStore(path, clock=clock), SQLiteRevocationStore(path, clock=clock)


def manager_for(
    mode: str, kind: str, tmp_path: Path, clock: FakeClock, limit: SessionLimit | None
) -> SessionManager:
    store, revocations = stores_for(kind, tmp_path, clock)
    chosen: Any
    if mode == "server":
        chosen = ServerSide(store=store)
    else:
        chosen = ClientSide(KeyRing([KEY]), store=store, revocations=revocations)
    return SessionManager(
        chosen,
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"salt",
        session_limit=limit,
    )


MODES = ["server", "client"]
KINDS = ["memory", "sqlite"]


async def user_of(browser: httpx.AsyncClient) -> str | None:
    response = await browser.get("/whoami")
    assert response.status_code == 200
    user = response.json()["user"]
    assert user is None or isinstance(user, str)
    return user


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
async def test_the_login_beyond_the_limit_ends_the_oldest_session(
    mode: str, kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    manager = manager_for(mode, kind, tmp_path, clock, SessionLimit(LIMIT))
    app = app_for(manager)
    browsers = [client(app) for _ in range(LIMIT + 2)]
    admin = SessionAdmin(manager)
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    for browser in browsers[:LIMIT]:
        assert (await browser.post("/login")).status_code == 200
        clock.advance(1)
    assert [await user_of(b) for b in browsers[:LIMIT]] == [USER] * LIMIT
    assert len(admin.sessions(USER)) == LIMIT
    oldest_token = browsers[0].cookies[COOKIE]

    assert (await browsers[LIMIT].post("/login")).status_code == 200
    # The oldest session is over, even presented again; every other one still opens.
    assert await user_of(browsers[0]) is None
    assert [await user_of(b) for b in browsers[1 : LIMIT + 1]] == [USER] * LIMIT
    replay = client(app, cookies={COOKIE: oldest_token})
    assert await user_of(replay) is None
    assert len(admin.sessions(USER)) == LIMIT

    clock.advance(1)
    assert (await browsers[LIMIT + 1].post("/login")).status_code == 200
    assert await user_of(browsers[1]) is None
    assert [await user_of(b) for b in browsers[2:]] == [USER] * LIMIT
    assert len(admin.sessions(USER)) == LIMIT

    events = [r for r in caplog.records if getattr(r, "event", None) == "session.limit"]
    assert len(events) == 2
    assert all("revoked-oldest" in r.getMessage() for r in events)
    for record in caplog.records:  # salted hashes only: no secret, token or handle
        assert oldest_token not in record.getMessage()
        for info in admin.sessions(USER):
            assert info.id not in record.getMessage()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
async def test_refuse_answers_403_and_stores_nothing(
    mode: str, kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    manager = manager_for(mode, kind, tmp_path, clock, SessionLimit(LIMIT, on_exceed="refuse"))
    app = app_for(manager)
    admin = SessionAdmin(manager)
    admitted = [client(app) for _ in range(LIMIT)]
    for browser in admitted:
        assert (await browser.post("/login")).status_code == 200
        clock.advance(1)
    before = sorted(i.id for i in admin.sessions(USER))
    caplog.set_level(logging.WARNING, logger="coatcheck.security")

    late = client(app)
    response = await late.post("/login")
    assert response.status_code == 403
    assert response.headers["x-coatcheck-refused"] == "session-limit"
    assert "set-cookie" not in response.headers
    assert COOKIE not in late.cookies
    assert await user_of(late) is None
    assert sorted(i.id for i in admin.sessions(USER)) == before
    assert [await user_of(b) for b in admitted] == [USER] * LIMIT
    assert [r for r in caplog.records if "action=refused" in r.getMessage()]

    # Another user is not affected; and a logout frees a slot.
    assert (await client(app).post("/login", params={"user": "bob"})).status_code == 200
    assert (await admitted[0].post("/logout")).status_code == 200
    assert (await late.post("/login")).status_code == 200
    assert await user_of(late) == USER
    assert len(admin.sessions(USER)) == LIMIT


@pytest.mark.parametrize("mode", MODES)
async def test_a_login_again_in_a_listed_session_does_not_count_it_twice(
    mode: str, tmp_path: Path
) -> None:
    """The session a login replaces is not one of the user's "other" sessions."""
    clock = FakeClock()
    manager = manager_for(mode, "memory", tmp_path, clock, SessionLimit(1, on_exceed="refuse"))
    app = app_for(manager)
    browser = client(app)
    assert (await browser.post("/login")).status_code == 200
    clock.advance(1)
    assert (await browser.post("/login")).status_code == 200
    assert await user_of(browser) == USER
    assert len(SessionAdmin(manager).sessions(USER)) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_expired_sessions_do_not_count(mode: str, tmp_path: Path) -> None:
    clock = FakeClock()
    manager = manager_for(mode, "memory", tmp_path, clock, SessionLimit(1, on_exceed="refuse"))
    app = app_for(manager)
    assert (await client(app).post("/login")).status_code == 200
    clock.advance(manager.lifetimes.idle + 10)
    browser = client(app)
    assert (await browser.post("/login")).status_code == 200
    assert await user_of(browser) == USER


async def test_client_side_eviction_reaches_other_replicas_within_the_staleness(
    tmp_path: Path,
) -> None:
    """Two replicas share the registry and the revocation list: the eviction is a
    revocation entry, which the other replica applies once its list is `staleness` old."""
    clock = FakeClock()
    store, revocations = stores_for("sqlite", tmp_path, clock)

    def replica() -> SessionManager:
        mode = ClientSide(KeyRing([KEY]), store=store, revocations=revocations, staleness=5.0)
        return SessionManager(mode, clock=clock, log_salt=b"salt", session_limit=SessionLimit(1))

    one, two = app_for(replica()), app_for(replica())
    first = client(one)
    assert (await first.post("/login")).status_code == 200
    token = first.cookies[COOKIE]
    on_two = client(two, cookies={COOKIE: token})
    assert await user_of(on_two) == USER  # replica two's list is synced now
    clock.advance(1)
    assert (await client(one).post("/login")).status_code == 200  # evicts the first
    clock.advance(5.0)
    assert await user_of(on_two) is None


class DownAtLogin(DownStore):
    """A store that is down, with an `admit` that fails the same way."""

    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()


async def test_a_store_failure_at_login_is_a_503_never_a_pass() -> None:
    manager = SessionManager(ServerSide(store=DownAtLogin()), session_limit=SessionLimit(1))
    response = await client(app_for(manager)).post("/login")
    assert response.status_code == 503


def test_client_side_failure_at_login_is_not_dropped() -> None:
    """A client-side registry write that fails is dropped, its token issued, while the
    store is down (`max_staleness`); a login under a limit must not be: 503."""

    class Failing(MemoryStore):
        def admit(self, *args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("down")

    mode = ClientSide(KeyRing([KEY]), store=Failing(), revocations=MemoryRevocationStore())
    manager = SessionManager(mode, session_limit=SessionLimit(1))
    session = open_session(manager, request())
    session.login(USER)
    with pytest.raises(StoreUnavailable):
        commit_session(manager, session)


def test_the_application_can_catch_the_refusal() -> None:
    manager = SessionManager(
        ServerSide(store=MemoryStore()), session_limit=SessionLimit(1, on_exceed="refuse")
    )
    first = open_session(manager, request())
    first.login(USER)
    commit_session(manager, first)
    second = open_session(manager, request())
    second.login(USER)
    with pytest.raises(SessionLimitReached) as caught:
        commit_session(manager, second)
    assert caught.value.max_sessions == 1


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="registry"):
        SessionManager(ClientSide(KeyRing([KEY]), store=None), session_limit=SessionLimit(2))
    with pytest.raises(ConfigurationError, match="at least 1"):
        SessionLimit(0)
    with pytest.raises(ConfigurationError, match="whole number"):
        SessionLimit(True)
    with pytest.raises(ConfigurationError, match="on_exceed"):
        SessionLimit(2, on_exceed="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="SessionLimit"):
        SessionManager(ServerSide(store=MemoryStore()), session_limit=3)  # type: ignore[arg-type]
    # A third-party store without `admit`:
    with pytest.raises(ConfigurationError, match="cannot enforce"):
        SessionManager(ServerSide(store=DownStore()), session_limit=SessionLimit(2))


class LoginLogoutExpire(RuleBasedStateMachine):
    """One user's sessions under a limit of 2 on one MemoryStore: whatever the order of
    logins (revoke-oldest or refuse), logouts and time passing, the user never has more
    than 2 live sessions, and with refuse no admitted session is ever ended by a login."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        self.managers = {
            policy: SessionManager(
                ServerSide(store=self.store),
                lifetimes=Lifetimes(idle=100, absolute=1000, renewal=None),
                clock=self.clock,
                log_salt=b"salt",
                session_limit=SessionLimit(2, on_exceed=policy),
            )
            for policy in ("revoke-oldest", "refuse")
        }
        self.secrets: list[str] = []

    def _open(self, policy: str, secret: str | None) -> Session:
        return open_session(self.managers[policy], request(secret))

    @rule(policy=st.sampled_from(["revoke-oldest", "refuse"]))
    def login(self, policy: str) -> None:
        manager = self.managers[policy]
        live_before = {s for s in self.secrets if self._open(policy, s).user == USER}
        session = self._open(policy, None)
        session.login(USER)
        try:
            headers = commit_session(manager, session)
        except SessionLimitReached:
            assert policy == "refuse" and len(live_before) >= 2
            return
        if policy == "refuse":  # admitted: nobody else was ended
            assert all(self._open(policy, s).user == USER for s in live_before)
        secret = [v for k, v in headers if k == "set-cookie"][0].split(";")[0].split("=")[1]
        self.secrets.append(secret)

    @rule(index=st.integers(0, 10))
    def logout(self, index: int) -> None:
        if self.secrets:
            secret = self.secrets.pop(index % len(self.secrets))
            session = self._open("refuse", secret)
            session.logout()
            commit_session(self.managers["refuse"], session)

    @rule(seconds=st.sampled_from([1, 30, 99, 101]))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def at_most_two_live_sessions(self) -> None:
        assert len(self.store.list_user(USER)) <= 2


TestLoginLogoutExpire = LoginLogoutExpire.TestCase
TestLoginLogoutExpire.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
