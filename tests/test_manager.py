"""`SessionManager` and the sync drivers, without a server: open/attach/commit/rebase,
lifetimes with an injected clock, rotation and its grace alias, concurrency by rebase,
listing and revocation, and what reprs and logs never show."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatcheck import (
    Lifetimes,
    Opening,
    RequestInfo,
    Session,
    SessionAdmin,
    SessionDataError,
    SessionManager,
)
from coatcheck.drivers import commit_session, open_session
from coatcheck.ids import handle_of, new_secret, verifier_hash
from coatcheck.manager import Write
from coatcheck.records import decode
from coatcheck.stores import MemoryStore
from helpers import (
    COOKIE,
    Browser,
    CountingStore,
    FakeClock,
    cookie_value,
    manager_for,
    request,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> CountingStore:
    return CountingStore(clock=clock)


@pytest.fixture
def manager(store: CountingStore, clock: FakeClock) -> SessionManager:
    return manager_for(store, clock)


def start(manager: SessionManager, **values: Any) -> Browser:
    """A browser holding a saved session with `values`."""
    browser = Browser(manager)
    session = browser.open()
    session.update(values or {"k": "v"})
    browser.commit(session)
    assert browser.secret is not None
    return browser


# -- open / attach ---------------------------------------------------------------------

GARBAGE = [
    ("short", "abc"),
    ("long", "A" * 44),
    ("oversized", "A" * 10_000),
    ("bad-alphabet", "+" * 43),
    ("non-ascii", "é" * 43),
    ("space-inside", "A" * 20 + " " + "A" * 22),
    ("unknown-wellformed", new_secret()),
]


@pytest.mark.parametrize(("name", "value"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_bad_cookie_gives_fresh_session_and_clears_it(
    manager: SessionManager,
    store: CountingStore,
    caplog: pytest.LogCaptureFixture,
    name: str,
    value: str,
) -> None:
    start(manager)
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    session = open_session(manager, request(value))
    assert session.is_new
    assert session.secret != value
    assert len(session) == 0
    headers = commit_session(manager, session)
    assert cookie_value(headers) == ""  # the client's bad cookie is cleared
    records = [r for r in caplog.records if r.name == "coatcheck.security"]
    assert records
    for record in records:
        assert value not in record.getMessage()
        assert value[:12] not in record.getMessage()


def test_no_cookie_gives_fresh_session_silently(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    opening = manager.open(request())
    assert opening.key is None and not opening.presented
    session = manager.attach(opening, None)
    assert isinstance(session, Session) and session.is_new
    assert commit_session(manager, session) == []
    assert not [r for r in caplog.records if r.name == "coatcheck.security"]


def test_open_keys_by_public_id(manager: SessionManager) -> None:
    secret = new_secret()
    opening = manager.open(request(secret))
    assert opening.key == handle_of(secret)
    assert opening.secret == secret


def test_open_takes_the_secret_an_adapter_read_itself(manager: SessionManager) -> None:
    carried, given = new_secret(), new_secret()
    opening = manager.open(request(carried), given)
    assert opening.key == handle_of(given) and opening.secret == given and opening.presented
    nothing = manager.open(request(carried), "")  # the adapter says: no session
    assert nothing.key is None and nothing.secret is None and not nothing.presented


def test_a_secret_that_does_not_match_its_handle_gets_a_fresh_session(
    manager: SessionManager, store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged secret for a known handle (say, read off an admin page) opens nothing and
    ends nothing: the record stays for the holder of the real secret."""
    browser = start(manager, k="v")
    real = browser.secret or ""
    forged = new_secret(handle_of(real))
    caplog.set_level(logging.INFO, logger="coatcheck.security")
    session = open_session(manager, request(forged))
    assert session.is_new and session.id != handle_of(real) and "k" not in session
    commit_session(manager, session)
    assert any("session.mismatch" in r.getMessage() for r in caplog.records)
    assert open_session(manager, request(real))["k"] == "v"


def test_corrupted_record_gives_fresh_session_and_is_deleted(
    manager: SessionManager, store: CountingStore
) -> None:
    secret = new_secret()
    store.save(handle_of(secret), b"\x80 not json", version=0, ttl=60, user=None)
    session = open_session(manager, request(secret))
    assert session.is_new
    commit_session(manager, session)
    assert store.load(handle_of(secret)) is None


# -- writing only when needed ----------------------------------------------------------


def test_new_untouched_session_writes_nothing(
    manager: SessionManager, store: CountingStore
) -> None:
    browser = Browser(manager)
    session = browser.open()
    _ = session.get("anything")
    headers = browser.commit(session)
    assert store.saves == 0
    assert cookie_value(headers) is None
    assert ("vary", "Cookie") in headers  # it was read, so the response depends on it


def test_unchanged_session_writes_nothing(
    manager: SessionManager, store: CountingStore, clock: FakeClock
) -> None:
    browser = start(manager, cart=["a"], n=1)
    saves = store.saves
    for _ in range(3):
        clock.advance(1)
        session = browser.open()
        assert session["cart"] == ["a"] and session["n"] == 1
        assert browser.commit(session) == [("vary", "Cookie")]
    assert store.saves == saves


def test_last_seen_refreshed_at_most_once_per_touch_interval(
    store: CountingStore, clock: FakeClock
) -> None:
    manager = manager_for(store, clock, lifetimes=Lifetimes(renewal=None, touch_interval=60))
    browser = start(manager)
    created = clock.now
    saves = store.saves
    timeline = [(30, False), (29, False), (2, True), (30, False), (31, True), (1, False)]
    for step, writes in timeline:
        clock.advance(step)
        before = store.saves
        session = browser.open()
        browser.commit(session)
        assert (store.saves > before) == writes, (clock.now - created, step)
    assert store.saves == saves + 2
    session = browser.open()
    assert session.last_seen == clock.now - 1


# -- lifetimes -------------------------------------------------------------------------

IDLE = 600.0
ABSOLUTE = 3600.0
LIFETIMES = Lifetimes(idle=IDLE, absolute=ABSOLUTE, renewal=None, touch_interval=60)


@pytest.mark.parametrize(
    ("steps", "alive"),
    [
        ([IDLE - 1], True),
        ([IDLE], False),  # idle timeout
        ([IDLE - 100, IDLE - 100], True),  # each request moves the idle deadline
        ([500.0] * 7, True),  # 3500 s in, still under the absolute timeout
        ([500.0] * 7 + [100.0], False),  # 3600 s: absolute timeout despite activity
    ],
    ids=["idle-1", "idle", "kept-alive", "before-absolute", "absolute"],
)
@pytest.mark.parametrize("store_clock", ["shared", "frozen"])
def test_idle_and_absolute_timeouts(
    steps: list[float],
    alive: bool,
    store_clock: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "shared": the store expires the record by its TTL; "frozen": the store keeps it and
    # the manager must refuse it by its own timestamps (a store that expires late).
    clock = FakeClock()
    store = MemoryStore(clock=clock if store_clock == "shared" else FakeClock())
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    browser = start(manager, k="v")
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    for step in steps:
        clock.advance(step)
        session = browser.open()
        touched = session.get("k")
        if session.is_new:
            break
        session["touch"] = clock.now  # a real request: the session is used and saved
        browser.commit(session)
    assert (touched == "v") is alive
    if not alive:
        assert session.is_new
        headers = browser.commit(session)
        assert cookie_value(headers) == ""
        assert [r for r in caplog.records if r.name == "coatcheck.security"]


def test_expired_record_is_deleted(clock: FakeClock) -> None:
    store = MemoryStore(clock=FakeClock())  # never expires on its own
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    browser = start(manager)
    key = handle_of(browser.secret or "")
    clock.advance(IDLE + 1)
    session = browser.open()
    assert session.is_new
    browser.commit(session)
    assert store.load(key) is None


def test_renewal_rotates_id_and_old_id_survives_only_the_grace_window(
    store: CountingStore, clock: FakeClock
) -> None:
    lifetimes = Lifetimes(renewal=300, grace=10, touch_interval=60)
    manager = manager_for(store, clock, lifetimes=lifetimes)
    browser = start(manager, k="v")
    old = browser.secret
    clock.advance(299)
    session = browser.open()
    browser.commit(session)
    assert browser.secret == old  # not yet
    clock.advance(1)
    session = browser.open()
    assert session._state.rotate == "renewal"
    browser.commit(session)
    new = browser.secret
    assert new is not None and new != old
    assert session.secret == new and session.id == handle_of(new)
    # the old ID resolves to the same session during the grace window ...
    clock.advance(9)
    via_old = open_session(manager, request(old))
    assert not via_old.is_new and via_old.id == handle_of(new) and via_old["k"] == "v"
    via_old["during-grace"] = 1
    assert cookie_value(commit_session(manager, via_old)) is None
    assert browser.open()["during-grace"] == 1  # the write landed on the new record
    # ... and not after it
    clock.advance(1)
    assert open_session(manager, request(old)).is_new
    assert browser.open()["k"] == "v"


# -- login, regenerate, logout -----------------------------------------------------------


def test_login_rotates_and_leaves_no_alias(
    manager: SessionManager, store: CountingStore, clock: FakeClock
) -> None:
    browser = start(manager, cart=["a"])
    old = browser.secret
    session = browser.open()
    session.login("alice")
    headers = browser.commit(session)
    new = browser.secret
    assert new is not None and new != old
    assert ("cache-control", "no-store") in headers
    assert store.load(handle_of(old or "")) is None  # dead at once: no grace for fixation
    assert open_session(manager, request(old)).is_new
    session = browser.open()
    assert session.user == "alice" and session["cart"] == ["a"]
    assert session.authenticated_at == clock.now


@pytest.mark.parametrize("race", [False, True], ids=["alone", "after-a-concurrent-write"])
def test_absolute_timeout_counts_from_login(
    store: CountingStore, clock: FakeClock, race: bool
) -> None:
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    browser = start(manager)

    def busy(seconds: float) -> Session:
        for _ in range(int(seconds // 500)):
            clock.advance(500)
            session = browser.open()
            browser.commit(session)
        return browser.open()

    session = busy(3000)  # an anonymous session, kept busy for 50 of its 60 minutes
    session.login("alice")
    if race:  # the login's rotation is refused once and rebased
        other = browser.open()
        other["x"] = 1
        browser.commit(other)
    browser.commit(session)
    logged_in = clock.now
    assert store.conflicts == int(race)
    assert busy(3500).user == "alice"  # 6500 s after the session was opened
    clock.advance(logged_in + ABSOLUTE - clock.now)
    assert browser.open().user is None


def test_login_on_a_new_session(manager: SessionManager) -> None:
    browser = Browser(manager)
    session = browser.open()
    session.login("bob")
    browser.commit(session)
    assert browser.open().user == "bob"


def test_regenerate_keeps_the_handle_and_the_old_secret_for_the_grace_window(
    manager: SessionManager, store: CountingStore, clock: FakeClock
) -> None:
    browser = start(manager, k="v")
    old = browser.secret or ""
    session = browser.open()
    session.regenerate()
    browser.commit(session)
    new = browser.secret or ""
    assert new != old and handle_of(new) == handle_of(old)
    record = store.load(handle_of(old))
    assert record is not None
    credentials = decode(record.data).credentials
    assert credentials is not None
    assert credentials.verifier == verifier_hash(new)
    assert credentials.previous == verifier_hash(old)
    assert credentials.previous_until == clock.now + manager.lifetimes.grace
    assert old.encode() not in record.data and new.encode() not in record.data
    clock.advance(manager.lifetimes.grace - 0.5)
    assert open_session(manager, request(old))["k"] == "v"
    clock.advance(1)
    assert open_session(manager, request(old)).is_new
    assert open_session(manager, request(new))["k"] == "v"


def test_logout_deletes_record_and_clears_cookie(
    manager: SessionManager, store: CountingStore
) -> None:
    browser = start(manager)
    key = handle_of(browser.secret or "")
    session = browser.open()
    session.logout()
    headers = browser.commit(session)
    assert cookie_value(headers) == ""
    assert any("Max-Age=0" in v for k, v in headers if k == "set-cookie")
    assert store.load(key) is None
    assert browser.secret is None


@pytest.mark.parametrize("after", ["flash", "login", "csrf_token"])
def test_use_after_logout_goes_to_a_new_session(
    manager: SessionManager, store: CountingStore, after: str
) -> None:
    browser = Browser(manager)
    session = browser.open()
    session.login("alice")
    session["cart"] = ["a"]
    browser.commit(session)
    old = browser.secret
    session = browser.open()
    session.logout()
    assert session.user is None and session.authenticated_at is None
    assert len(session) == 0
    if after == "flash":
        session["flash"] = "You are logged out"
    elif after == "login":
        session.login("bob")
    else:
        _ = session.csrf_token  # the login form on the "logged out" page
    headers = browser.commit(session)
    new = browser.secret
    assert new is not None and new != old
    assert cookie_value(headers) == new
    assert store.load(handle_of(old or "")) is None  # the ended session stays ended
    assert open_session(manager, request(old)).is_new
    session = browser.open()
    assert not session.is_new
    assert session.get("cart") is None
    assert session.user == ("bob" if after == "login" else None)
    assert session.get("flash") == ("You are logged out" if after == "flash" else None)
    assert SessionAdmin(manager).sessions("alice") == []


def test_logout_of_a_new_session_sends_nothing(manager: SessionManager) -> None:
    browser = Browser(manager)
    session = browser.open()
    session.logout()
    assert cookie_value(browser.commit(session)) is None


def test_persistent_cookie_has_max_age_until_absolute_deadline(
    store: CountingStore, clock: FakeClock
) -> None:
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    browser = start(manager)
    clock.advance(100)
    session = browser.open()
    session.set_persistent()
    headers = browser.commit(session)
    cookie = next(v for k, v in headers if k == "set-cookie")
    assert f"Max-Age={int(ABSOLUTE - 100)}" in cookie
    assert browser.open().persistent


# -- listing and revocation --------------------------------------------------------------


def test_list_revoke_and_logout_other_devices(manager: SessionManager, clock: FakeClock) -> None:
    admin = SessionAdmin(manager)
    devices = []
    for i in range(3):
        browser = Browser(manager)
        session = browser.open(headers=[("user-agent", f"device-{i}")])
        session.login("alice")
        browser.commit(session)
        devices.append(browser)
        clock.advance(1)
    other = Browser(manager)
    session = other.open()
    session.login("bob")
    other.commit(session)

    listed = admin.sessions("alice")
    assert [i.user_agent for i in listed] == ["device-2", "device-1", "device-0"]
    assert {i.id for i in listed} == {handle_of(b.secret or "") for b in devices}
    assert all((b.secret or "-") not in repr(listed) for b in devices)

    admin.revoke(listed[2].id)  # device-0
    assert devices[0].open().is_new
    assert not devices[1].open().is_new

    session = devices[2].open()
    session.logout_other_devices()
    devices[2].commit(session)
    assert devices[1].open().is_new
    assert devices[2].open().user == "alice"
    assert [i.id for i in admin.sessions("alice")] == [handle_of(devices[2].secret or "")]
    assert other.open().user == "bob"
    assert admin.revoke_user("bob") == 1
    assert other.open().is_new


def test_listing_skips_expired_sessions(clock: FakeClock) -> None:
    store = MemoryStore(clock=FakeClock())
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    browser = Browser(manager)
    session = browser.open()
    session.login("alice")
    browser.commit(session)
    assert len(SessionAdmin(manager).sessions("alice")) == 1
    clock.advance(IDLE)
    assert SessionAdmin(manager).sessions("alice") == []


# -- concurrency: rebase -----------------------------------------------------------------


def test_rebase_merges_distinct_keys(manager: SessionManager, store: CountingStore) -> None:
    browser = start(manager, base=0)
    first, second = browser.open(), browser.open()
    first["a"] = 1
    second["b"] = 2
    del second["base"]
    browser.commit(first)
    browser.commit(second)
    assert store.conflicts == 1
    assert browser.open().data() == {"a": 1, "b": 2}


def test_rebase_same_key_last_commit_wins(manager: SessionManager) -> None:
    browser = start(manager, k=0)
    first, second = browser.open(), browser.open()
    second["k"] = "second"
    first["k"] = "first"
    browser.commit(second)
    browser.commit(first)
    assert browser.open()["k"] == "first"


def test_rebase_after_in_place_mutation_keeps_other_keys(manager: SessionManager) -> None:
    browser = start(manager, cart=["a"], n=0)
    first, second = browser.open(), browser.open()
    first["cart"].append("b")
    second["n"] = 1
    browser.commit(second)
    browser.commit(first)
    assert browser.open().data() == {"cart": ["a", "b"], "n": 1}


def test_rebase_onto_deleted_record_does_not_resurrect(
    manager: SessionManager, store: CountingStore
) -> None:
    browser = start(manager)
    key = handle_of(browser.secret or "")
    writer, ender = browser.open(), browser.open()
    writer["late"] = 1
    commit = manager.commit(writer)
    assert commit.write is not None
    ender.logout()
    commit_session(manager, ender)
    assert manager.rebase(writer, commit.write, store.load(key)) is None
    headers = commit_session(manager, writer)
    assert cookie_value(headers) is None  # dropped: no write, and no header either
    assert store.load(key) is None
    late = open_session(manager, request(browser.secret))
    assert late.is_new  # the ID stays dead; this request has it cleared
    assert cookie_value(commit_session(manager, late)) == ""


def test_write_racing_a_login_does_not_clear_the_new_cookie(
    manager: SessionManager, store: CountingStore
) -> None:
    browser = start(manager, cart=["a"])
    old = browser.secret
    writer, logger = browser.open(), browser.open()
    logger.login("alice")
    browser.commit(logger)
    new = browser.secret
    assert new != old
    writer["page"] = "/checkout"
    headers = browser.commit(writer)  # its record moved away: the write is dropped
    assert cookie_value(headers) is None
    assert browser.secret == new
    assert browser.open().user == "alice"
    assert open_session(manager, request(old)).is_new


def test_rebase_sans_io() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    browser = start(manager, a=0, b=0)
    session = browser.open()
    session["a"] = 1
    write = manager.commit(session).write
    assert isinstance(write, Write)
    other = browser.open()
    other["b"] = 2
    commit_session(manager, other)
    current = store.load(write.key)
    assert current is not None and current.version == write.version + 1
    rebased = manager.rebase(session, write, current)
    assert rebased is not None and rebased.version == current.version
    stored = decode(rebased.data)
    assert stored.data == {"a": 1, "b": 2}


def test_concurrent_renewal_second_keeps_first_id(store: CountingStore, clock: FakeClock) -> None:
    lifetimes = Lifetimes(renewal=300, grace=10, touch_interval=60)
    manager = manager_for(store, clock, lifetimes=lifetimes)
    browser = start(manager, base=1)
    old = browser.secret
    clock.advance(301)
    first, second = browser.open(), browser.open()
    assert first._state.rotate == second._state.rotate == "renewal"
    first["a"] = 1
    second["b"] = 2
    browser.commit(first)
    new = browser.secret
    assert new != old
    commit = manager.commit(second)
    assert commit.write is not None and commit.write.key == handle_of(old or "")
    assert commit.write.secret is not None and commit.write.secret != new
    current = store.load(commit.write.source)
    assert current is not None
    rebased = manager.rebase(second, commit.write, current)
    assert rebased is not None
    assert rebased.key == handle_of(new or "") == handle_of(old or "")
    assert rebased.secret is None and rebased.version == current.version
    credentials = decode(rebased.data).credentials
    assert credentials is not None and credentials.verifier == verifier_hash(new or "")
    headers = commit_session(manager, second)
    assert cookie_value(headers) is None  # no cookie: the first response's ID stands
    session = open_session(manager, request(new))
    assert session.data() == {"base": 1, "a": 1, "b": 2}


def test_regenerate_racing_a_write_keeps_both(
    manager: SessionManager, store: CountingStore
) -> None:
    browser = start(manager)
    old = browser.secret
    writer, rotator = browser.open(), browser.open()
    rotator.regenerate()
    browser.commit(rotator)
    writer["w"] = 1
    headers = commit_session(manager, writer)  # lands on the same handle's record
    assert cookie_value(headers) is None
    assert browser.secret != old
    assert browser.open()["w"] == 1


# -- errors and secrecy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), b"bytes", float("nan"), float("inf"), {"k": {(1, 2): 3}}],
    ids=["set", "object", "bytes", "nan", "inf", "tuple-key"],
)
def test_non_json_value_raises_session_data_error(manager: SessionManager, value: Any) -> None:
    session = Browser(manager).open()
    session["bad"] = value
    with pytest.raises(SessionDataError):
        manager.commit(session)


def test_reprs_never_contain_the_secret(manager: SessionManager, store: CountingStore) -> None:
    browser = start(manager)
    secret = browser.secret or ""
    req = request(secret, headers=[("authorization", f"Bearer {secret}")])
    opening = manager.open(req)
    result = manager.attach(opening, store.load(opening.key or ""))
    assert isinstance(result, Session)
    result["x"] = 1
    result.regenerate()
    commit = manager.commit(result)
    assert commit.write is not None and commit.write.secret
    texts = [
        repr(req),
        repr(opening),
        repr(result),
        repr(commit),
        repr(commit.write),
        repr(manager),
        str(manager),
    ]
    for text in texts:
        assert secret not in text
        assert commit.write.secret not in text


def test_logs_never_contain_the_secret(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = start(manager)
    secrets = [browser.secret or ""]
    for step in ("regenerate", "login", "logout"):
        session = browser.open()
        getattr(session, step)(*(["alice"] if step == "login" else []))
        browser.commit(session)
        secrets.append(browser.secret or "")
    assert caplog.records
    for record in caplog.records:
        for secret in filter(None, secrets):
            assert secret not in record.getMessage()
            assert secret not in str(record.__dict__)


# -- properties --------------------------------------------------------------------------

_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(value=st.text())
def test_any_cookie_value_yields_the_session_or_a_fresh_one(value: str) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    manager = manager_for(store, clock)
    browser = start(manager, k="v")
    secret = browser.secret or ""
    for header in (f"{COOKIE}={value}", value, f"{COOKIE}={secret[:21]}{value}{secret[21:]}"):
        req = RequestInfo(headers=[("cookie", header)], host="testserver")
        result: Session | Opening = manager.open(req)
        while isinstance(result, Opening):
            key = result.key
            result = manager.attach(result, None if key is None else store.load(key))
        if result.is_new:
            assert len(result) == 0 and result.secret != value
        else:
            assert result.id == handle_of(secret) and result["k"] == "v"
        commit_session(manager, result)
