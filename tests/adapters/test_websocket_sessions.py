"""WebSockets that honour the session's end, through real sockets: uvicorn in a thread on
a free port, the `websockets` client, Starlette handlers behind `SessionMiddleware`.

What is proven: the handshake sees the session; `commit_websocket` saves a write that the
next HTTP request sees (and merges with a concurrent one), and refuses what needs a new
cookie or token with `SessionWriteRefused`; a revocation (`SessionAdmin.revoke`,
`revoke_user`, `logout_other_devices`), a logout over HTTP or an idle/absolute expiry
closes the session's sockets with code 4401 and its reason, in both modes, on MemoryStore
and SQLite, and from another app instance sharing the SQLite file; other sessions'
sockets stay open. The re-checks are triggered explicitly (`SessionWatcher.check()` run in
the server's loop) with a FakeClock, so the verdicts are deterministic; one test lets the
watcher's own task find the end in real time, with a short interval and a long timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coatcheck import (
    ClientSide,
    Cookie,
    KeyRing,
    Lifetimes,
    ServerSide,
    SessionAdmin,
    SessionManager,
    SessionWriteRefused,
    WriteConflict,
)
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.websocket import (
    CLOSE_CODE,
    ENDED,
    EXPIRED,
    SessionSocketClosed,
    commit_websocket,
)
from coatcheck.exceptions import StoreUnavailable
from coatcheck.stores import MemoryStore, RedisRevocationStore, RedisStore
from coatcheck.stores.memory import MemoryRevocationStore
from coatcheck.stores.sqlite import SQLiteRevocationStore, SQLiteStore
from helpers import FakeClock, await_until, client, wait_until
from servers import free_port, redis_server_fixture  # noqa: F401 - a fixture

pytestmark = pytest.mark.anyio

KEY = b"W" * 32
IDLE = 600.0
ABSOLUTE = 3600.0


def sess(connection: Request | WebSocket) -> Any:
    return connection.scope["session"]


async def login(request: Request) -> Response:
    sess(request).login(request.query_params["user"])
    sess(request)["n"] = 0
    return Response(status_code=204)


async def me(request: Request) -> Response:
    session = sess(request)
    return JSONResponse({"id": session.id, "user": session.user, "data": dict(session)})


async def logout(request: Request) -> Response:
    sess(request).logout()
    return Response(status_code=204)


async def logout_others(request: Request) -> Response:
    sess(request).logout_other_devices()
    return Response(status_code=204)


async def put(request: Request) -> Response:
    sess(request)[request.query_params["key"]] = request.query_params["value"]
    return Response(status_code=204)


async def ws(websocket: WebSocket) -> None:
    """Says what it sees; then carries out the operations the client sends, answering
    each; records the close code it is disconnected with."""
    await websocket.accept()
    session = sess(websocket)
    await websocket.send_json({"user": session.user, "data": dict(session), "new": session.is_new})
    try:
        while True:
            op = await websocket.receive_json()
            session = sess(websocket)
            try:
                if op["op"] == "set":
                    session[op["key"]] = op["value"]
                elif op["op"] == "incr":
                    session["n"] = session["n"] + 1  # read, then written: conflict-checked
                elif op["op"] == "login":
                    session.login("mallory")
                elif op["op"] == "regenerate":
                    session.regenerate()
                elif op["op"] == "logout":
                    session.logout()
                elif op["op"] == "echo":
                    await websocket.send_json({"echo": True})
                    continue
                await commit_websocket(websocket)
                await websocket.send_json({"ok": True})
            except SessionWriteRefused as exc:
                await websocket.send_json({"refused": str(exc)})
            except WriteConflict:
                await websocket.send_json({"conflict": True})
    except WebSocketDisconnect as exc:
        DISCONNECTS.append(exc.code)


async def ws_forgets(websocket: WebSocket) -> None:
    """Writes without committing."""
    await websocket.accept()
    sess(websocket)["lost"] = True
    await websocket.close()


DISCONNECTS: list[int] = []


def build(manager: SessionManager) -> SessionMiddleware:
    inner = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/put", put, methods=["POST"]),
            Route("/logout-others", logout_others, methods=["POST"]),
            Route("/me", me),
            WebSocketRoute("/ws", ws),
            WebSocketRoute("/forgets", ws_forgets),
        ]
    )
    # A re-check interval of an hour: the tests trigger re-checks themselves.
    return SessionMiddleware(inner, manager=manager, websocket_recheck=3600.0)


class Served:
    """`app` served by uvicorn in a thread, on its own event loop."""

    def __init__(self, app: SessionMiddleware) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="websockets-sansio",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "uvicorn to start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())
        self.loop.run_until_complete(self._close_stores())
        self.loop.close()

    def recheck(self) -> int:
        """Run one re-check of the open sockets now, in the server's loop."""
        future = asyncio.run_coroutine_threadsafe(self.app.websockets.check(), self.loop)
        return future.result(30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    async def _close_stores(self) -> None:
        """Close what the mode opened in this loop (Redis connections), and the sync ones."""
        mode = self.app.manager.mode
        async_stores: list[Any] = [mode.async_store]
        stores: list[Any] = [mode.store]
        if isinstance(mode, ClientSide):
            async_stores.append(mode.async_revocations)
            stores.append(mode.revocations)
        for store in async_stores:
            if store is not None:
                await store.aclose()
        for store in stores:
            if store is not None:
                store.close()


def make_manager(
    kind: str, mode: str, clock: FakeClock, tmp_path: Path, redis_url: str = ""
) -> SessionManager:
    store: Any = MemoryStore(clock=clock)
    revocations: Any = MemoryRevocationStore(clock=clock)
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
        revocations = SQLiteRevocationStore(tmp_path / "sessions.db", clock=clock)
    elif kind == "redis":
        prefix = f"ws{tmp_path.name[-24:]}:"  # one namespace per test, shared by its replicas
        store = RedisStore(redis_url, prefix=prefix, timeout=10)
        revocations = RedisRevocationStore(redis_url, prefix=prefix, timeout=10, clock=clock)
    chosen: ServerSide | ClientSide = ServerSide(store=store)
    if mode == "client":
        chosen = ClientSide(KeyRing([KEY]), store=store, revocations=revocations, staleness=0.0)
    return SessionManager(
        chosen,
        transport=Cookie(name="session", secure=False),
        lifetimes=Lifetimes(idle=IDLE, absolute=ABSOLUTE, renewal=None),
        clock=clock,
        log_salt=b"test-salt",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve() -> Iterator[Callable[[SessionManager], Served]]:
    started: list[Served] = []

    def start(manager: SessionManager) -> Served:
        served = Served(build(manager))
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


class Visitor:
    """A browser: its own cookie, HTTP and WebSockets to one or more servers."""

    def __init__(self) -> None:
        self.cookie = ""

    async def post(self, url: str, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            response = await http.post(url + path, headers={"cookie": self.cookie, "origin": url})
        self._keep(response)
        return response

    async def get(self, url: str, path: str) -> Any:
        async with httpx.AsyncClient() as http:
            response = await http.get(url + path, headers={"cookie": self.cookie})
        self._keep(response)
        return response.json()

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair = header.split(";", 1)[0]
            if pair.startswith("session="):
                self.cookie = "" if pair == "session=" else pair

    def socket(self, url: str, path: str = "/ws") -> Any:
        return connect(
            url.replace("http", "ws") + path,
            additional_headers={"cookie": self.cookie},
            origin=url,  # type: ignore[arg-type]
            open_timeout=30,
        )


async def logged_in(url: str, user: str = "alice") -> Visitor:
    visitor = Visitor()
    response = await visitor.post(url, f"/login?user={user}")
    assert response.status_code == 204
    assert visitor.cookie
    return visitor


async def hello(socket: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(socket.recv(), 30))


async def ask(socket: ClientConnection, **op: Any) -> Any:
    await socket.send(json.dumps(op))
    return json.loads(await asyncio.wait_for(socket.recv(), 30))


async def closed_with(socket: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason the server closed `socket` with."""
    with pytest.raises(ConnectionClosed) as raised:
        await asyncio.wait_for(socket.recv(), 30)
    rcvd = raised.value.rcvd
    return (None, None) if rcvd is None else (rcvd.code, rcvd.reason)


BOTH = pytest.mark.parametrize("mode", ["server", "client"])
STORES = pytest.mark.parametrize("kind", ["memory", "sqlite"])


# -- the handshake and writes -----------------------------------------------------------


@BOTH
async def test_handshake_sees_the_session(
    mode: str, clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager("memory", mode, clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        assert await hello(socket) == {"user": "alice", "data": {"n": 0}, "new": False}
    async with Visitor().socket(served.url) as socket:
        assert (await hello(socket))["new"] is True


@STORES
async def test_a_write_is_saved_and_seen_by_the_next_request(
    kind: str, clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager(kind, "server", clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        await hello(socket)
        assert await ask(socket, op="set", key="color", value="blue") == {"ok": True}
        assert (await visitor.get(served.url, "/me"))["data"] == {"n": 0, "color": "blue"}
        # An HTTP request writes another key meanwhile: both survive the next commit.
        await visitor.post(served.url, "/put?key=size&value=L")
        assert await ask(socket, op="set", key="shape", value="round") == {"ok": True}
        assert await ask(socket, op="incr") == {"ok": True}
        assert await ask(socket, op="incr") == {"ok": True}
    data = (await visitor.get(served.url, "/me"))["data"]
    assert data == {"n": 2, "color": "blue", "size": "L", "shape": "round"}


async def test_a_read_then_changed_key_conflicts_as_over_http(
    clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager("memory", "server", clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        await hello(socket)
        assert await ask(socket, op="set", key="x", value="1") == {"ok": True}
        await visitor.post(served.url, "/put?key=n&value=7")  # `n` changes under the socket
        assert await ask(socket, op="incr") == {"conflict": True}
    assert (await visitor.get(served.url, "/me"))["data"]["n"] == "7"


@BOTH
async def test_writes_that_need_a_cookie_are_refused(
    mode: str, clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager("memory", mode, clock, tmp_path))
    visitor = await logged_in(served.url)
    before = await visitor.get(served.url, "/me")
    ops = [{"op": "login"}, {"op": "regenerate"}]
    if mode == "client":
        ops.append({"op": "set", "key": "color", "value": "blue"})
    for op in ops:
        async with visitor.socket(served.url) as socket:
            await hello(socket)
            answer = await ask(socket, **op)
            assert "refused" in answer, (op, answer)
    async with Visitor().socket(served.url) as socket:  # a new session: no cookie to set
        await hello(socket)
        assert "refused" in await ask(socket, op="set", key="a", value="b")
    assert await visitor.get(served.url, "/me") == before  # nothing was saved


async def test_an_uncommitted_write_is_logged_not_silent(
    clock: FakeClock,
    tmp_path: Path,
    serve: Callable[[SessionManager], Served],
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = serve(make_manager("memory", "server", clock, tmp_path))
    visitor = await logged_in(served.url)
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        async with visitor.socket(served.url, "/forgets") as socket:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 30)
        wait_until(lambda: "commit_websocket" in caplog.text, "the warning")
    assert "lost" not in (await visitor.get(served.url, "/me"))["data"]


# -- the session's end closes its sockets -----------------------------------------------


def revoke(manager: SessionManager, how: str, session_id: str) -> None:
    admin = SessionAdmin(manager)
    if how == "revoke":
        assert admin.revoke(session_id)
    else:
        assert admin.revoke_user("alice") >= 1


@BOTH
@STORES
@pytest.mark.parametrize("how", ["revoke", "revoke_user"])
async def test_a_revocation_closes_the_sessions_sockets_only(
    mode: str,
    kind: str,
    how: str,
    clock: FakeClock,
    tmp_path: Path,
    serve: Callable[[SessionManager], Served],
) -> None:
    manager = make_manager(kind, mode, clock, tmp_path)
    served = serve(manager)
    alice, bob = await logged_in(served.url), await logged_in(served.url, "bob")
    session_id = (await alice.get(served.url, "/me"))["id"]
    async with alice.socket(served.url) as a1, alice.socket(served.url) as a2:
        async with bob.socket(served.url) as b:
            for socket in (a1, a2, b):
                await hello(socket)
            assert served.recheck() == 0  # nothing ended yet
            revoke(manager, how, session_id)
            assert served.recheck() == 2
            assert await closed_with(a1) == (CLOSE_CODE, ENDED)
            assert await closed_with(a2) == (CLOSE_CODE, ENDED)
            assert await ask(b, op="echo") == {"echo": True}  # bob's socket stays open
            assert served.recheck() == 0
            assert await ask(b, op="echo") == {"echo": True}
    wait_until(lambda: DISCONNECTS.count(CLOSE_CODE) >= 2, "the handlers to see 4401")


@BOTH
async def test_logout_other_devices_closes_the_other_devices_sockets(
    mode: str, clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager("sqlite", mode, clock, tmp_path))
    phone, laptop = await logged_in(served.url), await logged_in(served.url)
    async with phone.socket(served.url) as on_phone, laptop.socket(served.url) as on_laptop:
        await hello(on_phone)
        await hello(on_laptop)
        assert (await laptop.post(served.url, "/logout-others")).status_code == 204
        assert served.recheck() == 1
        assert await closed_with(on_phone) == (CLOSE_CODE, ENDED)
        assert await ask(on_laptop, op="echo") == {"echo": True}
        assert served.recheck() == 0


@BOTH
@STORES
async def test_a_logout_over_http_closes_the_socket(
    mode: str,
    kind: str,
    clock: FakeClock,
    tmp_path: Path,
    serve: Callable[[SessionManager], Served],
) -> None:
    served = serve(make_manager(kind, mode, clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        await hello(socket)
        assert (await visitor.post(served.url, "/logout")).status_code == 204
        assert served.recheck() == 1
        assert await closed_with(socket) == (CLOSE_CODE, ENDED)


async def test_a_logout_from_the_socket_itself_closes_it(
    clock: FakeClock, tmp_path: Path, serve: Callable[[SessionManager], Served]
) -> None:
    served = serve(make_manager("memory", "server", clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        await hello(socket)
        assert await ask(socket, op="logout") == {"ok": True}
        assert served.recheck() == 1
        assert await closed_with(socket) == (CLOSE_CODE, ENDED)
    assert (await visitor.get(served.url, "/me"))["user"] is None


@BOTH
@STORES
@pytest.mark.parametrize("deadline", ["idle", "absolute"])
async def test_expiry_closes_the_socket_which_is_not_activity(
    mode: str,
    kind: str,
    deadline: str,
    clock: FakeClock,
    tmp_path: Path,
    serve: Callable[[SessionManager], Served],
) -> None:
    served = serve(make_manager(kind, mode, clock, tmp_path))
    visitor = await logged_in(served.url)
    async with visitor.socket(served.url) as socket:
        await hello(socket)
        if deadline == "absolute":
            # Kept busy over HTTP (server side that moves the record's idle deadline), it
            # still ends at its absolute deadline.
            for _ in range(int(ABSOLUTE // (IDLE / 2)) - 1):
                clock.advance(IDLE / 2)
                await visitor.post(served.url, "/put?key=k&value=v")
                assert await ask(socket, op="echo") == {"echo": True}
                assert served.recheck() == (1 if mode == "client" and _ >= 1 else 0)
                if mode == "client" and _ >= 1:
                    # Client side the socket holds the handshake's token, whose idle
                    # deadline no later request moves.
                    assert await closed_with(socket) == (CLOSE_CODE, EXPIRED)
                    return
            clock.advance(IDLE / 2 + 1)
        else:
            for _ in range(3):  # messages on the socket do not keep the session alive
                assert await ask(socket, op="echo") == {"echo": True}
                clock.advance(IDLE / 3)
            clock.advance(1)
        assert served.recheck() == 1
        code, reason = await closed_with(socket)
        assert code == CLOSE_CODE
        assert reason == EXPIRED


@BOTH
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.service)])
async def test_a_revocation_on_another_replica_closes_the_socket(
    mode: str,
    kind: str,
    clock: FakeClock,
    tmp_path: Path,
    serve: Callable[[SessionManager], Served],
    request: pytest.FixtureRequest,
) -> None:
    """Two app instances on one SQLite file (or one Redis): revoked through one (an HTTP
    logout, then an admin revocation), the socket open on the other closes."""
    url = request.getfixturevalue("redis_server").url if kind == "redis" else ""
    here = serve(make_manager(kind, mode, clock, tmp_path, url))
    there = serve(make_manager(kind, mode, clock, tmp_path, url))
    alice, bob = await logged_in(here.url), await logged_in(here.url, "bob")
    async with alice.socket(there.url) as socket, bob.socket(there.url) as other:
        assert (await hello(socket))["user"] == "alice"
        await hello(other)
        assert there.recheck() == 0
        assert (await alice.post(here.url, "/logout")).status_code == 204
        assert there.recheck() == 1
        assert await closed_with(socket) == (CLOSE_CODE, ENDED)
        bob_id = (await bob.get(here.url, "/me"))["id"]
        assert await ask(other, op="echo") == {"echo": True}
        assert SessionAdmin(here.app.manager).revoke(bob_id)
        assert there.recheck() == 1
        assert await closed_with(other) == (CLOSE_CODE, ENDED)


@BOTH
async def test_the_watcher_closes_on_its_own_within_its_interval(mode: str, tmp_path: Path) -> None:
    """Real time: the watcher's task, not a test, finds the revocation (interval 0.05 s;
    the timeout is generous, no timing is asserted)."""
    manager = make_manager("sqlite", mode, FakeClock(), tmp_path)
    app = build(manager)
    app.websockets.interval = 0.05
    served = Served(app)
    try:
        visitor = await logged_in(served.url)
        session_id = (await visitor.get(served.url, "/me"))["id"]
        async with visitor.socket(served.url) as socket:
            await hello(socket)
            assert SessionAdmin(manager).revoke(session_id)
            assert await closed_with(socket) == (CLOSE_CODE, ENDED)
        wait_until(lambda: app.websockets.open_sockets == 0, "the socket to be forgotten")
    finally:
        served.stop()


# -- at the ASGI level: a store outage, and a send after the close -----------------------


async def test_a_store_outage_closes_nothing_and_a_send_after_the_close_raises(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager("memory", "server", clock, tmp_path)
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["session"].login("alice")
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        seen.append(await receive())  # until the watcher closes the socket
        try:
            await send({"type": "websocket.send", "text": "late"})
        except SessionSocketClosed:
            seen.append("send refused")

    middleware = SessionMiddleware(app, manager=manager, websocket_recheck=3600.0)
    async with client(middleware) as http:
        await http.post("/login", headers={"origin": "https://testserver"})
        cookie = f"session={http.cookies['session']}"
    never = asyncio.Event()
    incoming = [{"type": "websocket.connect"}]
    sent: list[Any] = []

    async def receive() -> Any:
        if incoming:
            return incoming.pop(0)
        await never.wait()  # the client says nothing more
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
        "subprotocols": [],
        "client": ("192.0.2.1", 1234),
        "server": ("testserver", 443),
    }
    task = asyncio.ensure_future(middleware(scope, receive, send))
    watcher = middleware.websockets
    await await_until(lambda: watcher.open_sockets == 1, "the socket to be watched")

    class Down:
        async def load(self, key: str) -> Any:
            raise StoreUnavailable("down")

    with monkeypatch.context() as patched:
        # The mode's async store swapped for one that is down (compiled, a store's own
        # methods cannot be patched; the mode's attribute can).
        patched.setattr(manager.mode, "_async", Down())
        SessionAdmin(manager).revoke_user("alice")
        assert await watcher.check() == 0  # the store is down: nothing is closed
    assert sent == [{"type": "websocket.accept"}]
    assert await watcher.check() == 1
    await asyncio.wait_for(task, 30)
    assert sent[-1] == {"type": "websocket.close", "code": CLOSE_CODE, "reason": ENDED}
    assert seen == [
        {"type": "websocket.disconnect", "code": CLOSE_CODE, "reason": ENDED},
        "send refused",
    ]
    assert watcher.open_sockets == 0 and watcher.closed == 1
