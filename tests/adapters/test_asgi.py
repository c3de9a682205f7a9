"""`SessionMiddleware` around a Starlette app, driven by a real HTTP client (httpx over
`ASGITransport`, `https://testserver` so that `Secure` cookies flow as in a browser)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from coatcheck import Lifetimes, SessionAdmin, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.ids import handle_of
from coatcheck.session import Session
from coatcheck.stores import AsyncSQLiteStore, MemoryStore, SQLiteStore
from helpers import (
    COOKIE,
    CountingStore,
    DownStore,
    FakeClock,
    client,
    manager_for,
    sent_secret,
    session_set_cookie,
)

pytestmark = pytest.mark.anyio

COOKIE_RE = re.compile(rf"{COOKIE}=[A-Za-z0-9_-]{{65}}; Path=/; HttpOnly; Secure; SameSite=Lax")


def sess(connection: HTTPConnection) -> Session:
    session = connection.scope["session"]
    assert isinstance(session, Session)
    return session


async def spin(request: Request) -> None:
    """Yield to the event loop a few times so concurrent requests interleave."""
    for _ in range(int(request.query_params.get("spin", "0"))):
        await anyio.sleep(0)


async def dump(request: Request) -> Response:
    session = sess(request)
    return JSONResponse({"data": dict(session), "user": session.user, "new": session.is_new})


async def get(request: Request) -> Response:
    return JSONResponse({"value": sess(request).get(request.query_params["key"])})


async def static(request: Request) -> Response:
    return PlainTextResponse("static")


async def set_value(request: Request) -> Response:
    session = sess(request)
    await spin(request)
    session[request.query_params["key"]] = request.query_params.get("value", "")
    await spin(request)
    return PlainTextResponse("ok")


async def lifecycle(request: Request) -> Response:
    session = sess(request)
    action = request.path_params["action"]
    if action == "login":
        session.login(request.query_params["user"])
    elif action == "logout":
        session.logout()
    elif action == "regenerate":
        session.regenerate()
    elif action == "persistent":
        session.set_persistent()
    elif action == "logout-others":
        session.logout_other_devices()
    elif action == "switch-user":
        session.logout()
        session.login(request.query_params["user"])
    return PlainTextResponse(action)


async def csrf_token(request: Request) -> Response:
    return PlainTextResponse(sess(request).csrf_token)


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream")


async def cached(request: Request) -> Response:
    sess(request)["seen"] = True
    return PlainTextResponse("x", headers={"cache-control": "public, max-age=600"})


CHUNKS = [b"first,", b"second,", b"", b"third"]


async def stream(request: Request) -> Response:
    if request.query_params.get("write"):
        sess(request)["streamed"] = True

    async def body() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    return StreamingResponse(body(), media_type="text/plain")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    session = sess(websocket)
    await websocket.send_json({"data": dict(session), "new": session.is_new})
    await websocket.close()


ROUTES = [
    Route("/", dump),
    Route("/get", get),
    Route("/static", static),
    Route("/set", set_value, methods=["POST"]),
    Route("/csrf", csrf_token),
    Route("/echo", echo, methods=["POST"]),
    Route("/cached", cached),
    Route("/stream", stream),
    Route("/{action}", lifecycle, methods=["POST"]),
    WebSocketRoute("/ws", ws),
]


def make_app(manager: SessionManager, *, fail_open: bool = False) -> SessionMiddleware:
    return SessionMiddleware(Starlette(routes=ROUTES), manager=manager, fail_open=fail_open)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> CountingStore:
    return CountingStore(clock=clock)


@pytest.fixture
def manager(store: CountingStore, clock: FakeClock) -> SessionManager:
    return manager_for(store, clock)


@pytest.fixture
async def http(manager: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    async with client(make_app(manager)) as http:
        yield http


async def login(http: httpx.AsyncClient, user: str = "alice") -> str:
    response = await http.post("/login", params={"user": user})
    assert response.status_code == 200
    secret = sent_secret(response)
    assert secret
    return secret


def security_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "coatcheck.security"]


# -- cookie and cache headers ------------------------------------------------------------


async def test_cookie_attributes_are_exact(http: httpx.AsyncClient) -> None:
    response = await http.post("/set", params={"key": "a", "value": "1"})
    header = session_set_cookie(response)
    assert header is not None and COOKIE_RE.fullmatch(header), header
    assert "Max-Age" not in header and "Domain" not in header and "Expires" not in header
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Cookie"
    assert (await http.get("/get", params={"key": "a"})).json() == {"value": "1"}


async def test_persistent_cookie_has_max_age(
    http: httpx.AsyncClient, manager: SessionManager
) -> None:
    await login(http)
    response = await http.post("/persistent")
    header = session_set_cookie(response)
    assert header is not None
    absolute = int(manager.lifetimes.absolute)
    assert header == (
        f"{COOKIE}={sent_secret(response)}; Path=/; Max-Age={absolute}; "
        "HttpOnly; Secure; SameSite=Lax"
    )


async def test_vary_only_when_read_and_no_store_only_when_cookie_set(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/static")
    assert "vary" not in response.headers and "cache-control" not in response.headers
    response = await http.get("/get", params={"key": "x"})
    assert response.headers["vary"] == "Cookie"
    assert "cache-control" not in response.headers
    assert session_set_cookie(response) is None  # read only: nothing to save
    response = await http.get("/cached")
    assert session_set_cookie(response) is not None
    assert response.headers.get_list("cache-control") == ["no-store"]  # app's value replaced
    response = await http.get("/static")
    assert "vary" not in response.headers and "cache-control" not in response.headers


async def test_nothing_written_when_nothing_changed(
    http: httpx.AsyncClient, store: CountingStore, clock: FakeClock
) -> None:
    await http.post("/set", params={"key": "a", "value": "1"})
    saves, rotations = store.saves, store.rotations
    for _ in range(5):
        clock.advance(5)
        response = await http.get("/get", params={"key": "a"})
        assert response.json() == {"value": "1"}
        assert session_set_cookie(response) is None
        response = await http.get("/static")
        assert session_set_cookie(response) is None
    assert (store.saves, store.rotations) == (saves, rotations)


async def test_last_seen_refreshed_once_per_touch_interval(
    store: CountingStore, clock: FakeClock
) -> None:
    lifetimes = Lifetimes(renewal=None, touch_interval=60)
    async with client(make_app(manager_for(store, clock, lifetimes=lifetimes))) as http:
        await http.post("/set", params={"key": "a", "value": "1"})
        saves = store.saves
        for step in (20, 20, 19):  # 59 s after the write
            clock.advance(step)
            await http.get("/static")
        assert store.saves == saves
        clock.advance(1)
        response = await http.get("/static")
        assert store.saves == saves + 1
        assert session_set_cookie(response) is None  # a refresh does not resend the ID
        clock.advance(30)
        await http.get("/static")
        assert store.saves == saves + 1


# -- lifecycle -------------------------------------------------------------------------


async def test_login_rotates_and_old_id_is_dead_at_once(
    http: httpx.AsyncClient, manager: SessionManager
) -> None:
    await http.post("/set", params={"key": "cart", "value": "apple"})
    before = http.cookies[COOKIE]
    after = await login(http)
    assert after != before and http.cookies[COOKIE] == after
    body = (await http.get("/")).json()
    assert body == {"data": {"cart": "apple"}, "user": "alice", "new": False}
    async with client(make_app(manager)) as attacker:
        response = await attacker.get("/", headers={"cookie": f"{COOKIE}={before}"})
        assert response.json()["new"] is True and response.json()["user"] is None
        assert sent_secret(response) == ""  # the dead ID is cleared


async def test_regenerate_and_grace_window(
    http: httpx.AsyncClient, manager: SessionManager, clock: FakeClock
) -> None:
    await http.post("/set", params={"key": "k", "value": "v"})
    before = http.cookies[COOKIE]
    response = await http.post("/regenerate")
    after = sent_secret(response)
    assert after and after != before
    async with client(make_app(manager)) as straggler:
        old = {"cookie": f"{COOKIE}={before}"}
        clock.advance(manager.lifetimes.grace - 1)
        response = await straggler.post("/set", params={"key": "late", "value": "1"}, headers=old)
        assert response.status_code == 200 and session_set_cookie(response) is None
        assert (await http.get("/")).json()["data"] == {"k": "v", "late": "1"}
        clock.advance(1)  # (the old ID past its window is a reuse: docs/policies.md)
        response = await straggler.get("/", headers=old)
        assert response.json()["new"] is True


async def test_renewal_rotates_after_interval_and_old_id_expires_after_grace(
    store: CountingStore, clock: FakeClock
) -> None:
    lifetimes = Lifetimes(renewal=600, grace=5, touch_interval=60)
    manager = manager_for(store, clock, lifetimes=lifetimes)
    async with client(make_app(manager)) as http, client(make_app(manager)) as other:
        await login(http)
        first = http.cookies[COOKIE]
        clock.advance(599)
        assert session_set_cookie(await http.get("/static")) is None
        clock.advance(1)
        response = await http.get("/static")  # renewal needs no session access
        second = sent_secret(response)
        assert second and second != first
        assert response.headers["cache-control"] == "no-store"
        old = {"cookie": f"{COOKIE}={first}"}
        clock.advance(4)
        assert (await other.get("/", headers=old)).json()["user"] == "alice"
        clock.advance(1)
        assert (await http.get("/")).json()["user"] == "alice"
        # (the old ID past its window is a reuse, which ends the session: docs/policies.md)
        assert (await other.get("/", headers=old)).json()["user"] is None


@pytest.mark.parametrize(
    ("advance", "reason"),
    [(30 * 60, "idle"), (12 * 60 * 60, "absolute")],
)
async def test_idle_and_absolute_timeouts(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, advance: float, reason: str
) -> None:
    store = MemoryStore(clock=FakeClock())  # keeps the record: the manager must refuse it
    manager = manager_for(store, clock)
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    async with client(make_app(manager)) as http:
        await login(http)
        if reason == "absolute":  # keep it busy so only the absolute deadline applies
            for _ in range(int(advance // 600) - 1):
                clock.advance(600)
                assert (await http.get("/")).json()["user"] == "alice"
            clock.advance(advance - clock.now + 1_700_000_000.0)
        else:
            clock.advance(advance)
        response = await http.get("/")
        assert response.json() == {"data": {}, "user": None, "new": True}
        assert sent_secret(response) == ""
        assert any(f"reason={reason}" in m for m in security_messages(caplog))


async def test_logout_clears_cookie_and_record(
    http: httpx.AsyncClient, store: CountingStore
) -> None:
    secret = await login(http)
    assert store.load(handle_of(secret)) is not None
    response = await http.post("/logout")
    header = session_set_cookie(response)
    assert header is not None and header.startswith(f"{COOKIE}=; Path=/; Max-Age=0;")
    assert store.load(handle_of(secret)) is None
    assert COOKIE not in http.cookies
    assert (await http.get("/")).json()["user"] is None


async def test_switch_user_in_one_request(http: httpx.AsyncClient, store: CountingStore) -> None:
    await http.post("/set", params={"key": "cart", "value": "apple"})
    alice = await login(http, "alice")
    response = await http.post("/switch-user", params={"user": "bob"})
    bob = sent_secret(response)
    assert bob and bob != alice
    assert store.load(handle_of(alice)) is None
    assert (await http.get("/")).json() == {"data": {}, "user": "bob", "new": False}


async def test_list_revoke_and_logout_other_devices(
    manager: SessionManager, clock: FakeClock
) -> None:
    admin = SessionAdmin(manager)
    app = make_app(manager)
    async with client(app) as laptop, client(app) as phone, client(app) as tablet:
        ids = {}
        for name, device in (("laptop", laptop), ("phone", phone), ("tablet", tablet)):
            ids[name] = handle_of(await login(device))
            clock.advance(1)
        assert [i.id for i in admin.sessions("alice")] == [
            ids["tablet"],
            ids["phone"],
            ids["laptop"],
        ]
        admin.revoke(ids["tablet"])
        assert (await tablet.get("/")).json()["user"] is None
        await laptop.post("/logout-others")
        assert (await phone.get("/")).json()["user"] is None
        assert (await laptop.get("/")).json()["user"] == "alice"
        assert [i.id for i in admin.sessions("alice")] == [ids["laptop"]]


# -- concurrency -----------------------------------------------------------------------


def _stores(tmp_path: Path, clock: FakeClock) -> dict[str, Any]:
    return {
        "memory": CountingStore(clock=clock),
        "sqlite": AsyncSQLiteStore(tmp_path / "sessions.db", clock=clock),
    }


def _version(store: Any, key: str) -> int:
    sync = store.sync if isinstance(store, AsyncSQLiteStore) else store
    assert isinstance(sync, (MemoryStore, SQLiteStore))
    record = sync.load(key)
    assert record is not None
    return record.version


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("same_key", [False, True], ids=["distinct-keys", "same-key"])
async def test_concurrent_writes_lose_nothing(
    tmp_path: Path, clock: FakeClock, backend: str, same_key: bool
) -> None:
    store = _stores(tmp_path, clock)[backend]
    manager = manager_for(store, clock)
    n = 50
    async with client(make_app(manager)) as http:
        secret = await login(http)

        async def write(i: int) -> httpx.Response:
            key = "same" if same_key else f"k{i}"
            return await http.post("/set", params={"key": key, "value": str(i), "spin": "3"})

        responses = await asyncio.gather(*(write(i) for i in range(n)))
        assert [r.status_code for r in responses] == [200] * n
        assert all(session_set_cookie(r) is None for r in responses)
        data = (await http.get("/")).json()["data"]
    if same_key:
        assert data["same"] in {str(i) for i in range(n)}
    else:
        assert data == {f"k{i}": str(i) for i in range(n)}
    # every request wrote exactly once, on top of the login write
    assert _version(store, handle_of(secret)) == 1 + n
    if isinstance(store, CountingStore):
        assert store.conflicts > 0  # the requests really raced


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_concurrent_requests_racing_a_renewal(
    tmp_path: Path, clock: FakeClock, backend: str
) -> None:
    # Every request finds the ID due for renewal; one rotates it, the others land on the
    # new record through the alias and send no cookie, so the browser keeps a live ID.
    store = _stores(tmp_path, clock)[backend]
    lifetimes = Lifetimes(renewal=600, grace=10, touch_interval=60)
    manager = manager_for(store, clock, lifetimes=lifetimes)
    n = 30
    async with client(make_app(manager)) as http:
        first = await login(http)
        clock.advance(601)
        responses = await asyncio.gather(
            *(
                http.post("/set", params={"key": f"k{i}", "value": str(i), "spin": "3"})
                for i in range(n)
            )
        )
        assert [r.status_code for r in responses] == [200] * n
        issued = [s for r in responses if (s := sent_secret(r)) is not None]
        assert len(issued) == 1 and issued[0] not in ("", first)
        assert http.cookies[COOKIE] == issued[0]
        body = (await http.get("/")).json()
        assert body["user"] == "alice"
        assert body["data"] == {f"k{i}": str(i) for i in range(n)}
        clock.advance(10)  # grace over: only the new ID works
        assert (await http.get("/")).json()["user"] == "alice"
        async with client(make_app(manager)) as old:  # (a reuse: docs/policies.md)
            stale = await old.get("/", headers={"cookie": f"{COOKIE}={first}"})
            assert stale.json()["user"] is None


# -- hostile cookies -------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes]] = [
    ("garbage", f"{COOKIE}=not!a!session!id;".encode()),
    ("tampered", f"{COOKIE}=Zq9xZq9xZq9xZq9xZq9xZq9xZq9xZq9xZq9xZq9xZq9".encode()),
    ("oversized", f"{COOKIE}={'Zq' * 8000}".encode()),
    ("non-ascii", f"{COOKIE}=ŝéšŝïøñ-ŝéšŝïøñ".encode()),
    ("latin-1", f"{COOKIE}=\xff\xfe\xfd-sessionvalue".encode("latin-1")),
    ("duplicate", f"{COOKIE}=dup-one-xyz; {COOKIE}=dup-two-xyz".encode()),
    ("quoted-garbage", f'{COOKIE}="quoted-xyz"'.encode()),
    ("control-chars", f"{COOKIE}=ctl\x01\x02\x7fctl".encode("latin-1")),
]


@pytest.mark.parametrize(("name", "header"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_hostile_cookie_gives_fresh_session(
    manager: SessionManager,
    caplog: pytest.LogCaptureFixture,
    name: str,
    header: bytes,
    method: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = header.decode("latin-1").split("=", 1)[1]
    async with client(make_app(manager)) as http:
        await login(http)  # a real session exists in the store meanwhile
        async with client(make_app(manager)) as hostile:
            path = "/" if method == "GET" else "/set?key=a&value=b"
            response = await hostile.request(method, path, headers={b"cookie": header})
    assert response.status_code == 200
    if method == "GET":
        assert response.json() == {"data": {}, "user": None, "new": True}
        assert sent_secret(response) == ""
    else:
        new = sent_secret(response)
        assert new and new not in value
    messages = security_messages(caplog)
    assert messages
    for message in [r.getMessage() for r in caplog.records]:
        for fragment in (value, *re.findall(r"[^\s;=\"]{6,}", value)):
            assert fragment not in message, (fragment, message)


async def test_first_of_duplicate_cookies_wins(http: httpx.AsyncClient) -> None:
    # `Cookie.read` takes the first, as browsers send the most specific path first.
    secret = await login(http)
    both = {"cookie": f"{COOKIE}={secret}; {COOKIE}=garbage-xyz"}
    assert (await http.get("/", headers=both)).json()["user"] == "alice"
    reverse = {"cookie": f"{COOKIE}=garbage-xyz; {COOKIE}={secret}"}
    assert (await http.get("/", headers=reverse)).json()["user"] is None


@pytest.mark.parametrize("position", [0, 21, 42])
async def test_tampered_real_id_gives_fresh_session(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, position: int
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = await login(http)
    flipped = "B" if secret[position] == "A" else "A"
    tampered = secret[:position] + flipped + secret[position + 1 :]
    response = await http.get("/", headers={"cookie": f"{COOKIE}={tampered}"})
    assert response.status_code == 200 and response.json()["user"] is None
    assert security_messages(caplog)
    for record in caplog.records:
        assert tampered not in record.getMessage() and secret not in record.getMessage()
        assert tampered[:10] not in record.getMessage()


@settings(max_examples=200, deadline=None)
@given(
    cookie=st.binary(max_size=300),
    method=st.sampled_from(["GET", "POST"]),
    origin=st.none() | st.binary(max_size=40),
)
def test_any_cookie_header_bytes_never_give_a_500(
    cookie: bytes, method: str, origin: bytes | None
) -> None:
    clock = FakeClock()
    app = make_app(manager_for(MemoryStore(clock=clock), clock))
    headers = [(b"host", b"testserver"), (b"cookie", cookie)]
    if origin is not None:
        headers.append((b"origin", origin))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": "/set" if method == "POST" else "/",
        "raw_path": b"/",
        "query_string": b"key=a&value=b",
        "headers": headers,
        "client": ("192.0.2.1", 1),
        "server": ("testserver", 443),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] in (200, 403)


def make_app_from(http: httpx.AsyncClient) -> Any:
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


# -- CSRF ------------------------------------------------------------------------------

CROSS = [
    ("other-origin", {"origin": "https://evil.example"}),
    ("other-port", {"origin": "https://testserver:8443"}),
    ("http-origin-to-https", {"origin": "http://testserver"}),  # another scheme, same host
    ("http-port-origin-to-https", {"origin": "https://testserver:80"}),
    ("null-origin", {"origin": "null"}),
    ("cross-site", {"sec-fetch-site": "cross-site"}),
    ("same-site", {"sec-fetch-site": "same-site"}),
    ("cross-site-beats-origin", {"sec-fetch-site": "cross-site", "origin": "https://testserver"}),
]
SAME = [
    ("same-origin", {"origin": "https://testserver"}),
    ("host-with-default-port", {"host": "testserver:443", "origin": "https://testserver"}),
    ("origin-with-default-port", {"origin": "https://testserver:443"}),
    ("fetch-same-origin", {"sec-fetch-site": "same-origin"}),
    ("fetch-none", {"sec-fetch-site": "none"}),
    ("no-origin", {}),
]


@pytest.mark.parametrize(("name", "headers"), CROSS, ids=[c[0] for c in CROSS])
async def test_csrf_blocks_cross_origin_post(
    http: httpx.AsyncClient,
    store: CountingStore,
    caplog: pytest.LogCaptureFixture,
    name: str,
    headers: dict[str, str],
) -> None:
    await login(http)
    saves = store.saves
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    response = await http.post("/set", params={"key": "a", "value": "1"}, headers=headers)
    assert response.status_code == 403
    assert session_set_cookie(response) is None
    assert store.saves == saves
    assert any("csrf" in m for m in security_messages(caplog))
    assert (await http.get("/get", params={"key": "a"})).json() == {"value": None}


@pytest.mark.parametrize(("name", "headers"), SAME, ids=[s[0] for s in SAME])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_csrf_allows_same_origin(
    http: httpx.AsyncClient, name: str, headers: dict[str, str], method: str
) -> None:
    await login(http)
    response = await http.request(method, "/echo", headers=headers, content=b"hi")
    assert response.status_code == (200 if method == "POST" else 405)


async def test_csrf_safe_methods_are_not_checked(http: httpx.AsyncClient) -> None:
    response = await http.get("/", headers={"origin": "https://evil.example"})
    assert response.status_code == 200


async def test_csrf_blocks_cross_origin_post_without_a_session(manager: SessionManager) -> None:
    async with client(make_app(manager)) as http:  # login CSRF: no cookie at all
        response = await http.post(
            "/login?user=mallory", headers={"origin": "https://evil.example"}
        )
        assert response.status_code == 403


async def test_csrf_token_header_lets_cross_origin_post_through(http: httpx.AsyncClient) -> None:
    await login(http)
    token = (await http.get("/csrf")).text
    cross = {"origin": "https://partner.example"}
    wrong = await http.post("/echo", content=b"x", headers={**cross, "x-csrf-token": "nope"})
    assert wrong.status_code == 403
    right = await http.post("/echo", content=b"x", headers={**cross, "x-csrf-token": token})
    assert right.status_code == 200 and right.content == b"x"


@pytest.mark.parametrize("chunked", [False, True])
async def test_csrf_token_form_field_passes_and_app_gets_full_body(
    http: httpx.AsyncClient, chunked: bool
) -> None:
    await login(http)
    token = (await http.get("/csrf")).text
    body = f"name=%C3%A9l%C3%A8ve&csrf_token={token}&note={'x' * 70_000}".encode()
    headers = {
        "origin": "https://evil.example",
        "content-type": "application/x-www-form-urlencoded",
    }

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    content: Any = pieces() if chunked else body
    response = await http.post("/echo", content=content, headers=headers)
    assert response.status_code == 200
    assert response.content == body


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("wrong-token", b"csrf_token=wrong&a=1"),
        ("no-token", b"a=1"),
        ("too-many-fields", b"&".join(b"f%d=1" % i for i in range(2000)) + b"&csrf_token=x"),
        ("not-utf8", b"csrf_token=%ff%fe&a=\xff"),
        ("too-large", b"a=" + b"x" * (1024 * 1024 + 10)),
    ],
)
async def test_csrf_bad_form_is_403(http: httpx.AsyncClient, name: str, body: bytes) -> None:
    await login(http)
    headers = {
        "sec-fetch-site": "cross-site",
        "content-type": "application/x-www-form-urlencoded",
    }
    response = await http.post("/echo", content=body, headers=headers)
    assert response.status_code == 403


async def test_trusted_origin_may_post(store: CountingStore, clock: FakeClock) -> None:
    manager = manager_for(store, clock, trusted_origins=["https://partner.example/"])
    async with client(make_app(manager)) as http:
        await login(http)
        ok = await http.post("/echo", content=b"x", headers={"origin": "https://partner.example"})
        assert ok.status_code == 200


# -- failures --------------------------------------------------------------------------


async def test_store_down_gives_503(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    manager = manager_for(DownStore(), clock)
    caplog.set_level(logging.ERROR)
    async with client(make_app(manager)) as http:
        cookie = {"cookie": f"{COOKIE}={'A' * 65}"}
        response = await http.get("/", headers=cookie)
        assert response.status_code == 503
        assert response.headers["cache-control"] == "no-store"
        assert session_set_cookie(response) is None


async def test_store_down_fail_open_serves_anonymous_session(clock: FakeClock) -> None:
    manager = manager_for(DownStore(), clock)
    async with client(make_app(manager, fail_open=True)) as http:
        cookie = {"cookie": f"{COOKIE}={'A' * 65}"}
        response = await http.get("/", headers=cookie)
        assert response.status_code == 200
        assert response.json() == {"data": {}, "user": None, "new": True}
        response = await http.post("/set?key=a&value=1", headers=cookie)
        assert response.status_code == 200
        assert session_set_cookie(response) is None  # nothing saved, nothing issued


async def test_store_failing_on_write_gives_503(clock: FakeClock) -> None:
    manager = manager_for(DownStore(reads_work=True), clock)
    async with client(make_app(manager)) as http:
        response = await http.post("/set", params={"key": "a", "value": "1"})
        assert response.status_code == 503
        assert session_set_cookie(response) is None
        response = await http.get("/static")  # nothing to write: served normally
        assert response.status_code == 200


# -- pass-through ----------------------------------------------------------------------

Message = dict[str, Any]


def recording(app: SessionMiddleware, sent: list[Message]) -> Callable[..., Awaitable[None]]:
    async def outer(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: Any) -> None:
            sent.append(dict(message))
            await send(message)

        await app(scope, receive, record)

    return outer


@pytest.mark.parametrize("write", [False, True])
async def test_streaming_response_passes_through(manager: SessionManager, write: bool) -> None:
    sent: list[Message] = []
    async with client(recording(make_app(manager), sent)) as http:
        response = await http.get("/stream", params={"write": "1"} if write else {})
        assert response.status_code == 200
        assert response.content == b"".join(CHUNKS)
        assert (session_set_cookie(response) is not None) is write
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    # one message per chunk (empty ones included) plus the final empty one: not buffered
    assert [m.get("body", b"") for m in bodies] == [*CHUNKS, b""]
    assert [m.get("more_body", False) for m in bodies] == [True] * len(CHUNKS) + [False]


async def test_other_scopes_pass_through(manager: SessionManager) -> None:
    seen: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    middleware = SessionMiddleware(app, manager=manager)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing to send")

    await middleware({"type": "lifespan"}, receive, send)
    assert seen == [{"type": "lifespan"}]


async def websocket_exchange(
    app: SessionMiddleware, cookie: str | None, **extra: str
) -> list[Message]:
    """Open a WebSocket to `/ws` at the ASGI level (httpx speaks no WebSocket)."""
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": headers,
        "subprotocols": [],
        "client": ("192.0.2.1", 1234),
        "server": ("testserver", 443),
    }
    incoming = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


async def test_websocket_scope_gets_a_session(http: httpx.AsyncClient) -> None:
    app = make_app_from(http)
    await http.post("/set", params={"key": "k", "value": "v"})
    secret = http.cookies[COOKIE]
    sent = await websocket_exchange(app, f"{COOKIE}={secret}")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(sent[1]["text"]) == {"data": {"k": "v"}, "new": False}
    sent = await websocket_exchange(app, None)
    assert json.loads(sent[1]["text"]) == {"data": {}, "new": True}


async def test_websocket_with_store_down_is_closed(clock: FakeClock) -> None:
    app = make_app(manager_for(DownStore(), clock), fail_open=True)
    sent = await websocket_exchange(app, f"{COOKIE}={'A' * 65}")
    assert sent == [{"type": "websocket.close", "code": 1011}]


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        ({"origin": "https://testserver"}, True),
        ({"origin": "https://testserver", "sec_fetch_site": "same-origin"}, True),
        ({}, True),  # no Origin: not a browser, which cannot be made to send our cookie
        ({"origin": "https://evil.example"}, False),
        ({"origin": "https://evil.example", "sec_fetch_site": "cross-site"}, False),
        ({"origin": "null"}, False),
        ({"origin": "http://testserver"}, False),  # a wss:// socket from an http:// page
    ],
    ids=[
        "same-origin",
        "fetch-same-origin",
        "no-origin",
        "cross-origin",
        "cross-site",
        "null",
        "http-origin",
    ],
)
async def test_websocket_handshake_origin_is_checked(
    http: httpx.AsyncClient, headers: dict[str, str], accepted: bool
) -> None:
    # Cross-site WebSocket hijacking: a browser opens the socket with the victim's cookie.
    await login(http)
    sent = await websocket_exchange(
        make_app_from(http), f"{COOKIE}={http.cookies[COOKIE]}", **headers
    )
    if accepted:
        assert sent[0]["type"] == "websocket.accept"
        assert json.loads(sent[1]["text"])["new"] is False
    else:
        assert sent == [{"type": "websocket.close", "code": 1008}]
