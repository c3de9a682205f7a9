"""A minimal RESP2 client for the hot path of the Redis session stores (private: only
`stores.redis` imports it).

Why: measured with `bench/redis_clients.py` (bench/RESULTS-redis-clients.md), redis-py
costs about 350k instructions per command through its asyncio client (with hiredis) and
163k through its sync client, more than all of coatcheck's own work per request; a
minimal client on the same hiredis parser costs about 120k (asyncio streams) and 20k
(blocking sockets). So `RedisStore` and `AsyncRedisStore` send their per-request commands
(`GET` for `load`, `EVALSHA` for `save` and `rotate`) through a lane of this module when
they are made from a plain `redis://` URL of one server; everything else stays on redis-py.

A lane is a pool of TCP connections (TCP_NODELAY) to one server, each one authenticated
(`AUTH`) and on its database (`SELECT`) as it opens. A call takes an idle connection (the
most recently used first) or opens one, sends one command, reads one reply with
`hiredis.Reader`, and gives the connection back. Admission goes through a gate the store
shares with its redis-py client: at most `max_connections` commands in flight over both,
and one more waits up to `pool_timeout` seconds, then `PoolExhausted`.

Failures: connecting and every reply are bounded by `timeout` seconds. A connection that
fails in any way (refused, reset, closed, timed out, a protocol error, a cancelled wait) is
closed and never reused, and the command is tried once more on a new connection, as
redis-py's clients do (their one retry): a server restart breaks every idle connection,
and a connection that an overloaded process opened too slowly gets a second chance. A
second failure is raised as `Unavailable`; a server that is down refuses both attempts at
once, so an outage is still answered in about a millisecond. An error reply is raised as the
`hiredis.ReplyError` it is, except that `evalsha` answers `NOSCRIPT` (a restarted or
flushed server) by loading the script and sending `EVALSHA` once more. No message or repr
carries the password.

Fork safety: a lane used in a child process forgets (does not close: the parent still uses
them) the connections it inherited and opens its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import hiredis

__all__ = [
    "AsyncLane",
    "PoolExhausted",
    "SyncGate",
    "SyncLane",
    "Unavailable",
    "encode",
    "is_noscript",
    "sha1",
]

Arg = bytes | str | int


class Unavailable(Exception):
    """The server could not be reached or answered nothing usable in time (the message
    names the address and the failure, never a credential)."""


class PoolExhausted(Exception):
    """Every place of the gate stayed taken for `pool_timeout` seconds."""


class AsyncGate(Protocol):
    """What an async lane needs of its gate (`stores.redis._Gate`)."""

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


def encode(*args: Arg) -> bytes:
    """One command as a RESP array of bulk strings (str as UTF-8, int in decimal)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def sha1(script: str) -> str:
    """The SHA1 hex digest Redis names a script by."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, hiredis.ReplyError) and str(exc).startswith("NOSCRIPT")


def _evalsha(sha: str, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    return encode(b"EVALSHA", sha, len(keys), *keys, *args)


def _handshake(username: str | None, password: str | None, db: int) -> list[bytes]:
    commands = []
    if password is not None:
        auth = (b"AUTH", username, password) if username else (b"AUTH", password)
        commands.append(encode(*auth))
    if db:
        commands.append(encode(b"SELECT", db))
    return commands


def _failure(exc: BaseException, what: str) -> Unavailable:
    if isinstance(exc, (socket.timeout, asyncio.TimeoutError, TimeoutError)):
        return Unavailable(f"TimeoutError: Timeout {what}")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Unavailable(f"ConnectionError: Error {what}: {detail or type(exc).__name__}")


class SyncGate:
    """At most `size` holders at once; one more waits up to `timeout` seconds, then
    `PoolExhausted`. Shared by a sync store's lane and its redis-py client.

    The places are `size` tokens in a `queue.SimpleQueue`: taking and giving back one is a
    C call each, where `threading.Semaphore` runs eight Python calls (its `Condition`) per
    command, ~6k instructions of a Flask or Django request's Redis read."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._pid = os.getpid()
        self._places = self._new_places()

    def _new_places(self) -> queue.SimpleQueue[None]:
        places: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(self.size):
            places.put(None)
        return places

    def __enter__(self) -> None:
        if self._pid != os.getpid():  # a child: the parent's holders are not ours
            self._pid = os.getpid()
            self._places = self._new_places()
        try:
            self._places.get(timeout=self.timeout)
        except queue.Empty:
            raise PoolExhausted("No connection available.") from None

    def __exit__(self, *exc_info: object) -> None:
        self._places.put(None)


#: What breaks a connection (asyncio.TimeoutError is an OSError only from Python 3.11 on).
_BROKEN = (OSError, hiredis.ProtocolError, asyncio.TimeoutError)


_GateT = TypeVar("_GateT")
_ConnT = TypeVar("_ConnT")


class _Lane(Generic[_GateT, _ConnT]):
    """What both lanes share: the address, the handshake, the gate that admits commands
    and the idle connections (`_lock` guards them where threads share them: the sync
    lane; the async one runs on one event loop and never takes it)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        gate: _GateT,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.timeout = timeout
        self.gate = gate
        self._handshake = _handshake(username, password, db)
        self._pid = os.getpid()
        self._idle: list[_ConnT] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}/{self.db}>"

    def _failed(self, exc: BaseException) -> Unavailable:
        return _failure(exc, f"reading from {self.host}:{self.port}")


class _Conn:
    __slots__ = ("parser", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = hiredis.Reader()

    def roundtrip(self, payload: bytes) -> Any:
        self.sock.sendall(payload)
        parser = self.parser
        reply = parser.gets()
        while reply is False:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the server")
            parser.feed(data)
            reply = parser.gets()
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class SyncLane(_Lane[SyncGate, _Conn]):
    """A pool of blocking connections, admitted by `gate` (see the module docstring)."""

    def call(self, *args: Arg) -> Any:
        """Send one command, return its reply (an error reply raised)."""
        return self._send(encode(*args))

    def evalsha(self, sha: str, script: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its SHA1, loading it first if the server does not know it."""
        try:
            return self._send(_evalsha(sha, keys, args))
        except hiredis.ReplyError as exc:
            if not is_noscript(exc):
                raise
        self._send(encode(b"SCRIPT", b"LOAD", script))
        return self._send(_evalsha(sha, keys, args))

    def _send(self, payload: bytes) -> Any:
        with self.gate:
            try:
                reply = self._attempt(payload, self._take)
            except Unavailable:
                reply = self._attempt(payload, self._open)  # once more, on a new connection
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def _attempt(self, payload: bytes, connection: Callable[[], _Conn]) -> Any:
        conn = connection()
        try:
            reply = conn.roundtrip(payload)
        except BaseException as exc:
            conn.close()  # a reply may still be on its way: never reuse it
            if isinstance(exc, _BROKEN):
                raise self._failed(exc) from None
            raise
        self._idle.append(conn)  # list.append is atomic: no lock to give back
        return reply

    def _take(self) -> _Conn:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._idle = []  # the parent's: forget them, do not close them
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _open(self) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), self.timeout)
        except OSError as exc:
            raise _failure(exc, f"connecting to {self.host}:{self.port}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        conn = _Conn(sock)
        try:
            for command in self._handshake:
                reply = conn.roundtrip(command)
                if isinstance(reply, hiredis.ReplyError):
                    raise reply
        except BaseException as exc:
            conn.close()
            if isinstance(exc, _BROKEN):
                raise self._failed(exc) from None
            raise
        return conn

    def close(self) -> None:
        """Close the idle connections (the lane stays usable, as redis-py's clients do)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _AsyncConn:
    __slots__ = ("parser", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()

    async def roundtrip(self, payload: bytes, timeout: float) -> Any:
        self.writer.write(payload)
        parser = self.parser
        reply = parser.gets()
        while reply is False:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("connection closed by the server")
            parser.feed(data)
            reply = parser.gets()
        return reply

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):  # RuntimeError: its event loop is closed
            pass


class AsyncLane(_Lane[AsyncGate, _AsyncConn]):
    """The asyncio twin of `SyncLane` (`asyncio.open_connection`), admitted by the store's
    `_Gate`, shared with its redis-py client."""

    async def call(self, *args: Arg) -> Any:
        """Send one command, return its reply (an error reply raised)."""
        return await self._send(encode(*args))

    async def evalsha(self, sha: str, script: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its SHA1, loading it first if the server does not know it."""
        try:
            return await self._send(_evalsha(sha, keys, args))
        except hiredis.ReplyError as exc:
            if not is_noscript(exc):
                raise
        await self._send(encode(b"SCRIPT", b"LOAD", script))
        return await self._send(_evalsha(sha, keys, args))

    async def _send(self, payload: bytes) -> Any:
        async with self.gate:
            try:
                reply = await self._attempt(payload, self._take)
            except Unavailable:
                reply = await self._attempt(payload, self._open)  # once more, on a new one
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    async def _attempt(
        self, payload: bytes, connection: Callable[[], Awaitable[_AsyncConn]]
    ) -> Any:
        conn = await connection()
        try:
            reply = await conn.roundtrip(payload, self.timeout)
        except BaseException as exc:
            conn.close()  # a reply may still be on its way: never reuse it
            if isinstance(exc, _BROKEN):
                raise self._failed(exc) from None
            raise
        self._idle.append(conn)
        return reply

    async def _take(self) -> _AsyncConn:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = []  # the parent's: forget them, do not close them
        if self._idle:
            return self._idle.pop()
        return await self._open()

    async def _open(self) -> _AsyncConn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise _failure(exc, f"connecting to {self.host}:{self.port}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _AsyncConn(reader, writer)
        try:
            for command in self._handshake:
                reply = await conn.roundtrip(command, self.timeout)
                if isinstance(reply, hiredis.ReplyError):
                    raise reply
        except BaseException as exc:
            conn.close()
            if isinstance(exc, _BROKEN):
                raise self._failed(exc) from None
            raise
        return conn

    async def aclose(self) -> None:
        """Close the idle connections (the lane stays usable, as redis-py's clients do)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except (OSError, RuntimeError):
                pass
