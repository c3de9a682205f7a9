"""`RedisStore` and `RedisRevocationStore`: sessions and revocations shared by many
machines through Redis, Valkey or a Redis Cluster, with a pub/sub push feed.

Sessions, laid out as follows (with the default prefix `coatcheck:`):

- `coatcheck:s:{<key>}` is a string `<version>:<len(user)>:<user><data>` (the length field
  is empty when there is no user) that expires by Redis TTL: no sweeper. A read is one
  `GET`; keeping the version, the user and the data in one string costs a few bytes of
  header, where a hash costs a hash table per session once the data outgrows a listpack
  (64 bytes). Measured with 150-byte sessions: 364 bytes of Redis memory per session as a
  string, 571 as a hash, and `GET` no slower than `HMGET`.
- `coatcheck:u:{<user>}` is a sorted set of the user's keys scored by their expiry time
  (server clock, milliseconds). Every index write first drops expired members, at most
  `TRIM_BATCH` of them (so a write costs the same however many of the user's sessions
  expired since the last one: no purge runs on a request's path), and sets the set's own
  expiry to its latest score, so an index never outlives its sessions; as each write adds
  one member and drops up to 100 expired ones, expired members left after a burst go with
  the user's next writes, or with the set. An index entry is a hint: `list_user` and
  `delete_user` check the user recorded in each session, and drop entries whose session
  expired, was deleted or changed hands.

Writes are Lua scripts sent with `EVALSHA` (reloaded on `NOSCRIPT`, after a server restart or
`SCRIPT FLUSH`, by redis-py and by the lane alike):

- single server: `save` and `rotate` are one script each, covering the compare-and-set on
  the version and the index update: one round trip. A read-only request costs one `GET`,
  a writing one `GET` plus `EVALSHA`.
- Redis Cluster: a script may only touch keys of one slot, and a session key, its user's
  index and (for `rotate`) the new key hash to unrelated slots. The hash tags in braces
  make each key's slot independent of the prefix. Then:
  - `save` writes the index entry first and the session second (compare-and-set). An
    index entry without a session is harmless (it is a hint, checked on use); a session
    missing from its user's index is not (log-out-everywhere would miss it), and this
    order never leaves one.
  - `rotate` writes the new key (and its index entry) first, then runs the
    compare-and-set that deletes the old key. If that fails (a parallel request won),
    the new key is deleted again and `False` returned. If the process dies in between,
    an orphan record remains until its TTL: its ID was never sent to any client, so it
    is unusable, though it may show in `list_user`. The reverse order could instead
    delete the old key and die before writing the new one: a lost session.
  - `delete_user` checks and deletes one key at a time, so a session created during a
    "log out everywhere" on another node may survive it (on one server the script is
    atomic).
  Give the prefix a hash tag of its own (`prefix="app:{sessions}:"`) to put every key in
  one slot: then the one-round-trip single-server scripts are used, at the price of one
  hot slot.
  With `wait_replicas`, each write and its `WAIT` go as one pipeline on one connection to
  the master of the written key's slot (`_node_waited`), not through redis-py's routing,
  which sends `WAIT` to every master on other connections: measured through a master
  SIGKILLed under load, `bench/cluster_failover.py`.

Revocations (`RedisRevocationStore`; every key carries one hash tag, so on a cluster every
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
subscriber (see `stores.feed`: a daemon thread; a task for the async twin) that hands each
published entry to `callback` at once, typically `RevocationList.apply_one`. Give the
server persistence (AOF) if revocations must survive its restart: an entry lost with the
server's data is lost for processes that had not polled it yet.

Both kinds of store make their client the same way (`_SyncClient`, `_AsyncClient`). Any
connection error or timeout raises `StoreUnavailable`; the client reconnects on the next
call, so service resumes when the server returns. Messages carry no key or secret. A
command is sent a second time only when it was never written (`_WriteGuard`, `_NotSent`:
connecting failed, or the connection was closed before the write); never after a timeout
or a lost reply, which the server may have run (a session write twice is a false conflict,
or an increment counted twice). Sync redis-py clients, and the lane, also resend after a
connection reset (at least once across a server crash).

The lane. redis-py costs more per command than all of coatcheck's own work per request:
measured with `bench/redis_clients.py` (bench/RESULTS-redis-clients.md, callgrind, with
hiredis), about 350k instructions per command through its asyncio client and 163k through
its sync client, where a minimal RESP client on the same hiredis parser costs about 120k
(asyncio streams) and 20k (blocking sockets). So a session store (`RedisStore`,
`AsyncRedisStore`) made from a plain `redis://` URL of one server (not a cluster, not
`rediss://`, not a unix socket, no query option but the pool's, not a client object) sends
its per-request commands through a lane of `stores.resp`: `load` (`GET`), and `save` and
`rotate` (`EVALSHA` of the same scripts, by the SHA1 computed once; `NOSCRIPT` loads the
script and retries once). Both clients read the URL with redis-py's own `parse_url` (host,
port, db, username, password: the lane sends `AUTH` and `SELECT` as it connects).
Everything else (`delete`, `list_user`, `delete_user`, revocations and their pub/sub feed,
clusters, TLS, clients passed in) stays on redis-py. Like redis-py, the lane bounds
connecting and each reply by `timeout`, drops any connection that failed, and sends a
command once more on a new connection when the one it used turns out broken (a server
restart), except a write that timed out, which the server may still run (never twice: the
request answers 503); it forgets, without closing, connections inherited across a fork.

Connections. A store made from a URL has at most `max_connections` commands in flight
(default `DEFAULT_MAX_CONNECTIONS`, per store and process); one more waits for a free
connection, up to `pool_timeout` seconds (default `DEFAULT_POOL_TIMEOUT`), and only then
raises `StoreUnavailable`. redis-py's default pool raises at once instead
(`MaxConnectionsError`: a 503 while Redis is healthy, for the 101st request in flight).
The sync twins use redis-py's `BlockingConnectionPool` (`_WaitingPool`; on a cluster, one
per node). The async twins put a first-come-first-served `_Gate` in front of the client, since
redis-py's async blocking pool is unfair (waiters starve under steady load, see `_Gate`)
and its async cluster client has no waiting pool at all; the pool behind the gate may open
twice `max_connections` (room for the pub/sub listener and connections being replaced),
so it never refuses one. Waiting happens only while every connection is busy with a
command: a server that is down refuses new connections at once, so an outage is a 503 at
once, not after `pool_timeout`. Both settings come from the constructor or the URL
(`redis://host:6379/0?max_connections=50&pool_timeout=5`); measured with
`bench/pool_load.py`. A store with a lane admits the lane's commands and redis-py's through
one gate (`_Gate` for the async twin; `resp.SyncGate`, in front of the redis-py client too,
for the sync one): still at most `max_connections` commands in flight in all, and the same
`pool_timeout` wait and message. The lane has its own connections next to redis-py's pool,
which a lane store uses only for the commands above: the sync lane at most
`max_connections` (kept idle between commands, most recently used first), the async lane
one per event loop, which every command in flight shares (auto-pipelining).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import threading
import time
from collections.abc import (
    AsyncGenerator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, ClassVar, cast

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis._parsers.base import BaseParser
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from ..exceptions import ConfigurationError, StoreCorrupted, StoreError, StoreUnavailable
from ..revocation import CHANGES_PAGE, Revocation, decode_entry, decode_rows, encode_entry
from . import _pool_settings, resp, sentinel
from .base import CONFLICTED, Admission, Record
from .feed import POLL_INTERVAL, RECONNECT_DELAY, SUBSCRIBED, AsyncListener, Listener

__all__ = ["AsyncRedisRevocationStore", "AsyncRedisStore", "RedisRevocationStore", "RedisStore"]

DEFAULT_URL = "redis://localhost:6379/0"
#: Connections one store keeps at most; more commands in flight wait (bench/pool_load.py).
DEFAULT_MAX_CONNECTIONS = 50
#: Seconds a command waits for a free connection before `StoreUnavailable`.
DEFAULT_POOL_TIMEOUT = 5.0
#: What redis-py's blocking pool (and the cluster gate here) says when the wait ran out.
_NO_CONNECTION = "No connection available."
_POOL_EXHAUSTED = (
    "Redis store unavailable (no connection became free within pool_timeout: "
    "every one of max_connections was busy; raise either if Redis is healthy)"
)
#: What a command whose connection was closed under it fails with (see `_WriteGuard`).
_CLOSED = "connection closed before the command was written"


class _NotSent(redis.ConnectionError):
    """A connection failed before the command was written: connecting failed, or the
    connection was closed (by the server, or by redis-py itself) before the write. The
    one error the async clients send a command again for (see `_WriteGuard`)."""


#: Expired entries one write removes on the way: from the user's index (`save`, `rotate`)
#: or the revocation sets (`revoke`; `purge_expired` removes all, in batches).
TRIM_BATCH = 100
PURGE_BATCH = 1000
#: A poll's `ZRANGEBYSCORE` options: the first page after the cursor, with the scores.
_PAGE: dict[str, Any] = {"start": 0, "num": CHANGES_PAGE, "withscores": True}
#: What a listener takes for "the server is away" (reconnects without logging a traceback).
_DOWN = (RedisError, RedisClusterException, OSError)
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_HEADER = re.compile(rb"(\d+):(\d*):")

# Drop up to TRIM_BATCH expired members (the lowest scores), add or extend one, and let the
# set expire with its last member. The batch bounds a write's work however many sessions
# expired since the user's last write: O(log N + TRIM_BATCH).
_LUA_INDEX_FN = f"""
local function index(ikey, member, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local expired = math.min(redis.call('ZCOUNT', ikey, '-inf', now), {TRIM_BATCH})
  if expired > 0 then redis.call('ZREMRANGEBYRANK', ikey, 0, expired - 1) end
  redis.call('ZADD', ikey, 'GT', now + ttl, member)
  local last = redis.call('ZRANGE', ikey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', ikey, string.format('%d', tonumber(last[2])))
end
local function version(key)
  local head = redis.call('GETRANGE', key, 0, 20)
  if head == '' then return 0 end
  return tonumber(string.match(head, '^(%d+):'))
end
"""

# KEYS: session[, index]  ARGV: version, value, ttl_ms, member
_LUA_SAVE = (
    _LUA_INDEX_FN
    + """
if version(KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if KEYS[2] then index(KEYS[2], ARGV[4], tonumber(ARGV[3])) end
return 1
"""
)

# KEYS: old, new[, index]  ARGV: version, value, ttl_ms, member
_LUA_ROTATE = (
    _LUA_INDEX_FN
    + """
if version(KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
if KEYS[3] then index(KEYS[3], ARGV[4], tonumber(ARGV[3])) end
return 1
"""
)

# Cluster: compare-and-set on one key. KEYS: key  ARGV: version, value or '' (delete), ttl_ms
_LUA_REPLACE = (
    _LUA_INDEX_FN
    + """
if version(KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
)

# Cluster: one index entry. KEYS: index  ARGV: member, ttl_ms
_LUA_INDEX = (
    _LUA_INDEX_FN
    + """
index(KEYS[1], ARGV[1], tonumber(ARGV[2]))
return 1
"""
)

# Does the stored value belong to the user whose header tail (':<len>:<user>') is `tail`?
_LUA_OWNER_FN = """
local function owned(value, tail)
  local colon = string.find(value, ':', 1, true)
  return colon ~= nil and string.sub(value, colon, colon + #tail - 1) == tail
end
"""

# Cluster: delete one key if it belongs to the user. KEYS: key  ARGV: tail
_LUA_DELETE_IF_OWNED = (
    _LUA_OWNER_FN
    + """
local value = redis.call('GET', KEYS[1])
if value and owned(value, ARGV[1]) then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""
)

# Single server: the user's live records; stale index entries are dropped.
# KEYS: index  ARGV: session key head, session key tail, owner tail
_LUA_LIST = (
    _LUA_OWNER_FN
    + """
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.call('GET', ARGV[1] .. member .. ARGV[2])
  if value and owned(value, ARGV[3]) then
    out[#out + 1] = member
    out[#out + 1] = value
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""
)

# Single server: delete the user's records except `keep`.
# KEYS: index  ARGV: session key head, session key tail, owner tail, keep or ''
_LUA_DELETE_USER = (
    _LUA_OWNER_FN
    + """
local n = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if member ~= ARGV[4] then
    local key = ARGV[1] .. member .. ARGV[2]
    local value = redis.call('GET', key)
    if value and owned(value, ARGV[3]) then
      redis.call('DEL', key)
      n = n + 1
    end
    redis.call('ZREM', KEYS[1], member)
  end
end
return n
"""
)

# Single server: `save` or `rotate` under a per-user session limit (`admit`): the user's other
# live sessions are counted, and the oldest (earliest `c`, the record's created time; an
# unreadable record first) deleted or the write refused, in the one script.
# KEYS: source (the key compared), new key, index  ARGV: version, value, ttl_ms, new key,
# limit, evict ('1' or '0'), session key head, session key tail, owner tail, replaced key or ''
# Returns {0} (version conflict), {2} (refused) or {1, evicted key...}.
_LUA_ADMIT = (
    _LUA_INDEX_FN
    + _LUA_OWNER_FN
    + """
local function created(value)
  local v, n = string.match(value, '^(%d+):(%d*):')
  if not v then return -math.huge end
  local start = #v + #n + 3 + (tonumber(n) or 0)
  local ok, doc = pcall(cjson.decode, string.sub(value, start))
  if ok and type(doc) == 'table' and type(doc.c) == 'number' then return doc.c end
  return -math.huge
end
if version(KEYS[1]) ~= tonumber(ARGV[1]) then return {0} end
if ARGV[10] ~= '' and version(KEYS[1]) == 0 then return {0} end
local others = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if member ~= ARGV[4] and member ~= ARGV[10] then
    local value = redis.call('GET', ARGV[7] .. member .. ARGV[8])
    if value and owned(value, ARGV[9]) then others[#others + 1] = {created(value), member} end
  end
end
local excess = #others - tonumber(ARGV[5]) + 1
local out = {1}
if excess > 0 then
  if ARGV[6] ~= '1' then return {2} end
  table.sort(others, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, excess do
    redis.call('DEL', ARGV[7] .. others[i][2] .. ARGV[8])
    redis.call('ZREM', KEYS[3], others[i][2])
    out[#out + 1] = others[i][2]
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[10] ~= '' then redis.call('DEL', KEYS[1]) end
index(KEYS[3], ARGV[4], tonumber(ARGV[3]))
return out
"""
)

_SCRIPTS = {
    "admit": _LUA_ADMIT,
    "save": _LUA_SAVE,
    "rotate": _LUA_ROTATE,
    "replace": _LUA_REPLACE,
    "index": _LUA_INDEX,
    "delete_if_owned": _LUA_DELETE_IF_OWNED,
    "list": _LUA_LIST,
    "delete_user": _LUA_DELETE_USER,
}
#: The scripts that write: with `wait_replicas`, each is followed by `WAIT`.
_WRITES = frozenset(_SCRIPTS) - {"list"}
#: The scripts a lane runs (`save` and `rotate`, on one server), by their SHA1.
_LANE_SHAS = {name: resp.sha1(_SCRIPTS[name]) for name in ("save", "rotate")}

# Revocations: drop up to `limit` expired entries from both sets.
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


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds, at least 1 (Redis rejects 0)."""
    return max(1, round(seconds * 1000))


def _owner_tail(user: str | None) -> bytes:
    if user is None:
        return b"::"
    name = user.encode()
    return b":%d:%s" % (len(name), name)


def _encode(version: int, user: str | None, data: bytes) -> bytes:
    return b"%d%s%s" % (version, _owner_tail(user), data)


def _decode(value: bytes) -> tuple[Record, str | None]:
    match = _HEADER.match(value)
    if match is None:
        raise StoreCorrupted("Redis store returned a value that is not a coatcheck record")
    start = match.end()
    if not match[2]:
        return Record(value[start:], int(match[1])), None
    end = start + int(match[2])
    return Record(value[end:], int(match[1])), value[start:end].decode(errors="replace")


def _split_url(url: str, cluster: bool | None) -> tuple[str, bool]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError("Redis URL must look like redis://host:6379/0")
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    if plain is not None:
        return f"{plain}://{rest}", True
    if cluster and sentinel.is_sentinel_url(url):
        raise ConfigurationError("a redis+sentinel URL names one master, not a cluster")
    return url, bool(cluster)


def _describe(exc: Exception) -> str:
    """The failure in words, without keys or credentials (redis-py messages hold neither,
    but they can be long)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn redis-py exceptions into coatcheck's store exceptions."""
    try:
        try:
            yield
        except hiredis.ReplyError as reply:  # from the lane: the error redis-py would raise
            raise BaseParser.parse_error(str(reply)) from None  # type: ignore[no-untyped-call]
    except resp.PoolExhausted:
        raise StoreUnavailable(_POOL_EXHAUSTED) from None
    except resp.Unavailable as exc:
        raise StoreUnavailable(f"Redis store unavailable ({exc})") from None
    except (ClusterDownError, ReadOnlyError, TryAgainError) as exc:
        raise StoreUnavailable(f"Redis store unavailable ({_describe(exc)})") from None
    except ResponseError as exc:
        raise StoreError(f"Redis store failed ({_describe(exc)})") from None
    except (RedisError, RedisClusterException) as exc:
        if str(exc) == _NO_CONNECTION:
            raise StoreUnavailable(_POOL_EXHAUSTED) from None
        if isinstance(exc, MaxConnectionsError):  # the pool of a client given to the store
            raise StoreUnavailable(
                "Redis store unavailable (every connection of the client's pool is busy and "
                "its pool does not wait: enlarge it, or give the store a URL)"
            ) from None
        raise StoreUnavailable(f"Redis store unavailable ({_describe(exc)})") from None


def _check_client(client: Any) -> None:
    options: dict[str, Any] = getattr(client, "get_connection_kwargs", dict)()
    if options.get("decode_responses"):
        raise ConfigurationError(
            "the Redis client given to the store must return bytes: create it with "
            "decode_responses=False (the default)"
        )


def _check_prefix(prefix: str) -> None:
    if prefix.count("{") != prefix.count("}"):
        raise ConfigurationError(
            f"Redis key prefix {prefix!r} has unbalanced braces; braces in a prefix "
            "form a Redis Cluster hash tag, as in 'app:{sessions}:'"
        )


def _lane_address(url: str) -> dict[str, Any] | None:
    """Where a lane connects for `url` (host, port, db, username, password, as redis-py's
    own `parse_url` reads them), if `url` is a plain `redis://` URL of one server with
    nothing else in it; None otherwise (TLS, a unix socket, other options: redis-py only)."""
    if not url.lower().startswith("redis://"):
        return None
    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return None  # redis-py says what is wrong with it
    if set(options) - {"host", "port", "db", "username", "password"}:
        return None
    if options.get("username") and options.get("password") is None:
        return None
    return {
        "host": options.get("host") or "localhost",
        "port": int(options.get("port") or 6379),
        "db": int(options.get("db") or 0),
        "username": options.get("username") or None,
        "password": options.get("password"),
    }


def _options(timeout: float, retry: Any) -> dict[str, Any]:
    """A client's settings: `timeout` for connecting and each reply, and one immediate
    retry, which replaces a pooled connection that a server restart broke (more would only
    delay the 503 while the server is down). Never after a timeout: the server may be slow,
    not gone, and still run the command (the async clients retry only a command never
    written, `_NotSent`; a sync one, after a connection error, as the lane does)."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry}


class _PoolSettings:
    """The pool settings both client kinds read the same way: from the arguments or the
    URL (`?max_connections=&pool_timeout=`), for a client the store makes; a given client
    keeps its own pool, so setting them then is an error."""

    #: None for a client given to the store (its own pool decides).
    max_connections: int | None
    pool_timeout: float | None
    #: The store's Lua scripts, by name, registered on its client (`_use`).
    _lua: ClassVar[dict[str, str]]
    _scripts: dict[str, Any]
    _client: Any
    #: Whether the client is ready for commands (a cluster's: its nodes found).
    _connected: bool
    cluster: bool
    #: Whether the store sends its per-request commands through a `resp` lane when it can
    #: (the session stores).
    _fast: ClassVar[bool] = False

    def _pool_url(
        self,
        client: object,
        max_connections: int | None,
        pool_timeout: float | None,
    ) -> tuple[str, int, float] | None:
        """(the URL without pool options, max_connections, pool_timeout), also kept on the
        store; None for a given client."""
        self._url: str | None = None
        self.max_connections = self.pool_timeout = None
        if not isinstance(client, str):
            if max_connections is not None or pool_timeout is not None:
                raise ConfigurationError(
                    "max_connections and pool_timeout size the pool of a client the store "
                    "makes from a URL; configure the pool of the client you pass instead"
                )
            return None
        url, size, wait = _pool_settings(
            client,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            defaults=(DEFAULT_MAX_CONNECTIONS, DEFAULT_POOL_TIMEOUT),
        )
        if re.search(r"[?&]timeout=", url):
            raise ConfigurationError(
                "a Redis store URL takes pool_timeout= for the wait for a free connection; "
                "the store's timeout argument bounds connecting and each reply"
            )
        self._url, self.max_connections, self.pool_timeout = url, size, wait
        return url, size, wait

    def _use(self, client: Any) -> None:
        """Take `client` as the store's, with the store's scripts registered on it."""
        self._client = client
        self._scripts = {name: client.register_script(lua) for name, lua in self._lua.items()}
        self._connected = True


class _WaitingPool(redis.BlockingConnectionPool):
    """redis-py's `BlockingConnectionPool`, but a wait that runs out raises
    `MaxConnectionsError` (pool exhaustion), not the plain `ConnectionError` the sync
    cluster client would take for a node failure: it would drop the node's idle
    connections, reload the slot map and retry, waiting again, up to three times."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.exceptions.ConnectionError as exc:
            if str(exc) == _NO_CONNECTION:
                raise MaxConnectionsError(_NO_CONNECTION) from None
            raise


class _SyncCluster(redis.cluster.RedisCluster):
    """redis-py's sync cluster client, which finds its nodes again and sends a command once
    more after a connection error, a cluster that is down or had no node for its slot, as
    the other sync clients do; not after a timeout (redis-py's own list), when the server
    may still run the command (see `_options`)."""

    ERRORS_ALLOW_RETRY = (redis.ConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


class _SyncClient(_PoolSettings):
    """The client of a sync store: made from a URL (the store then owns and closes it) or
    given (checked, never configured or closed). A cluster client finds its nodes as it is
    made, so the store makes it on first use (`_connect`), never at construction."""

    def _set_client(
        self,
        client: str | redis.Redis | redis.cluster.RedisCluster,
        timeout: float,
        cluster: bool | None,
        max_connections: int | None,
        pool_timeout: float | None,
    ) -> None:
        self._owned = isinstance(client, str)
        settings = self._pool_url(client, max_connections, pool_timeout)
        self.timeout = timeout
        self._connecting = threading.Lock()
        self._lane: resp.SyncLane | None = None
        if settings is None:
            _check_client(client)
            self.cluster = isinstance(client, redis.cluster.RedisCluster)
            self._use(client)
            return
        url, self.cluster = _split_url(settings[0], cluster)
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        options = _options(timeout, retry)
        pool = {"max_connections": settings[1], "timeout": settings[2]}
        if sentinel.is_sentinel_url(url):  # gated like a lane store: see stores.sentinel
            where = sentinel.parse(url)
            gated = cast(
                _GatedSyncRedis,
                sentinel.sync_master(where, _GatedSyncRedis, 2 * settings[1], options),
            )
            gated.gate = resp.SyncGate(settings[1], settings[2])
            self._use(gated)
        elif self.cluster:  # each node's pool waits
            self._connected = False
            self._make: Callable[[], redis.cluster.RedisCluster] = lambda: _SyncCluster.from_url(
                url, connection_pool_class=_WaitingPool, **pool, **options
            )
        else:  # connects on its first command
            waiting = _WaitingPool.from_url(url, **pool, **options)
            address = _lane_address(url) if self._fast else None
            if address is None:
                self._use(redis.Redis.from_pool(waiting))
                return
            # One gate admits the lane's commands and redis-py's: max_connections in all.
            gated = cast(_GatedSyncRedis, _GatedSyncRedis.from_pool(waiting))
            gated.gate = resp.SyncGate(settings[1], settings[2])
            self._use(gated)
            self._lane = resp.SyncLane(gate=gated.gate, timeout=timeout, **address)

    def _connect(self) -> None:
        """Make the cluster client, once however many threads arrive first (the callers
        translate its errors)."""
        with self._connecting:
            if not self._connected:
                self._use(self._make())

    @property
    def client(self) -> Any:
        """The redis-py client (a cluster's is made, finding its nodes, on first use)."""
        if not self._connected:
            with _translated():
                self._connect()
        return self._client

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()
        if self._owned and self._connected:
            with _translated():
                self._client.close()
                sentinel.close(self._client)


class _GatedSyncRedis(redis.Redis):
    """`redis.Redis` whose commands pass through the `resp.SyncGate` of the store's lane."""

    gate: resp.SyncGate

    def execute_command(self, *args: Any, **options: Any) -> Any:
        with self.gate:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class _Gate:
    """At most `size` holders at once; the others queue in arrival order, each for up to
    `timeout` seconds, and a freed place goes to the longest waiter, never to a newcomer.

    redis-py's async `BlockingConnectionPool` lets a newcomer take a connection freed for
    a waiter (its condition re-queues a woken waiter that lost the race), so under steady
    load some waiters starve: measured with `bench/pool_load.py`, 200 tasks and 100
    connections, 100 requests waited past a 5 s bound while the median was 23 ms.
    """

    def __init__(self, size: int, timeout: float) -> None:
        self.free = size
        self.timeout = timeout
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.free and not self._waiters:
            self.free -= 1
            return
        loop = asyncio.get_running_loop()
        place: asyncio.Future[None] = loop.create_future()
        self._waiters.append(place)
        timer = loop.call_later(self.timeout, self._expire, place)
        try:
            await place
        except BaseException:
            if place.done() and not place.cancelled() and place.exception() is None:
                self._release()  # given a place just as this task was cancelled: pass it on
            elif not place.done() or place.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(place)
            raise
        finally:
            timer.cancel()

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            place = self._waiters.popleft()
            if not place.done():
                place.set_result(None)  # the place passes straight to the longest waiter
                return
        self.free += 1

    def _expire(self, place: asyncio.Future[None]) -> None:
        if not place.done():
            self._waiters.remove(place)
            place.set_exception(MaxConnectionsError(_NO_CONNECTION))


class _GatedRedis(redis.asyncio.Redis):
    """`redis.asyncio.Redis` whose commands pass through a `_Gate` (pub/sub does not: it
    takes its connection from the pool, which has room for it)."""

    gate: _Gate

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        async with self.gate:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class _GatedCluster(redis.asyncio.cluster.RedisCluster):
    """`redis.asyncio`'s cluster client, gated the same way. Its nodes' pools cannot wait at
    all (`MaxConnectionsError`) and take no other pool class, so the gate is the only wait;
    pipelines (only `list_user` on a cluster) take one connection per node and pass by.
    It finds the cluster's nodes again and sends a command once more only when the command
    was never run: never written (`_NotSent`, see `_WriteGuard`), or refused by a cluster
    that is down or had no node for its slot; redis-py's own list adds any connection
    error or timeout, after which a write may have run."""

    ERRORS_ALLOW_RETRY = (_NotSent, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]
    gate: _Gate

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate:
            return await super().execute_command(*args, **kwargs)

    async def aclose(self) -> None:
        """Close every node's connections. redis-py (8.1) closes nothing while a failed
        command has left the client to find its nodes again, so a store closed right after
        a timeout would leave its connections open."""
        await super().aclose()
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")


class _WriteGuard:
    """Mixed into the redis-py asyncio connection classes of the clients a store makes, so
    that a command is sent again only if it was never written (`_NotSent`), never once the
    server may have run it: a session write is a compare-and-set, and run twice (its reply
    lost in a failover, while the replica that takes over has it) it would answer a
    conflict for the request's own write, or apply `Session.increment` twice. The clients
    retry `_NotSent` only (`_options`; `_GatedCluster.ERRORS_ALLOW_RETRY`); a reply that
    is lost or late is a 503. Reads follow the same rule.

    `_NotSent` is raised when connecting fails, and before a write on a connection already
    closed: by the server (its end-of-file was read: a restart, `CLIENT KILL`), or by
    redis-py, whose async cluster client disconnects connections that another command has
    just taken (in a failover). Without the check redis-py (8.1, redis/redis-py#4287)
    writes into the closed transport, which on CPython 3.12, 3.13.0-3.13.9 and 3.14.0
    (python/cpython#136234) raises a `TypeError` or `AttributeError` from asyncio, a 500
    (tests/stores/test_cluster_faults.py: 3 runs in 4 on 3.12). The check and the write have
    no `await` between them, and a transport is marked closing before it is torn down. The
    store always sets a socket timeout, the branch of redis-py that writes through
    `_send_packed_command`."""

    _writer: asyncio.StreamWriter | None
    _reader: asyncio.StreamReader | None

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except redis.AuthenticationError:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise _NotSent(str(exc)) from exc

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer, reader = self._writer, self._reader
        if writer is None or writer.transport.is_closing() or reader is None or reader.at_eof():
            raise _NotSent(_CLOSED)
        writer.writelines(command)
        await writer.drain()


def _guarded(connection_class: type[Any]) -> type[Any]:
    """`connection_class` (TCP, TLS, unix socket or Sentinel-managed) with `_WriteGuard`."""
    if issubclass(connection_class, _WriteGuard):
        return connection_class
    return type(f"Guarded{connection_class.__name__}", (_WriteGuard, connection_class), {})


def _guard(client: Any) -> None:
    """Make the connections `client` opens from now on guarded ones (`_WriteGuard`)."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        # The nodes found later take their class from these options (shared with the nodes
        # manager); the nodes from the URL already have theirs.
        options = client.connection_kwargs
        options["connection_class"] = _guarded(options["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = _guarded(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = _guarded(pool.connection_class)


class _AsyncClient(_PoolSettings):
    """The client of an async store, made or given as for `_SyncClient`. A cluster's nodes
    are discovered once, before the first command (`_connect`)."""

    def _set_client(
        self,
        client: str | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        timeout: float,
        cluster: bool | None,
        max_connections: int | None,
        pool_timeout: float | None,
    ) -> None:
        self._owned = isinstance(client, str)
        settings = self._pool_url(client, max_connections, pool_timeout)
        self.timeout = timeout
        self._lane: resp.AsyncLane | None = None
        if settings is not None:
            url, is_cluster = _split_url(settings[0], cluster)
            size, wait = settings[1], settings[2]
            retry = AsyncRetry(NoBackoff(), 1, supported_errors=(_NotSent,))
            options = _options(timeout, retry)
            # The gate admits `size` commands; the pool below has room for twice that (the
            # pub/sub listener, connections being replaced), so it never refuses one.
            gated: _GatedRedis | _GatedCluster
            if sentinel.is_sentinel_url(url):
                gated = cast(
                    _GatedRedis,
                    sentinel.async_master(sentinel.parse(url), _GatedRedis, 2 * size, options),
                )
            elif is_cluster:
                gated = cast(
                    _GatedCluster,
                    _GatedCluster.from_url(url, max_connections=2 * size, **options),
                )
            else:
                pool = redis.asyncio.ConnectionPool.from_url(
                    url, max_connections=2 * size, **options
                )
                gated = cast(_GatedRedis, _GatedRedis.from_pool(pool))
            gated.gate = _Gate(size, wait)
            _guard(gated)
            client = gated
            address = None if is_cluster or not self._fast else _lane_address(url)
            if address is not None:  # the lane waits at the same gate
                self._lane = resp.AsyncLane(gate=gated.gate, timeout=timeout, **address)
        else:
            _check_client(client)
        self.cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._use(client)
        self._connected = not self.cluster
        self._connecting = asyncio.Lock()

    async def _connect(self) -> None:
        """Discover the cluster's nodes once, before any command: redis-py's async cluster
        client can break connections when many first commands race to do it (and a pub/sub
        client needs the slot map)."""
        async with self._connecting:
            if not self._connected:
                await self._client.initialize()
                self._connected = True

    @property
    def client(self) -> Any:
        """The redis-py client (a cluster's finds its nodes before its first command)."""
        return self._client

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()
        if self._owned:
            with _translated():
                await self._client.aclose()
                await sentinel.aclose(self._client)


class _Layout:
    """Everything both session twins share: key names, record encoding, the choice of
    scripts."""

    _lua = _SCRIPTS
    _fast = True

    prefix: str
    cluster: bool
    one_slot: bool
    timeout: float
    _lane: Any
    #: Replicas that must acknowledge each write (`WAIT`) before it counts as done.
    wait_replicas: int = 0

    def _configure(self, prefix: str) -> None:
        _check_prefix(prefix)
        self.prefix = prefix
        # A hash tag in the prefix puts every key in one slot: the single-server scripts work.
        self.one_slot = not self.cluster or re.search(r"\{[^}]+\}", prefix) is not None
        self._key_head = f"{prefix}s:{{"
        self._key_tail = "}"

    def _configure_wait(self, wait_replicas: int) -> None:
        """Check and keep `wait_replicas`; a store that waits sends every command through
        redis-py (`WAIT` must follow the write on the same connection), not the lane."""
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int):
            raise TypeError("wait_replicas is a whole number of replicas")
        if wait_replicas < 0:
            raise ConfigurationError(f"wait_replicas must be 0 or more, not {wait_replicas}")
        self.wait_replicas = wait_replicas
        if wait_replicas:
            self._lane = None

    def _on_node_reply(self, result: Any, acked: Any, script: str | None) -> str | None:
        """What a cluster node's reply to a write and its `WAIT` asks for next: "load" (the
        script is not on the node), "moved" (the slot is elsewhere now: nothing was written)
        or None (done: the write's result stands, confirmed); raises for other errors and for
        a write too few replicas acknowledged."""
        if isinstance(result, NoScriptError) and script is not None:
            return "load"
        if isinstance(result, MovedError):
            return "moved"
        if isinstance(result, AskError):  # a slot being migrated: the next request retries
            raise StoreUnavailable("Redis store unavailable (the key's slot is being migrated)")
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception):
            raise acked
        self._unconfirmed(acked)
        return None

    def _unconfirmed(self, acked: Any) -> None:
        """Raise if fewer than `wait_replicas` replicas acknowledged the write."""
        if int(acked) < self.wait_replicas:
            raise StoreUnavailable(
                f"Redis store unavailable (the write reached {int(acked)} of "
                f"{self.wait_replicas} replicas in time; it may still be on the master)"
            )

    def _key(self, key: str) -> str:
        return f"{self._key_head}{key}{self._key_tail}"

    def _index(self, user: str) -> str:
        return f"{self.prefix}u:{{{user}}}"

    def _list_args(self, user: str) -> list[bytes | str]:
        return [self._key_head, self._key_tail, _owner_tail(user)]

    @property
    def limit_unsupported(self) -> str | None:
        """Why `admit` cannot be atomic here (None: it can): on a cluster, the user's
        sessions and index live in unrelated slots unless the prefix has a hash tag."""
        if self.one_slot:
            return None
        return (
            "a session limit needs every key of the store in one slot of the cluster: give the "
            "prefix a hash tag of its own (prefix='app:{sessions}:')"
        )

    def _admit_call(
        self,
        key: str,
        data: bytes,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the `admit` script."""
        value = _encode(version + 1 if replaces is None else 1, user, data)
        source = key if replaces is None else replaces
        keys = [self._key(source), self._key(key), self._index(user)]
        args = [version, value, _ms(ttl), key, limit, "1" if evict else "0"]
        return keys, [*args, *self._list_args(user), replaces or ""]

    @staticmethod
    def _admission(reply: Sequence[Any]) -> Admission:
        if int(reply[0]) == 0:
            return CONFLICTED
        if int(reply[0]) == 2:
            return Admission(False, True)
        evicted = tuple(m.decode() if isinstance(m, bytes) else str(m) for m in reply[1:])
        return Admission(True, False, evicted)

    @staticmethod
    def _sort(
        members: list[str], values: list[bytes | None], user: str
    ) -> tuple[list[tuple[str, Record]], list[str]]:
        """The index entries of `user` (`members`, their sessions' stored `values`) sorted
        into live records of that user, as (key, record) pairs, and stale entries (the
        session expired, was deleted or changed hands), to drop."""
        found, stale = [], []
        for member, value in zip(members, values, strict=True):
            owner = None if value is None else _decode(value)
            if owner is not None and owner[1] == user:
                found.append((member, owner[0]))
            else:
                stale.append(member)
        return found, stale

    @staticmethod
    def _pairs(flat: Sequence[bytes], user: str) -> list[tuple[str, Record]]:
        found = []
        for i in range(0, len(flat), 2):
            record, owner = _decode(flat[i + 1])
            if owner == user:
                found.append((flat[i].decode(), record))
        return found


class RedisStore(_Layout, _SyncClient):
    """Sessions in Redis (or Valkey), on one server or a Redis Cluster.

    `client` is a URL (`redis://[[user]:password@]host:6379/0`, `rediss://` for TLS,
    `redis+cluster://host:port` for a cluster, `redis+sentinel://host:26379/service` for a
    Sentinel-managed master, see `stores.sentinel`) or an existing `redis.Redis` /
    `redis.cluster.RedisCluster`, which the store then neither configures nor closes.
    `timeout` bounds connecting and each reply, in seconds. A store made from a URL keeps
    at most `max_connections` connections, and a command finding them all busy waits up to
    `pool_timeout` seconds for one (see the module docstring); either may instead be given
    in the URL's query, `redis://host:6379/0?max_connections=50&pool_timeout=5`.
    With `wait_replicas=n`, every write is followed by `WAIT n` on its connection (on a
    cluster, the connection to the master of the written key's slot), up to half of
    `timeout`: a write that fewer replicas acknowledged raises `StoreUnavailable` (a 503; it
    may still be on the master), so a write answered 200 survives a failover to one of
    those replicas. It costs the replication round trip per write, and the RESP lane is
    not used. A master left without enough replicas (a cluster shard whose only replica
    was promoted) refuses every write until replicas rejoin it.
    """

    def __init__(
        self,
        client: str | redis.Redis | redis.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        wait_replicas: int = 0,
    ) -> None:
        self._set_client(client, timeout, cluster, max_connections, pool_timeout)
        self._configure(prefix)
        self._configure_wait(wait_replicas)

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        return f"<RedisStore {kind} prefix={self.prefix!r}>"

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._lane is not None and name in _LANE_SHAS:
            return self._lane.evalsha(_LANE_SHAS[name], _SCRIPTS[name], keys, args)
        if self.wait_replicas and name in _WRITES:
            if self.cluster:
                sha = self._scripts[name].sha
                return self._node_waited(
                    keys[0], ("EVALSHA", sha, len(keys), *keys, *args), _SCRIPTS[name]
                )
            pipe = self._client.pipeline(transaction=False)
            self._scripts[name](keys=keys, args=args, client=pipe)
            return self._waited(pipe)
        return self._scripts[name](keys=keys, args=args)

    def _waited(self, pipe: Any) -> Any:
        """Run `pipe` (one write) and `WAIT` for `wait_replicas`, up to half of `timeout`
        (the other half is for the reply); the write's result."""
        pipe.execute_command("WAIT", self.wait_replicas, _ms(self.timeout / 2))
        result, acked = pipe.execute()
        self._unconfirmed(acked)
        return result

    def _node_waited(self, key: str, command: tuple[Any, ...], script: str | None = None) -> Any:
        """On a cluster, send `command` (a write to `key`'s slot; `EVALSHA` of `script`) and
        `WAIT` on one connection to the master of that slot; the write's result.

        `WAIT` counts the replicas holding every write made on its own connection, so it
        must follow the write on the write's connection: redis-py's cluster client would
        send it to every master on other connections (and sum the replies), and its cluster
        pipeline retries failed commands one by one, on other connections. A connection
        failure or a `MOVED` reply (the slot's replica took over) has the client reload its
        slot map, so the next command goes where the slot is now; after `MOVED` (the node
        wrote nothing) the write is sent there at once."""
        client = self._client
        for _ in range(3):
            node = client.get_redis_connection(client.get_node_from_key(key))
            pipe = node.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", self.wait_replicas, _ms(self.timeout / 2))
            try:
                result, acked = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                self._reload_slots()
                raise
            step = self._on_node_reply(result, acked, script)
            if step is None:
                return result
            if step == "load":
                node.script_load(script)
            else:
                self._reload_slots()
        raise StoreUnavailable("Redis store unavailable (the key's slot kept moving)")

    def _reload_slots(self) -> None:
        """Have the cluster client find where each slot is served now (best effort: during
        a failover no node may answer yet; the client retries on its next failure)."""
        with contextlib.suppress(*_DOWN):
            self._client.nodes_manager.initialize()

    def load(self, key: str) -> Record | None:
        with _translated():
            if self._lane is not None:
                value = self._lane.call(b"GET", self._key(key))
            else:
                if not self._connected:
                    self._connect()
                value = self._client.get(self._key(key))
        return None if value is None else _decode(value)[0]

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        value = _encode(version + 1, user, data)
        ms = _ms(ttl)
        with _translated():
            if not self._connected:
                self._connect()
            if self.one_slot:
                keys = [self._key(key)] if user is None else [self._key(key), self._index(user)]
                return bool(self._run("save", keys, [version, value, ms, key]))
            if user is not None:
                self._run("index", [self._index(user)], [key, ms])
            return bool(self._run("replace", [self._key(key)], [version, value, ms]))

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        if version == 0:  # nothing to rotate away from
            return False
        value = _encode(1, user, data)
        ms = _ms(ttl)
        with _translated():
            if not self._connected:
                self._connect()
            if self.one_slot:
                keys = [self._key(old_key), self._key(new_key)]
                if user is not None:
                    keys.append(self._index(user))
                return bool(self._run("rotate", keys, [version, value, ms, new_key]))
            new = self._key(new_key)
            if self.wait_replicas:
                self._node_waited(new, ("SET", new, value, "PX", ms))
            else:
                self._client.set(new, value, px=ms)
            if user is not None:
                self._run("index", [self._index(user)], [new_key, ms])
            if self._run("replace", [self._key(old_key)], [version, "", 1]):  # '': delete
                return True
            self._client.delete(self._key(new_key))
            return False

    def admit(
        self,
        key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> Admission:
        """`save` or `rotate` under a per-user session limit (`LimitedStore.admit`): one
        script, which Redis runs without interleaving any other command. Single server (or
        a prefix with a hash tag) only: see `limit_unsupported`."""
        reason = self.limit_unsupported
        if reason is not None:
            raise ConfigurationError(reason)
        keys, args = self._admit_call(key, data, version, ttl, user, replaces, limit, evict)
        with _translated():
            if not self._connected:
                self._connect()
            return self._admission(self._run("admit", keys, args))

    def delete(self, key: str) -> None:
        with _translated():
            if not self._connected:
                self._connect()
            if self.wait_replicas and self.cluster:
                self._node_waited(self._key(key), ("DEL", self._key(key)))
            elif self.wait_replicas:
                self._waited(self._client.pipeline(transaction=False).delete(self._key(key)))
            else:
                self._client.delete(self._key(key))

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        with _translated():
            if not self._connected:
                self._connect()
            if self.one_slot:
                flat = self._run("list", [self._index(user)], self._list_args(user))
                return self._pairs(flat, user)
            members = [m.decode() for m in self._client.zrange(self._index(user), 0, -1)]
            if not members:
                return []
            keys = [self._key(m) for m in members]
            if self.cluster:
                values = self._client.mget_nonatomic(keys)
            else:  # a prefix without a hash tag on one server: not reached
                values = self._client.mget(keys)
            found, stale = self._sort(members, values, user)
            if stale:
                self._client.zrem(self._index(user), *stale)
            return found

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        with _translated():
            if not self._connected:
                self._connect()
            if self.one_slot:
                args = [*self._list_args(user), keep or ""]
                return int(self._run("delete_user", [self._index(user)], args))
            index = self._index(user)
            members = [m.decode() for m in self._client.zrange(index, 0, -1)]
            doomed = [m for m in members if m != keep]
            removed = 0
            for member in doomed:
                tail = [_owner_tail(user)]
                removed += int(self._run("delete_if_owned", [self._key(member)], tail))
            if doomed:
                self._client.zrem(index, *doomed)
            return removed

    def purge_expired(self) -> int:
        """Redis expires records itself; there is never anything to purge."""
        return 0


class AsyncRedisStore(_Layout, _AsyncClient):
    """The async twin of `RedisStore` (on `redis.asyncio`), with the same layout and options:
    the two share data when pointed at the same server and prefix."""

    def __init__(
        self,
        client: str | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        wait_replicas: int = 0,
    ) -> None:
        self._set_client(client, timeout, cluster, max_connections, pool_timeout)
        self._configure(prefix)
        self._configure_wait(wait_replicas)

    @classmethod
    def wrapping(cls, store: RedisStore) -> AsyncRedisStore | None:
        """An async store on the same server, prefix and timeout as `store`, with its own
        connections (a sync client cannot be awaited); None if `store` was given a client
        rather than a URL."""
        if store._url is None:
            return None
        return cls(
            store._url,
            prefix=store.prefix,
            timeout=store.timeout,
            cluster=store.cluster,
            max_connections=store.max_connections,
            pool_timeout=store.pool_timeout,
            wait_replicas=store.wait_replicas,
        )

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        return f"<AsyncRedisStore {kind} prefix={self.prefix!r}>"

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._lane is not None and name in _LANE_SHAS:
            return await self._lane.evalsha(_LANE_SHAS[name], _SCRIPTS[name], keys, args)
        if self.wait_replicas and name in _WRITES:
            if self.cluster:
                sha = self._scripts[name].sha
                return await self._node_waited(
                    keys[0], ("EVALSHA", sha, len(keys), *keys, *args), _SCRIPTS[name]
                )
            pipe = self._client.pipeline(transaction=False)
            await self._scripts[name](keys=keys, args=args, client=pipe)
            return await self._waited(pipe)
        return await self._scripts[name](keys=keys, args=args)

    async def _waited(self, pipe: Any) -> Any:
        pipe.execute_command("WAIT", self.wait_replicas, _ms(self.timeout / 2))
        result, acked = await pipe.execute()
        self._unconfirmed(acked)
        return result

    async def _node_waited(
        self, key: str, command: tuple[Any, ...], script: str | None = None
    ) -> Any:
        """`RedisStore._node_waited` on the async cluster client: the two commands go as one
        pipeline on one connection of the slot's node, admitted by the store's gate."""
        client = self._client
        gate = client.gate if isinstance(client, _GatedCluster) else None
        for _ in range(3):
            node = client.get_node_from_key(key)
            commands = [
                redis.asyncio.cluster.PipelineCommand(0, *command),
                redis.asyncio.cluster.PipelineCommand(
                    1, "WAIT", self.wait_replicas, _ms(self.timeout / 2)
                ),
            ]
            try:
                if gate is None:
                    await node.execute_pipeline(commands)
                else:
                    async with gate:
                        await node.execute_pipeline(commands)
                for sent in commands:  # a reply lost with the connection
                    if isinstance(sent.result, (redis.ConnectionError, redis.TimeoutError)):
                        raise sent.result
            except (redis.ConnectionError, redis.TimeoutError):
                await self._reload_slots()
                raise
            step = self._on_node_reply(commands[0].result, commands[1].result, script)
            if step is None:
                return commands[0].result
            if step == "load":
                await node.execute_command("SCRIPT", "LOAD", script)
            else:
                await self._reload_slots()
        raise StoreUnavailable("Redis store unavailable (the key's slot kept moving)")

    async def _reload_slots(self) -> None:
        with contextlib.suppress(*_DOWN):
            await self._client.nodes_manager.initialize()

    async def load(self, key: str) -> Record | None:
        with _translated():
            if self._lane is not None:
                value = await self._lane.call(b"GET", self._key(key))
            else:
                if not self._connected:
                    await self._connect()
                value = await self._client.get(self._key(key))
        return None if value is None else _decode(value)[0]

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        value = _encode(version + 1, user, data)
        ms = _ms(ttl)
        with _translated():
            if not self._connected:
                await self._connect()
            if self.one_slot:
                keys = [self._key(key)] if user is None else [self._key(key), self._index(user)]
                return bool(await self._run("save", keys, [version, value, ms, key]))
            if user is not None:
                await self._run("index", [self._index(user)], [key, ms])
            return bool(await self._run("replace", [self._key(key)], [version, value, ms]))

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        if version == 0:
            return False
        value = _encode(1, user, data)
        ms = _ms(ttl)
        with _translated():
            if not self._connected:
                await self._connect()
            if self.one_slot:
                keys = [self._key(old_key), self._key(new_key)]
                if user is not None:
                    keys.append(self._index(user))
                return bool(await self._run("rotate", keys, [version, value, ms, new_key]))
            new = self._key(new_key)
            if self.wait_replicas:
                await self._node_waited(new, ("SET", new, value, "PX", ms))
            else:
                await self._client.set(new, value, px=ms)
            if user is not None:
                await self._run("index", [self._index(user)], [new_key, ms])
            if await self._run("replace", [self._key(old_key)], [version, "", 1]):  # '': delete
                return True
            await self._client.delete(self._key(new_key))
            return False

    async def admit(
        self,
        key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> Admission:
        reason = self.limit_unsupported
        if reason is not None:
            raise ConfigurationError(reason)
        keys, args = self._admit_call(key, data, version, ttl, user, replaces, limit, evict)
        with _translated():
            if not self._connected:
                await self._connect()
            return self._admission(await self._run("admit", keys, args))

    async def delete(self, key: str) -> None:
        with _translated():
            if not self._connected:
                await self._connect()
            if self.wait_replicas and self.cluster:
                await self._node_waited(self._key(key), ("DEL", self._key(key)))
            elif self.wait_replicas:
                pipe = self._client.pipeline(transaction=False)
                pipe.delete(self._key(key))
                await self._waited(pipe)
            else:
                await self._client.delete(self._key(key))

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        with _translated():
            if not self._connected:
                await self._connect()
            if self.one_slot:
                flat = await self._run("list", [self._index(user)], self._list_args(user))
                return self._pairs(flat, user)
            members = [m.decode() for m in await self._client.zrange(self._index(user), 0, -1)]
            if not members:
                return []
            keys = [self._key(m) for m in members]
            if self.cluster:
                values = await self._client.mget_nonatomic(keys)
            else:  # a prefix without a hash tag on one server: not reached
                values = await self._client.mget(keys)
            found, stale = self._sort(members, values, user)
            if stale:
                await self._client.zrem(self._index(user), *stale)
            return found

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        with _translated():
            if not self._connected:
                await self._connect()
            if self.one_slot:
                args = [*self._list_args(user), keep or ""]
                return int(await self._run("delete_user", [self._index(user)], args))
            index = self._index(user)
            members = [m.decode() for m in await self._client.zrange(index, 0, -1)]
            doomed = [m for m in members if m != keep]
            removed = 0
            for member in doomed:
                tail = [_owner_tail(user)]
                removed += int(await self._run("delete_if_owned", [self._key(member)], tail))
            if doomed:
                await self._client.zrem(index, *doomed)
            return removed

    async def purge_expired(self) -> int:
        """Redis expires records itself; there is never anything to purge."""
        return 0


# -- revocations ---------------------------------------------------------------------------


def _member(member: bytes | str) -> tuple[int, Revocation]:
    """A `<seq> <entry>` member (or published message) back into its number and entry;
    ValueError if it is not one."""
    text = member.decode() if isinstance(member, bytes) else member
    seq, _, doc = text.partition(" ")
    return int(seq), decode_entry(doc)


def _pushed(data: bytes | str) -> Revocation:
    return _member(data)[1]


def _parse_changes(rows: list[tuple[bytes, float]], cursor: int) -> tuple[list[Revocation], int]:
    """A poll's members (scored by their sequence number): the entries and the next cursor."""
    return decode_rows([(int(score), member.partition(b" ")[2]) for member, score in rows], cursor)


def _message(message: dict[str, Any] | None) -> object:
    """What a pub/sub message means to a listener (see `stores.feed`)."""
    if message is None:
        return None
    if message["type"] == "subscribe":
        return SUBSCRIBED
    return message["data"] if message["type"] == "message" else None


class _RevocationKeys:
    """Key and channel names both revocation twins share."""

    _lua = {"revoke": _LUA_REVOKE, "purge": _LUA_PURGE}

    def _configure(self, prefix: str, clock: Callable[[], float]) -> None:
        _check_prefix(prefix)
        self.prefix = prefix
        # A hash tag in the prefix already puts every key in one slot; else add one.
        base = f"{prefix}rv:" if "{" in prefix else f"{{{prefix}rv}}:"
        self.keys = [f"{base}seq", f"{base}log", f"{base}exp"]
        self.channel = f"{base}feed"
        self._clock = clock

    def _revoke_args(self, entry: Revocation) -> list[Any]:
        return [
            encode_entry(entry),
            repr(entry.expires_at),
            repr(self._clock()),
            self.channel,
            TRIM_BATCH,
        ]

    def _range_args(self, cursor: int) -> tuple[str, str, str]:
        return self.keys[1], f"({int(cursor)}", "+inf"


class RedisRevocationStore(_RevocationKeys, _SyncClient):
    """Revocations shared through Redis, on one server or a Redis Cluster.

    `client` is a URL (`redis://host:6379/0`, `rediss://` for TLS, `redis+cluster://host:port`,
    `redis+sentinel://host:26379/service`) or an existing `redis.Redis` /
    `redis.cluster.RedisCluster`, which the store then neither configures nor closes.
    `timeout` bounds connecting and each reply, in seconds; `max_connections` and
    `pool_timeout` size the pool as for `RedisStore`. `clock` decides which entries have
    expired (the app servers' clock, which wrote `expires_at`).
    """

    def __init__(
        self,
        client: str | redis.Redis | redis.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configure(prefix, clock)
        self._set_client(client, timeout, cluster, max_connections, pool_timeout)
        self._listener = Listener(
            self._messages,
            decode=_pushed,
            errors=_DOWN,
            join_timeout=5 * (POLL_INTERVAL + timeout + RECONNECT_DELAY),
        )
        #: Set while the listener is subscribed (cleared while it reconnects).
        self.listening = self._listener.listening

    def __repr__(self) -> str:
        return f"<RedisRevocationStore prefix={self.prefix!r}>"

    def revoke(self, entry: Revocation) -> None:
        with _translated():
            if not self._connected:
                self._connect()
            self._scripts["revoke"](keys=self.keys, args=self._revoke_args(entry))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        with _translated():
            if not self._connected:
                self._connect()
            rows = self._client.zrangebyscore(*self._range_args(cursor), **_PAGE)
        return _parse_changes(rows, cursor)

    def purge_expired(self) -> int:
        total = 0
        with _translated():
            if not self._connected:
                self._connect()
            while True:
                args = [repr(self._clock()), PURGE_BATCH]
                removed = int(self._scripts["purge"](keys=self.keys[1:], args=args))
                total += removed
                if removed < PURGE_BATCH:
                    return total

    def listen(self, callback: Callable[[Revocation], None]) -> None:
        """Hand every entry published from now on to `callback` (called on the listener's
        thread). The first call starts the listener; `close()` stops it."""
        self._listener.listen(callback)

    def _messages(self) -> Generator[object, None, None]:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            while True:
                yield _message(pubsub.get_message(timeout=POLL_INTERVAL))
        finally:
            with contextlib.suppress(*_DOWN):
                pubsub.close()

    def close(self) -> None:
        """Stop the listener and, if the store made its client from a URL, close it."""
        self._listener.stop()
        super().close()


class AsyncRedisRevocationStore(_RevocationKeys, _AsyncClient):
    """Async twin of `RedisRevocationStore` (on `redis.asyncio`); the listener is a task
    in the event loop that first calls `listen`."""

    def __init__(
        self,
        client: str | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = DEFAULT_URL,
        *,
        prefix: str = "coatcheck:",
        timeout: float = 0.5,  # seconds, for connecting and for each reply
        cluster: bool | None = None,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configure(prefix, clock)
        self._set_client(client, timeout, cluster, max_connections, pool_timeout)
        self._listener = AsyncListener(self._messages, decode=_pushed, errors=_DOWN)
        #: Set while the listener is subscribed (cleared while it reconnects).
        self.listening = self._listener.listening

    @classmethod
    def wrapping(cls, store: RedisRevocationStore) -> AsyncRedisRevocationStore | None:
        """An async store on the same server, keys and clock as `store`, with its own
        connections; None if `store` was given a client rather than a URL."""
        if store._url is None:
            return None
        return cls(
            store._url,
            prefix=store.prefix,
            timeout=store.timeout,
            cluster=store.cluster,
            clock=store._clock,
            max_connections=store.max_connections,
            pool_timeout=store.pool_timeout,
        )

    def __repr__(self) -> str:
        return f"<AsyncRedisRevocationStore prefix={self.prefix!r}>"

    async def revoke(self, entry: Revocation) -> None:
        with _translated():
            if not self._connected:
                await self._connect()
            await self._scripts["revoke"](keys=self.keys, args=self._revoke_args(entry))

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        with _translated():
            if not self._connected:
                await self._connect()
            rows = await self._client.zrangebyscore(*self._range_args(cursor), **_PAGE)
        return _parse_changes(rows, cursor)

    async def purge_expired(self) -> int:
        total = 0
        with _translated():
            if not self._connected:
                await self._connect()
            while True:
                args = [repr(self._clock()), PURGE_BATCH]
                removed = int(await self._scripts["purge"](keys=self.keys[1:], args=args))
                total += removed
                if removed < PURGE_BATCH:
                    return total

    def listen(self, callback: Callable[[Revocation], None]) -> None:
        """Hand every entry published from now on to `callback`, from a task in the running
        event loop (call it from inside that loop). `aclose()` stops it."""
        self._listener.listen(callback)

    async def _messages(self) -> AsyncGenerator[object, None]:
        if not self._connected:
            await self._connect()
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                yield _message(await pubsub.get_message(timeout=POLL_INTERVAL))
        finally:
            with contextlib.suppress(*_DOWN):
                await pubsub.aclose()

    async def aclose(self) -> None:
        """Stop the listener and, if the store made its client from a URL, close it."""
        await self._listener.stop()
        await super().aclose()
