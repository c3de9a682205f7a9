"""Revocations in Redis (or Valkey, or a Redis Cluster), with a pub/sub push feed.

Layout (prefix `coatcheck:`; every key carries one hash tag, so on a cluster every
operation is one script on one slot):

- `coatcheck:{coatcheck:rv}:seq`: the sequence that numbers entries. When it is missing
  (a new server, or one that lost its data) it starts from the server's time in
  microseconds, so numbers after a data loss are still above every cursor handed out
  before it, as long as fewer than a million revocations per second were written on
  average: a process never skips new entries because its cursor is ahead of a reset counter.
- `coatcheck:{coatcheck:rv}:log`: a sorted set of entries scored by sequence number; a
  poll is one `ZRANGEBYSCORE log (cursor +inf`.
- `coatcheck:{coatcheck:rv}:exp`: the same members scored by `expires_at`, so that every
  `revoke` drops entries that have expired (and `purge_expired` drops all): the sets hold
  only live revocations, never history.

`revoke` is one Lua script (one round trip): number the entry, add it to both sets, trim,
and `PUBLISH` it on the channel `coatcheck:{coatcheck:rv}:feed`. `listen(callback)` runs a
subscriber (a daemon thread; a task for the async twin) that hands each published entry to
`callback` at once, typically `RevocationList.apply_one`. Pub/sub delivers at most once: a
message sent while a subscriber reconnects is lost. The drivers' poll every `staleness`
seconds stays the resync that corrects that, so the listener only shortens the delay and
correctness never depends on it.

Give the server persistence (AOF) if revocations must survive its restart: an entry lost
with the server's data is lost for processes that had not polled it yet.

Any connection error or timeout raises `StoreUnavailable`; the client reconnects on the
next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from .exceptions import ConfigurationError
from .revocation import Revocation, decode_entry, encode_entry
from .stores.redis import DEFAULT_URL, _check_client, _split_url, _translated

__all__ = ["AsyncRedisRevocationStore", "RedisRevocationStore"]

logger = logging.getLogger("coatcheck.revocation")

#: Expired entries one `revoke` removes on the way (`purge_expired` removes all, in batches).
TRIM_BATCH = 100
PURGE_BATCH = 1000
#: Seconds between a listener's reconnection attempts while the server is away.
RECONNECT_DELAY = 0.5
#: Seconds a listener waits for a message before checking whether it should stop.
POLL_INTERVAL = 0.2

_LUA_TRIM_FN = """
local function trim(log, exp, now, limit)
  local old = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, limit)
  if #old > 0 then
    redis.call('ZREM', log, unpack(old))
    redis.call('ZREM', exp, unpack(old))
  end
  return #old
end
"""

# KEYS: seq, log, exp  ARGV: entry (JSON), expires_at, now, channel, trim limit
_LUA_REVOKE = (
    _LUA_TRIM_FN
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
end
local seq = string.format('%d', redis.call('INCR', KEYS[1]))
local member = seq .. ' ' .. ARGV[1]
redis.call('ZADD', KEYS[2], seq, member)
redis.call('ZADD', KEYS[3], ARGV[2], member)
trim(KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[4], member)
return seq
"""
)

# KEYS: log, exp  ARGV: now, limit
_LUA_PURGE = (
    _LUA_TRIM_FN
    + """
return trim(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
"""
)

Callback = Callable[[Revocation], None]


def _decode(member: bytes | str) -> tuple[int, Revocation]:
    """`<seq> <json>` back into its number and entry; ValueError if it is not one."""
    text = member.decode() if isinstance(member, bytes) else member
    seq, _, doc = text.partition(" ")
    return int(seq), decode_entry(doc)


def _parse_changes(rows: list[tuple[bytes, float]], cursor: int) -> tuple[list[Revocation], int]:
    entries = []
    for member, score in rows:
        seq, entry = _decode(member)
        entries.append(entry)
        cursor = max(cursor, seq, int(score))
    return entries, cursor


def _deliver(callbacks: list[Callback], data: bytes | str) -> None:
    """Hand one published entry to every callback; a malformed message or a failing
    callback is logged and skipped, never fatal to the listener."""
    try:
        _, entry = _decode(data)
    except (ValueError, TypeError, UnicodeDecodeError):
        logger.warning("ignored a message on the revocation channel that is not an entry")
        return
    for callback in callbacks:
        try:
            callback(entry)
        except Exception:
            logger.exception("revocation listener callback failed")


class _Keys:
    """Key and channel names both twins share."""

    def _configure(self, prefix: str, clock: Callable[[], float]) -> None:
        if prefix.count("{") != prefix.count("}"):
            raise ConfigurationError(
                f"Redis key prefix {prefix!r} has unbalanced braces; braces in a prefix "
                "form a Redis Cluster hash tag, as in 'app:{sessions}:'"
            )
        self.prefix = prefix
        # A hash tag in the prefix already puts every key in one slot; else add one.
        base = f"{prefix}rv:" if "{" in prefix else f"{{{prefix}rv}}:"
        self.keys = [f"{base}seq", f"{base}log", f"{base}exp"]
        self.channel = f"{base}feed"
        self._clock = clock
        self._callbacks: list[Callback] = []
        #: Set while the listener is subscribed (cleared while it reconnects).
        self.listening = threading.Event()

    def _revoke_args(self, entry: Revocation) -> list[Any]:
        return [encode_entry(entry), repr(entry.expires_at), repr(self._clock()), self.channel,
                TRIM_BATCH]  # fmt: skip

    def _range_args(self, cursor: int) -> tuple[str, str, str]:
        return self.keys[1], f"({int(cursor)}", "+inf"


def _client_options(timeout: float, retry: Any) -> dict[str, Any]:
    # One immediate retry replaces a pooled connection that a server restart broke.
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry}


class RedisRevocationStore(_Keys):
    """Revocations shared through Redis, on one server or a Redis Cluster.

    `client` is a URL (`redis://host:6379/0`, `rediss://` for TLS, `redis+cluster://host:port`)
    or an existing `redis.Redis` / `redis.cluster.RedisCluster`, which the store then neither
    configures nor closes. `timeout` bounds connecting and each reply, in seconds. `clock`
    decides which entries have expired (the app servers' clock, which wrote `expires_at`).
    """

    def __init__(
        self,
        client: str | redis.Redis | redis.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configure(prefix, clock)
        self._owned = isinstance(client, str)
        self._url = client if isinstance(client, str) else None
        self.timeout = timeout
        self._cluster = bool(cluster)
        if isinstance(client, str):
            url, self._cluster = _split_url(client, cluster)
            options = _client_options(timeout, Retry(NoBackoff(), 1))
            if self._cluster:
                with _translated():  # the sync cluster client finds its nodes right away
                    self.client: Any = redis.cluster.RedisCluster.from_url(url, **options)
            else:
                self.client = redis.Redis.from_url(url, **options)
        else:
            _check_client(client)
            self.client = client
            self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._revoke = self.client.register_script(_LUA_REVOKE)
        self._purge = self.client.register_script(_LUA_PURGE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RedisRevocationStore prefix={self.prefix!r}>"

    def revoke(self, entry: Revocation) -> None:
        with _translated():
            self._revoke(keys=self.keys, args=self._revoke_args(entry))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        with _translated():
            rows = self.client.zrangebyscore(*self._range_args(cursor), withscores=True)
        return _parse_changes(rows, cursor)

    def purge_expired(self) -> int:
        total = 0
        with _translated():
            while True:
                removed = int(self._purge(keys=self.keys[1:], args=[repr(self._clock()),
                                                                     PURGE_BATCH]))  # fmt: skip
                total += removed
                if removed < PURGE_BATCH:
                    return total

    # -- push feed -------------------------------------------------------------------------

    def listen(self, callback: Callback) -> None:
        """Hand every entry published from now on to `callback` (called on the listener's
        thread). The first call starts the listener; `close()` stops it."""
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="coatcheck-revocations", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.listening.set()
                    elif message["type"] == "message":
                        _deliver(self._callbacks, message["data"])
            except (RedisError, RedisClusterException, OSError):
                self.listening.clear()
                self._stop.wait(RECONNECT_DELAY)
            except Exception:  # a listener that dies silently would go unnoticed: go on
                logger.exception("revocation listener failed; reconnecting")
                self._stop.wait(RECONNECT_DELAY)
            finally:
                self.listening.clear()
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    pubsub.close()

    def _stop_listening(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._callbacks.clear()
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5 * (POLL_INTERVAL + self.timeout + RECONNECT_DELAY))

    def close(self) -> None:
        """Stop the listener and, if the store made its client from a URL, close it."""
        self._stop_listening()
        if self._owned:
            with _translated():
                self.client.close()


class AsyncRedisRevocationStore(_Keys):
    """Async twin of `RedisRevocationStore` (on `redis.asyncio`); the listener is a task
    in the event loop that first calls `listen`."""

    def __init__(
        self,
        client: str | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configure(prefix, clock)
        self._owned = isinstance(client, str)
        self.timeout = timeout
        if isinstance(client, str):
            url, is_cluster = _split_url(client, cluster)
            options = _client_options(timeout, AsyncRetry(NoBackoff(), 1))
            if is_cluster:
                self.client: Any = redis.asyncio.cluster.RedisCluster.from_url(url, **options)
            else:
                self.client = redis.asyncio.Redis.from_url(url, **options)
        else:
            _check_client(client)
            self.client = client
        self._cluster = isinstance(self.client, redis.asyncio.cluster.RedisCluster)
        self._connected = not self._cluster
        self._connecting = asyncio.Lock()
        self._revoke = self.client.register_script(_LUA_REVOKE)
        self._purge = self.client.register_script(_LUA_PURGE)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def wrapping(cls, store: RedisRevocationStore) -> AsyncRedisRevocationStore | None:
        """An async store on the same server, keys and clock as `store`, with its own
        connections; None if `store` was given a client rather than a URL."""
        if store._url is None:
            return None
        return cls(store._url, prefix=store.prefix, timeout=store.timeout,
                   cluster=store._cluster, clock=store._clock)  # fmt: skip

    def __repr__(self) -> str:
        return f"<AsyncRedisRevocationStore prefix={self.prefix!r}>"

    async def _connect(self) -> None:
        """Discover a cluster's nodes once, before any command (as `AsyncRedisStore` does):
        the pub/sub client needs the slot map, and racing first commands can break it."""
        async with self._connecting:
            if not self._connected:
                await self.client.initialize()
                self._connected = True

    async def revoke(self, entry: Revocation) -> None:
        with _translated():
            if not self._connected:
                await self._connect()
            await self._revoke(keys=self.keys, args=self._revoke_args(entry))

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        with _translated():
            if not self._connected:
                await self._connect()
            rows = await self.client.zrangebyscore(*self._range_args(cursor), withscores=True)
        return _parse_changes(rows, cursor)

    async def purge_expired(self) -> int:
        total = 0
        with _translated():
            if not self._connected:
                await self._connect()
            while True:
                args = [repr(self._clock()), PURGE_BATCH]
                removed = int(await self._purge(keys=self.keys[1:], args=args))
                total += removed
                if removed < PURGE_BATCH:
                    return total

    def listen(self, callback: Callback) -> None:
        """Hand every entry published from now on to `callback`, from a task in the running
        event loop (call it from inside that loop). `aclose()` stops it."""
        self._callbacks.append(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            pubsub = None
            try:
                if self._cluster and not self._connected:
                    await self._connect()
                pubsub = self.client.pubsub()
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.listening.set()
                    elif message["type"] == "message":
                        _deliver(self._callbacks, message["data"])
            except (RedisError, RedisClusterException, OSError):
                self.listening.clear()
                await asyncio.sleep(RECONNECT_DELAY)
            except Exception:  # a listener that dies silently would go unnoticed: go on
                logger.exception("revocation listener failed; reconnecting")
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                self.listening.clear()
                if pubsub is not None:
                    with contextlib.suppress(RedisError, RedisClusterException, OSError):
                        await pubsub.aclose()

    async def aclose(self) -> None:
        """Stop the listener and, if the store made its client from a URL, close it."""
        task, self._task = self._task, None
        self._callbacks.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owned:
            with _translated():
                await self.client.aclose()
