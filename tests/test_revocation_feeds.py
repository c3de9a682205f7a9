"""Revocation change feeds and push feeds, on every backend, through `ClientSide` managers.

What each revocation store promises on its own (the change feed's order, cursors, purges,
parallel writers, undecodable rows, sync and async twins) is the revocation contract in
`tests/stores/contract.py`, run by each backend's `tests/stores/test_*.py`. Here, managers
that each keep their own `RevocationList`, on memory, SQLite, Redis (one server and a
three-master cluster) and PostgreSQL: a revocation written by one manager is refused by
another exactly when its copy is `staleness` old (clocks are injected, so the bound is
checked exactly), including from another OS process; with the pub/sub or LISTEN/NOTIFY
listener running it is refused with no poll at all; an entry whose message was lost is
still refused at the next poll; and a Redis or PostgreSQL server that went away makes
`revoke` fail cleanly, then serves and pushes again after its restart.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coatcheck import ClientSide, KeyRing, Lifetimes, RequestInfo, SessionAdmin, SessionManager
from coatcheck.drivers import aopen_session, commit_session, open_session
from coatcheck.exceptions import StoreUnavailable
from coatcheck.revocation import Revocation, RevocationList, RevocationStore
from coatcheck.stores import MemoryRevocationStore, SQLiteRevocationStore, revocations_for
from coatcheck.stores.postgres import PostgresRevocationStore
from coatcheck.stores.redis import AsyncRedisRevocationStore, RedisRevocationStore
from helpers import COOKIE, FakeClock
from servers import (  # noqa: F401 - fixtures
    PostgresServer,
    RedisCluster,
    RedisServer,
    postgres_server_fixture,
    redis_cluster_fixture,
    redis_server_fixture,
    running_postgres,
    running_redis,
)

KEY = b"K" * 32
T0 = 1_800_000_000.0
WAIT = 10.0  # seconds: the bound on every wait for a listener or a pushed entry


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail after `WAIT` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


async def await_for(condition: Callable[[], bool], what: str) -> None:
    import anyio

    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0.01)


# -- backends ------------------------------------------------------------------------------


@dataclass
class Backend:
    """Makes store clients that share one namespace (prefix, table, file) on one backend."""

    name: str
    clock: FakeClock
    make_sync: Callable[[FakeClock], RevocationStore]
    url: str | None = None  # the registry URL whose revocation store this is
    opened: list[RevocationStore] = field(default_factory=list)

    def sync(self) -> RevocationStore:
        store = self.make_sync(self.clock)
        self.opened.append(store)
        return store


def fresh_prefix() -> str:
    return f"rvtest-{secrets.token_hex(6)}:"


def fresh_table() -> str:
    return f"rv_{secrets.token_hex(6)}"


SERVICE = pytest.mark.service
ALL = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=SERVICE),
    pytest.param("redis-cluster", marks=SERVICE),
    pytest.param("postgres", marks=SERVICE),
]
SHARED = ALL[1:]  # backends that other processes can reach


def make_backend(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> Backend:
    clock = FakeClock(T0)
    if name == "memory":
        shared = MemoryRevocationStore(clock=clock)
        return Backend(name, clock, lambda c: shared)
    if name == "sqlite":
        path = tmp_path / "revocations.db"
        return Backend(
            name, clock, lambda c: SQLiteRevocationStore(path, clock=c), url=f"sqlite:///{path}"
        )
    if name in ("redis", "redis-cluster"):
        fixture = "redis_server" if name == "redis" else "redis_cluster"
        server: RedisServer | RedisCluster = request.getfixturevalue(fixture)
        prefix = fresh_prefix()
        return Backend(
            name,
            clock,
            lambda c: RedisRevocationStore(server.url, prefix=prefix, clock=c),
            url=server.url,
        )
    assert name == "postgres"
    pg: PostgresServer = request.getfixturevalue("postgres_server")
    table = fresh_table()
    return Backend(
        name,
        clock,
        lambda c: PostgresRevocationStore(pg.url, table=table, clock=c),
        url=pg.url,
    )


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = make_backend(request, request.param, tmp_path)
    yield made
    for store in made.opened:
        store.close()


@pytest.fixture(params=SHARED)
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = make_backend(request, request.param, tmp_path)
    yield made
    for store in made.opened:
        store.close()


def sid_entry(subject: str, *, at: float = T0, ttl: float = 100.0) -> Revocation:
    return Revocation("sid", subject, at, at + ttl)


# -- managers that each keep their own list ------------------------------------------------


def manager(
    revocations: Any, clock: FakeClock, *, staleness: float = 1.0, store: Any = None
) -> SessionManager:
    mode = ClientSide(KeyRing([KEY]), store=store, revocations=revocations, staleness=staleness)
    return SessionManager(mode, lifetimes=Lifetimes(renewal=None), clock=clock, log_salt=b"s")


def logged_in_token(writer: SessionManager, user: str = "kim") -> tuple[str, str]:
    """A token for `user` issued by `writer`, and its session's public ID."""
    session = open_session(writer, RequestInfo(headers=[]))
    session.login(user)
    headers = commit_session(writer, session)
    token = next(v.split(";", 1)[0].split("=", 1)[1] for k, v in headers if k == "set-cookie")
    return token, open_session(writer, with_token(token)).id


def with_token(token: str) -> RequestInfo:
    return RequestInfo(headers=[("cookie", f"{COOKIE}={token}")])


def accepted(reader: SessionManager, token: str) -> bool:
    return open_session(reader, with_token(token)).user == "kim"


def test_revocation_is_refused_elsewhere_exactly_at_the_staleness_bound(backend: Backend) -> None:
    """No listener runs here, as when a pushed message was lost: the poll alone refuses
    the token, not before the reader's copy is `staleness` old, and not later."""
    clock = backend.clock
    writer = manager(backend.sync(), clock)
    reader = manager(backend.sync(), clock)
    token, sid = logged_in_token(writer)
    assert accepted(reader, token)  # the reader polls now
    SessionAdmin(writer).revoke(sid)
    assert not accepted(writer, token)  # the writer's own copy has it at once
    for step, verdict in ((0.5, True), (0.499, True), (0.001, False), (10, False)):
        clock.advance(step)
        assert accepted(reader, token) is verdict, clock.now - T0


def test_log_out_everywhere_reaches_another_manager(backend: Backend) -> None:
    clock = backend.clock
    writer = manager(backend.sync(), clock)
    reader = manager(backend.sync(), clock, staleness=0.0)  # strict: polls every request
    token, _ = logged_in_token(writer)
    assert accepted(reader, token)
    clock.advance(1)
    SessionAdmin(writer).revoke_user("kim")
    assert not accepted(reader, token)
    clock.advance(1)
    fresh, _ = logged_in_token(writer)  # issued after the "not before": accepted
    assert accepted(reader, fresh)


@pytest.mark.parametrize("backend", SHARED[1:], indirect=True)
def test_another_os_process_refuses_within_the_bound(backend: Backend, tmp_path: Path) -> None:
    """The reader is another Python process, on a clock this test steps over the line."""
    assert backend.url is not None
    writer = manager(backend.sync(), backend.clock)
    token, sid = logged_in_token(writer)
    if backend.name.startswith("redis"):
        prefix = backend.sync().prefix  # type: ignore[attr-defined]
        store = f"RedisRevocationStore({backend.url!r}, prefix={prefix!r})"
        imports = "from coatcheck.stores import RedisRevocationStore"
    else:
        table = backend.sync().table  # type: ignore[attr-defined]
        store = f"PostgresRevocationStore({backend.url!r}, table={table!r})"
        imports = "from coatcheck.stores import PostgresRevocationStore"
    script = textwrap.dedent(
        f"""
        import sys
        from coatcheck import ClientSide, KeyRing, RequestInfo, SessionManager
        from coatcheck.drivers import open_session
        {imports}
        now = [{T0!r}]
        m = SessionManager(ClientSide(KeyRing([{KEY!r}]), store=None, revocations={store},
                                      staleness=1.0), clock=lambda: now[0])
        r = RequestInfo(headers=[("cookie", {COOKIE + "=" + token!r})])
        print(open_session(m, r).user, flush=True)
        sys.stdin.readline()
        for step in (0.5, 0.49, 0.01):
            now[0] += step
            print("accepted" if open_session(m, r).user == "kim" else "refused", flush=True)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "kim"
        SessionAdmin(writer).revoke(sid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        verdicts = [proc.stdout.readline().strip() for _ in range(3)]
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert verdicts == ["accepted", "accepted", "refused"]


# -- push feeds: Redis pub/sub, PostgreSQL LISTEN/NOTIFY -----------------------------------

PUSH = [
    pytest.param("redis", marks=SERVICE),
    pytest.param("redis-cluster", marks=SERVICE),
    pytest.param("postgres", marks=SERVICE),
]


@pytest.fixture(params=PUSH)
def push_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = make_backend(request, request.param, tmp_path)
    yield made
    for store in made.opened:
        store.close()


def revocation_list(m: SessionManager) -> RevocationList:
    mode = m.mode
    assert isinstance(mode, ClientSide)
    return mode.revocation_list


def listening(store: Any) -> bool:
    return bool(store.listening.is_set())


def test_a_listener_refuses_the_token_without_any_poll(push_backend: Backend) -> None:
    """The reader's copy is never due (staleness of an hour, the clock stands still), so
    only the pushed message can refuse the token."""
    clock = push_backend.clock
    writer = manager(push_backend.sync(), clock)
    feed: Any = push_backend.sync()
    reader = manager(feed, clock, staleness=3600)
    token, sid = logged_in_token(writer)
    assert accepted(reader, token)
    lst = revocation_list(reader)
    feed.listen(lst.apply_one)
    wait_for(lambda: listening(feed), "the listener to subscribe")
    cursor, synced_at = lst.cursor, lst.synced_at
    SessionAdmin(writer).revoke(sid)
    wait_for(lambda: lst.is_revoked(sid, "kim", T0, clock.now), "the pushed revocation")
    assert not accepted(reader, token)
    assert (lst.cursor, lst.synced_at) == (cursor, synced_at)  # no poll ran


def test_an_entry_whose_message_was_lost_is_refused_at_the_next_poll(
    push_backend: Backend,
) -> None:
    """The listener runs, but the entry reaches the store without a message (as when the
    message is lost in a reconnection): the token is accepted until the poll is due."""
    clock = push_backend.clock
    writer = manager(push_backend.sync(), clock)
    feed: Any = push_backend.sync()
    reader = manager(feed, clock)
    token, sid = logged_in_token(writer)
    assert accepted(reader, token)
    feed.listen(revocation_list(reader).apply_one)
    wait_for(lambda: listening(feed), "the listener to subscribe")
    write_silently(push_backend, Revocation("sid", sid, clock.now, clock.now + 100))
    pushed = push_backend.sync()
    pushed.revoke(sid_entry("a later entry that is pushed", at=clock.now))
    wait_for(lambda: len(revocation_list(reader)) == 1, "the later entry's message")
    clock.advance(0.999)
    assert accepted(reader, token)  # the silent entry was not pushed
    clock.advance(0.001)
    assert not accepted(reader, token)


def write_silently(backend: Backend, entry: Revocation) -> None:
    """Record `entry` the way `revoke` does, minus the message."""
    store: Any = backend.sync()
    doc = f'["{entry.kind}", "{entry.subject}", {entry.at!r}, {entry.expires_at!r}]'
    if isinstance(store, RedisRevocationStore):
        seq = int(store.client.incr(store.keys[0]))
        store.client.zadd(store.keys[1], {f"{seq} {doc}": seq})
        store.client.zadd(store.keys[2], {f"{seq} {doc}": entry.expires_at})
        return
    assert isinstance(store, PostgresRevocationStore)
    store.changes(0)  # creates the table
    with store.pool.connection() as conn:
        conn.execute(
            f"INSERT INTO {store.table} (entry, expires_at) VALUES (%s, %s)",  # noqa: S608
            (doc, entry.expires_at),
        )


def test_clientside_from_a_url_starts_its_listener_on_first_use(push_backend: Backend) -> None:
    assert push_backend.url is not None
    clock = push_backend.clock
    writer = manager(push_backend.sync(), clock)
    token, sid = logged_in_token(writer)
    mode = ClientSide(KeyRing([KEY]), store=push_backend.url, staleness=3600)
    reader = SessionManager(mode, lifetimes=Lifetimes(renewal=None), clock=clock)
    feed: Any = mode.revocations
    assert not listening(feed) and not feed._listener.running
    try:
        assert accepted(reader, token)  # first use: polls, starts the listener
        wait_for(lambda: listening(feed), "the listener to subscribe")
        # The writer's store is in another namespace than the URL's default; write there.
        default = revocations_for(push_backend.url)
        default.revoke(Revocation("sid", sid, clock.now, clock.now + 100))
        default.close()
        wait_for(lambda: mode.revocation_list.is_revoked(sid, None, T0, clock.now), "a push")
        assert not accepted(reader, token)
    finally:
        mode.close()
    assert not listening(feed)


@pytest.mark.anyio
async def test_async_clientside_listener_refuses_without_a_poll(push_backend: Backend) -> None:
    assert push_backend.url is not None
    clock = push_backend.clock
    writer = manager(push_backend.sync(), clock)
    token, sid = logged_in_token(writer)
    mode = ClientSide(KeyRing([KEY]), store=push_backend.url, staleness=3600)
    reader = SessionManager(mode, lifetimes=Lifetimes(renewal=None), clock=clock)
    feed: Any = mode.async_revocations
    try:
        assert (await aopen_session(reader, with_token(token))).user == "kim"
        await await_for(lambda: listening(feed), "the async listener to subscribe")
        default = revocations_for(push_backend.url)
        default.revoke(Revocation("sid", sid, clock.now, clock.now + 100))
        default.close()
        await await_for(lambda: mode.revocation_list.is_revoked(sid, None, T0, clock.now), "a push")
        assert (await aopen_session(reader, with_token(token))).is_new
    finally:
        await mode.aclose()
    assert not listening(feed)


def test_a_listener_of_another_process_refuses_without_a_poll(push_backend: Backend) -> None:
    """The reader is another OS process whose clock stands still: only the push reaches it."""
    assert push_backend.url is not None
    writer_store: Any = push_backend.sync()
    writer = manager(writer_store, push_backend.clock)
    token, sid = logged_in_token(writer)
    if isinstance(writer_store, RedisRevocationStore):
        store = f"RedisRevocationStore({push_backend.url!r}, prefix={writer_store.prefix!r})"
        imports = "from coatcheck.stores import RedisRevocationStore"
    else:
        store = f"PostgresRevocationStore({push_backend.url!r}, table={writer_store.table!r})"
        imports = "from coatcheck.stores import PostgresRevocationStore"
    script = textwrap.dedent(
        f"""
        import time
        from coatcheck import ClientSide, KeyRing, RequestInfo, SessionManager
        from coatcheck.drivers import open_session
        {imports}
        feed = {store}
        m = SessionManager(ClientSide(KeyRing([{KEY!r}]), store=None, revocations=feed,
                                      staleness=3600), clock=lambda: {T0!r})
        r = RequestInfo(headers=[("cookie", {COOKIE + "=" + token!r})])
        print(open_session(m, r).user, flush=True)
        feed.listen(m.mode.revocation_list.apply_one)
        deadline = time.monotonic() + {WAIT!r}
        while not feed.listening.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("listening", flush=True)
        while open_session(m, r).user == "kim" and time.monotonic() < deadline + {WAIT!r}:
            time.sleep(0.01)
        print("refused" if open_session(m, r).is_new else "accepted", flush=True)
        feed.close()
        """
    )
    command = [sys.executable, "-c", script]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "kim"
        assert proc.stdout.readline().strip() == "listening"
        SessionAdmin(writer).revoke(sid)
        verdict = proc.stdout.readline().strip()
        assert proc.wait(timeout=60) == 0
    assert verdict == "refused"


# -- Redis: a server that went away ----------------------------------------------------------


@pytest.mark.service
def test_redis_killed_and_restarted() -> None:
    """While the server is down `revoke` and `changes` raise `StoreUnavailable` and the
    listener waits; after the restart both work again, with no new client, and the
    listener subscribes again and pushes."""
    with running_redis() as server:
        store = RedisRevocationStore(server.url, prefix=fresh_prefix(), timeout=0.3)
        lst = RevocationList()
        store.listen(lst.apply_one)
        wait_for(lambda: listening(store), "the listener to subscribe")
        store.revoke(sid_entry("before"))
        entries, cursor = store.changes(0)
        lst.apply(entries, cursor, T0)
        server.stop()
        with pytest.raises(StoreUnavailable):
            store.revoke(sid_entry("while-down"))
        with pytest.raises(StoreUnavailable):
            store.changes(lst.cursor)
        wait_for(lambda: not listening(store), "the listener to notice")
        server.start()  # empty: this server keeps nothing across restarts
        store.revoke(sid_entry("after-restart"))
        entries, cursor = store.changes(lst.cursor)
        assert entries == [sid_entry("after-restart")]  # the resync after the restart
        lst.apply(entries, cursor, T0)
        wait_for(lambda: listening(store), "the listener to subscribe again")
        store.revoke(sid_entry("pushed-again"))
        wait_for(lambda: lst.is_revoked("pushed-again", None, T0, T0), "a push after restart")
        store.close()


@pytest.mark.service
@pytest.mark.anyio
async def test_async_redis_killed_and_restarted() -> None:
    with running_redis() as server:
        store = AsyncRedisRevocationStore(server.url, prefix=fresh_prefix(), timeout=0.3)
        lst = RevocationList()
        store.listen(lst.apply_one)
        await await_for(lambda: listening(store), "the listener to subscribe")
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.revoke(sid_entry("while-down"))
        await await_for(lambda: not listening(store), "the listener to notice")
        server.start()
        await store.revoke(sid_entry("after-restart"))
        assert (await store.changes(0))[0] == [sid_entry("after-restart")]
        await await_for(lambda: listening(store), "the listener to subscribe again")
        await store.revoke(sid_entry("pushed-again"))
        await await_for(lambda: lst.is_revoked("pushed-again", None, T0, T0), "a push")
        await store.aclose()


# -- PostgreSQL: notifications, a server that went away -----------------------------------


@pytest.mark.service
def test_postgres_notifies_only_committed_entries_and_skips_oversized_payloads(
    postgres_server: PostgresServer,
) -> None:
    store = PostgresRevocationStore(postgres_server.url, table=fresh_table())
    lst = RevocationList()
    store.listen(lst.apply_one)
    wait_for(lambda: listening(store), "the listener")
    huge = Revocation("user", "u" * 9000, T0, T0 + 10)
    store.revoke(huge)  # too long for NOTIFY: recorded, delivered by the poll only
    store.revoke(sid_entry("small"))
    wait_for(lambda: lst.is_revoked("small", None, T0, T0), "the small entry's push")
    assert not lst.is_revoked("other", "u" * 9000, T0 - 1, T0)
    assert store.changes(0)[0] == [huge, sid_entry("small")]
    store.close()


@pytest.mark.service
def test_postgres_stopped_and_started() -> None:
    """While PostgreSQL is down `revoke` and `changes` raise `StoreUnavailable` and the
    listener waits; after the restart the same store serves again, the poll resyncs from
    its cursor and the listener is back in LISTEN."""
    with running_postgres() as server:
        # A stopped server refuses at once, so the timeout only bounds the reconnection
        # after the restart: generous, for a loaded machine.
        store = PostgresRevocationStore(server.url, table=fresh_table(), timeout=5)
        lst = RevocationList()
        store.revoke(sid_entry("before"))
        entries, cursor = store.changes(0)
        lst.apply(entries, cursor, T0)
        store.listen(lst.apply_one)
        wait_for(lambda: listening(store), "the listener")
        server.stop()
        with pytest.raises(StoreUnavailable):
            store.revoke(sid_entry("while-down"))
        with pytest.raises(StoreUnavailable):
            store.changes(lst.cursor)
        wait_for(lambda: not listening(store), "the listener to notice")
        server.start()
        store.revoke(sid_entry("after-restart"))
        entries, cursor = store.changes(lst.cursor)
        assert entries == [sid_entry("after-restart")]
        wait_for(lambda: listening(store), "the listener to LISTEN again")
        store.revoke(sid_entry("pushed-again"))
        wait_for(lambda: lst.is_revoked("pushed-again", None, T0, T0), "a push after restart")
        store.close()


# -- ClientSide built from a URL -----------------------------------------------------------


def test_clientside_with_sqlite_imports_neither_redis_nor_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from coatcheck import ClientSide, KeyRing\n"
        f"m = ClientSide(KeyRing([b'k' * 32]), store='sqlite:///{tmp_path / 's.db'}')\n"
        "m.revocations; m.close()\n"
        "print(sorted(x for x in ('redis', 'psycopg') if x in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    )
    assert result.stdout.decode().strip() == "[]"


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
async def test_clientside_closes_what_it_built_from_a_url(scheme: str, tmp_path: Path) -> None:
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    mode = ClientSide(KeyRing([KEY]), store=url)
    reader = SessionManager(mode, clock=FakeClock(T0))
    assert (await aopen_session(reader, RequestInfo(headers=[]))).is_new
    await mode.aclose()
    mode.close()  # again: harmless
    if scheme == "sqlite":
        assert isinstance(mode.revocations, SQLiteRevocationStore)
        assert not mode.revocations._connections  # every connection it opened is closed
