"""Typed session events (docs/observability.md): every lifecycle and security event reaches
the manager's subscribers as an `Event`, through real HTTP (the ASGI middleware under
httpx), in both modes, on memory and SQLite; no event carries an ID, secret or token; and
a subscriber that raises or blocks changes nothing about the responses (deterministic:
the blocking subscriber is parked on a `threading.Event`, no sleeps).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coatcheck import (
    AsyncSessionAdmin,
    ClientSide,
    KeyRing,
    Lifetimes,
    ServerSide,
    Session,
    SessionLimit,
    SessionManager,
)
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.assurance import require
from coatcheck.events import KINDS, Event, Events, kind_of
from coatcheck.ids import new_secret
from coatcheck.stores import (
    MemoryRevocationStore,
    MemoryStore,
    SQLiteRevocationStore,
    SQLiteStore,
)
from helpers import COOKIE, DownStore, FakeClock, client, sent_secret

KEY = b"e" * 32
GRACE = 10.0
LIFETIMES = Lifetimes(idle=1800, absolute=12 * 3600, renewal=900, grace=GRACE, touch_interval=60)
MODES = pytest.mark.parametrize("mode", ["server", "client"])
STORES = pytest.mark.parametrize("store", ["memory", "sqlite"])


def make_app(manager: SessionManager) -> Starlette:
    async def do(request: Request) -> Response:
        session: Session = request.scope["session"]
        action = request.path_params["action"]
        if action == "write":
            session["k"] = request.query_params.get("value", "v")
        elif action == "login":
            session.login(request.query_params.get("user", "alice"))
        elif action == "logout":
            session.logout()
        elif action == "regenerate":
            session.regenerate()
        elif action == "revoke":  # an operator's action, through the app
            await AsyncSessionAdmin(manager).revoke(request.query_params["id"])
        elif action == "fresh":
            require(session, max_age=60)
        return PlainTextResponse("ok")

    async def me(request: Request) -> Response:
        session: Session = request.scope["session"]
        return JSONResponse({"id": session.id, "user": session.user, "k": session.get("k")})

    routes = [Route("/", me), Route("/{action}", do, methods=["POST"])]
    # As docs/asgi.md recommends: inside Starlette's error handling, so a 401 is answered.
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager)])


@dataclass
class World:
    clock: FakeClock
    manager: SessionManager
    http: httpx.AsyncClient
    received: list[Event] = field(default_factory=list)
    #: Every ID, secret and token seen: none may appear in an event.
    seen: set[str] = field(default_factory=set)
    secret: str | None = None

    async def send(self, method: str, path: str, **options: Any) -> httpx.Response:
        self.http.cookies.clear()
        headers = dict(options.pop("headers", {}))
        if self.secret:
            headers["cookie"] = f"{COOKIE}={self.secret}"
        response = await self.http.request(method, path, headers=headers, **options)
        value = sent_secret(response)
        if value:
            self.seen.add(value)
        if value is not None:
            self.secret = value or None
        if method == "GET" and response.status_code == 200:
            sid = response.json()["id"]
            if sid:
                self.seen.add(sid)
        return response

    def kinds(self) -> list[str]:
        assert self.manager.events.flush(10)
        return [event.kind for event in self.received]

    def take(self) -> list[str]:
        kinds = self.kinds()
        self.received.clear()
        return kinds

    def assert_nothing_secret(self) -> None:
        assert self.manager.events.flush(10)
        for event in self.received:
            text = repr(event)
            for secret in self.seen:
                assert secret not in text, f"a secret in {event!r}"


def backends(kind: str, clock: FakeClock, tmp_path: Path) -> tuple[Any, Any]:
    if kind == "memory":
        return MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
    path = tmp_path / "sessions.db"
    return SQLiteStore(path, clock=clock), SQLiteRevocationStore(path, clock=clock)


@asynccontextmanager
async def world(tmp_path: Path, mode: str, store: str, **options: Any) -> AsyncIterator[World]:
    clock = FakeClock()
    sessions, revocations = backends(store, clock, tmp_path)
    chosen: ServerSide | ClientSide
    if mode == "server":
        chosen = ServerSide(sessions)
    else:
        chosen = ClientSide(KeyRing([KEY]), store=sessions, revocations=revocations, strict=True)
    manager = SessionManager(chosen, lifetimes=LIFETIMES, clock=clock, **options)
    async with client(make_app(manager)) as http:
        here = World(clock, manager, http)
        manager.events.subscribe(here.received.append)
        try:
            yield here
        finally:
            manager.events.close()
            if store == "sqlite":
                sessions.close()
                revocations.close()


@pytest.mark.anyio
@MODES
@STORES
async def test_each_lifecycle_step_is_an_event(tmp_path: Path, mode: str, store: str) -> None:
    async with world(tmp_path, mode, store) as w:
        assert (await w.send("POST", "/write")).status_code == 200
        assert w.take() == ["created"]
        assert (await w.send("POST", "/login")).status_code == 200
        assert w.take() == ["login"]
        assert (await w.send("POST", "/regenerate")).status_code == 200
        assert w.take() == ["renewed"]
        if mode == "server":  # (client side, renewal re-issues the token: not a new ID)
            w.clock.advance(900 + 1)  # past `LIFETIMES.renewal`
            assert (await w.send("GET", "/")).status_code == 200
            assert w.take() == ["renewed"]
        assert (await w.send("POST", "/logout")).status_code == 200
        assert w.take() == ["logout"]
        w.assert_nothing_secret()


@pytest.mark.anyio
@MODES
@STORES
async def test_security_events(tmp_path: Path, mode: str, store: str) -> None:
    async with world(tmp_path, mode, store) as w:
        await w.send("POST", "/login")
        w.take()
        # CSRF: a cross-origin post without the token.
        response = await w.send("POST", "/write", headers={"origin": "https://evil.example"})
        assert response.status_code == 403
        assert w.take() == ["csrf_rejected"]
        # Reuse: the secret `regenerate()` replaced, after the grace period.
        old = w.secret
        await w.send("POST", "/regenerate")
        w.take()
        w.clock.advance(GRACE + 1)
        current, w.secret = w.secret, old
        assert (await w.send("GET", "/")).status_code == 200
        assert "reuse_detected" in w.take()
        # Revocation by an operator, then expiry of another session.
        w.secret = None
        await w.send("POST", "/login", params={"user": "bob"})
        sid = (await w.send("GET", "/")).json()["id"]
        w.take()
        w.secret = None
        assert (await w.send("POST", "/revoke", params={"id": sid})).status_code == 200
        assert w.take() == ["revoked"]
        w.secret = None
        await w.send("POST", "/write")
        w.take()
        if mode == "client":  # the token is past its idle deadline (and the leeway)
            w.clock.advance(LIFETIMES.idle + 60)
            assert (await w.send("GET", "/")).status_code == 200
        else:
            # The store keeps a record as long as the idle lifetime (then it is unknown):
            # a replica deployed with a shorter one finds it expired.
            shorter = Lifetimes(idle=600, absolute=12 * 3600, renewal=300, touch_interval=60)
            other = SessionManager(
                w.manager.mode, lifetimes=shorter, clock=w.clock, events=w.manager.events
            )
            w.clock.advance(601)
            async with client(make_app(other)) as http:
                cookie = {"cookie": f"{COOKIE}={w.secret}"}
                assert (await http.get("/", headers=cookie)).status_code == 200
        assert w.take() == ["expired"]
        assert current is not None
        w.assert_nothing_secret()


@pytest.mark.anyio
@MODES
@STORES
async def test_session_limit_and_step_up(tmp_path: Path, mode: str, store: str) -> None:
    limit = SessionLimit(1, on_exceed="refuse")
    async with world(tmp_path, mode, store, session_limit=limit) as w:
        assert (await w.send("POST", "/login")).status_code == 200
        assert w.take() == ["created", "login"]  # a new session that logs in at once
        w.clock.advance(61)
        assert (await w.send("POST", "/fresh")).status_code == 401
        assert w.take() == ["step_up"]
        w.secret = None
        assert (await w.send("POST", "/login")).status_code == 403
        assert w.take()[-1:] == ["limit"]
        assert w.received == []
        w.assert_nothing_secret()


@pytest.mark.anyio
@pytest.mark.parametrize("fail_open", [False, True])
async def test_store_errors_are_events(fail_open: bool) -> None:
    """A store that fails a load (a presented secret) or a commit is a `store_error`."""
    manager = SessionManager(ServerSide(DownStore()))
    received: list[Event] = []
    manager.events.subscribe(received.append)
    app = Starlette(
        routes=make_app(manager).routes,
        middleware=[Middleware(SessionMiddleware, manager=manager, fail_open=fail_open)],
    )
    async with client(app) as http:
        await http.post("/write")
        secret = new_secret()
        await http.get("/", headers={"cookie": f"{COOKIE}={secret}"})
    assert manager.events.flush(10)
    manager.events.close()
    failed = [e for e in received if e.kind == "store_error"]
    assert [e.name for e in failed] == ["store.commit_failed", "store.load_failed"]
    assert {e.outcome for e in failed} == {"failed"}
    assert all(secret not in repr(e) for e in received)


# -- subscribers that misbehave --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_raising_subscriber_changes_no_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="coatcheck.events")
    manager = SessionManager(ServerSide(MemoryStore()))
    good: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    manager.events.subscribe(broken)
    manager.events.subscribe(good.append)
    async with client(make_app(manager)) as http:
        for _ in range(3):
            http.cookies.clear()
            assert (await http.post("/write")).status_code == 200
    assert manager.events.flush(10)
    manager.events.close()
    assert [e.kind for e in good] == ["created"] * 3
    assert manager.events.failed == 3
    lines = [r for r in caplog.records if getattr(r, "event", "") == "events.subscriber_failed"]
    assert len(lines) == 1  # throttled: one line per interval


@pytest.mark.anyio
async def test_a_blocking_subscriber_delays_no_response_and_drops_are_counted() -> None:
    hub = Events(maxsize=2)
    manager = SessionManager(ServerSide(MemoryStore()), events=hub)
    entered, release = threading.Event(), threading.Event()
    got: list[Event] = []

    def slow(event: Event) -> None:
        entered.set()
        release.wait()
        got.append(event)

    hub.subscribe(slow)
    async with client(make_app(manager)) as http:
        assert (await http.post("/write")).status_code == 200
        assert entered.wait(10)  # the hub's thread is now parked in `slow`
        for _ in range(5):  # all answered while it is: 2 queued, 3 dropped
            http.cookies.clear()
            assert (await http.post("/write")).status_code == 200
    assert hub.dropped == 3
    release.set()
    assert hub.flush(10)
    hub.close()
    assert len(got) == 3
    assert hub.delivered == 3


def test_no_subscriber_queues_nothing_and_starts_no_thread() -> None:
    hub = Events()
    manager = SessionManager(ServerSide(MemoryStore()), events=hub)
    manager.audit.lifecycle("session.created", "x" * 43)
    assert hub._queue is None and hub._thread is None
    assert hub.flush(0)


def test_unsubscribe_and_kinds() -> None:
    hub = Events()
    got: list[Event] = []
    callback = hub.subscribe(got.append)
    hub.unsubscribe(callback)
    assert hub.subscribers == ()
    hub.close()
    assert kind_of("session.rotated") == "renewed"
    assert kind_of("csrf.rejected") == "csrf_rejected"
    assert kind_of("session.something_new") == "something_new"
    assert {"created", "login", "logout", "renewed", "revoked", "expired"} <= KINDS
    with pytest.raises(ValueError):
        Events(maxsize=0)


def test_event_is_frozen_and_slotted() -> None:
    event = Event("created", "ok", "abc", "server", 1.0, "session.created")
    with pytest.raises(AttributeError):
        event.kind = "login"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


@pytest.mark.anyio
@STORES
async def test_migration_both_ways_is_an_event(tmp_path: Path, store: str) -> None:
    """A token presented to a server-side manager that migrates from its mode, and back:
    a `migrated` event each way, with the mode the session moved to."""
    async with world(tmp_path, "client", store) as w:
        await w.send("POST", "/login")
        w.take()
        token = w.secret
        assert token is not None and token.count(".") == 2
        client_mode = w.manager.mode
        assert isinstance(client_mode, ClientSide) and client_mode.store is not None
        legacy = ClientSide(KeyRing([KEY]), store=None, revocations=client_mode.revocations)
        server = SessionManager(
            ServerSide(client_mode.store, migrate_from=legacy),
            lifetimes=LIFETIMES,
            clock=w.clock,
            events=w.manager.events,
        )
        async with client(make_app(server)) as http:
            response = await http.post("/write", headers={"cookie": f"{COOKIE}={token}"})
            assert response.status_code == 200
            secret = sent_secret(response)
        assert secret and "." not in secret
        w.seen.add(secret)
        assert "migrated" in w.kinds()
        assert [e.mode for e in w.received if e.kind == "migrated"] == ["server"]
        w.received.clear()
        w.secret = secret  # and back to the client-side manager, which reads the registry
        assert (await w.send("POST", "/write")).status_code == 200
        assert "migrated" in w.kinds()
        assert [e.mode for e in w.received if e.kind == "migrated"] == ["client"]
        w.assert_nothing_secret()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_worker_delivers_its_own_events() -> None:
    """A hub subscribed before a fork (gunicorn --preload) delivers in the child too."""
    manager = SessionManager(ServerSide(MemoryStore()))
    got: list[Event] = []
    manager.events.subscribe(got.append)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (3.12+: fork with threads)
        pid = os.fork()
    if pid == 0:  # the child: report what it delivered, then leave without cleanup
        try:
            manager.audit.lifecycle("session.created", "child")
            ok = manager.events.flush(10) and [e.kind for e in got] == ["created"]
            os.write(write, b"ok" if ok else repr(got).encode()[:200])
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b"ok"
    os.waitpid(pid, 0)
    manager.audit.lifecycle("session.created", "parent")
    assert manager.events.flush(10)
    assert [e.kind for e in got] == ["created"]
    manager.events.close()
