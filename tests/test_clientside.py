"""Client-side sessions: tokens, lifetimes, registry listing, revocation, key rotation,
chunked cookies and migration between the two modes."""

from __future__ import annotations

import base64
import json
import logging
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwe, jws
from joserfc.jwk import KeySet

from coatcheck import (
    ClientSide,
    KeyRing,
    Lifetimes,
    RequestInfo,
    ServerSide,
    Session,
    SessionAdmin,
    SessionManager,
)
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import ConfigurationError, SessionTooLarge, StoreUnavailable
from coatcheck.revocation import CHANGES_PAGE, Revocation
from coatcheck.stores import MemoryRevocationStore, MemoryStore
from faults import SwitchRevocations, SwitchStore
from helpers import COOKIE, FakeClock, cookie_value

KEY_A = b"A" * 32
KEY_B = b"B" * 32


class Device:
    """A browser-like cookie holder for one manager (chunked cookies included)."""

    def __init__(self, manager: SessionManager, ua: str = "test-agent/1") -> None:
        self.manager = manager
        self.cookies: dict[str, str] = {}
        self.ua = ua
        self.last: list[tuple[str, str]] = []

    def request(self, method: str = "GET") -> RequestInfo:
        headers = [("host", "testserver"), ("user-agent", self.ua)]
        if self.cookies:
            headers.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        return RequestInfo(
            method=method, headers=headers, host="testserver", client_ip="198.51.100.7"
        )

    def open(self) -> Session:
        return open_session(self.manager, self.request())

    def commit(self, session: Session) -> list[tuple[str, str]]:
        self.last = commit_session(self.manager, session)
        for name, value in self.last:
            if name == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                if "Max-Age=0" in value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        return self.last

    def token(self) -> str:
        return self.cookies[COOKIE]

    def visit(self, **changes: Any) -> Session:
        session = self.open()
        session.update(changes)
        self.commit(session)
        return session


def client_manager(
    clock: FakeClock,
    *,
    keys: KeyRing | None = None,
    store: Any = "memory://",
    encrypted: bool = False,
    lifetimes: Lifetimes | None = None,
    **options: Any,
) -> SessionManager:
    return SessionManager(
        ClientSide(keys or KeyRing([KEY_A]), store=store, encrypted=encrypted, **options),
        lifetimes=lifetimes or Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"salt",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip_keeps_data_and_user(clock: FakeClock, encrypted: bool) -> None:
    device = Device(client_manager(clock, encrypted=encrypted))
    session = device.open()
    session["cart"] = ["apple"]
    session.login("alice")
    device.commit(session)
    token = device.token()
    assert token.count(".") == (4 if encrypted else 2)
    if encrypted:
        assert b"apple" not in token.encode()

    again = device.open()
    assert again["cart"] == ["apple"]
    assert again.user == "alice"
    assert again.mode == "client"
    again["cart"].append("pear")
    device.commit(again)
    assert device.open()["cart"] == ["apple", "pear"]


def test_read_only_requests_issue_no_token(clock: FakeClock) -> None:
    device = Device(client_manager(clock))
    device.visit(a=1)
    session = device.open()
    assert session["a"] == 1
    headers = device.commit(session)
    assert not [h for h in headers if h[0] == "set-cookie"]
    assert ("vary", "Cookie") in headers


def test_touch_reissues_at_most_once_per_interval(clock: FakeClock) -> None:
    device = Device(client_manager(clock, lifetimes=Lifetimes(renewal=None, touch_interval=60)))
    device.visit(a=1)
    first = device.token()
    clock.advance(30)
    device.commit(device.open())
    assert device.token() == first
    clock.advance(31)
    device.commit(device.open())
    assert device.token() != first


def test_idle_and_absolute_deadlines(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    manager = client_manager(
        clock, lifetimes=Lifetimes(idle=100, absolute=1000, renewal=None, touch_interval=10)
    )
    leeway = 5.0  # ClientSide's default tolerance for clock skew between replicas
    device = Device(manager)
    device.visit(a=1)
    clock.advance(100 + leeway - 1)
    assert device.open()["a"] == 1  # within the idle deadline (and its leeway)
    device.visit(a=1)
    clock.advance(100 + leeway + 1)
    with caplog.at_level(logging.WARNING, "coatcheck.security"):
        assert device.open().is_new
    assert "token.invalid" in caplog.text

    device = Device(manager)
    created = clock.now
    device.visit(a=1)
    while clock.now - created < 1000 + leeway - 95:  # active all along
        clock.advance(95)
        session = device.open()
        assert session["a"] == 1
        device.commit(session)
    clock.advance(95)
    assert device.open().is_new  # past the absolute deadline


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2],
        lambda t: t + "A",
        lambda t: t.replace(".", "..", 1),
        lambda t: "eyJhbGciOiJub25lIn0." + t.split(".")[1] + ".",
        lambda t: (
            t.split(".")[0]
            + "."
            + base64.urlsafe_b64encode(
                json.dumps(
                    {"sid": "x", "iat": 1, "exp": 2**40, "idl": 2**40, "dat": {"admin": 1}}
                ).encode()
            )
            .decode()
            .rstrip("=")
            + "."
            + t.split(".")[2]
        ),
    ],
    ids=["truncated", "extended", "extra-segment", "alg-none", "forged-claims"],
)
def test_tampered_tokens_are_no_session(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, mangle: Any
) -> None:
    device = Device(client_manager(clock))
    device.visit(admin=0)
    token = device.token()
    device.cookies[COOKIE] = mangle(token)
    with caplog.at_level(logging.WARNING, "coatcheck.security"):
        session = device.open()
    assert session.is_new and dict(session) == {}
    assert "token." in caplog.text
    assert token not in caplog.text and device.cookies[COOKIE] not in caplog.text


def test_old_key_tokens_are_reissued_under_the_new_key_keeping_iat(clock: FakeClock) -> None:
    registry = MemoryStore(clock=clock)
    revocations = MemoryRevocationStore(clock=clock)
    shared: dict[str, Any] = {"store": registry, "revocations": revocations}
    old = client_manager(clock, keys=KeyRing([KEY_A]), **shared)
    device = Device(old)
    session = device.open()
    session.login("bob")
    device.commit(session)
    created, auth = session.created_at, session.authenticated_at

    clock.advance(5)
    device.manager = client_manager(clock, keys=KeyRing([KEY_B, KEY_A]), **shared)
    rotated = device.open()
    assert rotated.user == "bob"
    device.commit(rotated)
    new_token = device.token()
    header = json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))
    assert header["kid"] == KeyRing([KEY_B]).current(_jws_purpose()).kid
    reopened = device.open()
    assert int(reopened.created_at) == int(created)
    assert reopened.authenticated_at is not None and auth is not None
    assert int(reopened.authenticated_at) == int(auth)
    # Under a ring without the old key, the re-issued token still works.
    device.manager = client_manager(clock, keys=KeyRing([KEY_B]), **shared)
    assert device.open().user == "bob"


def test_a_session_whose_registry_record_is_lost_ends_at_its_next_write(
    clock: FakeClock,
) -> None:
    """A token that is not listed must not stay accepted, and a write that cannot be kept
    must not pass for kept: the session ends, visibly, instead."""
    registry = MemoryStore(clock=clock)
    manager = client_manager(clock, store=registry, revocations=MemoryRevocationStore())
    device = Device(manager)
    session = device.open()
    session.login("bob")
    device.commit(session)
    registry.delete(session.id)  # the registry lost it (flushed, restored from a backup...)
    clock.advance(61)  # the write below moves the idle deadline: a registry write
    session = device.open()
    assert session.user == "bob"
    session["cart"] = ["book"]
    assert cookie_value(device.commit(session)) is None  # no token for what was not kept
    assert device.open().user is None


def test_only_logged_in_sessions_are_registered_unless_anonymous_ones_are_listed(
    clock: FakeClock,
) -> None:
    """A new visitor costs no registry write: its record is created at login, under the
    new handle, and deleted when `unbind_user()` makes the session anonymous again.
    `list_anonymous=True` registers every session from its first token."""
    registry = MemoryStore(clock=clock)
    manager = client_manager(clock, store=registry, revocations=MemoryRevocationStore())
    device = Device(manager)
    device.visit(cart=["book"])
    clock.advance(61)
    device.visit(cart=["book", "pen"])  # an idle-deadline refresh: still no record
    anonymous = device.open()
    assert registry.load(anonymous.id) is None
    assert anonymous.data() == {"cart": ["book", "pen"]}
    session = device.open()
    session.login("erin")
    device.commit(session)
    [listed] = SessionAdmin(manager).sessions("erin")
    assert listed.id == device.open().id != anonymous.id
    clock.advance(61)
    device.visit(seen=1)  # refreshed in place, at the stored version
    assert [i.last_seen for i in SessionAdmin(manager).sessions("erin")] == [clock()]
    session = device.open()
    session.unbind_user()
    device.commit(session)
    assert registry.load(session.id) is None and SessionAdmin(manager).sessions("erin") == []
    assert device.open().data()["seen"] == 1  # the session goes on, unlisted

    everyone = MemoryStore(clock=clock)
    listing = client_manager(
        clock, store=everyone, revocations=MemoryRevocationStore(), list_anonymous=True
    )
    visitor = Device(listing)
    visitor.visit(a=1)
    assert everyone.load(visitor.open().id) is not None


def _jws_purpose() -> Any:
    from coatcheck.keys import JWS_HS256

    return JWS_HS256


def test_registry_lists_client_sessions_with_metadata(clock: FakeClock) -> None:
    manager = client_manager(clock)
    laptop, phone = Device(manager, "laptop/1"), Device(manager, "phone/2")
    for device in (laptop, phone):
        session = device.open()
        session.login("carol")
        device.commit(session)
    listed = SessionAdmin(manager).sessions("carol")
    assert {i.user_agent for i in listed} == {"laptop/1", "phone/2"}
    assert all(i.mode == "client" and i.ip == "198.51.100.7" for i in listed)
    assert {i.id for i in listed} == {laptop.open().id, phone.open().id}


def test_revoke_one_and_log_out_other_devices(clock: FakeClock) -> None:
    manager = client_manager(clock)
    a, b, c = Device(manager), Device(manager), Device(manager)
    for device in (a, b, c):
        session = device.open()
        session.login("dave")
        device.commit(session)
    SessionAdmin(manager).revoke(b.open().id)
    assert b.open().is_new
    assert not a.open().is_new

    session = a.open()
    session.logout_other_devices()
    a.commit(session)
    assert c.open().is_new
    assert a.open().user == "dave"
    assert [i.id for i in SessionAdmin(manager).sessions("dave")] == [a.open().id]


def test_log_out_everywhere_refuses_older_tokens(clock: FakeClock) -> None:
    manager = client_manager(clock, store=None, revocations=MemoryRevocationStore())
    devices = [Device(manager) for _ in range(3)]
    for device in devices:
        session = device.open()
        session.login("erin")
        device.commit(session)
    stranger = Device(manager)
    session = stranger.open()
    session.login("frank")
    stranger.commit(session)

    clock.advance(1)
    SessionAdmin(manager).revoke_user("erin")
    assert all(d.open().is_new for d in devices)
    assert stranger.open().user == "frank"
    clock.advance(1)
    fresh = Device(manager)
    session = fresh.open()
    session.login("erin")
    fresh.commit(session)
    assert fresh.open().user == "erin"


def test_logout_revokes_the_token_even_if_the_client_keeps_it(clock: FakeClock) -> None:
    device = Device(client_manager(clock))
    session = device.open()
    session.login("gina")
    device.commit(session)
    stolen = dict(device.cookies)
    session = device.open()
    session.logout()
    headers = device.commit(session)
    assert any("Max-Age=0" in v for k, v in headers if k == "set-cookie")
    device.cookies = stolen
    assert device.open().is_new


def test_login_revokes_the_pre_login_token_at_once(clock: FakeClock) -> None:
    device = Device(client_manager(clock))
    device.visit(a=1)
    planted = dict(device.cookies)
    session = device.open()
    session.login("hank")
    device.commit(session)
    assert device.open().user == "hank"
    device.cookies = planted
    assert device.open().is_new


def test_regenerate_keeps_old_token_for_the_grace_window(clock: FakeClock) -> None:
    device = Device(client_manager(clock, lifetimes=Lifetimes(renewal=None, grace=10)))
    device.visit(a=1)
    old = dict(device.cookies)
    session = device.open()
    session.regenerate()
    device.commit(session)
    assert device.open()["a"] == 1
    keep = device.cookies
    device.cookies = old
    assert device.open()["a"] == 1
    clock.advance(11)
    assert device.open().is_new
    device.cookies = keep
    assert device.open()["a"] == 1


@pytest.mark.parametrize("store", ["memory://", None])
def test_two_regenerations_from_one_token_leave_one_current(clock: FakeClock, store: Any) -> None:
    """Two requests opened with the same token both regenerate: the later one's token
    supersedes the earlier one's (a generation above it), which then dies with its grace
    window; before the fix both carried generation 1 and the earlier one lived on."""
    device = Device(client_manager(clock, store=store, lifetimes=Lifetimes(renewal=None, grace=10)))
    device.visit(a=1)
    first, second = device.open(), device.open()
    first.regenerate()
    device.commit(first)
    earlier = dict(device.cookies)
    clock.advance(1)
    second.regenerate()
    device.commit(second)
    later = dict(device.cookies)
    assert earlier != later
    clock.advance(9)
    device.cookies = earlier
    assert device.open()["a"] == 1  # within its grace window
    clock.advance(2)
    assert device.open().is_new
    device.cookies = later
    assert device.open()["a"] == 1


def test_a_10_kb_session_round_trips_through_chunked_cookies(clock: FakeClock) -> None:
    device = Device(client_manager(clock))
    blob = "x" * 10_000
    device.visit(blob=blob)
    chunks = sorted(k for k in device.cookies if k.startswith(f"{COOKIE}."))
    assert chunks == [f"{COOKIE}.{i}" for i in range(len(chunks))] and len(chunks) >= 3
    assert all(len(v) + len(k) < 4096 for k, v in device.cookies.items())
    assert device.open()["blob"] == blob

    # Shrinking clears the chunks; growing again clears the single cookie.
    session = device.open()
    session["blob"] = "small"
    device.commit(session)
    assert set(device.cookies) == {COOKIE}
    assert device.open()["blob"] == "small"


def test_too_large_session_raises_with_a_hint(clock: FakeClock) -> None:
    device = Device(client_manager(clock))
    session = device.open()
    session["blob"] = "y" * 40_000
    with pytest.raises(SessionTooLarge, match="ServerSide"):
        device.commit(session)


def test_migration_server_to_client_and_back_keeps_the_user_logged_in(clock: FakeClock) -> None:
    shared = MemoryStore(clock=clock)
    server = SessionManager(ServerSide(shared), lifetimes=Lifetimes(renewal=None), clock=clock)
    device = Device(server)
    session = device.open()
    session["cart"] = ["tea"]
    session.login("ivy")
    device.commit(session)
    server_id = device.token()
    assert "." not in server_id

    revocations = MemoryRevocationStore()
    client = SessionManager(
        ClientSide(KeyRing([KEY_A]), store=shared, revocations=revocations),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
    )
    device.manager = client
    migrated = device.open()
    assert migrated.user == "ivy" and migrated["cart"] == ["tea"]
    device.commit(migrated)
    assert device.token().count(".") == 2
    assert device.open().user == "ivy"
    assert [i.mode for i in SessionAdmin(client).sessions("ivy")] == ["client"]

    back = SessionManager(
        ServerSide(
            shared, migrate_from=ClientSide(KeyRing([KEY_A]), store=None, revocations=revocations)
        ),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
    )
    device.manager = back
    returned = device.open()
    assert returned.user == "ivy" and returned["cart"] == ["tea"]
    device.commit(returned)
    assert "." not in device.token()
    assert device.open().user == "ivy"


def test_tokens_verify_and_decrypt_with_an_independent_jose_library(clock: FakeClock) -> None:
    ring = KeyRing([KEY_A])
    for encrypted in (False, True):
        device = Device(client_manager(clock, keys=ring, encrypted=encrypted))
        session = device.open()
        session["k"] = "v"
        session.login("jo")
        device.commit(session)
        keys = KeySet.import_key_set(ring.jwks(include_secret=True))  # type: ignore[arg-type]
        if encrypted:
            obj = jwe.decrypt_compact(device.token(), keys)
            assert obj.plaintext is not None
            claims = json.loads(obj.plaintext)
        else:
            claims = json.loads(jws.deserialize_compact(device.token(), keys).payload)
        assert claims["sub"] == "jo" and claims["dat"] == {"k": "v"}
        assert {"sid", "iat", "exp", "idl", "auth_time"} <= set(claims)


def test_stateless_mode_needs_no_store(clock: FakeClock) -> None:
    device = Device(client_manager(clock, store=None))
    device.visit(a=1)
    assert device.open()["a"] == 1
    with pytest.raises(ConfigurationError, match="stateless"):
        SessionAdmin(device.manager).sessions("anyone")


def test_configuration_errors_are_explained() -> None:
    with pytest.raises(ConfigurationError, match="KeyRing"):
        ClientSide("not a ring", store=None)
    with pytest.raises(ConfigurationError, match="encrypted"):
        ClientSide(KeyRing([KEY_A]), compress=True, store=None)
    with pytest.raises(ConfigurationError, match="revocations"):
        ClientSide(KeyRing([KEY_A]), store=MemoryStore())


def test_revocation_reaches_another_process_within_the_staleness_bound(tmp_path: Path) -> None:
    """A second OS process refuses a revoked token once its copy of the revocation list is
    `staleness` old, and not before: the check costs it no store round trip until then.
    The other process runs on a clock the test steps, so the bound is checked exactly."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    manager = SessionManager(ClientSide(KeyRing([KEY_A]), store=url, staleness=1.0))
    device = Device(manager)
    session = device.open()
    session.login("kim")
    device.commit(session)
    cookie = f"{COOKIE}={device.token()}"
    script = textwrap.dedent(
        f"""
        import sys, time
        from coatcheck import ClientSide, KeyRing, RequestInfo, SessionManager
        from coatcheck.drivers import open_session
        now = [time.time()]
        m = SessionManager(ClientSide(KeyRing([{KEY_A!r}]), store={url!r}, staleness=1.0),
                           clock=lambda: now[0])
        r = RequestInfo(headers=[("cookie", {cookie!r})])
        print(open_session(m, r).user, flush=True)
        sys.stdin.readline()
        for step in (0.5, 0.49, 0.02):
            now[0] += step
            print("accepted" if open_session(m, r).user == "kim" else "refused", flush=True)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "kim"
        SessionAdmin(manager).revoke(device.open().id)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        verdicts = [proc.stdout.readline().strip() for _ in range(3)]
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert verdicts == ["accepted", "accepted", "refused"]


def test_a_token_migrated_to_server_side_cannot_be_migrated_again(clock: FakeClock) -> None:
    """After the switch to server-side sessions, the client-side token is revoked: a copy of
    it (kept by the browser of a thief) does not come back to life after a logout."""
    shared = MemoryStore(clock=clock)
    revocations = MemoryRevocationStore()
    client = SessionManager(
        ClientSide(KeyRing([KEY_A]), store=shared, revocations=revocations),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
    )
    device = Device(client)
    session = device.open()
    session.login("lea")
    device.commit(session)
    copy = dict(device.cookies)
    assert [i.mode for i in SessionAdmin(client).sessions("lea")] == ["client"]

    server = SessionManager(
        ServerSide(
            shared, migrate_from=ClientSide(KeyRing([KEY_A]), store=None, revocations=revocations)
        ),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
    )
    device.manager = server
    migrated = device.open()
    assert migrated.user == "lea"
    device.commit(migrated)
    listed = SessionAdmin(server).sessions("lea")
    assert [i.id for i in listed] == [device.open().id]  # the registry entry went too
    session = device.open()
    session.logout()
    device.commit(session)

    thief = Device(server)
    thief.cookies = copy
    assert thief.open().user is None  # refused: revoked when it was migrated


# -- degraded mode: the store is down (issue 11, item 8) ---------------------------------


def degraded(
    clock: FakeClock, **options: Any
) -> tuple[SessionManager, SwitchStore, SwitchRevocations]:
    registry, revocations = SwitchStore(clock=clock), SwitchRevocations(clock=clock)
    manager = client_manager(clock, store=registry, revocations=revocations, **options)
    return manager, registry, revocations


def test_a_failed_sync_serves_the_list_it_has_until_max_staleness(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens verify without the store: while it is down they are served from this
    process's copy of the list, up to `max_staleness` after its last successful sync, then
    refused (503 in the adapters). A revocation another replica wrote meanwhile is the
    cost, and it is seen as soon as the store answers again. Revocation writes still
    fail: a logout that cannot be recorded is not pretended."""
    manager, registry, revocations = degraded(clock)  # max_staleness: 60 s by default
    device = Device(manager)
    session = device.open()  # the list is synced now: t = 0
    session.login("kim")
    device.commit(session)
    registry.down = revocations.down = True
    entry = ClientSide.revocation(client_mode(manager), manager.context, device.open().id)
    MemoryRevocationStore.revoke(revocations, entry)  # another replica still reaches it
    clock.advance(30)
    assert device.open().user == "kim"  # served from the copy: the revocation is not seen
    session = device.open()
    session.logout()
    with pytest.raises(StoreUnavailable):
        device.commit(session)
    clock.advance(29.9)
    assert device.open().user == "kim"
    clock.advance(0.1)
    with pytest.raises(StoreUnavailable, match="max_staleness"):
        device.open()
    registry.down = revocations.down = False
    clock.advance(1)
    assert device.open().user is None  # synced: the revocation holds at once
    stale = [r for r in caplog.records if getattr(r, "event", None) == "revocations.stale"]
    assert [r.count for r in stale] == [1, 2]  # type: ignore[attr-defined]  # 29.9 s apart
    [back] = [r for r in caplog.records if getattr(r, "event", None) == "revocations.synced"]
    assert "3 requests served on a stale list" in back.getMessage()


def test_a_poll_far_behind_goes_page_by_page_and_a_failed_page_keeps_the_ones_before(
    clock: FakeClock,
) -> None:
    """A replica 2.5 pages (`CHANGES_PAGE`) behind reads them in one poll, each call short;
    when a page fails, the pages before it stay applied (the cursor moves on, the copy's
    age does not: it is not up to date) and the next poll starts where they ended, instead
    of from the whole backlog again, which a backlog too long for one call never ends."""
    manager, _, revocations = degraded(clock)
    device = Device(manager)
    session = device.open()
    session.login("kim")
    device.commit(session)
    mode = client_mode(manager)
    rlist = mode.revocation_list
    synced_at = rlist.synced_at
    for i in range(2 * CHANGES_PAGE):
        revocations.revoke(Revocation("sid", f"other-{i}", clock(), clock() + 3600))
    revocations.revoke(ClientSide.revocation(mode, manager.context, device.open().id))
    start = rlist.cursor
    revocations.answers, revocations.cursors = 1, []  # the first page, then it is down
    clock.advance(2)
    assert device.open().user == "kim"  # served from the copy: the entry is on page 3
    assert revocations.cursors == [start, start + CHANGES_PAGE]
    assert (rlist.cursor, rlist.synced_at) == (start + CHANGES_PAGE, synced_at)
    revocations.answers, revocations.cursors = None, []
    clock.advance(1)
    assert device.open().user is None  # pages 2 and 3: the revocation holds
    assert revocations.cursors == [start + CHANGES_PAGE, start + 2 * CHANGES_PAGE]
    assert rlist.synced_at == clock()


def client_mode(manager: SessionManager) -> ClientSide:
    mode = manager.mode
    assert isinstance(mode, ClientSide)
    return mode


def test_while_the_store_is_down_it_is_asked_once_a_second_and_logged_once_per_interval(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _, revocations = degraded(clock)
    device = Device(manager)
    device.visit(a=1)
    revocations.down = True
    asked = revocations.asked
    clock.advance(2)
    for _ in range(50):
        assert device.open()["a"] == 1
    assert revocations.asked == asked + 1  # no request waits on a dead store but the first
    clock.advance(0.999)
    device.open()
    assert revocations.asked == asked + 1
    clock.advance(0.001)
    device.open()
    assert revocations.asked == asked + 2
    mode = client_mode(manager)
    assert mode.served_stale.total == 52
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "revocations.stale"]
    assert "max_staleness=60 s" in line.getMessage()


def test_registry_writes_are_dropped_while_it_is_down_and_the_token_still_issued(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """'accepted => listed' is suspended while the registry is down, and says so; once it
    is back, a session that never got its record ends at its next registry write, as any
    token that is not listed."""
    manager, registry, _ = degraded(clock)
    registry.down = True
    device = Device(manager)
    session = device.open()
    session.login("ida")  # a new session: its registry record cannot be written
    assert cookie_value(device.commit(session))
    assert device.open().user == "ida"
    mode = client_mode(manager)
    assert mode.dropped_registry_writes.total == 1
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "registry.write_dropped"]
    assert "'accepted => listed' suspended" in line.getMessage()
    registry.down = False
    assert SessionAdmin(manager).sessions("ida") == []  # accepted, not listed
    clock.advance(61)  # the next write moves the idle deadline: a registry write
    session = device.open()
    session["x"] = 1
    assert cookie_value(device.commit(session)) is None
    assert device.open().user is None


def test_max_staleness_zero_fails_closed_as_strict_does(clock: FakeClock) -> None:
    manager, registry, revocations = degraded(clock, max_staleness=0, list_anonymous=True)
    assert client_mode(manager).max_staleness == 0
    assert ClientSide(KeyRing([KEY_A]), store=None, strict=True).max_staleness == 0
    device = Device(manager)
    device.visit(a=1)
    revocations.down = True
    clock.advance(1)  # the list is due for a sync
    with pytest.raises(StoreUnavailable):
        device.open()
    revocations.down, registry.down = False, True
    clock.advance(61)  # the next write moves the idle deadline: a registry write
    session = device.open()
    session["b"] = 2
    with pytest.raises(StoreUnavailable):
        device.commit(session)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, 0.5])
def test_max_staleness_is_checked_at_construction(value: float) -> None:
    with pytest.raises(ConfigurationError, match="max_staleness"):
        ClientSide(KeyRing([KEY_A]), store=None, staleness=1.0, max_staleness=value)
