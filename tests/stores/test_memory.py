"""`MemoryStore`, its async twin and `ThreadedStore` against the shared contract, and
`MemoryRevocationStore` (with twin) against the revocation contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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


class TestThreadedRevocationStore(RevocationStoreContract):
    """The sync-to-async adapter that a Redis or PostgreSQL store built on a client object
    gets, over the memory store."""

    @pytest.fixture
    def shared(self, clock: ManualClock) -> MemoryRevocationStore:
        return MemoryRevocationStore(clock=clock)

    @pytest.fixture
    def connect(self, shared: MemoryRevocationStore) -> Connect:
        return lambda: shared

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
