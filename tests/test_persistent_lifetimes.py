"""Remember me: per-session lifetimes (issue 15, part 3), and the time a session has left
(part 5), through real HTTP (httpx over `SessionMiddleware`), in both modes, on MemoryStore
and SQLiteStore, with a `FakeClock` that moves only when told to."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import (
    ClientSide,
    ConfigurationError,
    Cookie,
    Header,
    KeyRing,
    Lifetimes,
    ServerSide,
    Session,
    SessionAdmin,
    SessionManager,
)
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.stores import (
    MemoryRevocationStore,
    MemoryStore,
    SQLiteRevocationStore,
    SQLiteStore,
)
from helpers import COOKIE, FakeClock, client, sent_secret

pytestmark = pytest.mark.anyio

HOUR, DAY = 3600.0, 86400.0
KEY = b"K" * 32
LIFETIMES = Lifetimes(
    idle=30 * 60,
    absolute=12 * HOUR,
    renewal=15 * 60,
    persistent_absolute=30 * DAY,
    persistent_idle=7 * DAY,
)


def sess(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


def times(session: Session) -> dict[str, Any]:
    return {
        "new": session.is_new,
        "user": session.user,
        "persistent": session.persistent,
        "n": session.get("n"),
        "idle_deadline": session.idle_deadline,
        "absolute_deadline": session.absolute_deadline,
        "expires_at": session.expires_at,
        "remaining": session.remaining(),
    }


async def home(request: Request) -> Response:
    return JSONResponse(times(sess(request)))


async def count(request: Request) -> Response:
    session = sess(request)
    session["n"] = session.get("n", 0) + 1
    return JSONResponse(times(session))


async def login(request: Request) -> Response:
    session = sess(request)
    session.login("alice")
    query = request.query_params
    if "remember" in query:
        absolute, idle = query.get("absolute"), query.get("idle")
        session.set_persistent(
            absolute=None if absolute is None else float(absolute),
            idle=None if idle is None else float(idle),
        )
    return JSONResponse(times(session))


async def forget(request: Request) -> Response:
    sess(request).set_persistent(False)
    return JSONResponse(times(sess(request)))


async def logout(request: Request) -> Response:
    sess(request).logout()
    return JSONResponse({})


ROUTES = [
    Route("/", home),
    Route("/count", count),
    Route("/login", login),
    Route("/forget", forget),
    Route("/logout", logout),
]


class Site:
    """One app over one manager, store and clock; `browser()` is a cookie-keeping client."""

    def __init__(self, mode: str, kind: str, tmp_path: Path, **transport: Any) -> None:
        self.clock = clock = FakeClock()
        self.mode_name = mode
        revocations: Any
        if kind == "memory":
            store: Any = MemoryStore(clock=clock)
            revocations = MemoryRevocationStore(clock=clock)
        else:
            store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
            revocations = SQLiteRevocationStore(tmp_path / "sessions.db", clock=clock)
        self.store, self.revocations = store, revocations
        self.mode: ServerSide | ClientSide = (
            ServerSide(store=store)
            if mode == "server"
            else ClientSide(KeyRing([KEY]), store=store, revocations=revocations, staleness=0)
        )
        self.transport = transport
        self.manager = SessionManager(
            self.mode,
            lifetimes=LIFETIMES,
            clock=clock,
            log_salt=b"salt",
            csrf=False,
            transport=Cookie(**transport) if transport else None,
        )
        self.app = SessionMiddleware(Starlette(routes=ROUTES), manager=self.manager)
        self.admin = SessionAdmin(self.manager)
        #: How long past a deadline a token is still accepted (clock skew between replicas).
        self.leeway = self.mode.leeway if isinstance(self.mode, ClientSide) else 0.0

    def browser(self) -> httpx.AsyncClient:
        return client(self.app)

    def replica(self) -> Site:
        """Another process over the same stores: it knows only what they hold."""
        other = Site.__new__(Site)
        other.__dict__.update(self.__dict__)
        if isinstance(self.mode, ClientSide):
            other.mode = ClientSide(
                KeyRing([KEY]), store=self.store, revocations=self.revocations, staleness=0
            )
        other.manager = SessionManager(
            other.mode,
            lifetimes=LIFETIMES,
            clock=self.clock,
            log_salt=b"salt",
            csrf=False,
            transport=Cookie(**self.transport) if self.transport else None,
        )
        other.app = SessionMiddleware(Starlette(routes=ROUTES), manager=other.manager)
        return other


@pytest.fixture(
    params=[("server", "memory"), ("server", "sqlite"), ("client", "memory"), ("client", "sqlite")],
    ids=lambda p: "-".join(p),
)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    mode, kind = request.param
    yield Site(mode, kind, tmp_path)


async def present(site: Site, value: str) -> dict[str, Any]:
    """What `site` makes of a request carrying `value` as its session cookie."""
    async with site.browser() as other:
        response = await other.get("/", headers={"cookie": f"{COOKIE}={value}"})
        assert response.request.headers["cookie"] == f"{COOKIE}={value}"
        return response.json()  # type: ignore[no-any-return]


def max_age(response: httpx.Response) -> int | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{COOKIE}="):
            found = re.search(r"Max-Age=(\d+)", header)
            return None if found is None else int(found.group(1))
    raise AssertionError("no session cookie in the response")


# -- part 3: per-session lifetimes ------------------------------------------------------


async def test_a_persistent_session_outlives_the_default_absolute_limit_up_to_its_own(
    site: Site,
) -> None:
    async with site.browser() as remembered, site.browser() as ordinary:
        response = await remembered.get("/login?remember")
        assert max_age(response) == 30 * DAY  # the cookie lives as long as the session
        await ordinary.get("/login")
        day = 0.0
        while day + 6 < 30:  # a request every 6 days: never idle for 7
            site.clock.advance(6 * DAY)
            day += 6
            site.admin.purge_expired()  # the store's TTL follows the session's own limits
            body = (await remembered.get("/count")).json()
            assert body["user"] == "alice" and not body["new"], f"day {day}"
            assert body["persistent"]
        # The ordinary session ended at its 12 hours, the remembered one lives on.
        assert (await ordinary.get("/")).json()["new"]
        site.clock.advance((30 - day) * DAY - 1)  # one second before its own deadline
        body = (await remembered.get("/count")).json()
        assert body["user"] == "alice" and body["n"] == 5
        # Its absolute deadline (client side: plus the `leeway` for clock skew, as for
        # every deadline there): no further, however busy.
        site.clock.advance(1 + site.leeway)
        body = (await remembered.get("/")).json()
        assert body["new"] and body["user"] is None and not body["persistent"]


async def test_a_persistent_session_idles_out_after_its_own_idle_limit(site: Site) -> None:
    async with site.browser() as browser:
        await browser.get("/login?remember")
        site.clock.advance(7 * DAY - 60)  # idle for nearly 7 days: still alive
        assert (await browser.get("/count")).json()["user"] == "alice"
        site.clock.advance(7 * DAY + site.leeway)  # idle for 7 days: over
        assert (await browser.get("/")).json()["user"] is None


async def test_set_persistent_may_shorten_the_limits_but_never_lengthen_them(site: Site) -> None:
    async with site.browser() as short, site.browser() as greedy:
        response = await short.get(f"/login?remember&absolute={2 * DAY}&idle={DAY}")
        assert max_age(response) == 2 * DAY
        response = await greedy.get(f"/login?remember&absolute={365 * DAY}&idle={90 * DAY}")
        assert max_age(response) == 30 * DAY  # the configuration caps what a call asks
        site.clock.advance(DAY - 1)
        assert (await short.get("/count")).json()["user"] == "alice"
        assert (await greedy.get("/count")).json()["user"] == "alice"
        site.clock.advance(DAY + 1 + site.leeway)  # short: past its 2 days, idle < 1 day
        assert (await short.get("/")).json()["user"] is None
        site.clock.advance(6 * DAY)  # greedy: idle for 8 days, over its (capped) 7
        assert (await greedy.get("/")).json()["user"] is None


async def test_set_persistent_false_returns_to_the_ordinary_limits(site: Site) -> None:
    async with site.browser() as browser:
        await browser.get("/login?remember")
        response = await browser.get("/forget")
        assert max_age(response) is None  # a browser-session cookie again
        site.clock.advance(30 * 60 + site.leeway)
        assert (await browser.get("/count")).json()["user"] is None  # idle 30 min: over


async def test_renewal_still_rotates_the_secret_of_a_persistent_session(site: Site) -> None:
    async with site.browser() as browser:
        first = sent_secret(await browser.get("/login?remember"))
        site.clock.advance(2 * DAY)  # past `renewal` (15 minutes)
        response = await browser.get("/")
        second = sent_secret(response)
        assert second and second != first
        assert max_age(response) == 28 * DAY  # Max-Age follows the absolute deadline
        assert (await browser.get("/")).json()["user"] == "alice"
        if site.mode_name == "server":
            # The replaced secret stops opening it once the grace window is over.
            assert first
            assert (await present(site, first))["user"] == "alice"  # in the grace window
            site.clock.advance(LIFETIMES.grace)
            assert (await present(site, first))["user"] is None


async def test_logout_and_revocation_end_a_persistent_session(site: Site) -> None:
    async with site.browser() as one, site.browser() as two:
        stolen_one = sent_secret(await one.get("/login?remember"))
        await two.get("/login?remember")
        await one.get("/logout")
        (info,) = site.admin.sessions("alice")
        assert site.admin.revoke(info.id)
        assert (await two.get("/")).json()["user"] is None
        # Days later (past the ordinary 12 hours, which once bounded how long a client-side
        # revocation entry was kept), the logged-out secret or token still opens nothing.
        # Seen by a replica that starts then, which knows only what the stores keep once
        # they have purged what expired.
        site.clock.advance(2 * DAY)
        site.revocations.purge_expired()
        site.admin.purge_expired()
        assert stolen_one
        assert (await present(site.replica(), stolen_one))["user"] is None


async def test_listings_show_persistent_sessions_and_their_deadlines(site: Site) -> None:
    t0 = site.clock.now
    async with site.browser() as remembered, site.browser() as ordinary:
        await remembered.get("/login?remember")
        await ordinary.get("/login")
        infos = {info.persistent: info for info in site.admin.sessions("alice")}
        assert infos[True].absolute_deadline == t0 + 30 * DAY
        assert infos[True].idle_deadline == t0 + 7 * DAY
        assert infos[False].absolute_deadline == t0 + 12 * HOUR
        assert infos[False].idle_deadline == t0 + 30 * 60
        site.clock.advance(13 * HOUR)  # the ordinary one is past its limits: not listed
        assert [i.persistent for i in site.admin.sessions("alice")] == [True]


async def test_a_tampered_record_or_token_claiming_longer_lifetimes_is_refused(
    site: Site,
) -> None:
    async with site.browser() as browser:
        secret = sent_secret(await browser.get(f"/login?remember&absolute={DAY}"))
        assert secret
        if site.mode_name == "server":
            # The limits come only from the record, which only the server writes; garbage
            # there is StoreCorrupted: a fresh session (and the record is deleted).
            for garbage in ("1e9", -1, 0, True, [1], None):
                secret = sent_secret(await browser.get(f"/login?remember&absolute={DAY}"))
                assert secret
                handle = secret[:22]
                record = site.store.load(handle)
                assert record is not None
                doc = json.loads(record.data)
                assert doc["pa"] == DAY and "pi" not in doc
                doc["pa"] = garbage
                if garbage is None:  # limits on a record that is not persistent
                    del doc["p"], doc["pa"]
                    doc["pi"] = 365 * DAY
                data = json.dumps(doc).encode()
                assert site.store.save(handle, data, version=record.version, ttl=DAY, user="a")
                body = (await browser.get("/")).json()
                assert body["user"] is None and body["new"], garbage
                assert site.store.load(handle) is None
        else:
            # The limits and deadlines are claims of the signed token: changed, the
            # signature no longer verifies.
            header, payload, signature = secret.split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert claims["pla"] == DAY and claims["per"] == 1
            claims["pla"] = 365 * DAY
            claims["exp"] = claims["exp"] + 364 * DAY
            forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            assert (await present(site, secret))["user"] == "alice"  # the genuine one
            body = await present(site, f"{header}.{forged}.{signature}")
            assert body["user"] is None and body["new"]


def test_lifetimes_validate_the_persistent_limits() -> None:
    for options in (
        {"persistent_absolute": 0},
        {"persistent_absolute": math.inf},
        {"persistent_idle": "7d"},
        {"persistent_idle": 30, "touch_interval": 60},
    ):
        with pytest.raises(ConfigurationError, match="Lifetimes"):
            Lifetimes(**options)
    lifetimes = Lifetimes(persistent_absolute=100 * DAY)
    assert lifetimes.of(True).absolute == 100 * DAY and lifetimes.of(True).idle == 30 * 60
    assert lifetimes.of(False) is lifetimes and lifetimes.longest == 100 * DAY
    assert Lifetimes().of(True) == Lifetimes()  # unconfigured: as today
    session = Session.create()
    bad: Any
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="set_persistent"):
            session.set_persistent(absolute=bad)
    for bad in ("60", True):  # not a number: TypeError, compiled or not
        with pytest.raises(TypeError):
            session.set_persistent(absolute=bad)
    with pytest.raises(ValueError, match="set_persistent"):
        session.set_persistent(False, idle=60)
    session.set_persistent(absolute=60)
    session.set_persistent()  # (Flask: `session.permanent = True` on every request)
    assert session.persistent_limits == (60, math.inf)
    session.set_persistent(False)
    assert session.persistent_limits is None


# -- part 5: time remaining -------------------------------------------------------------


async def test_time_remaining_before_and_after_a_touch(site: Site) -> None:
    t0 = site.clock.now
    async with site.browser() as browser:
        body = (await browser.get("/login?remember")).json()
        assert body["absolute_deadline"] == t0 + 30 * DAY
        assert body["idle_deadline"] == t0 + 7 * DAY
        assert body["expires_at"] == t0 + 7 * DAY and body["remaining"] == 7 * DAY
        # Within the touch interval a read records nothing: the deadline stays put.
        site.clock.advance(10)
        body = (await browser.get("/")).json()
        assert body["idle_deadline"] == t0 + 7 * DAY and body["remaining"] == 7 * DAY - 10
        # A write (or, past `touch_interval`, any request) moves it to now + idle.
        site.clock.advance(DAY)
        body = (await browser.get("/count")).json()
        assert body["idle_deadline"] == site.clock.now + 7 * DAY
        assert body["absolute_deadline"] == t0 + 30 * DAY
        for _ in range(5):  # to day 26: the absolute deadline comes first now
            site.clock.advance(5 * DAY)
            body = (await browser.get("/count")).json()
        assert body["expires_at"] == t0 + 30 * DAY
        assert body["remaining"] == 30 * DAY - (site.clock.now - t0)


@pytest.mark.parametrize("mode", ["server", "client"])
async def test_the_header_transport_sends_the_seconds_left_when_asked(
    mode: str, tmp_path: Path
) -> None:
    site = Site(mode, "memory", tmp_path)
    site.manager.transports = (Header(expiry_header="Session-Expires"),)
    async with site.browser() as api:
        ask = {"session-transport": "header"}
        response = await api.get("/", headers=ask)
        assert "session-expires" not in response.headers  # nothing stored, nothing to say
        response = await api.get("/login?remember", headers=ask)
        token = response.headers["session-token"]
        assert response.headers["session-expires"] == str(int(7 * DAY))
        assert "Session-Expires" in response.headers.get_list("access-control-expose-headers")
        bearer = {"authorization": f"Bearer {token}"}
        site.clock.advance(30)
        response = await api.get("/", headers=bearer)
        assert response.headers["session-expires"] == str(int(7 * DAY - 30))
        assert "cache-control" not in response.headers  # nothing secret: caching is up to the app
        response = await api.get("/logout", headers=bearer)
        assert response.headers["session-expires"] == "0"
        response = await api.get("/", headers={"authorization": "Bearer nonsense"})
        assert response.headers["session-expires"] == "0"  # refused: the client forgets it
    async with Site(mode, "memory", tmp_path / "plain").browser() as api:
        response = await api.get("/login", headers={"session-transport": "header"})
        assert "session-expires" not in response.headers  # opt-in


@pytest.mark.parametrize("mode", ["server", "client"])
async def test_a_cookie_transport_sends_the_seconds_left_when_asked(
    mode: str, tmp_path: Path
) -> None:
    site = Site(mode, "sqlite", tmp_path, expiry_header="Session-Expires")
    async with site.browser() as browser:
        response = await browser.get("/login")
        assert response.headers["session-expires"] == str(30 * 60)
        site.clock.advance(29 * 60)
        response = await browser.get("/count")
        assert response.headers["session-expires"] == str(30 * 60)
    with pytest.raises(ConfigurationError):
        Cookie(expiry_header="bad header")
