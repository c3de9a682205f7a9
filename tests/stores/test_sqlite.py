"""`SQLiteStore` and `AsyncSQLiteStore`: the shared contract, then what only SQLite has:
WAL, many connections and processes on one file, lock handling, batched purges on a
background thread that no save waits for. Then
`SQLiteRevocationStore` (with twin): the revocation contract and its SQLite specifics."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from coatcheck.exceptions import ConfigurationError, StoreUnavailable
from coatcheck.revocation import Revocation
from coatcheck.stores import (
    AsyncSQLiteRevocationStore,
    AsyncSQLiteStore,
    AsyncStore,
    Record,
    SQLiteRevocationStore,
    SQLiteStore,
    Store,
    revocations_to_async,
    to_async,
)
from coatcheck.stores import sqlite as sqlite_module
from coatcheck.stores.sqlite import PURGE_BATCH

from .contract import (
    AsyncConnect,
    AsyncStoreContract,
    Connect,
    ManualClock,
    Plant,
    RevocationStoreContract,
    StoreContract,
)

# -- the contract, in every configuration ------------------------------------------------------


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, tmp_path: Path, clock: ManualClock) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
        yield store
        store.close()


class TestSQLiteStoreRealTime(StoreContract):
    """The same, with the wall clock: TTLs run out in real time."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "sessions.db")
        yield store
        store.close()


class TestSQLiteStoreInMemory(StoreContract):
    """`:memory:`: one private database, shared by every thread through one connection."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, clock: ManualClock) -> Iterator[Store]:
        store = SQLiteStore(":memory:", table="custom_table", clock=clock)
        yield store
        store.close()


class TestAsyncSQLiteStore(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(self, tmp_path: Path, clock: ManualClock) -> AsyncIterator[AsyncStore]:
        store = AsyncSQLiteStore(tmp_path / "sessions.db", clock=clock)
        yield store
        await store.aclose()


class TestAsyncTwinOfSQLiteStore(AsyncStoreContract):
    """`to_async(SQLiteStore(...))`, as `ServerSide` builds it for the async driver."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(self, tmp_path: Path, clock: ManualClock) -> AsyncIterator[AsyncStore]:
        store = to_async(SQLiteStore(tmp_path / "sessions.db", clock=clock))
        assert isinstance(store, AsyncSQLiteStore)
        yield store
        await store.aclose()


class TestAsyncSQLiteStoreInMemory(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(self, clock: ManualClock) -> AsyncIterator[AsyncStore]:
        store = AsyncSQLiteStore(":memory:", clock=clock)
        yield store
        await store.aclose()


# -- SQLite itself -----------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


def rows(path: Path, table: str = "coatcheck_sessions") -> int:
    """How many rows the table really holds, expired or not."""
    db = sqlite3.connect(path)
    try:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        return count
    finally:
        db.close()


class WriteLock:
    """Another connection holding the database's write lock (BEGIN IMMEDIATE) until released."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def acquire(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.db.close()


@pytest.fixture
def write_lock(path: Path) -> Iterator[WriteLock]:
    store = SQLiteStore(path)
    store.open()  # the file and table exist before anyone locks them
    store.close()
    lock = WriteLock(path)
    yield lock
    lock.close()


async def release_soon(lock: WriteLock) -> None:
    for _ in range(5):
        await anyio.sleep(0.01)
    lock.release()


def test_database_is_in_wal_mode(path: Path) -> None:
    store = SQLiteStore(path)
    store.open()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
        store.close()


def test_two_stores_on_one_file_see_each_others_writes(path: Path) -> None:
    first, second = SQLiteStore(path), SQLiteStore(path)
    assert first.save("k", b"from first", version=0, ttl=60, user="alice")
    assert second.load("k") == Record(b"from first", 1)
    assert second.save("k", b"from second", version=1, ttl=60, user="alice")
    assert not first.save("k", b"stale", version=1, ttl=60, user="alice")
    assert first.load("k") == Record(b"from second", 2)
    assert first.list_user("alice") == [("k", Record(b"from second", 2))]
    assert second.delete_user("alice") == 1
    assert first.load("k") is None
    first.close()
    second.close()


WORKER = """
import pathlib, sys, time
from coatcheck.stores import SQLiteStore

path, key, times, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
store = SQLiteStore(path, timeout=30)
for _ in range(1000):  # wait (at most 10 s) for the others, so that all write at once
    if go.exists():
        break
    time.sleep(0.01)
done = conflicts = 0
while done < times and conflicts < 100_000:
    record = store.load(key)
    if store.save(key, b"%d" % (int(record.data) + 1), version=record.version, ttl=600, user=None):
        done += 1
    else:
        conflicts += 1
store.close()
print(done, conflicts)
"""


def test_processes_incrementing_one_record_lose_no_update(path: Path, tmp_path: Path) -> None:
    processes, increments = 4, 50
    store = SQLiteStore(path)
    assert store.save("counter", b"0", version=0, ttl=600, user=None)
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), "counter", str(increments), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        go.touch()
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
        assert out.split()[0] == str(increments).encode()
    total = processes * increments
    assert store.load("counter") == Record(b"%d" % total, total + 1)
    store.close()


def test_purge_removes_more_than_one_batch(path: Path) -> None:
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock)
    expired = 2 * PURGE_BATCH + 234
    for i in range(expired):
        store.save(f"expired-{i}", b"x", version=0, ttl=1, user=f"user-{i % 7}")
    for i in range(10):
        store.save(f"live-{i}", b"x", version=0, ttl=60, user="user-0")
    clock.advance(2)
    assert rows(path) == expired + 10
    assert store.purge_expired() == expired
    assert rows(path) == 10
    assert store.purge_expired() == 0
    assert len(store.list_user("user-0")) == 10
    store.close()


def purge_thread(store: SQLiteStore) -> threading.Thread | None:
    return store._purger._thread


def wait_for_purge(store: SQLiteStore) -> None:
    """Wait (bounded) until the store's background purge has finished its passes."""
    assert store._purger.idle(timeout=30), "the background purge did not finish in 30 s"


def test_writes_wake_a_background_purge_every_purge_interval(path: Path) -> None:
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock, purge_interval=100)
    for i in range(20):
        store.save(f"old-{i}", b"x", version=0, ttl=1, user=None)
    clock.advance(50)
    store.save("early", b"x", version=0, ttl=1000, user=None)
    assert purge_thread(store) is None  # nothing due: no thread either
    assert rows(path) == 21  # 20 expired, invisible, not yet purged
    clock.advance(51)
    assert store.save("late", b"x", version=0, ttl=1000, user=None)
    wait_for_purge(store)
    assert rows(path) == 2
    for i in range(5):
        store.save(f"newer-{i}", b"x", version=0, ttl=1, user=None)
    clock.advance(99)  # the next purge is due 100 s after the last one started
    assert store.save("later", b"x", version=0, ttl=1000, user=None)
    wait_for_purge(store)
    assert rows(path) == 8
    clock.advance(1)
    assert store.save("last", b"x", version=0, ttl=1000, user=None)
    wait_for_purge(store)
    assert rows(path) == 4
    store.close()


def test_no_save_runs_a_purge_statement(path: Path) -> None:
    """The save that finds a purge due only wakes the purge thread: every statement its
    thread runs is the save's own, however large the backlog."""
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock, purge_interval=100)
    expired = 3 * PURGE_BATCH
    for i in range(expired):
        store.save(f"expired-{i:05d}", b"x", version=0, ttl=1, user=None)
    clock.advance(101)
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)  # this thread's connection
    try:
        assert store.save("new", b"x", version=0, ttl=1000, user=None)
        assert store.save("new", b"y", version=1, ttl=1000, user=None)
    finally:
        store._connection().set_trace_callback(None)
    assert len(statements) == 2, statements
    assert all(sql.startswith(("INSERT", "UPDATE")) for sql in statements), statements
    wait_for_purge(store)
    assert rows(path) == 1
    store.close()


class GatedClock(ManualClock):
    """A manual clock that, once armed, makes any thread but the test's wait for `gate`
    (at most 10 s) before reading it: a purge thread stops at its first clock read."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = threading.get_ident()
        self.gate = threading.Event()
        self.armed = False

    def __call__(self) -> float:
        if self.armed and threading.get_ident() != self.owner:
            self.gate.wait(timeout=10)
        return self.now


@pytest.mark.anyio
async def test_async_save_does_not_wait_for_the_purge(path: Path) -> None:
    clock = GatedClock()
    store = AsyncSQLiteStore(path, clock=clock, purge_interval=100)
    for i in range(2 * PURGE_BATCH):
        assert await store.save(f"expired-{i:05d}", b"x", version=0, ttl=1, user=None)
    clock.advance(101)
    clock.armed = True  # the purge, once started, waits for the gate
    try:
        with anyio.fail_after(5):
            assert await store.save("new", b"x", version=0, ttl=1000, user=None)
        assert rows(path) == 2 * PURGE_BATCH + 1  # returned with the purge still to run
    finally:
        clock.gate.set()
    await anyio.to_thread.run_sync(wait_for_purge, store.sync)
    assert rows(path) == 1
    await store.aclose()


class LockWhenReadElsewhere(ManualClock):
    """A manual clock that takes the write lock when a thread other than the test's reads
    it, once armed: the purge thread, before its first window."""

    def __init__(self, lock: WriteLock) -> None:
        super().__init__()
        self.lock = lock
        self.owner = threading.get_ident()
        self.armed = False

    def __call__(self) -> float:
        if self.armed and threading.get_ident() != self.owner:
            self.armed = False
            self.lock.acquire()
        return self.now


def test_busy_background_purge_gives_up_until_the_next_interval(
    path: Path, write_lock: WriteLock
) -> None:
    clock = LockWhenReadElsewhere(write_lock)
    store = SQLiteStore(path, timeout=0, clock=clock, purge_interval=10)
    for i in range(5):
        store.save(f"old-{i}", b"x", version=0, ttl=1, user=None)
    clock.advance(11)
    clock.armed = True
    assert store.save("k", b"saved", version=0, ttl=60, user=None)
    wait_for_purge(store)  # gave up on the locked database (an error would fail the test)
    write_lock.release()
    assert rows(path) == 6
    assert store.load("k") == Record(b"saved", 1)
    clock.advance(11)
    assert store.save("k", b"saved again", version=1, ttl=60, user=None)
    wait_for_purge(store)
    assert rows(path) == 1
    store.close()


class ThreadRecordingClock(ManualClock):
    """A manual clock that notes which threads read it."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[int] = set()

    def __call__(self) -> float:
        self.readers.add(threading.get_ident())
        return self.now


@pytest.mark.anyio
async def test_async_store_purges_off_the_loop(path: Path) -> None:
    clock = ThreadRecordingClock()
    store = AsyncSQLiteStore(path, clock=clock, purge_interval=10)
    for i in range(20):
        assert await store.save(f"old-{i}", b"x", version=0, ttl=1, user=None)
    assert clock.readers == {threading.get_ident()}  # no lock met: all on the loop
    clock.advance(11)
    assert await store.save("new", b"x", version=0, ttl=60, user=None)
    await anyio.to_thread.run_sync(wait_for_purge, store.sync)
    assert rows(path) == 1
    assert len(clock.readers) == 2  # the purge read the clock on the purge thread
    for i in range(5):
        assert await store.save(f"old-{i}", b"x", version=0, ttl=1, user=None)
    clock.advance(2)
    clock.readers.clear()
    assert await store.purge_expired() == 5
    assert threading.get_ident() not in clock.readers
    await store.aclose()


def test_close_stops_the_purge_thread_and_a_due_purge_restarts_it(path: Path) -> None:
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock, purge_interval=10)
    store.save("old", b"x", version=0, ttl=1, user=None)
    clock.advance(11)
    store.save("k", b"x", version=0, ttl=1000, user=None)
    thread = purge_thread(store)
    assert thread is not None and thread.daemon
    store.close()
    assert not thread.is_alive() and purge_thread(store) is None
    store.save("old-2", b"x", version=0, ttl=1, user=None)  # reopens the database
    clock.advance(11)
    store.save("k", b"y", version=1, ttl=1000, user=None)
    wait_for_purge(store)
    assert rows(path) == 1
    restarted = purge_thread(store)
    store.close()
    assert restarted is not None and not restarted.is_alive()


def test_a_store_dropped_without_close_leaves_no_purge_thread(path: Path) -> None:
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock, purge_interval=10)
    clock.advance(11)
    store.save("k", b"x", version=0, ttl=1000, user=None)
    wait_for_purge(store)
    thread = purge_thread(store)
    assert thread is not None and thread.is_alive()
    del store
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_close_ends_a_background_pass_during_its_rest(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each window a pass rests (here: for ages); `close` ends the rest and the pass."""
    monkeypatch.setattr(sqlite_module, "PURGE_DUTY", 1e-9)
    clock = ManualClock()
    store = SQLiteStore(path, clock=clock, purge_interval=10)
    for i in range(3 * PURGE_BATCH):
        store.save(f"expired-{i:05d}", b"x", version=0, ttl=1, user=None)
    window, first_done = store._purge_window, threading.Event()

    def window_then_signal(last: str | None, now: float) -> tuple[str | None, int]:
        try:
            return window(last, now)
        finally:
            first_done.set()

    store._purge_window = window_then_signal  # type: ignore[method-assign]
    clock.advance(11)
    store.save("k", b"x", version=0, ttl=1000, user=None)
    assert first_done.wait(timeout=30)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "close waited for the rest"
    assert rows(path) == 2 * PURGE_BATCH + 1  # one window ran, the pass ended


def test_sync_store_without_timeout_fails_fast_when_locked(
    path: Path, write_lock: WriteLock
) -> None:
    store = SQLiteStore(path, timeout=0)
    assert store.save("k", b"v1", version=0, ttl=60, user="alice")
    write_lock.acquire()
    with pytest.raises(StoreUnavailable, match="locked"):
        store.save("k", b"v2", version=1, ttl=60, user="alice")
    with pytest.raises(StoreUnavailable, match="locked"):
        store.rotate("k", "k2", b"v2", version=1, ttl=60, user="alice")
    with pytest.raises(StoreUnavailable, match="locked"):
        store.delete_user("alice")
    assert store.load("k") == Record(b"v1", 1)  # readers never wait in WAL mode
    write_lock.release()
    # Nothing was written, and the failed rotation left no transaction open.
    assert store.load("k2") is None
    assert store.rotate("k", "k2", b"v2", version=1, ttl=60, user="alice")
    assert store.load("k2") == Record(b"v2", 1)
    store.close()


@pytest.mark.anyio
async def test_async_store_waits_for_a_lock_without_blocking_the_loop(
    path: Path, write_lock: WriteLock
) -> None:
    store = AsyncSQLiteStore(path, timeout=10)
    assert await store.save("k", b"v1", version=0, ttl=60, user="alice")
    write_lock.acquire()
    released = threading.Event()

    async def release_from_the_loop() -> None:
        await release_soon(write_lock)
        released.set()

    # The lock is released by a task on this loop: if a store call blocked the loop while
    # waiting for the lock, that task could never run and the call would time out.
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(release_from_the_loop)
                assert await store.save("k", b"v2", version=1, ttl=60, user="alice")
                assert released.is_set()
    finally:
        write_lock.release()
    assert await store.load("k") == Record(b"v2", 2)

    write_lock.acquire()
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(release_soon, write_lock)
                rotated = await store.rotate("k", "k2", b"v3", version=2, ttl=60, user="alice")
    finally:
        write_lock.release()
    assert rotated
    assert await store.list_user("alice") == [("k2", Record(b"v3", 1))]
    await store.aclose()


# Constructing a store touches no file (see test_construction.py): a file that cannot be
# opened is reported by `open()`, for start-up, and by the first operation.


def test_missing_directory_is_reported_at_open_and_first_use(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "sessions.db"
    store = SQLiteStore(target)
    uses: list[Callable[[], Any]] = [store.open, lambda: store.load("k")]
    for use in uses:
        with pytest.raises(StoreUnavailable, match="cannot be opened") as info:
            use()
        assert str(target) in str(info.value)
        assert "directory" in str(info.value)


def test_directory_as_path_is_reported_at_open_and_first_use(tmp_path: Path) -> None:
    store = AsyncSQLiteStore(tmp_path)
    uses: list[Callable[[], Any]] = [store.open, lambda: store.load("k")]
    for use in uses:
        with pytest.raises(StoreUnavailable, match="cannot be opened"):
            anyio.run(use)


def test_corrupt_file_is_reported_at_open_and_first_use(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    store = SQLiteStore(path)
    uses: list[Callable[[], Any]] = [
        store.open,
        lambda: store.save("k", b"v", version=0, ttl=60, user=None),
    ]
    for use in uses:
        with pytest.raises(StoreUnavailable, match="not a database"):
            use()


@pytest.mark.parametrize(
    "table", ["", "1sessions", "bad-name", "sessions; DROP TABLE x", "a b", "t" * 64, "tëst"]
)
def test_table_name_must_be_a_plain_identifier(path: Path, table: str) -> None:
    with pytest.raises(ConfigurationError, match="not a plain identifier"):
        SQLiteStore(path, table=table)
    with pytest.raises(ConfigurationError, match="not a plain identifier"):
        AsyncSQLiteStore(path, table=table)
    assert not path.exists()  # rejected before touching the file


def test_tables_in_one_file_are_independent(path: Path) -> None:
    first, second = SQLiteStore(path, table="first"), SQLiteStore(path, table="_Second_2")
    assert first.save("k", b"first", version=0, ttl=60, user="u")
    assert second.load("k") is None
    assert second.save("k", b"second", version=0, ttl=60, user="u")
    assert first.delete_user("u") == 1
    assert second.load("k") == Record(b"second", 1)
    assert rows(path, "first") == 0
    first.close()
    second.close()


def test_negative_timeout_is_rejected(path: Path) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        SQLiteStore(path, timeout=-1)


def test_close_closes_every_threads_connection_and_reopens_on_use(path: Path) -> None:
    store = SQLiteStore(path)
    store.save("k", b"v", version=0, ttl=60, user=None)
    opened, finish = threading.Event(), threading.Event()
    loaded: list[Record | None] = []

    def worker() -> None:
        loaded.append(store.load("k"))
        opened.set()
        finish.wait(timeout=30)
        loaded.append(store.load("k"))  # after `close`: reconnects

    thread = threading.Thread(target=worker)
    thread.start()
    assert opened.wait(timeout=30)
    assert len(store._connections) == 2  # this thread's and the worker's
    store.close()
    assert len(store._connections) == 0
    finish.set()
    thread.join(timeout=30)
    assert loaded == [Record(b"v", 1), Record(b"v", 1)]
    gc.collect()  # a connection is in a reference cycle; collecting it closes it
    assert len(store._connections) == 0  # the store itself keeps no dead thread's connection
    assert store.load("k") == Record(b"v", 1)
    store.close()


def test_in_memory_store_and_its_async_twin_share_one_database() -> None:
    store = SQLiteStore(":memory:")
    twin = to_async(store)
    assert store.save("k", b"v", version=0, ttl=60, user="u")

    async def check() -> None:
        assert await twin.load("k") == Record(b"v", 1)
        assert await twin.save("k", b"v2", version=1, ttl=60, user="u")

    anyio.run(check)
    assert store.load("k") == Record(b"v2", 2)
    loaded: list[Record | None] = []
    thread = threading.Thread(target=lambda: loaded.append(store.load("k")))
    thread.start()
    thread.join(timeout=30)
    assert loaded == [Record(b"v2", 2)]
    store.close()


def test_repr_names_the_file_not_the_data(path: Path) -> None:
    store = SQLiteStore(path, table="sessions")
    store.save("secret-key", b"secret", version=0, ttl=60, user="alice")
    assert repr(store) == f"SQLiteStore({str(path)!r}, table='sessions')"
    assert "secret" not in repr(AsyncSQLiteStore.wrapping(store))
    store.close()


_START_TOGETHER = """
import sys, time
from coatcheck.stores import SQLiteRevocationStore, SQLiteStore
start = float(sys.argv[2])
while time.time() < start:
    pass
for store in (SQLiteStore(sys.argv[1]), SQLiteRevocationStore(sys.argv[1])):
    store.open()
    store.close()
print("ok")
"""


def test_processes_creating_one_new_file_at_once_all_start(tmp_path: Path) -> None:
    # The demo's replicas start together on a fresh file; SQLite answers some of the
    # set-up steps (WAL switch, CREATE TABLE) "locked" without waiting for busy_timeout.
    import time

    for attempt in range(3):
        path = tmp_path / f"fresh-{attempt}.db"
        start = str(time.time() + 1.5)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _START_TOGETHER, str(path), start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [out.strip() for out, _ in results] == ["ok"] * 6, [err for _, err in results]


# -- revocations -------------------------------------------------------------------------------


class TestSQLiteRevocationStore(RevocationStoreContract):
    """Every client its own connections to one file; the async twin wraps a sync store."""

    @pytest.fixture
    def connect(self, path: Path, clock: ManualClock) -> Connect:
        return lambda: SQLiteRevocationStore(path, clock=clock)

    @pytest.fixture
    def aconnect(self, path: Path, clock: ManualClock) -> AsyncConnect:
        return lambda: AsyncSQLiteRevocationStore(SQLiteRevocationStore(path, clock=clock))

    @pytest.fixture
    def plant(self, path: Path) -> Plant:
        def plant(doc: str, expires_at: float) -> None:
            db = sqlite3.connect(path)
            try:
                with db:
                    db.execute(
                        "INSERT INTO coatcheck_revocations (entry, expires_at) VALUES (?, ?)",
                        (doc, expires_at),
                    )
            finally:
                db.close()

        return plant


T = 1_800_000_000.0


def sid(subject: str, expires_at: float = T + 100) -> Revocation:
    return Revocation("sid", subject, T, expires_at)


def test_revocation_stores_on_one_file_share_entries_across_connections(path: Path) -> None:
    a, b = SQLiteRevocationStore(path), SQLiteRevocationStore(path)
    a.revoke(sid("from-a"))
    entries, cursor = b.changes(0)
    assert entries == [sid("from-a")]
    seen: list[Revocation] = []
    thread = threading.Thread(target=lambda: seen.extend(a.changes(0)[0]))  # its own connection
    thread.start()
    thread.join(timeout=30)
    assert seen == [sid("from-a")]
    a.close()
    b.close()


def test_revocation_purge_uses_the_injected_clock(path: Path) -> None:
    clock = ManualClock(T)
    store = SQLiteRevocationStore(path, clock=clock)
    store.revoke(sid("a", expires_at=T + 5))
    assert store.purge_expired() == 0
    clock.advance(5)
    assert store.purge_expired() == 1
    store.close()


def test_revocation_table_name_must_be_an_identifier(path: Path) -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        SQLiteRevocationStore(path, table="x; DROP TABLE y")


def test_revocation_store_that_cannot_open_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteRevocationStore(tmp_path / "missing-dir" / "r.db")
    uses: list[Callable[[], Any]] = [store.open, lambda: store.changes(0)]
    for use in uses:
        with pytest.raises(StoreUnavailable):
            use()


def test_revocations_and_sessions_share_one_file(path: Path) -> None:
    sessions, revocations = SQLiteStore(path), SQLiteRevocationStore(path)
    sessions.save("k", b"data", version=0, ttl=60, user=None)
    revocations.revoke(sid("a"))
    assert rows(path) == 1 and rows(path, "coatcheck_revocations") == 1
    sessions.close()
    revocations.close()


@pytest.mark.anyio
async def test_revocation_twin(path: Path) -> None:
    store = SQLiteRevocationStore(path)
    twin = revocations_to_async(store)
    assert isinstance(twin, AsyncSQLiteRevocationStore) and twin.sync is store
    await twin.revoke(sid("a"))
    assert (await twin.changes(0))[0] == [sid("a")]
    assert store.changes(0)[0] == [sid("a")]
    await twin.aclose()
