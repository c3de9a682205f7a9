"""`Store.admit` (the session limit's atomic write) on every backend: its contract on
memory, SQLite, a real Redis and a real PostgreSQL (sync and async twins), and its
atomicity across replicas: several store instances (and managers) on one backend admit
logins of one user at once, many rounds over, released together by a barrier, while a
sampler lists the user's sessions; the user never has more than the limit, with "refuse"
exactly the admitted logins exist, and with "revoke-oldest" every session admitted is
either still live or reported evicted (so client-side mode can revoke it)."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, SessionLimit, SessionManager
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import SessionLimitReached
from coatcheck.ids import new_handle
from coatcheck.stores import MemoryStore, SQLiteStore, to_async
from coatcheck.stores.base import Admission, Store
from coatcheck.stores.postgres import PostgresStore
from coatcheck.stores.redis import RedisStore
from helpers import request, wait_until
from servers import (  # noqa: F401 - fixtures
    PostgresServer,
    RedisServer,
    postgres_server_fixture,
    redis_server_fixture,
)

from .contract import ManualClock

USER = "alice"
T0 = 1_700_000_000.0

Replicas = Callable[[], Store]


def record(created: float, payload: str = "") -> bytes:
    """Record bytes as coatcheck writes them, as far as a store reads them (`c`)."""
    return b'{"d":{"x":"%s","c":"not this one"},"c":%r,"s":%r,"r":%r,"u":"alice"}' % (
        payload.encode(),
        created,
        created,
        created,
    )


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Replicas, Any]]:
    """A function that makes another store on the same data (a replica's), and the stores'
    clock (None: the server's own, Redis)."""
    kind = request.param
    made: list[Store] = []
    clock: Any = ManualClock() if kind != "redis" else None
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if kind == "memory":
        shared = MemoryStore(clock=clock)

        def make() -> Store:
            return shared
    elif kind == "sqlite":
        path = tmp_path / "sessions.db"

        def make() -> Store:
            made.append(SQLiteStore(path, clock=clock))
            return made[-1]
    elif kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"test-{secrets.token_hex(6)}:"

        def make() -> Store:
            made.append(RedisStore(server.url, prefix=prefix))
            return made[-1]
    else:
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        table = f"test_{secrets.token_hex(6)}"

        def make() -> Store:
            made.append(PostgresStore(pg.url, table=table, clock=clock))
            return made[-1]

        def cleanup() -> None:
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")

    yield make, clock
    for store in made:
        store.close()
    cleanup()


def admit(store: Any, key: str, created: float, *, limit: int = 2, **options: Any) -> Admission:
    settings: dict[str, Any] = {
        "version": 0,
        "ttl": 600.0,
        "user": USER,
        "replaces": None,
        "limit": limit,
        "evict": True,
    }
    settings.update(options)
    answer = store.admit(key, record(created), **settings)
    assert isinstance(answer, Admission)
    return answer


def live(store: Any, user: str = USER) -> set[str]:
    return {key for key, _ in store.list_user(user)}


# -- the contract ----------------------------------------------------------------------------


@pytest.mark.service
def test_admit_evicts_the_oldest_by_created_time(replicas: tuple[Replicas, Any]) -> None:
    make, _ = replicas
    store = make()
    a, b, c, d = (new_handle() for _ in range(4))
    # Created out of insertion order: "oldest" is the record's created time, not the write's.
    assert admit(store, a, T0 + 5) == Admission(True)
    assert admit(store, b, T0 + 1) == Admission(True)
    assert admit(store, c, T0 + 9) == Admission(True, False, (b,))
    assert live(store) == {a, c}
    assert admit(store, d, T0 + 10, limit=1) == Admission(True, False, (a, c))
    assert live(store) == {d}
    assert store.load(a) is None and store.load(b) is None


@pytest.mark.service
def test_admit_refuses_without_writing(replicas: tuple[Replicas, Any]) -> None:
    make, _ = replicas
    store = make()
    a, b, c = (new_handle() for _ in range(3))
    admit(store, a, T0, evict=False)
    admit(store, b, T0 + 1, evict=False)
    assert admit(store, c, T0 + 2, evict=False) == Admission(False, True)
    assert store.load(c) is None
    assert live(store) == {a, b}
    # Another user has slots of their own.
    assert admit(store, c, T0 + 2, evict=False, user="bob") == Admission(True)


@pytest.mark.service
def test_admit_compares_versions_as_save_and_rotate_do(replicas: tuple[Replicas, Any]) -> None:
    make, _ = replicas
    store = make()
    a, b, c = (new_handle() for _ in range(3))
    assert store.save(a, record(T0), version=0, ttl=600, user=None)  # an anonymous session
    assert admit(store, a, T0, version=0) == Admission(False)  # its key is taken
    assert admit(store, b, T0, replaces=a, version=7) == Admission(False)
    assert store.load(b) is None and store.load(a) is not None
    # A login from the anonymous session: its record moves to the new key.
    assert admit(store, b, T0, replaces=a, version=1) == Admission(True)
    assert store.load(a) is None
    moved = store.load(b)
    assert moved is not None and moved.version == 1
    # Logging in again from `b` replaces it: it is not one of the "other" sessions.
    assert admit(store, c, T0 + 1, replaces=b, version=1, limit=1) == Admission(True)
    assert live(store) == {c}
    # And an update of the same key keeps its version chain.
    assert admit(store, c, T0 + 1, version=1, limit=1) == Admission(True)
    again = store.load(c)
    assert again is not None and again.version == 2


@pytest.mark.service
def test_expired_and_unreadable_records(replicas: tuple[Replicas, Any]) -> None:
    make, clock = replicas
    store = make()
    a, b, c, d = (new_handle() for _ in range(4))
    if clock is not None:
        admit(store, a, T0, ttl=10.0, evict=False)
        clock.advance(11)
        assert admit(store, b, T0 + 20, limit=1, evict=False) == Admission(True)
    else:
        assert admit(store, b, T0 + 20, limit=1, evict=False) == Admission(True)
    # A record that is not coatcheck JSON counts as the oldest: it goes first.
    assert store.save(c, b"\xff not json", version=0, ttl=600, user=USER)
    assert admit(store, d, T0 + 30, limit=2) == Admission(True, False, (c,))
    assert live(store) == {b, d}


@pytest.mark.service
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_twins_admit_alike(replicas: tuple[Replicas, Any]) -> None:
    make, _ = replicas
    store = to_async(make())
    a, b, c = (new_handle() for _ in range(3))
    options: dict[str, Any] = {"version": 0, "ttl": 600.0, "user": USER, "replaces": None}
    assert await store.admit(a, record(T0), limit=2, evict=True, **options) == Admission(True)  # type: ignore[attr-defined]
    assert await store.admit(b, record(T0 + 1), limit=2, evict=True, **options) == Admission(True)  # type: ignore[attr-defined]
    refused = await store.admit(c, record(T0 + 2), limit=2, evict=False, **options)  # type: ignore[attr-defined]
    assert refused == Admission(False, True)
    evicted = await store.admit(c, record(T0 + 2), limit=2, evict=True, **options)  # type: ignore[attr-defined]
    assert evicted == Admission(True, False, (a,))
    assert {k for k, _ in await store.list_user(USER)} == {b, c}
    await store.aclose()


# -- atomicity across replicas -----------------------------------------------------------


def race(
    stores: list[Any], limit: int, evict: bool, *, threads: int = 6, rounds: int = 12
) -> tuple[list[str], set[str], list[int]]:
    """`threads` logins of one user per round, each through one of `stores` in turn,
    released together; a sampler lists the user's sessions all along. Returns the keys
    admitted, the keys reported evicted and every count the sampler saw."""
    barrier = threading.Barrier(threads)
    admitted: list[str] = []
    evicted: set[str] = set()
    seen: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def login(i: int) -> None:
        store = stores[i % len(stores)]
        try:
            for round_ in range(rounds):
                key = new_handle()
                barrier.wait()
                answer = admit(store, key, T0 + round_, limit=limit, evict=evict)
                with lock:
                    assert answer.saved != answer.refused
                    if answer.saved:
                        admitted.append(key)
                    evicted.update(answer.evicted)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
            barrier.abort()

    def sample() -> None:
        while not done.is_set():
            seen.append(len(live(stores[-1])))

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=login, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    sampler.join()
    if errors:
        raise errors[0]
    seen.append(len(live(stores[-1])))
    return admitted, evicted, seen


@pytest.mark.service
def test_concurrent_logins_on_replicas_never_exceed_the_limit(
    replicas: tuple[Replicas, Any],
) -> None:
    make, _ = replicas
    stores = [make(), make(), make()]
    admitted, evicted, seen = race(stores, limit=3, evict=True)
    assert len(admitted) == 6 * 12  # revoke-oldest admits every login
    assert max(seen) <= 3
    now = live(stores[0])
    assert len(now) == 3
    # Every admitted session is live or was reported evicted (and so revoked), never both.
    assert now | evicted == set(admitted) and not now & evicted


@pytest.mark.service
def test_concurrent_logins_with_refuse_admit_exactly_the_free_slots(
    replicas: tuple[Replicas, Any],
) -> None:
    make, _ = replicas
    stores = [make(), make()]
    admitted, evicted, seen = race(stores, limit=2, evict=False)
    assert len(admitted) == 2 and not evicted
    assert max(seen) <= 2
    assert live(stores[0]) == set(admitted)


@pytest.mark.service
@pytest.mark.parametrize("mode", ["server", "client"])
@pytest.mark.parametrize("policy", ["revoke-oldest", "refuse"])
def test_two_managers_logging_one_user_in_at_once(
    replicas: tuple[Replicas, Any], mode: str, policy: str
) -> None:
    """The whole login path (open, login, commit) on two managers, as two replicas."""
    make, clock = replicas
    limit = SessionLimit(2, on_exceed=policy)  # type: ignore[arg-type]
    from coatcheck.stores import MemoryRevocationStore

    revocations = MemoryRevocationStore()
    managers = []
    for _ in range(2):
        chosen: Any
        if mode == "server":
            chosen = ServerSide(store=make())
        else:
            chosen = ClientSide(KeyRing([b"K" * 32]), store=make(), revocations=revocations)
        managers.append(
            SessionManager(
                chosen,
                lifetimes=Lifetimes(renewal=None),
                clock=clock or (lambda: T0),
                session_limit=limit,
            )
        )
    threads, rounds = 4, 6
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def login(i: int) -> None:
        manager = managers[i % 2]
        try:
            for _ in range(rounds):
                session = open_session(manager, request())
                session.login(USER)
                barrier.wait()
                try:
                    commit_session(manager, session)
                    outcomes.append("in")
                except SessionLimitReached:
                    outcomes.append("refused")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=login, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    sessions = managers[0].mode.store.list_user(USER)  # type: ignore[union-attr]
    assert len(sessions) <= 2
    if policy == "refuse":
        assert outcomes.count("in") == 2 == len(sessions)
    else:
        assert outcomes.count("in") == threads * rounds and len(sessions) == 2


def test_async_admission_through_the_driver() -> None:
    """The async driver admits a login as the sync one does."""
    from coatcheck.drivers import acommit_session, aopen_session
    from coatcheck.stores import AsyncMemoryStore

    store = AsyncMemoryStore()
    manager = SessionManager(
        ServerSide(store=store), session_limit=SessionLimit(1, on_exceed="refuse")
    )

    async def main() -> list[str]:
        outcomes = []
        for _ in range(3):
            session = await aopen_session(manager, request())
            session.login(USER)
            try:
                await acommit_session(manager, session)
                outcomes.append("in")
            except SessionLimitReached:
                outcomes.append("refused")
        return outcomes

    assert asyncio.run(main()) == ["in", "refused", "refused"]
    assert len(store.sync.list_user(USER)) == 1


def test_a_limit_on_a_cluster_without_a_hash_tag_is_refused_at_construction() -> None:
    from coatcheck.exceptions import ConfigurationError

    store = RedisStore("redis+cluster://127.0.0.1:1", prefix="app:")  # (connects on use)
    with pytest.raises(ConfigurationError, match="hash tag"):
        SessionManager(ServerSide(store=store), session_limit=SessionLimit(2))
    tagged = RedisStore("redis+cluster://127.0.0.1:1", prefix="app:{sessions}:")
    SessionManager(ServerSide(store=tagged), session_limit=SessionLimit(2))


@pytest.mark.service
@pytest.mark.parametrize("policy", ["refuse", "revoke-oldest"])
def test_postgres_admission_waits_for_a_replica_mid_admission(
    postgres_server: PostgresServer, policy: str
) -> None:
    """A deterministic interleaving: a replica is parked inside its admission (it holds
    the user's advisory lock and has written its session, not yet committed); another
    replica's admission of the same user then waits, and once the first commits it sees
    that session: refused, or it evicts it, never admitted beside it over the limit."""
    table = f"test_{secrets.token_hex(6)}"
    clock = ManualClock()
    store = PostgresStore(postgres_server.url, table=table, clock=clock)
    store.load("warm-up")  # creates the table
    parked_key, key = new_handle(), new_handle()
    answers: list[Admission] = []
    try:
        with psycopg.connect(postgres_server.url, autocommit=True) as parked:
            with parked.transaction():
                lock = f"coatcheck:{table}:limit:{USER}"
                parked.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                parked.execute(
                    f"INSERT INTO {table} (key, data, version, expires_at, user_id) "  # noqa: S608
                    "VALUES (%s, %s, 1, %s, %s)",
                    (parked_key, record(T0), clock() + 600, USER),
                )
                evict = policy == "revoke-oldest"
                waiter = threading.Thread(
                    target=lambda: answers.append(admit(store, key, T0 + 1, limit=1, evict=evict))
                )
                waiter.start()
                wait_until(lambda: advisory_waiters(postgres_server.url) == 1, "the wait")
                assert not answers  # still waiting for the parked replica
            waiter.join()
        if policy == "refuse":
            assert answers == [Admission(False, True)]
            assert live(store) == {parked_key}
        else:
            assert answers == [Admission(True, False, (parked_key,))]
            assert live(store) == {key}
    finally:
        store.close()
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def advisory_waiters(url: str) -> int:
    """How many sessions of the PostgreSQL server at `url` wait for an advisory lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return 0 if row is None else int(row[0])
