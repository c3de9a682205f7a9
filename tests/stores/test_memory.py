"""`MemoryStore`, its async twin and `ThreadedStore` against the shared contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coatcheck.stores import (
    AsyncMemoryStore,
    AsyncStore,
    MemoryStore,
    Record,
    Store,
    ThreadedStore,
    to_async,
)

from .contract import AsyncStoreContract, ManualClock, StoreContract


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
