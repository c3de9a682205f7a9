"""WebSockets that honour the session's end, and save what they write explicitly.

`SessionMiddleware` (`coatcheck.adapters.asgi`) opens the session of a WebSocket at its
handshake, as for any request, and hands every socket of an established session to its
`SessionWatcher`: one task per middleware (per process) that re-checks the sessions of the
open sockets every `interval` seconds, and closes the sockets of a session that has ended
with close code `CLOSE_CODE` (4401) and the reason `"session ended"` (revoked, logged out,
its record gone) or `"session expired"` (its idle or absolute deadline passed).

- Server side, a re-check is one `load` of the session's record per session (not per
  socket): a record that is gone, unreadable or expired ends the session. Another replica
  sharing the store sees the same record, so a revocation or logout anywhere closes the
  socket here within `interval` seconds.
- Client side, it is a lookup in this process's revocation list, brought up to date as on
  a request (every `ClientSide.staleness` seconds, or at once through the store's feed),
  and the token's own deadlines: within `interval + staleness` seconds.
- An open socket is not activity: it does not move the idle deadline (nothing is written
  while it is open). Server side the deadline is the record's, which HTTP requests in
  other tabs keep moving; client side it is the handshake token's.
- While the store cannot be reached, a re-check closes nothing (it is logged and tried
  again at the next interval).

Once closed by the watcher, the handler's `receive` answers `websocket.disconnect` with
code 4401 (Starlette raises `WebSocketDisconnect(4401)`), and its `send` raises
`SessionSocketClosed` (an `OSError`, as the ASGI spec asks of a send on a closed socket).

Writes are explicit: `await commit_websocket(websocket)` saves what the handler changed,
through the same commit path as an HTTP response (compare-and-set on the record, changes
merged onto a concurrent write, `WriteConflict` for a key read and changed meanwhile), and
raises `SessionWriteRefused` for a change that needs a new cookie or token, which a
WebSocket cannot set. A change never committed is logged when the handler returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..admin import arun
from ..drivers import _polling, acommit_session
from ..exceptions import ConfigurationError, SessionWriteRefused, StoreCorrupted, StoreError
from ..manager import SessionManager
from ..records import decode
from ..revocation import REVOKED
from ..routes import NO_SESSION
from ..serverside import ServerSide
from ..session import Session

__all__ = [
    "CLOSE_CODE",
    "EXPIRED",
    "ENDED",
    "SessionSocketClosed",
    "SessionWatcher",
    "commit_websocket",
]

logger = logging.getLogger("coatcheck")

#: The close code of a socket whose session ended (4000-4999: the application's; 4401
#: echoes HTTP's 401, "authenticate again").
CLOSE_CODE = 4401
#: The close reasons: the session was revoked or logged out (its record or token is no
#: longer valid), or it idled out or reached its absolute deadline.
ENDED = "session ended"
EXPIRED = "session expired"
#: Where the middleware leaves the manager in a WebSocket's scope, for `commit_websocket`.
MANAGER_KEY = "coatcheck.manager"
#: Set in the scope once the handshake's secret no longer opens the session (`_reopened`).
SPENT_KEY = "coatcheck.secret_renewed"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class SessionSocketClosed(OSError):
    """A WebSocket handler sent on a socket that `SessionWatcher` closed because its
    session ended. (An `OSError`, as the ASGI spec asks of a send on a closed socket.)"""


class _Socket:
    """One open WebSocket of an established session."""

    __slots__ = ("closed", "closing", "code", "last_seen", "manager", "reason", "send", "session")

    def __init__(self, manager: SessionManager, session: Session, send: Send) -> None:
        self.manager = manager
        self.session = session
        self.send = send
        self.closed = False  # a close was sent (by the watcher or by the handler)
        self.code = CLOSE_CODE
        self.reason = ""
        #: The latest `last_seen` a re-check read from the record (server side).
        self.last_seen = session.last_seen
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def close(self, reason: str) -> bool:
        """Close the socket for `reason`; False if it was closed already."""
        if self.closed:
            return False
        self.closed = True
        self.reason = reason
        if not self.closing.done():
            self.closing.set_result(None)
        try:
            await self.send({"type": "websocket.close", "code": CLOSE_CODE, "reason": reason})
        except (OSError, RuntimeError):  # the client went away first
            pass
        return True


class SessionWatcher:
    """Closes the open WebSockets whose session has ended; one per `SessionMiddleware`.

    `interval` (seconds, > 0) is the staleness bound: a session that ends is noticed at
    the next re-check, at most `interval` seconds later (client side, plus the mode's
    `staleness`). The task runs only while sockets are open. `closed` counts the sockets
    it closed; `check()` runs one re-check now (tests, or an application's own trigger).
    """

    def __init__(self, interval: float = 5.0) -> None:
        if not (isinstance(interval, int | float) and 0 < interval < float("inf")):
            raise ConfigurationError(
                f"websocket_recheck must be seconds, finite and > 0, not {interval!r}"
            )
        self.interval = float(interval)
        self.closed = 0
        self._sockets: set[_Socket] = set()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SessionWatcher(interval={self.interval:g}, open={len(self._sockets)})"

    @property
    def open_sockets(self) -> int:
        """How many sockets it watches now."""
        return len(self._sockets)

    async def serve(
        self,
        manager: SessionManager,
        session: Session,
        app: Callable[[Receive, Send], Awaitable[None]],
        receive: Receive,
        send: Send,
    ) -> None:
        """Run `app(receive, send)` (the WebSocket's handler) while watching `session`."""
        if session.is_new:  # nothing stored, nothing can end it: not watched
            await app(receive, send)
            return
        socket = _Socket(manager, session, send)
        closing = socket.closing

        async def watched_receive() -> Message:
            if not socket.closed:
                message = asyncio.ensure_future(receive())
                await asyncio.wait((message, closing), return_when=asyncio.FIRST_COMPLETED)
                if message.done():
                    return message.result()
                message.cancel()
            return {"type": "websocket.disconnect", "code": socket.code, "reason": socket.reason}

        async def watched_send(message: Message) -> None:
            if socket.closed:
                if message.get("type") == "websocket.close":
                    return  # the handler closing what the watcher closed: done already
                raise SessionSocketClosed(f"the WebSocket was closed: {socket.reason}")
            if message.get("type") == "websocket.close":
                socket.closed = True
            await send(message)

        self._sockets.add(socket)
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.ensure_future(self._run())  # (a test client's new loop)
        try:
            await app(watched_receive, watched_send)
        finally:
            self._sockets.discard(socket)
            if not closing.done():
                closing.cancel()
            if not self._sockets and self._task is not None:
                self._task.cancel()  # the last socket closed: no task sleeps on
                self._task = None

    async def _run(self) -> None:
        while self._sockets and self._task is asyncio.current_task():
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # never let one bad re-check stop the watching
                logger.exception("coatcheck: WebSocket session re-check failed")

    async def check(self) -> int:
        """Re-check the session of every open socket now; returns how many it closed."""
        groups: dict[tuple[int, str], list[_Socket]] = {}
        loop = asyncio.get_running_loop()
        for socket in list(self._sockets):
            if not socket.closed and socket.closing.get_loop() is loop:
                key = (id(socket.manager), socket.session.id)
                groups.setdefault(key, []).append(socket)
        synced: set[int] = set()
        closed = 0
        for sockets in groups.values():
            manager, session = sockets[0].manager, sockets[0].session
            client = manager.client_mode
            if session.mode == "client" and client is not None and id(manager) not in synced:
                synced.add(id(manager))
                client.listen(asynchronous=True)
                if client.async_revocations is not None:
                    await arun(_polling(manager, client.async_revocations))
            seen = max(socket.last_seen for socket in sockets)
            try:
                reason, seen = await ended(manager, session, seen)
            except StoreError as exc:
                logger.warning("coatcheck: WebSocket session re-check failed: %s", type(exc))
                continue
            for socket in sockets:
                socket.last_seen = seen
            if reason is not None:
                manager.audit.security("session.websocket_closed", session.id, f"reason={reason}")
                for socket in sockets:
                    if await socket.close(reason):
                        closed += 1
                        self.closed += 1
        return closed


async def ended(
    manager: SessionManager, session: Session, last_seen: float
) -> tuple[str | None, float]:
    """Why `session` (opened at a WebSocket's handshake) is over now, `ENDED` or `EXPIRED`
    (None if it is alive), and the latest `last_seen` known of it (`last_seen`: the one
    known before). Server side this loads its record; client side it reads this process's
    revocation list (the caller brings it up to date) and the handshake token's deadlines.

    A record that is gone is `EXPIRED` if the deadlines known of it have passed (the store
    drops a record when it expires), else `ENDED` (revoked or logged out)."""
    now = manager.clock()
    lifetimes = session.lifetimes
    if session.mode == "client":
        client = manager.client_mode
        if client is not None:
            revocations = client.revocation_list
            args = (session.id, session.user, session.created_at, session._state.generation, now)
            if revocations.check(*args) == REVOKED and not revocations.retired(*args):
                return ENDED, last_seen  # (retired: regenerate() replaced the token; it lives)
    else:
        store = manager.mode.async_store
        if store is None:  # (a server-side session always has its store)
            return None, last_seen
        record = await store.load(session.id)
        try:
            stored = None if record is None else decode(record.data)
        except StoreCorrupted:
            return ENDED, last_seen
        if stored is None or stored.credentials is None:
            expired = lifetimes.expiry(now=now, created_at=session.created_at, last_seen=last_seen)
            return (ENDED if expired is None else EXPIRED), last_seen
        lifetimes = manager.lifetimes
        if stored.persistent:
            lifetimes = lifetimes.of(True, stored.persistent_limits)
        last_seen = max(last_seen, stored.last_seen)
    if lifetimes.expiry(now=now, created_at=session.created_at, last_seen=last_seen):
        return EXPIRED, last_seen
    return None, last_seen


def _refusal(session: Session) -> str | None:
    """Why the changes to `session` cannot be saved from a WebSocket, or None."""
    state = session._state
    if session.mode == "client":
        return (
            "a client-side session is its token, and a WebSocket cannot hand out a new one: "
            "make this change over HTTP"
        )
    if session.is_new or state.migrated_sid is not None:
        return "a new session needs a cookie, which a WebSocket cannot set: create it over HTTP"
    if state.rotate in ("login", "regenerate"):
        return "login() and regenerate() hand out a new secret: call them over HTTP"
    if state.reissue:
        return "set_persistent() changes the cookie: call it over HTTP"
    if state.ended and (session.data() or session.user is not None):
        return "a session used after logout() is a new session: do that over HTTP"
    return None


def _unsaved(session: Session) -> bool:
    """Whether the handler changed `session` (not only coatcheck's own refresh or renewal)."""
    state = session._state
    return bool(
        session.changes()
        or state.ended
        or state.logout_others
        or state.reissue
        or state.rotate in ("login", "regenerate")
    )


def warn_unsaved(session: object) -> None:
    """Log a WebSocket's session changes that were never committed (the middleware calls
    it when the handler returns): they are dropped, but not silently."""
    if isinstance(session, Session) and _unsaved(session):
        logger.warning(
            "coatcheck: a WebSocket handler changed its session without "
            "`await commit_websocket(websocket)`: the changes were not saved"
        )


async def commit_websocket(connection: Any) -> Session:
    """Save what the WebSocket handler did to its session, and return the session to use
    from now on (also in `websocket.scope["session"]`, i.e. `websocket.session`).

    The write is the HTTP commit's: a compare-and-set on the session's record, rebased on
    a concurrent write (distinct keys both survive; `increment` / `append` re-applied),
    `WriteConflict` for a key read here and changed elsewhere since, `SessionVanished` if
    the session was logged out or revoked meanwhile, `StoreError` if the store is down.
    `logout()` ends the session (its record is deleted; every socket of it closes at the
    next re-check) and `logout_other_devices()` revokes the user's other sessions.

    No cookie can be set: the secret is not renewed from a WebSocket (a due renewal waits
    for the next HTTP request), and a change that needs a new cookie or token raises
    `SessionWriteRefused` with nothing saved: a new session, `login()`, `regenerate()`,
    `set_persistent()`, and every client-side write (the token is the session).
    """
    scope = getattr(connection, "scope", connection)  # (Starlette's WebSocket is a Mapping)
    if not isinstance(scope, MutableMapping):
        raise ConfigurationError("commit_websocket() takes a WebSocket or its ASGI scope")
    session = scope.get("session")
    manager = scope.get(MANAGER_KEY)
    if session is NO_SESSION:
        NO_SESSION.refuse()
    if scope.get("type") != "websocket" or not isinstance(session, Session):
        raise ConfigurationError(
            "commit_websocket() is for a WebSocket under coatcheck's SessionMiddleware"
        )
    if not isinstance(manager, SessionManager):
        raise ConfigurationError("no coatcheck manager in this WebSocket's scope")
    if not _unsaved(session):
        return session
    refusal = _refusal(session)
    if scope.get(SPENT_KEY):
        refusal = (
            "another request renewed the session's secret since this WebSocket opened: "
            "reconnect to write"
        )
    if refusal is not None:
        raise SessionWriteRefused(refusal)
    state = session._state
    if state.rotate == "renewal":
        state.rotate = None  # the next HTTP request renews the secret
    await acommit_session(manager, session, strict=True)
    nxt = await _reopened(manager, session)
    if nxt is None:
        scope[SPENT_KEY] = True
        return session
    scope["session"] = nxt
    return nxt


async def _reopened(manager: SessionManager, session: Session) -> Session | None:
    """The session as stored after a commit, opened with the handshake's secret: a Session
    is good for one commit, as it is for one request. A session that ended is returned as
    it is (another commit of it deletes nothing more). None if the secret no longer opens
    the record (another request renewed it longer ago than the grace window) or the record
    is gone: later writes are refused rather than presenting the secret as a reuse."""
    state = session._state
    mode = manager.mode
    if state.ended or not isinstance(mode, ServerSide) or state.request is None:
        return session
    record = await mode.async_store.load(session.id)
    now = manager.clock()
    if record is None or not mode.still_opens(state.secret, record, now):
        return None
    opening = manager.open(state.request)
    return mode.attach(manager.context, opening, record)
