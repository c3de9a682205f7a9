"""Revocation nothing can dodge: one regression test per attack of issue 10, through real
HTTP (the ASGI middleware under httpx), with an injected clock and deterministic
interleavings: a request parked on an `asyncio.Event` after its session was loaded, while
other requests and admin calls run to completion, then released to commit.

The invariants they illustrate are tested as a model in test_invariants.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coatcheck import (
    ClientSide,
    ConfigurationError,
    KeyRing,
    Lifetimes,
    ServerSide,
    Session,
    SessionAdmin,
    SessionManager,
)
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.stores import MemoryRevocationStore, MemoryStore
from helpers import COOKIE, FakeClock, client, sent_secret

pytestmark = pytest.mark.anyio

KEY = b"k" * 32
LIFETIMES = Lifetimes(idle=1800, absolute=12 * 3600, renewal=900, grace=10, touch_interval=60)


# -- the app: every lifecycle step, and a gate to park a request after its session loaded --


@dataclass
class Gates:
    """`/hold?gate=NAME&action=...` signals `entered[NAME]` once its session is loaded,
    then waits for `release[NAME]` before it acts and the middleware commits."""

    entered: dict[str, asyncio.Event] = field(default_factory=dict)
    release: dict[str, asyncio.Event] = field(default_factory=dict)

    def add(self, name: str) -> None:
        self.entered[name], self.release[name] = asyncio.Event(), asyncio.Event()


def act(session: Session, action: str, params: Any) -> None:
    if action == "write":
        session[params.get("key", "k")] = params.get("value", "v")
    elif action == "login":
        session.login(params["user"])
    elif action == "logout":
        session.logout()
    elif action == "regenerate":
        session.regenerate()
    elif action == "logout-others":
        session.logout_other_devices()


def make_app(manager: SessionManager, gates: Gates) -> SessionMiddleware:
    async def do(request: Request) -> Response:
        act(request.scope["session"], request.path_params["action"], request.query_params)
        return PlainTextResponse("ok")

    async def hold(request: Request) -> Response:
        name = request.query_params["gate"]
        gates.entered[name].set()
        await gates.release[name].wait()
        act(request.scope["session"], request.query_params["action"], request.query_params)
        return PlainTextResponse("ok")

    async def me(request: Request) -> Response:
        session: Session = request.scope["session"]
        return JSONResponse(
            {"id": session.id, "user": session.user, "new": session.is_new, "data": dict(session)}
        )

    async def csrf(request: Request) -> Response:
        return PlainTextResponse(request.scope["session"].csrf_token)

    routes = [
        Route("/", me),
        Route("/csrf", csrf),
        Route("/hold", hold, methods=["POST"]),
        Route("/{action}", do, methods=["POST"]),
    ]
    return SessionMiddleware(Starlette(routes=routes), manager=manager)


class Device:
    """One client: it sends the secret it holds and keeps the latest one a response sets,
    as a browser does with its cookie jar."""

    def __init__(self, http: httpx.AsyncClient, secret: str | None = None) -> None:
        self.http = http
        self.secret = secret

    async def send(self, method: str, path: str, **params: str) -> httpx.Response:
        self.http.cookies.clear()  # only the secret this device holds
        headers = {"cookie": f"{COOKIE}={self.secret}"} if self.secret else {}
        response = await self.http.request(method, path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        value = sent_secret(response)
        if value is not None:
            self.secret = value or None
        return response

    async def me(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.send("GET", "/")).json()
        return data

    def copy(self) -> Device:
        return Device(self.http, self.secret)


@dataclass
class Cluster:
    """Two replicas of one app, sharing a store (and, client-side, a revocation store)."""

    clock: FakeClock
    managers: list[SessionManager]
    https: list[httpx.AsyncClient]
    gates: Gates

    def device(self, replica: int = 0) -> Device:
        return Device(self.https[replica])

    def admin(self, replica: int = 0) -> SessionAdmin:
        return SessionAdmin(self.managers[replica])

    def listed(self, user: str) -> list[str]:
        return [info.id for info in self.admin().sessions(user)]

    async def parked(self, device: Device, gate: str, action: str, **params: str) -> Any:
        """Start `action` as `device`'s request and return once its session is loaded."""
        self.gates.add(gate)
        task = asyncio.ensure_future(
            device.send("POST", "/hold", gate=gate, action=action, **params)
        )
        await self.gates.entered[gate].wait()
        return task

    async def resume(self, gate: str, task: Any) -> httpx.Response:
        self.gates.release[gate].set()
        response: httpx.Response = await task
        return response


def side(mode: str, store: MemoryStore, revocations: MemoryRevocationStore) -> Any:
    if mode == "server":
        return ServerSide(store)
    return ClientSide(KeyRing([KEY]), store=store, revocations=revocations, strict=True)


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    mode = getattr(request, "param", "server")
    clock = FakeClock()
    store, revocations = MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
    gates = Gates()
    managers = [
        SessionManager(side(mode, store, revocations), lifetimes=LIFETIMES, clock=clock)
        for _ in range(2)
    ]
    async with (
        client(make_app(managers[0], gates)) as one,
        client(make_app(managers[1], gates)) as two,
    ):
        yield Cluster(clock, managers, [one, two], gates)


BOTH = pytest.mark.parametrize("cluster", ["server", "client"], indirect=True)
CLIENT = pytest.mark.parametrize("cluster", ["client"], indirect=True)
SERVER = pytest.mark.parametrize("cluster", ["server"], indirect=True)


# -- 1. a stolen client-side token cannot hide from its owner ------------------------------


@CLIENT
async def test_a_token_written_with_often_stays_listed_and_dies_with_logout_others(
    cluster: Cluster,
) -> None:
    """Writing requests less than `touch_interval` apart used to never refresh the registry
    record: after `idle` the session vanished from the list while its token still worked,
    and "log out other devices" skipped it."""
    owner = cluster.device()
    await owner.send("POST", "/login", user="ann")
    thief = owner.copy()
    owner.secret = None
    await owner.send("POST", "/login", user="ann")  # the owner's own, second session
    for n in range(45):  # 45 x 50 s = 37.5 min > idle (30 min), every gap < touch (60 s)
        cluster.clock.advance(50)
        await thief.send("POST", "/write", key="n", value=str(n))
        if n % 10 == 0:
            await owner.send("POST", "/write", key="owner", value=str(n))
    stolen = (await thief.me())["id"]
    assert stolen in cluster.listed("ann")
    await owner.send("POST", "/logout-others")
    assert (await thief.me())["new"]
    assert cluster.listed("ann") == [(await owner.me())["id"]]


# -- 2. server-side revocation acts on a handle that renewal does not move -----------------


@BOTH
async def test_logout_racing_a_renewal_ends_the_session(cluster: Cluster) -> None:
    """Logout loads the session, a parallel request renews it, logout commits: the session
    used to live on under the renewed ID, logged in and listed."""
    device = cluster.device()
    await device.send("POST", "/login", user="ann")
    cluster.clock.advance(LIFETIMES.renewal or 0)  # renewal due
    before = device.secret
    logout = await cluster.parked(device.copy(), "logout", "logout")
    renewer = device.copy()
    await renewer.send("POST", "/write")  # renews (and writes) while the logout is parked
    assert renewer.secret != before
    response = await cluster.resume("logout", logout)
    assert sent_secret(response) == ""
    for secret in (before, renewer.secret):
        assert (await Device(cluster.https[1], secret).me())["new"]
    assert cluster.listed("ann") == []


@BOTH
async def test_revoke_with_a_handle_listed_before_a_renewal(cluster: Cluster) -> None:
    device = cluster.device()
    await device.send("POST", "/login", user="ann")
    (handle,) = cluster.listed("ann")
    cluster.clock.advance(LIFETIMES.renewal or 0)
    await device.send("POST", "/write")  # renewed: a new secret, the same handle
    assert cluster.listed("ann") == [handle]
    assert cluster.admin(1).revoke(handle) is True
    assert (await device.me())["new"]
    assert cluster.listed("ann") == []
    assert cluster.admin().revoke(handle) is False  # nothing left to end
    with pytest.raises(ValueError, match="handle"):
        cluster.admin().revoke(device.secret or "x" * 65)


@BOTH
async def test_revoke_user_keeps_a_session_renewed_since_it_was_listed(cluster: Cluster) -> None:
    kept, other = cluster.device(), cluster.device(1)
    await kept.send("POST", "/login", user="ann")
    await other.send("POST", "/login", user="ann")
    keep = (await kept.me())["id"]
    cluster.clock.advance(LIFETIMES.renewal or 0)
    await kept.send("POST", "/write")
    assert cluster.admin().revoke_user("ann", keep=keep) == 1
    assert (await kept.me())["user"] == "ann"
    assert (await other.me())["new"]


# -- 3 and 10. regenerate() and login() end what they replace, for good ---------------------


@CLIENT
@pytest.mark.parametrize("step", ["login", "regenerate"])
async def test_a_newer_token_of_a_replaced_session_stays_refused(
    cluster: Cluster, step: str
) -> None:
    """A token of the same session issued by a parallel request after the presenting one
    outlives it. The revocation used to end at the presenting token's idle deadline, and
    the newer token was accepted again from then until its own."""
    device = cluster.device()
    await device.send("POST", "/login", user="ann")  # idle deadline: +1800 s
    cluster.clock.advance(120)
    newer = device.copy()
    await newer.send("POST", "/write")  # the same sid, idle deadline +1920 s
    assert newer.secret != device.secret
    await device.send("POST", f"/{step}", user="bob")
    assert (await device.me())["user"] == ("bob" if step == "login" else "ann")
    cluster.clock.advance(11)
    assert (await newer.copy().me())["new"]
    cluster.clock.advance(1810 - 131)  # past the presenting token's deadline, not the newer's
    assert (await newer.copy().me())["new"], "the newer token was accepted again"


@BOTH
@pytest.mark.parametrize("step", ["regenerate", "login"])
async def test_a_replaced_secret_inside_its_grace_window_mints_nothing(
    cluster: Cluster, step: str
) -> None:
    device = cluster.device()
    await device.send("POST", "/login", user="ann")
    await device.send("POST", "/write", key="cart", value="full")
    stale = device.copy()
    await device.send("POST", "/regenerate")
    cluster.clock.advance(5)  # inside the grace window: the stale secret still reads
    assert (await stale.copy().me())["user"] == "ann"
    response = await stale.send("POST", f"/{step}", user="mallory")
    if step == "regenerate":
        assert sent_secret(response) is None  # no new secret for a replaced one
    else:  # a login from it starts afresh: nothing of ann's session comes along
        assert (await stale.me())["data"] == {} and (await stale.me())["user"] == "mallory"
    assert (await device.me())["data"] == {"cart": "full"}  # the owner is untouched
    cluster.clock.advance(6)  # past the grace window (a reuse: docs/policies.md)
    assert (await Device(cluster.https[0], stale.secret).me())["user"] != "ann"


# -- 4. migration to server-side sessions is recorded where every replica sees it -----------


@pytest.fixture
async def migration() -> AsyncIterator[tuple[Device, Cluster]]:
    """A device logged in (as ann) by the client-side app of before, and two server-side
    replicas that migrate its token, sharing its revocation store."""
    clock = FakeClock()
    store, revocations = MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
    old = SessionManager(
        side("client", MemoryStore(clock=clock), revocations), lifetimes=LIFETIMES, clock=clock
    )
    replicas = [
        SessionManager(
            ServerSide(
                store,
                migrate_from=ClientSide(
                    KeyRing([KEY]), store=None, revocations=revocations, strict=True
                ),
            ),
            lifetimes=LIFETIMES,
            clock=clock,
        )
        for _ in range(2)
    ]
    gates = Gates()
    async with (
        client(make_app(old, gates)) as before,
        client(make_app(replicas[0], gates)) as one,
        client(make_app(replicas[1], gates)) as two,
    ):
        device = Device(before)
        await device.send("POST", "/login", user="ann")
        yield device, Cluster(clock, replicas, [one, two], gates)


async def test_a_migrated_token_logged_out_on_one_replica_is_not_migrated_on_another(
    migration: tuple[Device, Cluster],
) -> None:
    device, cluster = migration
    token = device.secret
    device.http = cluster.https[0]
    assert (await device.me())["user"] == "ann"  # migrated, under a server-side secret
    await device.send("POST", "/logout")
    assert (await Device(cluster.https[1], token).me())["new"]  # not migrated again elsewhere
    assert cluster.admin(1).sessions("ann") == []


async def test_one_token_migrated_by_two_replicas_at_once_makes_one_session(
    migration: tuple[Device, Cluster],
) -> None:
    device, cluster = migration
    one, two = cluster.https
    first = await cluster.parked(Device(one, device.secret), "a", "write")
    second = await cluster.parked(Device(two, device.secret), "b", "write")
    winner = await cluster.resume("a", first)
    loser = await cluster.resume("b", second)
    assert sent_secret(winner) and sent_secret(loser) is None
    assert len(cluster.listed("ann")) == 1


def test_migration_without_a_shared_revocation_store_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="revocation store"):
        ServerSide(MemoryStore(), migrate_from=ClientSide(KeyRing([KEY]), store=None))


def test_stateless_client_side_sessions_refuse_admin_revocation() -> None:
    manager = SessionManager(ClientSide(KeyRing([KEY]), store=None))
    with pytest.raises(ConfigurationError, match="revocation store"):
        SessionAdmin(manager).revoke("A" * 22)
    with pytest.raises(ConfigurationError, match="revocation store"):
        SessionAdmin(manager).revoke_user("ann")


# -- 7, 11, 12 -----------------------------------------------------------------------------


@BOTH
async def test_login_replaces_the_csrf_token(cluster: Cluster) -> None:
    device = cluster.device()
    token = (await device.send("GET", "/csrf")).text
    await device.send("POST", "/login", user="ann")
    assert (await device.send("GET", "/csrf")).text != token
    cross = {"origin": "https://evil.example", "x-csrf-token": token}
    device.http.cookies.clear()
    response = await device.http.post(
        "/write", headers={**cross, "cookie": f"{COOKIE}={device.secret}"}
    )
    assert response.status_code == 403


@CLIENT
async def test_login_just_after_revoke_user_in_the_same_second(cluster: Cluster) -> None:
    """The password-change pattern: revoke every session, then log the user in again."""
    old = cluster.device()
    await old.send("POST", "/login", user="ann")
    cluster.clock.now = float(int(cluster.clock.now)) + 0.2
    cluster.admin().revoke_user("ann")
    cluster.clock.advance(0.3)  # the same second, a later millisecond
    fresh = cluster.device()
    await fresh.send("POST", "/login", user="ann")
    assert (await fresh.me())["user"] == "ann"
    assert (await old.me())["new"]


@CLIENT
async def test_logout_racing_a_write_leaves_no_ghost_in_the_listing(cluster: Cluster) -> None:
    device = cluster.device()
    await device.send("POST", "/login", user="ann")
    cluster.clock.advance(LIFETIMES.touch_interval)  # the write will refresh the registry
    writer = await cluster.parked(device.copy(), "w", "write")
    await device.send("POST", "/logout")
    response = await cluster.resume("w", writer)
    assert sent_secret(response) is None  # no token for a session that is gone
    assert cluster.listed("ann") == []


# -- 13. two apps sharing one store ---------------------------------------------------------


async def test_apps_with_their_own_keys_do_not_open_each_others_sessions() -> None:
    clock = FakeClock()
    shared = MemoryStore(clock=clock)

    def app(key: bytes) -> SessionMiddleware:
        keys = KeyRing([key])
        return make_app(SessionManager(ServerSide(shared, keys=keys), clock=clock), Gates())

    async with (
        client(app(b"a" * 32)) as shop,
        client(app(b"b" * 32)) as blog,
        client(app(b"a" * 32)) as shop_replica,
    ):
        device = Device(shop)
        await device.send("POST", "/login", user="1")
        assert (await Device(shop_replica, device.secret).me())["user"] == "1"
        assert (await Device(blog, device.secret).me())["new"]  # not user 1 of the blog
        assert (await device.me())["user"] == "1"  # and the shop's session is untouched


async def test_records_hashed_with_an_older_key_still_open_after_a_key_rotation() -> None:
    clock = FakeClock()
    shared = MemoryStore(clock=clock)
    old, new = b"o" * 32, b"n" * 32

    def app(*keys: bytes) -> SessionMiddleware:
        side = ServerSide(shared, keys=KeyRing(list(keys)))
        return make_app(SessionManager(side, lifetimes=LIFETIMES, clock=clock), Gates())

    async with client(app(old)) as before, client(app(new, old)) as after:
        device = Device(before)
        await device.send("POST", "/login", user="1")
        device.http = after
        assert (await device.me())["user"] == "1"
        clock.advance(LIFETIMES.renewal or 0)
        await device.send("POST", "/write")  # renewed: now hashed with the new key
        async with client(app(new)) as only_new:
            assert (await Device(only_new, device.secret).me())["user"] == "1"
