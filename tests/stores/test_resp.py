"""The minimal RESP client (`coatcheck.stores.resp`) that `RedisStore` and `AsyncRedisStore`
made from a plain `redis://` URL use for `load`, `save` and `rotate`, against real
`redis-server`s started by `tests/servers.py`: encoding, scripts reloaded after
`SCRIPT FLUSH`, a server restart, pool exhaustion, a server that never answers, `AUTH`,
`SELECT`, fork safety, and which stores use the lane at all."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from coatcheck.exceptions import StoreError, StoreUnavailable
from coatcheck.stores import Record, resp
from coatcheck.stores.redis import AsyncRedisStore, RedisRevocationStore, RedisStore
from coatcheck.stores.resp import encode, sha1
from helpers import await_until, blocked_clients, wait_until
from servers import (  # noqa: F401 - fixtures
    RedisCluster,
    RedisServer,
    redis_cluster_fixture,
    redis_server_fixture,
    running_redis,
)

pytestmark = pytest.mark.service

KEY, NEW = "k" * 43, "n" * 43


def fresh_prefix() -> str:
    return f"test-{secrets.token_hex(6)}:"


def idle(store: RedisStore | AsyncRedisStore) -> int:
    """The lane's connections kept for the next command: the sync lane's idle ones, the
    async lane's one pipe if it works."""
    lane = store._lane
    assert lane is not None
    if isinstance(lane, resp.AsyncLane):
        return int(lane._pipe is not None and lane._pipe.failure is None)
    return len(lane._idle)


def lane_clients(url: str) -> list[dict[str, str]]:
    """The server's client connections, but the one asking (`CLIENT LIST`)."""
    raw = redis.Redis.from_url(url)
    clients = [c for c in raw.client_list() if c["cmd"] != "client|list"]
    raw.close()
    return clients


# -- encoding ------------------------------------------------------------------------------


def test_encode_is_an_array_of_bulk_strings() -> None:
    assert encode(b"GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert encode("SET", "é", b"", 42, -1) == (
        b"*5\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n$2\r\n42\r\n$2\r\n-1\r\n"
    )
    assert encode() == b"*0\r\n"


def test_sha1_is_the_name_redis_gives_a_script(redis_server: RedisServer) -> None:
    raw = redis.Redis.from_url(redis_server.url)
    assert raw.script_load("return 1") == sha1("return 1")
    raw.close()


# -- which stores use the lane -------------------------------------------------------------


def test_only_a_plain_single_server_url_gets_a_lane(redis_cluster: RedisCluster) -> None:
    assert RedisStore("redis://127.0.0.1:1/0")._lane is not None
    assert RedisStore("redis://127.0.0.1:1/0?max_connections=3")._lane is not None
    assert RedisStore("rediss://127.0.0.1:1/0")._lane is None
    assert RedisStore("unix:///tmp/redis.sock")._lane is None
    assert RedisStore("redis://127.0.0.1:1/0?health_check_interval=5")._lane is None
    assert RedisStore(redis.Redis())._lane is None
    assert RedisStore(redis_cluster.url)._lane is None
    assert AsyncRedisStore("redis://127.0.0.1:1/0")._lane is not None
    assert AsyncRedisStore(redis_cluster.url)._lane is None
    assert AsyncRedisStore(redis.asyncio.Redis())._lane is None
    assert RedisRevocationStore("redis://127.0.0.1:1/0")._lane is None  # redis-py only


def test_load_save_rotate_go_through_the_lane(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=fresh_prefix())
    assert store.load(KEY) is None
    assert store.save(KEY, b"d", version=0, ttl=60, user="alice") is True
    assert store.save(KEY, b"x", version=0, ttl=60, user="alice") is False  # stale version
    assert store.load(KEY) == Record(b"d", 1)
    assert store.rotate(KEY, NEW, b"e", version=1, ttl=60, user="alice") is True
    assert store.load(KEY) is None and store.load(NEW) == Record(b"e", 1)
    assert idle(store) == 1
    assert store.client.connection_pool._connections == []  # redis-py never connected
    assert [key for key, _ in store.list_user("alice")] == [NEW]  # redis-py
    store.close()
    assert idle(store) == 0


@pytest.mark.anyio
async def test_async_load_save_rotate_go_through_the_lane(redis_server: RedisServer) -> None:
    store = AsyncRedisStore(redis_server.url, prefix=fresh_prefix())
    assert await store.load(KEY) is None
    assert await store.save(KEY, b"d", version=0, ttl=60, user="alice") is True
    assert await store.save(KEY, b"x", version=0, ttl=60, user="alice") is False
    assert await store.load(KEY) == Record(b"d", 1)
    assert await store.rotate(KEY, NEW, b"e", version=1, ttl=60, user=None) is True
    assert await store.load(NEW) == Record(b"e", 1)
    assert idle(store) == 1
    results = await asyncio.gather(*(store.load(NEW) for _ in range(20)))
    assert results == [Record(b"e", 1)] * 20
    assert idle(store) == 1 and len(lane_clients(redis_server.url)) == 1  # one pipe for all
    await store.aclose()
    assert idle(store) == 0


# -- the async lane's pipe -----------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    redis_server: RedisServer,
) -> None:
    """Auto-pipelining: 200 concurrent loads of 200 different sessions go over one
    connection, and each gets its own record (replies matched first in, first out)."""
    store = AsyncRedisStore(redis_server.url, prefix=fresh_prefix(), max_connections=500)
    keys = [f"{i:043d}" for i in range(200)]
    for i, key in enumerate(keys):
        assert await store.save(key, b"%d" % i, version=0, ttl=60, user=None) is True
    results = await asyncio.gather(*(store.load(key) for key in reversed(keys)))
    assert results == [Record(b"%d" % i, 1) for i in reversed(range(200))]
    assert len(lane_clients(redis_server.url)) == 1
    await store.aclose()


@pytest.mark.anyio
async def test_a_cancelled_command_leaves_the_pipe_in_step(redis_server: RedisServer) -> None:
    """A waiter cancelled before its reply (a client that went away) keeps its place: the
    reply, when it comes, is dropped, and the command behind it gets its own."""
    prefix = fresh_prefix()
    store = AsyncRedisStore(redis_server.url, prefix=prefix)
    assert store._lane is not None
    assert await store.save(KEY, b"d", version=0, ttl=60, user=None) is True
    pipe = store._lane._pipe
    hold = f"{prefix}hold"
    blocked = asyncio.ensure_future(store._lane.call(b"BLPOP", hold, 0))
    await await_until(lambda: blocked_clients(redis_server.url) == 1, "BLPOP sent")
    behind = asyncio.ensure_future(store.load(KEY))  # queued behind BLPOP's reply
    await asyncio.sleep(0)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    await raw.lpush(hold, b"for nobody")  # BLPOP's reply comes now, then GET's
    assert await asyncio.wait_for(behind, 10) == Record(b"d", 1)
    assert store._lane._pipe is pipe and idle(store) == 1
    await raw.aclose()
    await store.aclose()


@pytest.mark.anyio
async def test_a_killed_pipe_fails_over_to_one_new_connection(redis_server: RedisServer) -> None:
    """Every command waiting on a connection the server kills is sent once more, all of
    them on one new connection, and each gets its own reply."""
    prefix = fresh_prefix()
    store = AsyncRedisStore(redis_server.url, prefix=prefix)
    assert store._lane is not None
    keys = [f"{i:043d}" for i in range(10)]
    for i, key in enumerate(keys):
        assert await store.save(key, b"%d" % i, version=0, ttl=60, user=None) is True
    old = store._lane._pipe
    assert old is not None
    blocked = old.request(encode(b"BLPOP", f"{prefix}hold", 0))  # on this pipe only
    await await_until(lambda: blocked_clients(redis_server.url) == 1, "BLPOP sent")
    loads = [asyncio.ensure_future(store.load(key)) for key in keys]  # behind BLPOP
    await asyncio.sleep(0)
    (victim,) = lane_clients(redis_server.url)
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    assert await raw.client_kill_filter(_id=victim["id"]) == 1
    results = await asyncio.wait_for(asyncio.gather(*loads), 10)
    assert results == [Record(b"%d" % i, 1) for i in range(10)]
    assert await blocked is resp.LOST and old.failure is not None
    assert store._lane._pipe is not old and idle(store) == 1
    assert len(lane_clients(redis_server.url)) == 2  # the new pipe and raw
    await raw.aclose()
    await store.aclose()


def test_an_error_reply_is_store_error(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    raw = redis.Redis.from_url(redis_server.url)
    raw.lpush(f"{prefix}s:{{{KEY}}}", b"a list, not a string")
    with pytest.raises(StoreError, match=r"^Redis store failed \(ResponseError: WRONGTYPE"):
        store.load(KEY)
    assert store.load(NEW) is None  # the connection is still good
    raw.close()
    store.close()


# -- scripts after SCRIPT FLUSH ------------------------------------------------------------


def test_a_flushed_script_is_loaded_again(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=fresh_prefix())
    raw = redis.Redis.from_url(redis_server.url)
    assert store.save(KEY, b"d", version=0, ttl=60, user="u") is True
    raw.script_flush()
    assert store.save(KEY, b"e", version=1, ttl=60, user="u") is True
    raw.script_flush()
    assert store.rotate(KEY, NEW, b"f", version=2, ttl=60, user=None) is True
    assert store.load(NEW) == Record(b"f", 1)
    raw.close()
    store.close()


@pytest.mark.anyio
async def test_async_a_flushed_script_is_loaded_again(redis_server: RedisServer) -> None:
    store = AsyncRedisStore(redis_server.url, prefix=fresh_prefix())
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    assert await store.save(KEY, b"d", version=0, ttl=60, user="u") is True
    await raw.script_flush()
    assert await store.save(KEY, b"e", version=1, ttl=60, user="u") is True
    await raw.script_flush()
    assert await store.rotate(KEY, NEW, b"f", version=2, ttl=60, user=None) is True
    assert await store.load(NEW) == Record(b"f", 1)
    await raw.aclose()
    await store.aclose()


# -- server restart ------------------------------------------------------------------------


def test_a_restart_costs_no_error_once_the_server_is_back() -> None:
    with running_redis() as server:
        store = RedisStore(server.url, prefix=fresh_prefix(), timeout=0.5)
        assert store.save(KEY, b"d", version=0, ttl=60, user=None) is True
        assert idle(store) == 1
        server.stop()
        server.start()  # the idle connection is broken: the one retry takes a new one
        assert store.load(KEY) is None  # no persistence: the record went with the server
        assert store.save(KEY, b"d", version=0, ttl=60, user=None) is True  # NOSCRIPT too
        server.stop()
        for operation in (
            lambda: store.load(KEY),
            lambda: store.save(KEY, b"d", version=1, ttl=60, user=None),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"^Redis store unavailable \(") as caught:
                operation()
            assert time.monotonic() - started < 0.4  # refused at once: no wait for timeout
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
        server.start()
        assert store.load(KEY) is None
        store.close()


@pytest.mark.anyio
async def test_async_a_restart_costs_no_error_once_the_server_is_back() -> None:
    with running_redis() as server:
        store = AsyncRedisStore(server.url, prefix=fresh_prefix(), timeout=0.5)
        assert await store.save(KEY, b"d", version=0, ttl=60, user=None) is True
        assert idle(store) == 1
        server.stop()
        server.start()
        assert await store.load(KEY) is None
        assert await store.save(KEY, b"d", version=0, ttl=60, user=None) is True
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"^Redis store unavailable \("):
            await store.load(KEY)
        assert time.monotonic() - started < 0.4
        server.start()
        assert await store.load(KEY) is None
        await store.aclose()


def test_a_broken_connection_is_retried_once_on_a_new_one(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As redis-py's one retry: a connection that breaks (here: every new one, or only the
    first) is dropped and the command sent once more on a new connection; a second
    failure is `StoreUnavailable`, and no broken connection is kept."""
    store = RedisStore(redis_server.url, prefix=fresh_prefix())
    assert store._lane is not None
    opened: list[Any] = []
    real_connect = socket.create_connection
    broken = 2

    # The seam is the socket module, not the lane: a compiled `SyncLane` (mypyc) takes no
    # instance attributes. This server has no handshake (no AUTH, db 0), so a socket broken
    # once connected is a connection broken before the command.
    def connect_broken(*args: Any, **kwargs: Any) -> Any:
        sock = real_connect(*args, **kwargs)
        if len(opened) < broken:
            sock.shutdown(socket.SHUT_RDWR)  # connected, then broken before the command
        opened.append(sock)
        return sock

    monkeypatch.setattr(socket, "create_connection", connect_broken)
    with pytest.raises(StoreUnavailable):
        store.load(KEY)
    assert len(opened) == 2 and idle(store) == 0
    opened.clear()
    broken = 1
    assert store.load(KEY) is None  # the first connection broke, the second answered
    assert len(opened) == 2 and idle(store) == 1
    store.close()


# -- pool exhaustion -----------------------------------------------------------------------


def test_a_full_sync_lane_waits_pool_timeout_then_fails(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(
        redis_server.url, prefix=prefix, timeout=30, max_connections=2, pool_timeout=0.3
    )
    assert store._lane is not None
    lane = store._lane
    hold = f"{prefix}hold"
    holders = [
        threading.Thread(target=lambda: lane.call(b"BLPOP", hold, 0), daemon=True),
        threading.Thread(target=lambda: store.client.blpop([hold], timeout=0), daemon=True),
    ]
    for thread in holders:
        thread.start()
    wait_until(lambda: blocked_clients(redis_server.url) == 2, "both places held")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout") as caught:
        store.load(KEY)
    assert 0.29 <= time.monotonic() - started < 5
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    raw = redis.Redis.from_url(redis_server.url)
    raw.lpush(hold, b"one")  # frees a place: the next command gets through
    wait_until(lambda: blocked_clients(redis_server.url) == 1, "one place freed")
    assert store.save(KEY, b"d", version=0, ttl=60, user=None) is True
    raw.lpush(hold, b"two")
    for thread in holders:
        thread.join(30)
    raw.close()
    store.close()


@pytest.mark.anyio
async def test_a_full_async_lane_waits_pool_timeout_then_fails(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = AsyncRedisStore(
        redis_server.url, prefix=prefix, timeout=30, max_connections=2, pool_timeout=0.3
    )
    assert store._lane is not None
    hold = f"{prefix}hold"
    holders = [
        asyncio.ensure_future(store._lane.call(b"BLPOP", hold, 0)),
        asyncio.ensure_future(store.client.blpop([hold], timeout=0)),
    ]
    await await_until(lambda: blocked_clients(redis_server.url) == 2, "both places held")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout"):
        await store.load(KEY)
    assert 0.29 <= time.monotonic() - started < 5
    waiter = asyncio.ensure_future(store.save(KEY, b"d", version=0, ttl=60, user=None))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()  # queued for a place, not failed
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    await raw.lpush(hold, b"one")
    assert await asyncio.wait_for(waiter, 30) is True
    await raw.lpush(hold, b"two")
    await asyncio.gather(*holders)
    await raw.aclose()
    await store.aclose()


# -- a server that never answers -----------------------------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_is_unavailable_within_timeout() -> None:
    with silent_server() as port:
        store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=0.3)
        for operation in (
            lambda: store.load(KEY),
            lambda: store.save(KEY, b"d", version=0, ttl=60, user=None),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Timeout") as caught:
                operation()
            assert 0.29 <= time.monotonic() - started < 1.5
            assert "hunter2" not in str(caught.value)
        store.close()


@pytest.mark.anyio
async def test_async_a_server_that_never_answers_is_unavailable_within_timeout() -> None:
    with silent_server() as port:
        store = AsyncRedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await store.load(KEY)
        assert 0.29 <= time.monotonic() - started < 1.5
        await store.aclose()


@contextlib.contextmanager
def answering_nothing() -> Iterator[tuple[int, list[socket.socket]]]:
    """A server that accepts connections, reads what is sent and never answers; yields its
    port and the connections it accepted."""
    accepted: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.1)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1], accepted
        finally:
            stop.set()
            thread.join(5)
            for conn in accepted:
                conn.close()


def test_a_write_that_timed_out_is_not_sent_again_a_read_is() -> None:
    """The server may still run a write it did not answer in time (slow, not gone): sent
    again, `Session.increment` would count twice. A read is safe to send once more."""
    with answering_nothing() as (port, accepted):
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.save(KEY, b"d", version=0, ttl=60, user=None)
        assert len(accepted) == 1
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.load(KEY)
        assert len(accepted) == 3  # the read: a new connection, then once more
        store.close()


@pytest.mark.anyio
async def test_async_a_write_that_timed_out_is_not_sent_again_a_read_is() -> None:
    with answering_nothing() as (port, accepted):
        store = AsyncRedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await store.save(KEY, b"d", version=0, ttl=60, user=None)
        assert len(accepted) == 1
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await store.load(KEY)
        assert len(accepted) == 3
        await store.aclose()


# -- AUTH, SELECT, secrets -----------------------------------------------------------------


@pytest.fixture
def password_server() -> Iterator[tuple[RedisServer, str]]:
    with running_redis() as server:
        password = f"pw-{secrets.token_hex(8)}"
        raw = redis.Redis.from_url(server.url)
        raw.config_set("requirepass", password)
        try:
            yield server, password
        finally:
            reset = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{server.port}/0")
            reset.config_set("requirepass", "")
            reset.close()
            raw.close()


def test_auth_with_a_password_and_with_a_user(password_server: tuple[RedisServer, str]) -> None:
    server, password = password_server
    for userinfo in (f":{password}", f"default:{password}"):
        url = f"redis://{userinfo}@127.0.0.1:{server.port}/0"
        store = RedisStore(url, prefix=fresh_prefix())
        assert store.save(KEY, b"d", version=0, ttl=60, user=None) is True
        assert store.load(KEY) == Record(b"d", 1)
        assert password not in repr(store) and password not in repr(store._lane)
        store.close()


def test_a_wrong_or_missing_password_is_unavailable_without_secrets(
    password_server: tuple[RedisServer, str],
) -> None:
    server, _ = password_server
    for url in (
        f"redis://:hunter2@127.0.0.1:{server.port}/0",
        f"redis://127.0.0.1:{server.port}/0",
    ):
        store = RedisStore(url, prefix=fresh_prefix())
        operations: list[Callable[[], object]] = [
            functools.partial(store.load, KEY),
            functools.partial(store.save, KEY, b"d", version=0, ttl=60, user=None),
        ]
        for operation in operations:
            with pytest.raises(StoreUnavailable) as caught:
                operation()
            assert "hunter2" not in str(caught.value) and "hunter2" not in repr(store._lane)
        store.close()


@pytest.mark.anyio
async def test_async_auth_and_select(password_server: tuple[RedisServer, str]) -> None:
    server, password = password_server
    prefix = fresh_prefix()
    store = AsyncRedisStore(f"redis://:{password}@127.0.0.1:{server.port}/3", prefix=prefix)
    assert await store.save(KEY, b"d", version=0, ttl=60, user=None) is True
    assert await store.load(KEY) == Record(b"d", 1)
    raw = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{server.port}/3")
    assert raw.exists(f"{prefix}s:{{{KEY}}}") == 1
    raw.close()
    wrong = AsyncRedisStore(f"redis://:hunter2@127.0.0.1:{server.port}/0")
    with pytest.raises(StoreUnavailable) as caught:
        await wrong.load(KEY)
    assert "hunter2" not in str(caught.value)
    await wrong.aclose()
    await store.aclose()


def test_select_puts_the_keys_in_the_url_database(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(f"redis://127.0.0.1:{redis_server.port}/3", prefix=prefix)
    assert store.save(KEY, b"d", version=0, ttl=60, user="u") is True
    db3 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    db0 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
    assert db3.exists(f"{prefix}s:{{{KEY}}}", f"{prefix}u:{{u}}") == 2
    assert db0.exists(f"{prefix}s:{{{KEY}}}") == 0
    assert [key for key, _ in store.list_user("u")] == [KEY]  # redis-py reads db 3 too
    db3.close()
    db0.close()
    store.close()


# -- fork ----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connections(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=fresh_prefix())
    assert store.save(KEY, b"d", version=0, ttl=60, user=None) is True
    assert store._lane is not None
    parent_conn = store._lane._idle[0]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            ok = store.load(KEY) == Record(b"d", 1)
            assert store._lane is not None
            status = 0 if ok and store._lane._idle[0] is not parent_conn else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load(KEY) == Record(b"d", 1)  # the parent's connection still works
    assert store._lane._idle == [parent_conn]
    store.close()
