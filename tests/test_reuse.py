"""Theft detection on reuse (docs/policies.md, "Theft detection on reuse"), through real
HTTP (the ASGI middleware under httpx), in both modes, on memory and SQLite, with an
injected clock and deterministic interleavings: a request parked on an `asyncio.Event` once
its session is loaded, released after other requests ran.

A secret (server side) or token generation (client side) that renewal or `regenerate()`
replaced is accepted for `grace` seconds; presented after that, it is a reuse: logged as
`session.reuse` (never with the secret), and with `on_reuse="revoke"` (the default) the
live session is ended, so the owner's current copy stops working too. The model test at the
end checks that reuse is reported exactly for retired-after-grace secrets of live sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
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
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import StoreCorrupted
from coatcheck.records import Credentials, decode, encode
from coatcheck.reuse import RETIRED
from coatcheck.stores import (
    MemoryRevocationStore,
    MemoryStore,
    SQLiteRevocationStore,
    SQLiteStore,
)
from helpers import COOKIE, FakeClock, client, cookie_value, request, sent_secret

KEY = b"r" * 32
GRACE = 10.0
LIFETIMES = Lifetimes(idle=1800, absolute=12 * 3600, renewal=900, grace=GRACE, touch_interval=60)
MODES = pytest.mark.parametrize("mode", ["server", "client"])
STORES = pytest.mark.parametrize("store", ["memory", "sqlite"])
POLICIES = pytest.mark.parametrize("policy", ["revoke", "log"])


# -- the app: a few lifecycle steps, and a gate to park a request after its session loaded --


@dataclass
class Gates:
    entered: dict[str, asyncio.Event] = field(default_factory=dict)
    release: dict[str, asyncio.Event] = field(default_factory=dict)


def act(session: Session, action: str, params: Any) -> None:
    if action == "write":
        session[params.get("key", "k")] = params.get("value", "v")
    elif action == "login":
        session.login(params["user"])
    elif action == "regenerate":
        session.regenerate()


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

    routes = [
        Route("/", me),
        Route("/hold", hold, methods=["POST"]),
        Route("/{action}", do, methods=["POST"]),
    ]
    return SessionMiddleware(Starlette(routes=routes), manager=manager)


class Device:
    """One client holding one secret; it keeps the latest one a response sets."""

    def __init__(self, world: World, secret: str | None = None) -> None:
        self.world = world
        self.secret = secret

    async def send(self, method: str, path: str, **params: str) -> httpx.Response:
        http = self.world.http
        http.cookies.clear()
        headers = {"cookie": f"{COOKIE}={self.secret}"} if self.secret else {}
        response = await http.request(method, path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        value = sent_secret(response)
        if value:
            self.world.seen.add(value)
        if value is not None:
            self.secret = value or None
        return response

    async def me(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.send("GET", "/")).json()
        return data

    def copy(self) -> Device:
        return Device(self.world, self.secret)


@dataclass
class World:
    clock: FakeClock
    manager: SessionManager
    http: httpx.AsyncClient
    gates: Gates
    caplog: pytest.LogCaptureFixture
    #: Every secret or token handed out: none may ever appear in a log line.
    seen: set[str] = field(default_factory=set)

    def device(self) -> Device:
        return Device(self)

    def events(self, name: str = "session.reuse") -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if getattr(r, "event", None) == name]

    def listed(self, user: str) -> list[str]:
        return [info.id for info in SessionAdmin(self.manager).sessions(user)]

    async def parked(self, device: Device, gate: str, action: str, **params: str) -> Any:
        """Start `device`'s request and return once its session is loaded."""
        self.gates.entered[gate], self.gates.release[gate] = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(
            device.send("POST", "/hold", gate=gate, action=action, **params)
        )
        await self.gates.entered[gate].wait()
        return task

    async def resume(self, gate: str, task: Any) -> httpx.Response:
        self.gates.release[gate].set()
        response: httpx.Response = await task
        return response

    def assert_no_secret_logged(self) -> None:
        for record in self.caplog.records:
            text = f"{record.getMessage()} {record.__dict__}"
            for secret in self.seen:
                assert secret not in text, f"a secret in the log line {record.getMessage()!r}"


def backends(kind: str, clock: FakeClock, tmp_path: Path) -> tuple[Any, Any]:
    if kind == "memory":
        return MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
    path = tmp_path / "sessions.db"
    return SQLiteStore(path, clock=clock), SQLiteRevocationStore(path, clock=clock)


def mode_for(mode: str, store: Any, revocations: Any) -> ServerSide | ClientSide:
    if mode == "server":
        return ServerSide(store)
    return ClientSide(KeyRing([KEY]), store=store, revocations=revocations, strict=True)


@asynccontextmanager
async def world(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    mode: str,
    store: str,
    lifetimes: Lifetimes = LIFETIMES,
    **options: Any,
) -> AsyncIterator[World]:
    caplog.set_level(logging.INFO, logger="coatcheck")
    clock = FakeClock()
    sessions, revocations = backends(store, clock, tmp_path)
    manager = SessionManager(
        mode_for(mode, sessions, revocations),
        lifetimes=lifetimes,
        clock=clock,
        log_salt=b"reuse-salt",
        **options,
    )
    gates = Gates()
    try:
        async with client(make_app(manager, gates)) as http:
            yield World(clock, manager, http, gates, caplog)
    finally:
        sessions.close()
        revocations.close()


async def logged_in(w: World) -> Device:
    owner = w.device()
    await owner.send("POST", "/login", user="ann")
    await owner.send("POST", "/write", key="cart", value="full")
    return owner


# -- configuration and record format -----------------------------------------------------------


def test_on_reuse_is_validated_and_defaults_to_revoke() -> None:
    assert SessionManager(ServerSide("memory://")).context.on_reuse == "revoke"
    assert SessionManager(ServerSide("memory://"), on_reuse="log").on_reuse == "log"
    with pytest.raises(ConfigurationError, match="on_reuse"):
        SessionManager(ServerSide("memory://"), on_reuse="ignore")  # type: ignore[arg-type]


def test_retired_verifiers_round_trip_and_are_bounded() -> None:
    session = open_session(SessionManager(ServerSide("memory://")), request())
    retired = tuple((f"{i:064x}", float(i)) for i in range(RETIRED - 1))
    credentials = Credentials("a" * 64, "b" * 64, 1.0, retired)
    assert decode(encode(session, None, credentials)).credentials == credentials
    planted = encode(session, None, credentials._replace(retired=(*retired, ("c" * 64, 2.0))))
    assert decode(planted).credentials is not None  # RETIRED in all: the bound itself
    for bad in (b'"rv":[["d",1],', b'"rv":[1,', b'"rv":[["d","1"],', b'"rv":[["d",1,2],'):
        with pytest.raises(StoreCorrupted):  # too many (a planted record), or not pairs
            decode(planted.replace(b'"rv":[', bad))


# -- within the grace window: no reuse ---------------------------------------------------------


@pytest.mark.anyio
@MODES
@STORES
async def test_a_replaced_secret_inside_the_grace_window_is_no_reuse(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str
) -> None:
    async with world(caplog, tmp_path, mode, store) as w:
        owner = await logged_in(w)
        stale = owner.copy()
        await owner.send("POST", "/regenerate")
        assert owner.secret != stale.secret
        w.clock.advance(GRACE - 0.5)  # an old copy still in flight
        assert (await stale.copy().me())["user"] == "ann"
        assert w.events() == []
        assert (await owner.me())["data"] == {"cart": "full"}


@pytest.mark.anyio
@MODES
@STORES
@POLICIES
async def test_a_replaced_secret_after_the_grace_window_is_a_reuse(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str, policy: str
) -> None:
    async with world(caplog, tmp_path, mode, store, on_reuse=policy) as w:
        owner = await logged_in(w)
        handle = (await owner.me())["id"]
        stale = owner.copy()
        await owner.send("POST", "/regenerate")
        w.clock.advance(GRACE)  # the window's end is the first instant outside it
        response = await stale.send("GET", "/")
        assert response.json()["new"] and response.json()["user"] is None
        assert sent_secret(response) == ""  # the reused copy is cleared: a fresh session
        [event] = w.events()
        assert event.name == "coatcheck.security" and event.levelno == logging.WARNING
        assert getattr(event, "session_hash", None) == w.manager.audit.hash(handle)
        assert f"action={policy}" in event.getMessage()
        assert handle not in event.getMessage()
        current = await owner.me()
        if policy == "revoke":  # the owner's current copy is dead too: log in again
            assert current["new"] and current["user"] is None
            assert w.listed("ann") == []
        else:
            assert current["id"] == handle and current["data"] == {"cart": "full"}
            assert w.listed("ann") == [handle]
        w.assert_no_secret_logged()


@pytest.mark.anyio
@MODES
@STORES
async def test_a_reused_copy_of_a_revoked_session_is_reported_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str
) -> None:
    """After the revocation the session is no longer live: its copies are refused as any
    secret of an ended session (`session.unknown`, `token.revoked`), not reported again."""
    async with world(caplog, tmp_path, mode, store) as w:
        owner = await logged_in(w)
        stale = owner.copy()
        await owner.send("POST", "/regenerate")
        w.clock.advance(GRACE + 1)
        await stale.copy().me()
        await stale.copy().me()
        await owner.copy().me()
        assert len(w.events()) == 1
        ended = "session.unknown" if mode == "server" else "token.revoked"
        assert len(w.events(ended)) == 2


# -- races: judged by the server's clock when the request arrives -----------------------------


@pytest.mark.anyio
@MODES
@STORES
async def test_requests_in_flight_are_judged_by_their_arrival(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str
) -> None:
    """One request with the old secret loaded before the regeneration, one loaded inside
    the grace window: both commit after the window closed, and neither is a reuse. The
    same secret arriving after the window is one."""
    async with world(caplog, tmp_path, mode, store, on_reuse="log") as w:
        owner = await logged_in(w)
        old = owner.secret
        before = await w.parked(Device(w, old), "before", "write", key="a")
        await owner.send("POST", "/regenerate")
        w.clock.advance(GRACE / 2)
        inside = await w.parked(Device(w, old), "inside", "write", key="b")
        w.clock.advance(GRACE)  # both windows are over when they commit
        await w.resume("before", before)
        await w.resume("inside", inside)
        assert w.events() == []
        assert (await owner.me())["user"] == "ann"
        late = await Device(w, old).me()
        assert late["new"]
        assert len(w.events()) == 1


@pytest.mark.anyio
@MODES
@STORES
@pytest.mark.parametrize("order", ["first-first", "second-first"])
async def test_two_parallel_renewals_are_no_reuse(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str, order: str
) -> None:
    """Two requests of one client, both loaded with the secret due for renewal: one renews,
    the other is rebased and hands out nothing (server side) or re-issues the same
    generation (client side). Whatever the client keeps opens the session long after."""
    async with world(caplog, tmp_path, mode, store) as w:
        owner = await logged_in(w)
        handle = (await owner.me())["id"]
        w.clock.advance(LIFETIMES.renewal or 0)
        one, two = owner.copy(), owner.copy()
        first = await w.parked(one, "one", "write", key="a")
        second = await w.parked(two, "two", "write", key="b")
        gates = [("one", first), ("two", second)]
        if order == "second-first":
            gates.reverse()
        for gate, task in gates:
            await w.resume(gate, task)
        # The browser keeps the last secret a response set.
        kept = [d.secret for d in (one, two) if d.secret != owner.secret]
        if order == "second-first":
            kept.reverse()
        device = Device(w, kept[-1] if kept else owner.secret)
        w.clock.advance(GRACE * 3)
        me = await device.me()
        assert me["id"] == handle and me["user"] == "ann" and me["data"]["cart"] == "full"
        assert w.events() == []


@pytest.mark.anyio
@MODES
@STORES
async def test_renewal_retires_server_secrets_but_not_client_tokens(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str
) -> None:
    """Server side a renewal replaces the secret, so the old one is a reuse after the grace
    window; client side it re-issues the token in the same generation, and the old token
    stays valid (a bearer token until its deadlines): not recognised, by design."""
    async with world(caplog, tmp_path, mode, store, on_reuse="log") as w:
        owner = await logged_in(w)
        old = owner.copy()
        w.clock.advance(LIFETIMES.renewal or 0)
        await owner.me()
        assert owner.secret != old.secret
        w.clock.advance(GRACE)
        me = await old.me()
        if mode == "server":
            assert me["new"] and len(w.events()) == 1
        else:
            assert me["user"] == "ann" and w.events() == []


# -- what is not a reuse ---------------------------------------------------------------------


def tampered(value: str) -> str:
    middle = len(value) // 2
    return value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]


@pytest.mark.anyio
@MODES
@STORES
async def test_tampered_unknown_and_pre_login_secrets_are_not_reuse(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str, store: str
) -> None:
    async with world(caplog, tmp_path, mode, store) as w:
        anonymous = w.device()
        await anonymous.send("POST", "/write", key="x", value="1")
        pre_login = anonymous.secret
        await anonymous.send("POST", "/login", user="ann")  # a new handle: the old one ends
        owner = anonymous
        stale = owner.copy()
        await owner.send("POST", "/regenerate")
        w.clock.advance(GRACE + 1)
        assert stale.secret is not None and owner.secret is not None
        probes = [tampered(stale.secret), tampered(owner.secret), pre_login]
        if mode == "server":
            probes.append("A" * 22 + stale.secret[22:])  # an unknown handle
        for probe in probes:
            assert (await Device(w, probe).me())["new"]
        assert w.events() == []
        assert (await owner.me())["user"] == "ann"  # nothing ended the owner's session
        if mode == "server":
            assert len(w.events("session.mismatch")) == 2
            assert len(w.events("session.unknown")) == 2
        else:
            assert len(w.events("token.invalid")) == 2
            assert len(w.events("token.revoked")) == 1  # the login revoked the old sid


@pytest.mark.anyio
@STORES
async def test_the_last_retired_secrets_are_recognised_and_no_more(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, store: str
) -> None:
    """Server side: the record keeps the hashes of the last `RETIRED` replaced secrets; an
    older one is an unknown secret of the handle (`session.mismatch`)."""
    async with world(caplog, tmp_path, "server", store, on_reuse="log") as w:
        owner = await logged_in(w)
        secrets_ = []
        for _ in range(RETIRED + 1):
            secrets_.append(owner.secret)
            await owner.send("POST", "/regenerate")
        w.clock.advance(GRACE)
        oldest, *recognised = secrets_
        for secret in recognised:
            assert (await Device(w, secret).me())["new"]
        assert len(w.events()) == RETIRED
        assert (await Device(w, oldest).me())["new"]
        assert len(w.events()) == RETIRED and len(w.events("session.mismatch")) == 1
        assert (await owner.me())["user"] == "ann"


# -- the model ---------------------------------------------------------------------------------

MODEL_LIFETIMES = Lifetimes(
    idle=10**6, absolute=10**7, renewal=None, grace=GRACE, touch_interval=60
)


@dataclass
class Held:
    value: str
    #: When regenerate() replaced it (None: current), and how many secrets replaced it since.
    replaced_at: float | None = None
    generation: int = 0


class ReuseModel(RuleBasedStateMachine):
    """One logged-in session (on_reuse="log", so it stays alive), regenerated, its copies
    presented at arbitrary times. Invariant: a presented copy is reported as a reuse
    exactly when it was replaced at least `grace` ago, and (server side) is among the last
    `RETIRED` replaced; client side every older generation counts (no bound)."""

    mode = "server"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        store = MemoryStore(clock=self.clock)
        revocations = MemoryRevocationStore(clock=self.clock)
        self.manager = SessionManager(
            mode_for(self.mode, store, revocations),
            lifetimes=MODEL_LIFETIMES,
            clock=self.clock,
            log_salt=b"model",
            on_reuse="log",
        )
        self.reports: list[str] = []
        handler = _Collect(self.reports)
        self.logger = logging.getLogger("coatcheck.security")
        self.logger.addHandler(handler)
        self.handler = handler
        session = open_session(self.manager, request())
        session.login("ann")
        value = cookie_value(commit_session(self.manager, session))
        assert value
        self.handle = session.id
        self.held = [Held(value)]

    def teardown(self) -> None:
        self.logger.removeHandler(self.handler)

    @property
    def current(self) -> Held:
        return next(h for h in self.held if h.replaced_at is None)

    @rule()
    def regenerate(self) -> None:
        session = open_session(self.manager, request(self.current.value))
        assert session.id == self.handle
        session.regenerate()
        value = cookie_value(commit_session(self.manager, session))
        assert value
        now = self.clock.now
        for held in self.held:
            if held.replaced_at is None:
                held.replaced_at = now
            held.generation += 1
        self.held.append(Held(value))

    @rule(seconds=st.sampled_from([0.5, 1, 4, 9, 10, 11, 30]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(pick=st.integers(0, 30), tamper=st.booleans())
    def present(self, pick: int, tamper: bool) -> None:
        held = self.held[-1 - pick % len(self.held)]
        value = tampered(held.value) if tamper else held.value
        self.reports.clear()
        session = open_session(self.manager, request(value))
        reported = [r for r in self.reports if r == "session.reuse"]
        replaced = held.replaced_at
        past = replaced is not None and self.clock.now >= replaced + GRACE
        if self.mode == "server":  # the last RETIRED; only the previous secret opens it
            recognised = past and held.generation <= RETIRED
            opens = replaced is None or (not past and held.generation == 1)
        else:  # every older generation; each is accepted until its own window ends
            recognised, opens = past, not past
        assert bool(reported) == (recognised and not tamper), (held, self.clock.now, tamper)
        assert len(reported) <= 1
        assert (not session.is_new) == (opens and not tamper), (held, self.clock.now)
        assert session.is_new or session.id == self.handle

    @invariant()
    def the_current_secret_opens_the_session(self) -> None:
        self.reports.clear()
        session = open_session(self.manager, request(self.current.value))
        assert not session.is_new and session.id == self.handle
        assert self.reports == []


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(str(getattr(record, "event", "")))


class ClientReuseModel(ReuseModel):
    mode = "client"


@pytest.mark.parametrize("model", [ReuseModel, ClientReuseModel], ids=["server", "client"])
def test_reuse_is_reported_exactly_for_retired_copies(model: type[ReuseModel]) -> None:
    run_state_machine_as_test(
        model,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
