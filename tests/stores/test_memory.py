"""`MemoryStore`, its async twin and `ThreadedStore` against the shared contract; what only
the memory store has (expiry without `purge_expired`, compact records, a model of its
indexes); and `MemoryRevocationStore` (with twin) against the revocation contract."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from coatcheck.jsonio import dumps
from coatcheck.revocation import AsyncRevocationStore, Revocation, RevocationStore
from coatcheck.stores import (
    AsyncMemoryRevocationStore,
    AsyncMemoryStore,
    AsyncStore,
    MemoryRevocationStore,
    MemoryStore,
    Record,
    Store,
    ThreadedRevocationStore,
    ThreadedStore,
    revocations_to_async,
    to_async,
)
from coatcheck.stores.memory import GRAIN, SWEEP

from .contract import (
    AsyncConnect,
    AsyncStoreContract,
    Connect,
    ManualClock,
    RevocationStoreContract,
    StoreContract,
)


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, clock: ManualClock) -> Iterator[Store]:
        store = MemoryStore(clock=clock)
        yield store
        store.close()


class TestAsyncMemoryStore(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def astore(self, clock: ManualClock) -> AsyncStore:
        return AsyncMemoryStore(clock=clock)


class TestThreadedStore(AsyncStoreContract):
    """The generic sync-to-async adapter, over a store with a manual clock."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def astore(self, clock: ManualClock) -> AsyncStore:
        return ThreadedStore(MemoryStore(clock=clock))


@pytest.mark.anyio
async def test_async_twin_shares_the_sync_stores_records() -> None:
    sync = MemoryStore()
    twin = to_async(sync)
    assert isinstance(twin, AsyncMemoryStore)
    assert sync.save("k", b"from sync", version=0, ttl=60, user="u")
    assert await twin.load("k") == Record(b"from sync", 1)
    assert await twin.save("k", b"from async", version=1, ttl=60, user="u")
    assert sync.load("k") == Record(b"from async", 2)
    assert await twin.list_user("u") == [("k", Record(b"from async", 2))]


def test_repr_shows_no_keys_or_data() -> None:
    store = MemoryStore()
    store.save("secret-looking-key", b"secret data", version=0, ttl=60, user="alice")
    for text in (repr(store), repr(AsyncMemoryStore(store)), repr(ThreadedStore(store))):
        assert "secret" not in text
        assert "alice" not in text
    assert repr(store) == "<MemoryStore records=1>"


def test_expired_records_are_freed_by_purge() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    for i in range(10):
        store.save(f"k{i}", b"x", version=0, ttl=1, user="u")
    clock.advance(2)
    assert store.purge_expired() == 10
    assert repr(store) == "<MemoryStore records=0>"
    assert store.list_user("u") == []


# -- expiry without purge_expired, compact records -------------------------------------------


def test_expired_records_are_dropped_without_purge_or_touching_them() -> None:
    """Writes to other keys drop expired records a few at a time: never all in one call,
    and all of them after a number of calls proportional to their number."""
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    expired = 1000
    for i in range(expired):
        assert store.save(f"old-{i}", b"x", version=0, ttl=30, user=f"user-{i % 10}")
    assert store.save("live", b"0", version=0, ttl=86_400, user="user-0")
    clock.advance(GRAIN + 31)  # past every old record's expiry bucket

    assert store.save("live", b"1", version=1, ttl=86_400, user="user-0")
    assert len(store._records) >= expired + 1 - SWEEP  # bounded work in one operation

    version = 2
    while len(store._records) > 1 and version < expired:
        assert store.save("live", b"%d" % version, version=version, ttl=86_400, user="user-0")
        version += 1
    assert version - 1 <= expired // SWEEP + 2  # writes: SWEEP records each, and the bucket
    assert list(store._records) == ["live"]
    assert store._users == {"user-0": {"live"}}
    assert store.load("live") == Record(b"%d" % (version - 1), version)
    assert store.purge_expired() == 0


def test_loads_alone_also_drop_expired_records() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    for i in range(3 * SWEEP):
        store.save(f"old-{i}", b"x", version=0, ttl=30, user=None)
    clock.advance(GRAIN + 31)
    for _ in range(3):
        assert store.load("other") is None
    assert len(store._records) == 0


def test_purge_expired_counts_records_in_the_current_bucket() -> None:
    """`purge_expired` also finds expired records in the bucket `now` falls in, which the
    per-operation sweep leaves for later."""
    clock = ManualClock(start=GRAIN * 1_000_000)  # at the start of a bucket
    store = MemoryStore(clock=clock)
    store.save("soon", b"x", version=0, ttl=1, user="u")
    store.save("later", b"x", version=0, ttl=GRAIN / 2, user="u")
    clock.advance(2)
    assert store.load("later") is not None  # a sweep: nothing wholly expired yet
    assert len(store._records) == 2
    assert store.purge_expired() == 1
    assert store.list_user("u") == [("later", Record(b"x", 1))]


def test_stored_bytes_are_compact() -> None:
    """orjson hands back its ~8 KB output buffer as the bytes object: the store keeps a copy
    the size of the data, measured by what the allocator was asked for."""
    store = MemoryStore()
    session = {"user": "alice", "cart": list(range(40)), "note": "n" * 120}
    keys = [f"key-{i:06d}" for i in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            store.save(key, dumps(session), version=0, ttl=60, user=None)
        per_record = (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    finally:
        tracemalloc.stop()
    size = len(dumps(session))
    assert size < 400
    assert per_record < size + 400, f"{per_record:.0f} bytes held per {size}-byte record"
    stored = store.load(keys[0])
    assert stored is not None and stored.data == dumps(session)


def test_rotate_stores_a_copy_too() -> None:
    store = MemoryStore()
    data = dumps({"n": "x" * 200})
    store.save("old", b"x", version=0, ttl=60, user=None)
    store.rotate("old", "new", data, version=1, ttl=60, user=None)
    stored = store.load("new")
    assert stored is not None and stored.data == data and stored.data is not data


KEYS = st.sampled_from(["a", "b", "c", "d"])
TTLS = st.sampled_from([1.0, 30.0, GRAIN, 5 * GRAIN])
USERS = st.sampled_from([None, "u1", "u2"])


class MemoryStoreModel(RuleBasedStateMachine):
    """Random saves, rotations, deletions, loads and clock moves against a dict model: after
    every step the records, the expiry buckets and the user index agree with each other and
    with the model, swept or not."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.store = MemoryStore(clock=self.clock)
        self.model: dict[str, tuple[int, float, str | None]] = {}  # key: version, expiry, user

    def live(self, key: str) -> tuple[int, float, str | None] | None:
        entry = self.model.get(key)
        return entry if entry is not None and entry[1] > self.clock.now else None

    @rule(key=KEYS, ttl=TTLS, user=USERS)
    def save(self, key: str, ttl: float, user: str | None) -> None:
        entry = self.live(key)
        version = entry[0] if entry else 0
        assert self.store.save(key, b"d", version=version, ttl=ttl, user=user)
        self.model[key] = (version + 1, self.clock.now + ttl, user)

    @rule(old=KEYS, new=KEYS, ttl=TTLS, user=USERS)
    def rotate(self, old: str, new: str, ttl: float, user: str | None) -> None:
        assume(old != new)  # a rotation always moves to a fresh key
        entry = self.live(old)
        version = entry[0] if entry else 1
        rotated = self.store.rotate(old, new, b"r", version=version, ttl=ttl, user=user)
        assert rotated == (entry is not None)
        if rotated:
            self.model[new] = (1, self.clock.now + ttl, user)
            del self.model[old]

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.store.delete(key)
        self.model.pop(key, None)

    @rule(key=KEYS)
    def load(self, key: str) -> None:
        entry = self.live(key)
        record = self.store.load(key)
        assert (record.version if record else None) == (entry[0] if entry else None)

    @rule(seconds=st.sampled_from([1.0, 29.0, GRAIN, 3 * GRAIN]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def purge(self) -> None:
        now = self.clock.now
        expired = [k for k, e in self.store._records.items() if e.expires_at <= now]
        assert self.store.purge_expired() == len(expired)
        assert all(e.expires_at > now for e in self.store._records.values())

    @invariant()
    def indexes_match_the_records(self) -> None:
        store = self.store
        for key, (record, expires_at, user, bucket) in store._records.items():
            version = record.version
            assert bucket == math.ceil(expires_at / GRAIN)
            assert key in store._buckets[bucket]
            assert user is None or key in store._users[user]
            live = self.live(key)
            if expires_at > self.clock.now:
                assert live is not None and (live[0], live[1], live[2]) == (
                    version,
                    expires_at,
                    user,
                )
        assert sum(map(len, store._buckets.values())) == len(store._records)
        assert sorted(store._due) == sorted(store._buckets)
        assert all(keys for keys in store._users.values())
        for user, keys in store._users.items():
            assert all(store._records[key].user == user for key in keys)
        for key, entry in self.model.items():
            if entry[1] > self.clock.now:
                assert key in store._records


MemoryStoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestMemoryStoreModel = MemoryStoreModel.TestCase


# -- revocations ---------------------------------------------------------------------------


class TestMemoryRevocationStore(RevocationStoreContract):
    """Every client is the one store (or a twin sharing it): one process's entries."""

    @pytest.fixture
    def shared(self, clock: ManualClock) -> MemoryRevocationStore:
        return MemoryRevocationStore(clock=clock)

    @pytest.fixture
    def connect(self, shared: MemoryRevocationStore) -> Connect:
        return lambda: shared

    @pytest.fixture
    def aconnect(self, shared: MemoryRevocationStore) -> AsyncConnect:
        return lambda: AsyncMemoryRevocationStore(shared)


class TestThreadedRevocationStore(TestMemoryRevocationStore):
    """The sync-to-async adapter that a Redis or PostgreSQL store built on a client object
    gets, over the memory store."""

    @pytest.fixture
    def aconnect(self, shared: MemoryRevocationStore) -> AsyncConnect:
        return lambda: ThreadedRevocationStore(shared)


def entry(subject: str) -> Revocation:
    return Revocation("sid", subject, 1_800_000_000.0, 1_800_000_100.0)


def test_memory_revocation_store_and_its_twin_share_entries() -> None:
    store = MemoryRevocationStore()
    twin = revocations_to_async(store)
    assert isinstance(twin, AsyncMemoryRevocationStore)
    assert isinstance(store, RevocationStore) and isinstance(twin, AsyncRevocationStore)
    assert twin.sync is store


@pytest.mark.anyio
async def test_memory_revocation_twin_sees_sync_entries() -> None:
    store = MemoryRevocationStore()
    twin = AsyncMemoryRevocationStore(store)
    store.revoke(entry("a"))
    await twin.revoke(entry("b"))
    assert (await twin.changes(0))[0] == [entry("a"), entry("b")]
    await twin.aclose()


def test_revocation_repr_shows_counts_only() -> None:
    store = MemoryRevocationStore()
    store.revoke(entry("secret-looking-sid"))
    assert repr(store) == "<MemoryRevocationStore entries=1>"
