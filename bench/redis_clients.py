"""Which Redis client should coatcheck use? redis-py, coredis and a minimal RESP client,
measured on exactly the commands coatcheck sends per request.

A *request* is what `RedisStore.load` and `RedisStore.save` send for one HTTP request of a
logged-in user on a single server: `GET coatcheck:s:{<64 hex>}` (read), or that `GET`, then
`EVALSHA <sha> 2 <session key> <user index> <version> <record> <ttl_ms> <id>` of coatcheck's
own compare-and-set save script (write). The key layout, the Lua text (`_LUA_SAVE`), the
record encoding (`_encode`/`_decode`) and the arguments are taken from
`coatcheck.stores.redis`, so the server does the same work for every client; each request
decodes the version from the `GET` and the save must succeed (it is checked).

Clients (each runs in a worker process of its own, against one throw-away `redis-server`):

  redispy-async            redis-py asyncio + hiredis, the client `AsyncRedisStore` builds
                           (its `_Gate`, a pool of 2x50, timeouts, one retry, `Script`)
  redispy-async-bare       redis-py asyncio + hiredis without coatcheck's wrapping: its own
                           BlockingConnectionPool of 50, the same timeouts (what the `_Gate`
                           and the retry setting cost)
  redispy-async-nohiredis  the same as redispy-async, in a process where `import hiredis`
                           fails
  coredis                  coredis (RESP3, anyio), max_connections=50, timeouts, `Script`
  mini-async               the minimal client below: asyncio streams, hiredis.Reader, a pool
                           of up to 50 connections, one command per connection at a time
  mini-async-pipe          the minimal client, auto-pipelined: one connection for all tasks,
                           commands issued while replies are outstanding are written together
                           in one `write` on the next loop turn, replies matched FIFO
  raw-async                (a floor, not a client) asyncio streams + hiredis, a connection
                           per task: write, read, parse; no pool, timeout or NOSCRIPT check
  redispy-sync             redis-py sync + hiredis, the client `RedisStore` builds
  redispy-sync-nohiredis   the same without hiredis
  mini-sync                the minimal client's sync twin (plain sockets, a pool of 50)
  floor-async/floor-sync   no Redis: the same request code against a dict (the harness's
                           own cost, to subtract)

Measured:

1. instructions (valgrind callgrind, client process only, PYTHONHASHSEED=0): one valgrind
   run per client connects, warms up, then runs, for each scenario and concurrency, an
   empty batch and a batch of N requests, each in a callgrind part of its own (the worker
   calls `os.getpgrp()` between them, and `--dump-before=getpgrp` closes a part there);
   (N-batch - empty batch) / N is the cost of a request. This is the "0 and N operations"
   difference without the process start (~1.65G instructions for redis-py, whose spread
   between two identical runs, 1.5-5M, would be noise of 1.5-5k per request at N=1000);
   c=1 read runs twice, and the difference between the two is shown as the noise;
2. wall time and CPU time (the worker's `process_time`) per request, at concurrency 1 and
   100 (`asyncio.gather` of 100 request loops over one client; sync: 16 threads), in rounds
   where the batches of every client run one after the other in a shuffled order; the
   tables give the median over rounds, and p50/p99 latency of single requests.

    .venv/bin/python bench/redis_clients.py                       # ~15-25 min on 2 cores
    .venv/bin/python bench/redis_clients.py --no-callgrind --rounds 3   # timing only
    .venv/bin/python bench/redis_clients.py --only mini-async,redispy-async

It writes `bench/RESULTS-redis-clients.md` (`--out`), keeping whatever follows the line
`<!-- analysis -->` in an existing file (the decision written by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import datetime
import hashlib
import json
import os
import platform
import queue
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

try:
    import hiredis
except ImportError:  # the -nohiredis workers block it on purpose
    hiredis = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT = 0.5  # seconds, for connecting and each reply (coatcheck's default)
POOL_SIZE = 50  # coatcheck's DEFAULT_MAX_CONNECTIONS
POOL_TIMEOUT = 5.0
TTL_MS = 3_600_000
SESSIONS = 100  # one per concurrent task
MARKER = "<!-- analysis -->"

# --- minimal RESP client: begin ---------------------------------------------------------
# Prototype. Commands are packed by hiredis.pack_command (RESP arrays of bulk strings, one
# bytes buffer); replies parsed by hiredis.Reader, which *returns* error replies as
# hiredis.ReplyError instances (raised here) and never raises them itself.


class Unavailable(Exception):
    """The server cannot be reached, or did not answer in time (the connection is dropped)."""


_MORE = object()  # hiredis.Reader's "not enough data yet" (False is a RESP3 reply)
_DOWN = (OSError, EOFError, hiredis.ProtocolError if hiredis else OSError)


def _reader() -> Any:
    return hiredis.Reader(notEnoughData=_MORE)


def _checked(reply: Any) -> Any:
    if type(reply) is hiredis.ReplyError:
        raise reply
    return reply


class _AsyncConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.parser = reader, writer, _reader()

    async def call(self, data: bytes, timeout: float) -> Any:
        self.writer.write(data)  # one command in flight: the transport's buffer stays small
        reply = self.parser.gets()
        if reply is _MORE:
            async with asyncio.timeout(timeout):
                while reply is _MORE:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        raise EOFError("connection closed by the server")
                    self.parser.feed(chunk)
                    reply = self.parser.gets()
        return reply


class AsyncClient:
    """Up to `size` connections, one command each at a time; more callers wait their turn
    (FIFO) up to `pool_timeout`. A connection that failed or timed out is closed, not reused."""

    def __init__(self, host: str, port: int, *, size: int = POOL_SIZE) -> None:
        self.host, self.port, self.timeout, self.pool_timeout = host, port, TIMEOUT, POOL_TIMEOUT
        self._idle: list[_AsyncConn] = []
        self._slots = asyncio.Semaphore(size)

    async def execute(self, *args: Any) -> Any:
        data = hiredis.pack_command(args)
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise Unavailable("no connection available") from None
        else:
            await self._slots.acquire()
        conn = None
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
            reply = await conn.call(data, self.timeout)
            self._idle.append(conn)
        except BaseException as exc:
            if conn is not None:
                conn.writer.close()  # a reply may still be on its way: never reuse it
            if isinstance(exc, _DOWN):
                raise Unavailable(f"{type(exc).__name__}: {exc}") from None
            raise
        finally:
            self._slots.release()
        return _checked(reply)

    async def _connect(self) -> _AsyncConn:
        async with asyncio.timeout(self.timeout):
            return _AsyncConn(*await asyncio.open_connection(self.host, self.port))

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().writer.close()


class AsyncPipelinedClient:
    """One connection shared by every task. A command goes out at once when nothing is
    pending, else it joins a buffer written in one `write` on the next loop turn; a reader
    task hands replies to the waiting futures in order. If the oldest reply is overdue the
    connection is dropped and every pending command fails (FIFO cannot skip a reply)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.timeout = host, port, TIMEOUT
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()

    async def execute(self, *args: Any) -> Any:
        if self._writer is None:
            await self._connect()
        loop = self._loop
        future = loop.create_future()
        data = hiredis.pack_command(args)
        if self._out:
            self._out.append(data)
        elif self._pending:
            self._out.append(data)
            loop.call_soon(self._flush)
        else:
            self._writer.write(data)  # type: ignore[union-attr]
        self._pending.append((future, loop.time() + self.timeout))
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check)
        return _checked(await future)

    def _flush(self) -> None:
        if self._writer is not None and self._out:
            self._writer.write(b"".join(self._out))
        self._out.clear()

    async def _connect(self) -> None:
        async with self._lock:
            if self._writer is None:
                try:
                    async with asyncio.timeout(self.timeout):
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                except (OSError, TimeoutError) as exc:
                    raise Unavailable(f"{type(exc).__name__}: {exc}") from None
                self._loop = asyncio.get_running_loop()
                self._writer = writer
                self._task = self._loop.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser, pending = _reader(), self._pending
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    raise EOFError("connection closed by the server")
                parser.feed(chunk)
                reply = parser.gets()
                while reply is not _MORE:
                    future = pending.popleft()[0]
                    if not future.done():  # a cancelled caller's reply is dropped
                        future.set_result(reply)
                    reply = parser.gets()
        except (*_DOWN, IndexError) as exc:
            self._fail(writer, Unavailable(f"{type(exc).__name__}: {exc}"))

    def _check(self) -> None:
        self._timer = None
        if self._pending and self._writer is not None:
            deadline = self._pending[0][1]
            if self._loop.time() >= deadline:
                self._fail(self._writer, Unavailable("TimeoutError: no reply in time"))
            else:
                self._timer = self._loop.call_at(deadline, self._check)

    def _fail(self, writer: asyncio.StreamWriter, exc: Exception) -> None:
        if self._writer is writer:
            self._writer = None
            writer.close()
            self._task.cancel()
            self._out.clear()
            while self._pending:
                future = self._pending.popleft()[0]
                if not future.done():
                    future.set_exception(exc)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._fail(self._writer, Unavailable("client closed"))


class _SyncConn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = _reader()

    def call(self, data: bytes) -> Any:
        self.sock.sendall(data)
        reply = self.parser.gets()
        while reply is _MORE:
            chunk = self.sock.recv(65536)  # the socket's timeout bounds each wait
            if not chunk:
                raise EOFError("connection closed by the server")
            self.parser.feed(chunk)
            reply = self.parser.gets()
        return reply


class SyncClient:
    """The sync twin (for WSGI threads): a pool of up to `size` sockets."""

    def __init__(self, host: str, port: int, *, size: int = POOL_SIZE) -> None:
        self.host, self.port, self.timeout, self.pool_timeout = host, port, TIMEOUT, POOL_TIMEOUT
        self._pool: queue.SimpleQueue[_SyncConn | None] = queue.SimpleQueue()
        for _ in range(size):
            self._pool.put(None)  # None: a place for a connection not opened yet

    def execute(self, *args: Any) -> Any:
        data = hiredis.pack_command(args)
        try:
            conn = self._pool.get(timeout=self.pool_timeout)
        except queue.Empty:
            raise Unavailable("no connection available") from None
        try:
            if conn is None:
                conn = _SyncConn(self.host, self.port, self.timeout)
            reply = conn.call(data)
        except BaseException as exc:
            if conn is not None:
                conn.sock.close()
                conn = None
            if isinstance(exc, _DOWN):  # socket.timeout is an OSError
                raise Unavailable(f"{type(exc).__name__}: {exc}") from None
            raise
        finally:
            self._pool.put(conn)
        return _checked(reply)

    def close(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            if conn is not None:
                conn.sock.close()


class Script:
    """A Lua script run by `EVALSHA`; on NOSCRIPT (a restarted or flushed server) it is
    sent once with `EVAL`, which caches it again."""

    def __init__(self, lua: str) -> None:
        self.lua = lua.encode()
        self.sha = hashlib.sha1(self.lua).hexdigest().encode()  # noqa: S324 (Redis's choice)

    async def run(self, client: AsyncClient | AsyncPipelinedClient, keys: list, args: list) -> Any:
        try:
            return await client.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await client.execute(b"EVAL", self.lua, len(keys), *keys, *args)

    def run_sync(self, client: SyncClient, keys: list, args: list) -> Any:
        try:
            return client.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return client.execute(b"EVAL", self.lua, len(keys), *keys, *args)


# --- minimal RESP client: end -----------------------------------------------------------


async def raw_call(conn: _AsyncConn, *args: Any) -> Any:
    """The least one command costs on asyncio streams + hiredis: no pool, no timeout."""
    conn.writer.write(hiredis.pack_command(args))
    reply = conn.parser.gets()
    while reply is _MORE:
        conn.parser.feed(await conn.reader.read(65536))
        reply = conn.parser.gets()
    return _checked(reply)


ASYNC = (
    "redispy-async",
    "redispy-async-bare",
    "redispy-async-nohiredis",
    "coredis",
    "mini-async",
    "mini-async-pipe",
    "raw-async",
)
SYNC = ("redispy-sync", "redispy-sync-nohiredis", "mini-sync")
FLOORS = ("floor-async", "floor-sync")
VARIANTS = (*ASYNC, *SYNC, *FLOORS)
LABELS = {
    "redispy-async": "redis-py asyncio + hiredis (as `AsyncRedisStore` builds it)",
    "redispy-async-bare": "redis-py asyncio + hiredis, bare (no `_Gate`, blocking pool)",
    "redispy-async-nohiredis": "redis-py asyncio, no hiredis",
    "coredis": "coredis",
    "mini-async": "minimal async, pool",
    "mini-async-pipe": "minimal async, auto-pipelined (1 connection)",
    "raw-async": "(floor) asyncio streams + hiredis, a connection per task, nothing else",
    "redispy-sync": "redis-py sync + hiredis (as `RedisStore` builds it)",
    "redispy-sync-nohiredis": "redis-py sync, no hiredis",
    "mini-sync": "minimal sync, pool",
    "floor-async": "(floor) async request code, dict instead of Redis",
    "floor-sync": "(floor) sync request code, dict instead of Redis",
}
SCENARIOS = ("read", "write")
COMMANDS = {"read": 1, "write": 2}
HIGH = {"async": 100, "sync": 16}  # the concurrency of the loaded runs


def kind(variant: str) -> str:
    return "async" if variant in ASYNC or variant == "floor-async" else "sync"


def levels(variant: str) -> tuple[int, int]:
    return (1, HIGH[kind(variant)])


# -- worker: one client, driven by the parent over stdin/stdout ------------------------------


class Session:
    __slots__ = ("data", "id", "key", "keys", "user")

    def __init__(self, tag: str, i: int, layout: Any) -> None:
        rnd = random.Random(i)
        self.id = hashlib.sha256(f"{tag}:{i}".encode()).hexdigest()
        self.user = f"user{i:05d}-{tag}@example.com"
        self.key = layout._key(self.id)
        self.keys = [self.key, layout._index(self.user)]
        # ~300-700 bytes of record, like a JSON session of a few keys
        blob = rnd.randbytes(rnd.randrange(140, 340)).hex()
        self.data = json.dumps({"csrf": blob[:43], "cart": blob[43:], "n": i}).encode()


class Worker:
    """One client and the request code; `get(key)` and `save(keys, args)` return awaitables
    (async) or values (sync)."""

    def __init__(self, variant: str, port: int, tag: str) -> None:
        from coatcheck.stores import redis as store_module  # after hiredis is blocked or not

        self.variant, self.port = variant, port
        self.kind = kind(variant)
        self.decode, self.encode = store_module._decode, store_module._encode
        self.lua = store_module._LUA_SAVE
        layout = store_module._Layout()
        layout.cluster = False
        layout._configure("coatcheck:")
        self.sessions = [Session(tag, i, layout) for i in range(SESSIONS)]
        self.mod = store_module
        if variant.endswith("-nohiredis"):
            import redis.utils

            assert not redis.utils.HIREDIS_AVAILABLE, "hiredis was not blocked"

    # -- making the clients

    async def open_async(self) -> None:
        url = f"redis://127.0.0.1:{self.port}/0"
        v = self.variant
        self.flush: Callable[[], Awaitable[Any]]
        if v == "redispy-async-bare":
            import redis.asyncio

            pool = redis.asyncio.BlockingConnectionPool(
                host="127.0.0.1",
                port=self.port,
                max_connections=POOL_SIZE,
                timeout=POOL_TIMEOUT,
                socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
            )
            bare = redis.asyncio.Redis(connection_pool=pool)
            script = bare.register_script(self.lua)
            self.get = bare.get
            self.save = lambda keys, args: script(keys=keys, args=args)
            self.flush = bare.script_flush
            self.close = bare.aclose
        elif v.startswith("redispy"):
            store = self.mod.AsyncRedisStore(
                url, timeout=TIMEOUT, max_connections=POOL_SIZE, pool_timeout=POOL_TIMEOUT
            )
            self.store, self.client = store, store.client
            script = store._scripts["save"]
            self.get = store.client.get
            self.save = lambda keys, args: script(keys=keys, args=args)
            self.flush = store.client.script_flush
            self.close = store.aclose
        elif v == "coredis":
            import coredis

            client = coredis.Redis(
                "127.0.0.1",
                self.port,
                stream_timeout=TIMEOUT,
                connect_timeout=TIMEOUT,
                max_connections=POOL_SIZE,
                pool_timeout=POOL_TIMEOUT,
            )
            await client.__aenter__()
            script = client.register_script(self.lua)
            self.get = client.get
            self.save = lambda keys, args: script(keys=keys, args=args)
            self.flush = client.script_flush
            self.close = partial(client.__aexit__, None, None, None)
        elif v.startswith("mini"):
            mini = (AsyncPipelinedClient if v.endswith("pipe") else AsyncClient)(
                "127.0.0.1", self.port
            )
            lua = Script(self.lua)
            sha = await mini.execute(b"SCRIPT", b"LOAD", lua.lua)
            assert sha == lua.sha, (sha, lua.sha)
            self.get = partial(mini.execute, b"GET")
            self.save = partial(lua.run, mini)
            self.flush = partial(mini.execute, b"SCRIPT", b"FLUSH")
            self.close = mini.aclose
        elif v == "raw-async":  # one connection per session (= per task): no pool, no timeout
            conns = {}
            for session in self.sessions:
                conns[session.key] = _AsyncConn(
                    *await asyncio.open_connection("127.0.0.1", self.port)
                )
            sha = Script(self.lua).sha
            await raw_call(conns[self.sessions[0].key], b"SCRIPT", b"LOAD", self.lua.encode())

            def get(key: str) -> Awaitable[Any]:
                return raw_call(conns[key], b"GET", key)

            def save(keys: list[str], args: list[Any]) -> Awaitable[Any]:
                return raw_call(conns[keys[0]], b"EVALSHA", sha, len(keys), *keys, *args)

            async def close() -> None:
                for conn in conns.values():
                    conn.writer.close()

            self.get, self.save, self.close = get, save, close
        else:  # floor
            table: dict[str, bytes] = {}

            async def get(key: str) -> bytes | None:
                return table.get(key)

            async def save(keys: list[str], args: list[Any]) -> int:
                table[keys[0]] = args[1]
                return 1

            async def nothing() -> None:
                return None

            self.get, self.save, self.flush, self.close = get, save, nothing, nothing

    def open_sync(self) -> None:
        url = f"redis://127.0.0.1:{self.port}/0"
        v = self.variant
        if v.startswith("redispy"):
            store = self.mod.RedisStore(
                url, timeout=TIMEOUT, max_connections=POOL_SIZE, pool_timeout=POOL_TIMEOUT
            )
            script = store._scripts["save"]
            self.get = store.client.get
            self.save = lambda keys, args: script(keys=keys, args=args)
            self.flush = store.client.script_flush
            self.close = store.close
        elif v == "mini-sync":
            mini = SyncClient("127.0.0.1", self.port)
            lua = Script(self.lua)
            assert mini.execute(b"SCRIPT", b"LOAD", lua.lua) == lua.sha
            self.get = partial(mini.execute, b"GET")
            self.save = partial(lua.run_sync, mini)
            self.flush = partial(mini.execute, b"SCRIPT", b"FLUSH")
            self.close = mini.close
        else:
            table: dict[str, bytes] = {}

            def save(keys: list[str], args: list[Any]) -> int:
                table[keys[0]] = args[1]
                return 1

            self.get, self.save = table.get, save
            self.flush = self.close = lambda: None

    # -- one request, as coatcheck's load + save do it

    async def request(self, s: Session, write: bool) -> None:
        value = await self.get(s.key)
        record = self.decode(value)[0]
        if write:
            v = record.version
            ok = await self.save(s.keys, [v, self.encode(v + 1, s.user, s.data), TTL_MS, s.id])
            if ok != 1:
                raise AssertionError(f"{self.variant}: save lost its compare-and-set ({ok!r})")

    def request_sync(self, s: Session, write: bool) -> None:
        value = self.get(s.key)
        record = self.decode(value)[0]
        if write:
            v = record.version
            ok = self.save(s.keys, [v, self.encode(v + 1, s.user, s.data), TTL_MS, s.id])
            if ok != 1:
                raise AssertionError(f"{self.variant}: save lost its compare-and-set ({ok!r})")

    # -- setup: seed, check, warm up (identical in the callgrind runs with 0 and N requests)

    async def setup_async(self, check: bool) -> None:
        await self.open_async()
        for s in self.sessions:  # a new session: version 0 -> 1
            args = [0, self.encode(1, s.user, s.data), TTL_MS, s.id]
            assert await self.save(s.keys, args) == 1
        if check and not self.variant.startswith(("floor", "raw")):
            await self.flush()  # the next EVALSHA meets NOSCRIPT and falls back to EVAL
            await self.request(self.sessions[0], True)
            s = self.sessions[0]  # a stale version loses
            stale = [0, self.encode(1, s.user, s.data), TTL_MS, s.id]
            assert await self.save(s.keys, stale) == 0
            assert await self.get("coatcheck:s:{missing}") is None
        for c in (1, HIGH["async"]):
            for write in (False, True):
                await self.batch(3 * c, c, write)

    def setup_sync(self, check: bool) -> None:
        self.open_sync()
        for s in self.sessions:
            assert self.save(s.keys, [0, self.encode(1, s.user, s.data), TTL_MS, s.id]) == 1
        if check and not self.variant.startswith("floor"):
            self.flush()
            self.request_sync(self.sessions[0], True)
            s = self.sessions[0]
            assert self.save(s.keys, [0, self.encode(1, s.user, s.data), TTL_MS, s.id]) == 0
            assert self.get("coatcheck:s:{missing}") is None
        for c in (1, HIGH["sync"]):
            for write in (False, True):
                self.batch_sync(3 * c, c, write)

    # -- batches

    async def batch(self, n: int, c: int, write: bool) -> dict[str, Any]:
        latencies: list[float] = []
        clock = time.perf_counter

        async def loop(s: Session, count: int) -> None:
            request, record = self.request, latencies.append
            for _ in range(count):
                t = clock()
                await request(s, write)
                record(clock() - t)

        per = n // c
        cpu, wall = time.process_time(), clock()
        if c == 1:
            await loop(self.sessions[0], per)
        else:
            await asyncio.gather(*(loop(s, per) for s in self.sessions[:c]))
        return summary(clock() - wall, time.process_time() - cpu, latencies)

    def batch_sync(self, n: int, c: int, write: bool) -> dict[str, Any]:
        latencies: list[float] = []
        clock = time.perf_counter

        def loop(s: Session, count: int) -> None:
            request, record = self.request_sync, latencies.append
            for _ in range(count):
                t = clock()
                request(s, write)
                record(clock() - t)

        per = n // c
        cpu, wall = time.process_time(), clock()
        if c == 1:
            loop(self.sessions[0], per)
        else:
            with concurrent.futures.ThreadPoolExecutor(c) as pool:
                for done in [pool.submit(loop, s, per) for s in self.sessions[:c]]:
                    done.result()
        return summary(clock() - wall, time.process_time() - cpu, latencies)


def summary(wall: float, cpu: float, latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)
    p = (lambda q: latencies[min(n - 1, int(q * n))]) if n else (lambda q: 0.0)
    return {"n": n, "wall": wall, "cpu": cpu, "p50": p(0.50), "p99": p(0.99)}


def worker_main(args: argparse.Namespace) -> None:
    global TIMEOUT, POOL_TIMEOUT
    plan = cg_plan(args.worker, args.callgrind) if args.callgrind else None
    if plan:  # under valgrind, 30-50x slower: no timeout may fire (same cost per call)
        TIMEOUT, POOL_TIMEOUT = 60 * TIMEOUT, 60 * POOL_TIMEOUT
    w = Worker(args.worker, args.port, args.tag)
    if w.kind == "async":

        async def main() -> None:
            await w.setup_async(check=plan is None)
            for scenario, c, n in plan or commands():
                if plan:  # os.getpgrp() ends a callgrind part (--dump-before=getpgrp)
                    os.getpgrp()
                    await w.batch(0, c, scenario == "write")
                    os.getpgrp()
                out = await w.batch(n, c, scenario == "write")
                if not plan:
                    print(json.dumps(out), flush=True)
            os.getpgrp()
            await w.close()

        asyncio.run(main())
    else:
        w.setup_sync(check=plan is None)
        for scenario, c, n in plan or commands():
            if plan:
                os.getpgrp()
                w.batch_sync(0, c, scenario == "write")
                os.getpgrp()
            out = w.batch_sync(n, c, scenario == "write")
            if not plan:
                print(json.dumps(out), flush=True)
        os.getpgrp()
        w.close()


def cg_plan(variant: str, sizes: str) -> list[tuple[str, int, int]]:
    """The callgrind batches: each scenario at both concurrencies, then c=1 read again (its
    spread is the noise); each batch of N requests follows an empty one."""
    n1, nhi = (int(n) for n in sizes.split(","))
    hi = HIGH[kind(variant)]
    return [
        (s, c, n1 if c == 1 else nhi)
        for s, c in [*CG_ORDER[:2], *((s, hi) for s in SCENARIOS), CG_ORDER[0]]
    ]


CG_ORDER = [("read", 1), ("write", 1)]


def commands() -> Any:
    print(json.dumps({"ready": True}), flush=True)
    return (
        (parts[0], int(parts[1]), int(parts[2]))
        for parts in (line.split() for line in iter(sys.stdin.readline, ""))
        if parts and parts[0] != "quit"
    )


# -- parent ---------------------------------------------------------------------------------


def worker_argv(variant: str, port: int, tag: str, sizes: str | None = None) -> list[str]:
    extra = ["--callgrind", sizes] if sizes else []
    argv = [str(Path(__file__)), "--worker", variant, "--port", str(port), "--tag", tag, *extra]
    if variant.endswith("-nohiredis"):
        prelude = (
            "import sys, runpy; sys.modules['hiredis'] = None; "
            f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        return [sys.executable, "-c", prelude]
    return [sys.executable, *argv]


def environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def callgrind_parts(argv: list[str], directory: Path) -> list[int]:
    """The instructions of each part of a run, parts ended by calls of getpgrp()."""
    out = directory / f"cg-{time.monotonic_ns()}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--dump-before=getpgrp",
        f"--callgrind-out-file={out}",
        *argv,
    ]
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=3600)
    files = sorted(directory.glob(f"{out.name}.*"), key=lambda f: int(f.suffix[1:]))
    if done.returncode != 0 or not files:
        raise RuntimeError(f"callgrind run failed: {' '.join(argv)}\n{done.stderr[-3000:]}")
    parts = []
    for f in files:
        found = re.search(r"^(?:summary|totals):\s*(\d+)", f.read_text(errors="replace"), re.M)
        if found is None:
            raise RuntimeError(f"no totals in {f}")
        parts.append(int(found[1]))
        f.unlink()
    out.unlink(missing_ok=True)
    return parts


def measure_instructions(
    variants: list[str], port: int, sizes: str, jobs: int
) -> dict[tuple[str, str, int], float]:
    """Instructions per request: (a batch of N requests - an empty batch just before) / N,
    each in a callgrind part of its own, one valgrind run per client."""
    with tempfile.TemporaryDirectory(prefix="coatcheck-cg-") as d:

        def one(v: str) -> tuple[str, list[int]]:
            tag = f"cg{time.monotonic_ns()}"  # own sessions: parallel runs never collide
            return v, callgrind_parts(worker_argv(v, port, tag, sizes), Path(d))

        result: dict[tuple[str, str, int], float] = {}
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for v, parts in pool.map(one, variants):
                print(f"  callgrind {v}: {parts}", file=sys.stderr, flush=True)
                per = []
                for i, (scenario, c, n) in enumerate(cg_plan(v, sizes)):
                    empty, full = parts[1 + 2 * i], parts[2 + 2 * i]
                    per.append((full - empty) / n)
                    result.setdefault((v, scenario, c), per[-1])
                result[(v, "noise", 0)] = abs(per[-1] - per[0])
    return result


class Remote:
    """A worker process answering `<scenario> <c> <n>` lines with one JSON line each."""

    def __init__(self, variant: str, port: int) -> None:
        self.variant = variant
        self.process = subprocess.Popen(
            worker_argv(variant, port, f"t-{variant}"),
            env=environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.read()  # {"ready": true} once set up, checked and warm

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.variant} died (exit {self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def run(self, scenario: str, c: int, n: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{scenario} {c} {n}\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        self.process.wait(timeout=30)


def measure_time(
    variants: list[str], port: int, rounds: int, sizes: dict[int, int]
) -> tuple[dict[tuple[str, str, int], list[dict[str, Any]]], list[float]]:
    remotes = {v: Remote(v, port) for v in variants}
    jobs = [(v, s, c) for v in variants for s in SCENARIOS for c in levels(v)]
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    loads = [os.getloadavg()[0]]
    try:
        for r in range(rounds):
            random.Random(r).shuffle(jobs)
            for v, scenario, c in jobs:
                results[(v, scenario, c)].append(remotes[v].run(scenario, c, sizes[c]))
            loads.append(os.getloadavg()[0])
            print(f"  round {r + 1}/{rounds} done, load {loads[-1]:.2f}", file=sys.stderr)
    finally:
        for remote in remotes.values():
            remote.close()
    return results, loads


def med(rows: list[dict[str, Any]], field: str, per: bool = True) -> float:
    return statistics.median(row[field] / (row["n"] if per else 1) for row in rows)


def report(
    args: argparse.Namespace,
    variants: list[str],
    instructions: dict[tuple[str, str, int], float] | None,
    timing: dict[tuple[str, str, int], list[dict[str, Any]]],
    loads: list[float],
    started: float,
) -> str:
    packages = ["redis", "hiredis", "coredis", "anyio"]
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    lines = [
        "# Redis clients for coatcheck: instructions and time per request",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/redis_clients.py', *sys.argv[1:]])}`, "
        f"{datetime.date.today().isoformat()}, {platform.node() or 'machine'}: "
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; {versions}; "
        f"{' '.join(server[:3])}; run took {(time.time() - started) / 60:.1f} min.",
        "",
        "A request = `GET` of a 64-hex session key (read), or that `GET` plus `EVALSHA` of "
        "coatcheck's save script with 2 keys and 4 arguments (write), records of "
        f"{min(len(s) for s in session_sizes())}-{max(len(s) for s in session_sizes())} "
        "bytes in coatcheck's encoding, every client against one local `redis-server`.",
        "",
    ]
    floor = {"async": "floor-async", "sync": "floor-sync"}
    if instructions:
        lines += [
            "## Instructions (callgrind, client process only)",
            "",
            "Instructions per request = (a batch of N requests - an empty batch) / N, each "
            "in a callgrind part of its own within one valgrind run per client, "
            f"N = {args.cg_ops} at c=1 and {args.cg_ops_high} at c=hi (async: 100 tasks, "
            "sync: 16 threads); PYTHONHASHSEED=0; the redis-server is not under valgrind.",
            "",
            "| client | read, c=1 | write, c=1 | per command (c=1) | read, c=hi | write, c=hi "
            "| per command (c=hi) | noise |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for v in variants:
            hi = HIGH[kind(v)]
            f = floor[kind(v)] if floor[kind(v)] in variants and v not in FLOORS else None

            def net(scenario: str, c: int, v: str = v, f: str | None = f) -> float:
                value = instructions[(v, scenario, c)]
                return value - (instructions[(f, scenario, c)] if f else 0.0)

            def per_cmd(c: int, net: Callable[[str, int], float] = net) -> str:
                return f"{(net('read', c) + net('write', c)) / 3 / 1000:,.0f}k"

            cells = [
                f"{instructions[(v, 'read', 1)] / 1000:,.0f}k",
                f"{instructions[(v, 'write', 1)] / 1000:,.0f}k",
                per_cmd(1) if f else "",
                f"{instructions[(v, 'read', hi)] / 1000:,.0f}k",
                f"{instructions[(v, 'write', hi)] / 1000:,.0f}k",
                per_cmd(hi) if f else "",
                f"{instructions[(v, 'noise', 0)] / 1000:,.1f}k",
            ]
            lines.append(f"| {LABELS[v]} (c=hi: {hi}) | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Cells are instructions per request, including the request code's own work "
            "(the floor rows: the same code against a dict: record decode/encode, timing). "
            "'per command' = the client's share: (read + write - the same for the floor) "
            "/ 3 commands (a read sends 1, a write 2). 'noise': the difference between two "
            "c=1 read batches of the same run, per request.",
            "",
        ]
    rounds = len(next(iter(timing.values())))
    lines += [
        "## Time per request",
        "",
        f"{rounds} rounds; per round, every (client, scenario, concurrency) batch once, in "
        f"a shuffled order: {args.batch} requests at c=1, {args.batch_high} at c=hi "
        "(async: 100 tasks in `asyncio.gather`; sync: 16 threads). Medians over rounds. "
        "Load average (1 min) during the rounds: "
        f"{min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores (redis-server and the "
        "worker share them; other benchmarks may have run too): trust CPU time over wall time.",
        "",
        "| client | read c=1 wall µs | read c=1 CPU µs | write c=1 wall µs | write c=1 CPU µs "
        "| write c=1 p99 µs |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for v in variants:
        r, w = timing[(v, "read", 1)], timing[(v, "write", 1)]
        lines.append(
            f"| {LABELS[v]} | {med(r, 'wall') * 1e6:.1f} | {med(r, 'cpu') * 1e6:.1f} | "
            f"{med(w, 'wall') * 1e6:.1f} | {med(w, 'cpu') * 1e6:.1f} | "
            f"{med(w, 'p99', per=False) * 1e6:.0f} |"
        )
    lines += [
        "",
        "Loaded: c=100 tasks (async) / 16 threads (sync) over one client.",
        "",
        "| client | c | read req/s | read CPU µs/req | read p50 / p99 ms | write req/s "
        "| write CPU µs/req | write p50 / p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for v in variants:
        hi = HIGH[kind(v)]
        cells = [LABELS[v], str(hi)]
        for scenario in SCENARIOS:
            rows = timing[(v, scenario, hi)]
            rate = statistics.median(row["n"] / row["wall"] for row in rows)
            cells += [
                f"{rate:,.0f}",
                f"{med(rows, 'cpu') * 1e6:.1f}",
                f"{med(rows, 'p50', False) * 1e3:.2f} / {med(rows, 'p99', False) * 1e3:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def session_sizes() -> list[bytes]:
    from coatcheck.stores import redis as store_module

    layout = store_module._Layout()
    layout.cluster = False
    layout._configure("coatcheck:")
    sessions = [Session("size", i, layout) for i in range(SESSIONS)]
    return [store_module._encode(1, s.user, s.data) for s in sessions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1000, help="requests per batch at c=1")
    parser.add_argument("--batch-high", type=int, default=5000, help="... at c=100/16")
    parser.add_argument("--cg-ops", type=int, default=1000, help="callgrind requests, c=1")
    parser.add_argument("--cg-ops-high", type=int, default=2000, help="... at c=100/16")
    parser.add_argument("--cg-jobs", type=int, default=2, help="callgrind runs in parallel")
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--only", help="comma-separated clients (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-redis-clients.md")
    # worker mode (internal)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="t", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import running_redis

    variants = [v for v in VARIANTS if not args.only or v in args.only.split(",")]
    started = time.time()
    with running_redis() as server:
        instructions = None
        if not args.no_callgrind:
            print("callgrind runs...", file=sys.stderr)
            sizes = f"{args.cg_ops},{args.cg_ops_high}"
            instructions = measure_instructions(variants, server.port, sizes, args.cg_jobs)
        print("timed rounds...", file=sys.stderr)
        sizes = {1: args.batch, 100: args.batch_high, 16: args.batch_high // 100 * 16}
        timing, loads = measure_time(variants, server.port, args.rounds, sizes)
    text = report(args, variants, instructions, timing, loads, started)
    print(text)
    kept = ""
    if args.out.exists():
        old = args.out.read_text()
        if MARKER in old:
            kept = old[old.index(MARKER) :]
    args.out.write_text(text + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    main()
