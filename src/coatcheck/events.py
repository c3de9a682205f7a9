"""Typed session events, delivered to subscribers off the request path.

Every line `Audit` logs (`coatcheck.session`, `coatcheck.security`) is also an `Event`, and
so are a few things that have no line of their own (`store_error`: a store that failed a
load or a commit; `step_up`: a 401 from a freshness or assurance check). An `Event` carries
the salted hash of the session's handle that the log line carries (`ids.log_hash`, the
manager's `log_salt`), never the ID, the secret or the token.

Subscribers register on the manager's hub: `manager.events.subscribe(callback)`. The request
never waits for them: `Audit` puts the event on a bounded queue (`maxsize`) and returns; one
daemon thread per hub, started by the first `subscribe`, takes the events off in order and
calls each subscriber. A subscriber that raises is counted (`failed`) and logged on
`coatcheck.events` at most once per 10 seconds; one that blocks holds up only the thread,
and once the queue is full further events are dropped and counted (`dropped`), never
waited for. With no subscriber the hub costs the request one attribute test per event;
with one, a tuple put on a `SimpleQueue` (the thread hashes the handle and builds the
`Event`). A process forked after `subscribe` gets its own queue and thread.

`flush(timeout)` waits until every queued event is delivered (tests, and a process that
wants its last events out before it exits); `close()` stops the thread.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, cast

if TYPE_CHECKING:
    import queue
    import threading
    import weakref

    from .audit import ThrottledLog

__all__ = ["KINDS", "Event", "Events", "Subscriber", "kind_of"]

#: What happened. The `name` of an event is its log line's event (`session.rotated`); the
#: kind groups names into what an operator counts (`renewed`).
Kind = Literal[
    "created",
    "login",
    "logout",
    "renewed",
    "revoked",
    "expired",
    "csrf_rejected",
    "reuse_detected",
    "limit",
    "store_error",
    "migrated",
    "imported",
    "step_up",
    "invalid",
    "vanished",
    "conflict",
    "not_saved",
]
#: How it ended: "ok" for the normal lifecycle, "rejected" for input that failed a check (a
#: security event), "failed" for a session the request could not save or a store that failed.
Outcome = Literal["ok", "rejected", "failed"]

#: Log event name -> kind; a name not listed keeps the part after its first dot.
_KINDS: Final[dict[str, str]] = {
    "session.created": "created",
    "session.login": "login",
    "session.logout": "logout",
    "session.rotated": "renewed",
    "session.revoked": "revoked",
    "session.revoked_user": "revoked",
    "session.expired": "expired",
    "csrf.rejected": "csrf_rejected",
    "session.reuse": "reuse_detected",
    "session.limit": "limit",
    "session.migrated": "migrated",
    "session.imported": "imported",
    "session.unknown": "invalid",
    "session.malformed": "invalid",
    "session.corrupted": "invalid",
    "session.mismatch": "invalid",
    "token.malformed": "invalid",
    "token.invalid": "invalid",
    "token.revoked": "revoked",
    "session.vanished": "vanished",
    "session.conflict": "conflict",
    "session.deleted": "logout",  # (Django's `flush()` on logout; `SessionStore.delete`)
    "session.too_large": "not_saved",
    "session.unserialisable": "not_saved",
    "session.import_rejected": "invalid",
    "session.import_delete_failed": "store_error",
    "session.import_discarded": "invalid",
    "store.load_failed": "store_error",
    "store.commit_failed": "store_error",
    "session.step_up": "step_up",
}
#: Every kind an event may have.
KINDS: Final[frozenset[str]] = frozenset(Kind.__args__)  # type: ignore[attr-defined]


def kind_of(name: str, detail: str = "") -> str:
    """The kind of the log event `name` (`session.rotated` -> `renewed`); a token refused
    for being past a deadline (`token.invalid`, "... deadline") is `expired`."""
    if name == "token.invalid" and "deadline" in detail:
        return "expired"
    kind = _KINDS.get(name)
    return kind if kind is not None else name.partition(".")[2] or name


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a session. `session_hash` is the salted hash the log line
    carries ("-" when the event is about no one session); `mode` is "server" or "client";
    `time` the manager's clock; `detail` the log line's detail (hashes and counts only);
    `duration` seconds, for events that time something (None otherwise)."""

    kind: str
    outcome: str
    session_hash: str
    mode: str
    time: float
    name: str
    detail: str = ""
    duration: float | None = None


Subscriber = Callable[[Event], object]
#: What `Audit` queues: the parts of an event, hashed and built on the hub's thread:
#: (hash, mode, name, value, outcome, detail, duration, kind, time).
Pending = tuple[
    Callable[[str | None], str], str, str, "str | None", str, str, "float | None", str, float
]

_STOP: Final = object()


class Events:
    """A manager's event hub: subscribers, and the queue and thread that feed them.

    `maxsize` bounds the events waiting for delivery; beyond it they are dropped (counted
    in `dropped`), so a subscriber that blocks never makes a request wait or memory grow.
    `delivered` counts events handed to every subscriber, `failed` subscriber calls that
    raised. One hub may serve several managers (`SessionManager(events=...)`).

    What a request pays with a subscriber is one tuple and one `SimpleQueue.put` per event:
    the hub's thread hashes the session's handle and builds the `Event` (the handle waits
    in the queue in between, in this process's memory only; no subscriber ever sees it).
    """

    __slots__ = (
        "__weakref__",
        "_failures",
        "_lock",
        "_queue",
        "_thread",
        "delivered",
        "dropped",
        "failed",
        "instrument",
        "maxsize",
        "subscribers",
    )

    def __init__(self, *, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        #: The callbacks, in order; empty (falsy) when no one listens, which `Audit` tests.
        self.subscribers: tuple[Subscriber, ...] = ()
        #: Wraps the store of each request while set (`coatcheck.otel`): None, the default,
        #: leaves the drivers' store calls as they are.
        self.instrument: Callable[[object], object] | None = None
        self.dropped = self.delivered = self.failed = 0
        # The queue, the thread and the log come with the first subscriber: importing this
        # module or building a manager starts and imports nothing (see tests/test_imports).
        self._queue: queue.SimpleQueue[object] | None = None
        self._thread: threading.Thread | None = None
        self._failures: ThrottledLog | None = None
        self._lock = _thread.allocate_lock()

    def __repr__(self) -> str:
        return (
            f"<Events subscribers={len(self.subscribers)} dropped={self.dropped} "
            f"failed={self.failed}>"
        )

    def subscribe(self, callback: Subscriber) -> Subscriber:
        """Deliver every later event to `callback` (on the hub's thread); returns it, so
        this works as a decorator."""
        import logging
        import os
        import queue
        import weakref

        from .audit import ThrottledLog

        with self._lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._failures = ThrottledLog(
                    logging.getLogger("coatcheck.events"),
                    "events.subscriber_failed",
                    "an event subscriber raised",
                )
                # A forked worker (gunicorn --preload) inherits the hub but not its thread:
                # it gets an empty queue and a thread of its own.
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=partial(_forked, weakref.ref(self)))
            if self._thread is None:
                self._start()
            self.subscribers = (*self.subscribers, callback)
        return callback

    def _start(self) -> None:
        import threading

        self._thread = threading.Thread(
            target=self._run, args=(self._queue,), name="coatcheck-events", daemon=True
        )
        self._thread.start()

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop delivering to `callback` (events already queued may still reach it)."""
        with self._lock:
            self.subscribers = tuple(s for s in self.subscribers if s != callback)

    def publish(self, event: Event | Pending) -> None:
        """Queue `event` for the subscribers; never blocks (a full queue drops it). (`Audit`
        queues the parts of one, see `Pending`.)"""
        pending = self._queue
        if not self.subscribers or pending is None:
            return
        if pending.qsize() >= self.maxsize:  # (concurrent requests may pass it by a few)
            with self._lock:
                self.dropped += 1
            return
        pending.put(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call has been delivered; False if
        `timeout` (seconds) passed first, or no thread is running to deliver them."""
        import threading

        pending = self._queue
        if pending is None:
            return True
        if self._thread is None:
            return pending.qsize() == 0
        reached = threading.Event()
        pending.put(reached)  # (past the bound: the queue is first-in, first-out)
        return reached.wait(timeout)

    def close(self) -> None:
        """Deliver what is queued, then stop the thread (a later `subscribe` starts one)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and self._queue is not None:
            self._queue.put(_STOP)
            thread.join()

    def _run(self, pending: queue.SimpleQueue[object]) -> None:
        get = pending.get
        while True:
            item = get()
            if item is _STOP:
                return
            if isinstance(item, tuple):
                parts = cast(Pending, item)
                digest, mode, name, value, outcome, detail, duration, kind, now = parts
                event = Event(
                    kind or kind_of(name, detail),
                    outcome,
                    digest(value),
                    mode,
                    now,
                    name,
                    detail,
                    duration,
                )
            elif isinstance(item, Event):
                event = item
            else:  # a `flush` marker: everything before it is delivered
                item.set()  # type: ignore[attr-defined]
                continue
            for callback in self.subscribers:
                try:
                    callback(event)
                except Exception as exc:  # noqa: BLE001 - a subscriber's bug stays its own
                    with self._lock:
                        self.failed += 1
                    if self._failures is not None:
                        self._failures.record(event.time, f"{type(exc).__name__} in {callback!r}")
            with self._lock:
                self.delivered += 1


def _forked(ref: weakref.ReferenceType[Events]) -> None:
    """In a forked child: the parent's queue and thread are not this process's."""
    import queue

    hub = ref()
    if hub is None or hub._queue is None:
        return
    hub._lock = _thread.allocate_lock()  # (it may have been held by another thread)
    hub._queue = queue.SimpleQueue()
    hub._thread = None
    if hub.subscribers:
        hub._start()
