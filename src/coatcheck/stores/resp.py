"""A minimal RESP2 client for the hot path of the Redis session stores (private: only
`stores.redis` imports it).

Why: measured with `bench/redis_clients.py` (bench/RESULTS-redis-clients.md), redis-py
costs about 350k instructions per command through its asyncio client (with hiredis) and
163k through its sync client, more than all of coatcheck's own work per request; a
minimal client on the same hiredis parser costs about 120k (asyncio streams) and 20k
(blocking sockets). So `RedisStore` and `AsyncRedisStore` send their per-request commands
(`GET` for `load`, `EVALSHA` for `save` and `rotate`) through a lane of this module when
they are made from a plain `redis://` URL of one server; everything else stays on redis-py.

The sync lane (`SyncLane`, for Flask, Django and threads) is a pool of blocking TCP
connections (TCP_NODELAY), each one authenticated (`AUTH`) and on its database (`SELECT`)
as it opens: a call takes an idle connection (the most recently used first) or opens one,
sends one command, reads one reply with `hiredis.Reader`, and gives the connection back.
The async lane (`AsyncLane`) pipelines instead: one connection per event loop carries
every command in flight, written as they come, and Redis's replies, which come in order,
go to the waiters first in, first out (`_Pipe`). Concurrent requests then share writes,
reads and wake-ups, and no command pays for a timer task of its own. Admission goes
through a gate the store shares with its redis-py client: at most `max_connections`
commands in flight over both, and one more waits up to `pool_timeout` seconds, then
`PoolExhausted`.

Failures: connecting and every reply are bounded by `timeout` seconds (the async lane's
one watchdog timer checks the oldest command waiting). A connection that fails in any way
(refused, reset, closed, timed out, a protocol error) is closed and never reused, and each
command on it is tried once more on a new connection, as redis-py's clients do (their one
retry): a server restart breaks every idle connection, and a connection that an overloaded
process opened too slowly gets a second chance. A second failure is raised as
`Unavailable`; a server that is down refuses both attempts at once, so an outage is still
answered in about a millisecond. A write (`evalsha`) that timed out is the exception: the
server may be slow, not gone, and may still run it, so it is never sent again (the request
answers 503; `Session.increment` and the CAS rebase would otherwise apply it twice). A write
on a connection that was closed or reset is sent once more: at least once across a server
crash. A sync call interrupted while waiting closes its
connection (its reply may still come); an async waiter that is cancelled keeps its place
in the pipe, and its reply is read and dropped. An error reply is raised as the
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
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import hiredis

__all__ = [
    "AsyncLane",
    "PoolExhausted",
    "SyncGate",
    "SyncLane",
    "TimedOut",
    "Unavailable",
    "encode",
    "is_noscript",
    "sha1",
]

Arg = bytes | str | int


class Unavailable(Exception):
    """The server could not be reached or answered nothing usable in time (the message
    names the address and the failure, never a credential)."""


class TimedOut(Unavailable):
    """No reply within `timeout` seconds: the server may still run the command, so a
    write is not sent again (a read is, once)."""


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
        return TimedOut(f"TimeoutError: Timeout {what}")
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


class _Lane(Generic[_GateT]):
    """What both lanes share: the address, the handshake, the gate that admits commands,
    and the process they belong to (`_forget()` sets up their connections, at the start
    and in a forked child)."""

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
        self._forget()

    def _forget(self) -> None:
        """No connections: the parent's, in a child, are forgotten, not closed."""
        raise NotImplementedError

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


class SyncLane(_Lane[SyncGate]):
    """A pool of blocking connections, admitted by `gate` (see the module docstring);
    `_lock` guards the idle ones, which threads share."""

    def _forget(self) -> None:
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def call(self, *args: Arg) -> Any:
        """Send one command, return its reply (an error reply raised)."""
        return self._send(encode(*args))

    def evalsha(self, sha: str, script: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its SHA1, loading it first if the server does not know it. (A
        write: not sent again after a timeout.)"""
        try:
            return self._send(_evalsha(sha, keys, args), write=True)
        except hiredis.ReplyError as exc:
            if not is_noscript(exc):
                raise
        self._send(encode(b"SCRIPT", b"LOAD", script))
        return self._send(_evalsha(sha, keys, args), write=True)

    def _send(self, payload: bytes, *, write: bool = False) -> Any:
        with self.gate:
            try:
                reply = self._attempt(payload, self._take)
            except Unavailable as exc:
                if write and isinstance(exc, TimedOut):
                    raise  # it may still run: never twice
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
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._forget()
        with self._lock:
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


class _Pipe:
    """One connection that many commands share at once (auto-pipelining), as the
    `asyncio` protocol of its transport: each command is written as it comes, and the
    replies, which Redis sends in order, resolve the waiting futures first in, first out.

    A waiter that gives up (cancelled) leaves its place in the queue: its reply is read
    and dropped when it comes, so the connection stays in step. Once broken (closed,
    reset, a protocol error, or a command unanswered for `timeout` seconds: one watchdog
    timer checks the oldest), every waiter gets `LOST` and the pipe is never used again.
    Duck-typed as `asyncio.Protocol` (a compiled class cannot subclass it)."""

    __slots__ = (
        "closed",
        "failure",
        "loop",
        "parser",
        "timeout",
        "transport",
        "waiting",
        "watchdog",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        #: Each command written and not yet answered: its future, and when it was written.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.watchdog: asyncio.TimerHandle | None = None
        self.failure: BaseException | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        """Write one command; the future gets its reply, or `LOST`."""
        future = self.loop.create_future()
        if self.failure is not None or self.transport is None:
            future.set_result(LOST)
            return future
        now = self.loop.time()
        self.waiting.append((future, now))
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(now + self.timeout, self._check)
        self.transport.write(payload)
        return future

    def abort(self, exc: BaseException) -> None:
        """Break the pipe: every waiter gets `LOST`, the socket is closed."""
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _check(self) -> None:
        self.watchdog = None
        if self.waiting:
            deadline = self.waiting[0][1] + self.timeout
            if self.loop.time() >= deadline:
                self.abort(TimeoutError("no reply"))
            else:
                self.watchdog = self.loop.call_at(deadline, self._check)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        waiting, self.waiting = self.waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_result(LOST)

    # -- the asyncio.Protocol side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                future = self.waiting.popleft()[0]
                if not future.done():
                    future.set_result(reply)
                reply = parser.gets()
        except (hiredis.ProtocolError, IndexError) as exc:  # IndexError: a reply unasked for
            self.abort(exc)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionError("connection closed by the server"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:  # the payloads are small; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass


#: What a `_Pipe` answers a waiter whose command it could not complete.
LOST: Any = object()

_running_loop = asyncio.get_running_loop


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class AsyncLane(_Lane[AsyncGate]):
    """The asyncio twin of `SyncLane`, admitted by the store's `_Gate` (shared with its
    redis-py client): one connection carries every command in flight (`_Pipe`), so
    concurrent requests share its writes, reads and wake-ups instead of a connection and
    a timer task each."""

    def _forget(self) -> None:
        self._pipe: _Pipe | None = None
        self._opening: asyncio.Task[_Pipe] | None = None

    async def call(self, *args: Arg) -> Any:
        """Send one command, return its reply (an error reply raised)."""
        return await self._send(encode(*args))

    async def evalsha(self, sha: str, script: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its SHA1, loading it first if the server does not know it. (A
        write: not sent again after a timeout.)"""
        try:
            return await self._send(_evalsha(sha, keys, args), write=True)
        except hiredis.ReplyError as exc:
            if not is_noscript(exc):
                raise
        await self._send(encode(b"SCRIPT", b"LOAD", script))
        return await self._send(_evalsha(sha, keys, args), write=True)

    async def _send(self, payload: bytes, *, write: bool = False) -> Any:
        async with self.gate:
            pipe = self._pipe
            if pipe is None or pipe.failure is not None or pipe.loop is not _running_loop():
                pipe = await self._connect(pipe)
            reply = await pipe.request(payload)
            if reply is LOST:  # once more, on a new connection: not a write that timed out
                if write and isinstance(pipe.failure, TimeoutError):
                    raise self._failed(pipe.failure)
                pipe = await self._connect(pipe)
                reply = await pipe.request(payload)
                if reply is LOST:
                    raise self._failed(pipe.failure or ConnectionError("lost"))
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    async def _connect(self, stale: _Pipe | None) -> _Pipe:
        """A working pipe in place of `stale`: the current one if another command has
        replaced it already, else a new one (concurrent callers share its opening)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._forget()
        current = self._pipe
        loop = _running_loop()
        if current is not None and current is not stale and current.failure is None:
            if current.loop is loop:
                return current
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._open(loop))
            opening.add_done_callback(_retrieve)  # every waiter may have been cancelled
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Pipe:
        pipe = _Pipe(loop, self.timeout)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: pipe, self.host, self.port),  # type: ignore[type-var]
                self.timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise _failure(exc, f"connecting to {self.host}:{self.port}") from None
        for command in self._handshake:
            reply = await pipe.request(command)
            if reply is LOST:
                raise self._failed(pipe.failure or ConnectionError("lost"))
            if isinstance(reply, hiredis.ReplyError):
                pipe.abort(reply)
                raise reply
        self._pipe = pipe
        return pipe

    async def aclose(self) -> None:
        """Close the connection (the lane stays usable, as redis-py's clients do: the next
        command opens a new one). Commands still waiting on it fail as `Unavailable`."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None and pipe.transport is not None and pipe.loop is _running_loop():
            pipe.transport.close()
            await pipe.closed
