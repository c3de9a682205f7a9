"""Session lifecycle and security events, logged as OWASP's cheat sheet asks (CS-34).

Two loggers: `coatcheck.security` for input that failed a check (malformed, unknown,
expired, tampered or revoked IDs and tokens, CSRF failures) and `coatcheck.session` for the
normal lifecycle (created, login, rotated, logout, revoked). Every line names the event
and carries a salted hash of the session ID (`ids.log_hash`), never the ID or token itself;
the same hash is also attached as `extra={"session_hash": ...}` for structured handlers.
`Audit.error` reports a session that could not be saved (too large, not serialisable), on
`coatcheck.session` at error level, without a traceback. Each of the three also publishes
the event, as a typed `coatcheck.events.Event` with the same hash, to the manager's event
hub when it has subscribers (`Audit.emit` publishes one that has no log line); the log
lines do not depend on it.

`ThrottledLog` is for what happens on every request while something is down (a store
outage under `fail_open`, a client-side registry that cannot be written): it counts each
event and writes one line per `interval` at most, with the count since the line before, so
an outage gives a few lines a minute instead of one per request.

Importing this module imports neither `logging` nor `threading` (and `logging` imports
`threading`): an `Audit` looks its loggers up when it is built, and `ThrottledLog` is given
its logger and takes its lock from `_thread`, which the interpreter always has loaded.
"""

from __future__ import annotations

import _thread
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .events import Events
from .ids import log_hash

if TYPE_CHECKING:
    import logging

__all__ = ["Audit", "ThrottledLog"]

#: `logging`'s level numbers (fixed by its documentation), without importing it.
INFO, WARNING, ERROR = 20, 30, 40


class Audit:
    """Writes events with the manager's log salt. Replicas sharing a salt share hashes.

    `events` is the hub the events are also published to (a private one by default),
    `clock` stamps them and `mode` ("server", "client") names the manager's mode in them."""

    __slots__ = ("_salt", "_security", "_session", "clock", "events", "mode")

    def __init__(
        self,
        salt: bytes,
        events: Events | None = None,
        clock: Callable[[], float] | None = None,
        mode: str = "",
    ) -> None:
        import logging
        import time

        self._salt = salt
        self._security = logging.getLogger("coatcheck.security")
        self._session = logging.getLogger("coatcheck.session")
        self.events = events if events is not None else Events()
        self.clock = clock if clock is not None else time.time
        self.mode = mode

    def __repr__(self) -> str:
        return "<Audit>"

    def hash(self, value: str | None) -> str:
        return "-" if value is None else log_hash(self._salt, value)

    def security(self, event: str, value: str | None, detail: str = "") -> None:
        """A security event about the ID or token `value` (warning level)."""
        if self._security.isEnabledFor(WARNING):
            self._write(self._security, WARNING, event, value, detail)
        if self.events.subscribers:
            self.emit(event, value, "rejected", detail)

    def error(self, event: str, value: str | None, detail: str = "") -> None:
        """A session the request could not save (error level, no traceback)."""
        self._write(self._session, ERROR, event, value, detail)
        if self.events.subscribers:
            self.emit(event, value, "failed", detail)

    def lifecycle(self, event: str, value: str | None, detail: str = "", kind: str = "") -> None:
        """A normal lifecycle event about the session whose handle is `value`; `kind`: the
        event's kind when it is not the one its name implies (`coatcheck.events.kind_of`)."""
        if self._session.isEnabledFor(INFO):
            self._write(self._session, INFO, event, value, detail)
        if self.events.subscribers:
            self.emit(event, value, "ok", detail, kind=kind)

    def emit(
        self,
        event: str,
        value: str | None,
        outcome: str,
        detail: str = "",
        duration: float | None = None,
        kind: str = "",
    ) -> None:
        """Publish `event` about `value` (hashed, never itself) to the subscribers, without
        a log line; nothing when there are none. The hub queues it and returns at once."""
        events = self.events
        if events.subscribers:
            # Hashed, and made an `Event`, on the hub's thread (`Events.publish`).
            events.publish(
                (self.hash, self.mode, event, value, outcome, detail, duration, kind, self.clock())
            )

    def _write(
        self, logger: logging.Logger, level: int, event: str, value: str | None, detail: str
    ) -> None:
        """The one line format: the event, the hash of `value`, the detail; the event and the
        hash also as `extra` fields for structured handlers. (The level checks stay in the
        callers, so that a disabled level costs no call and no hash.)"""
        digest = self.hash(value)
        logger.log(
            level,
            "%s session=%s%s",
            event,
            digest,
            f" {detail}" if detail else "",
            extra={"event": event, "session_hash": digest},
        )


class ThrottledLog:
    """Counts one kind of event and logs it at most once per `interval` seconds.

    `record(now)` counts an event at time `now` (the manager's injected clock); the first
    event, and the first one `interval` seconds after the last line, write a line carrying
    how many events came since that line and the detail of the latest. `total` is the count
    since start, for an operator (or a metrics exporter) to read. A clock that goes back
    writes at once. Thread-safe: sync adapters record from many threads.
    """

    __slots__ = (
        "_last",
        "_lock",
        "_pending",
        "event",
        "interval",
        "level",
        "logger",
        "message",
        "total",
    )

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        message: str,
        *,
        level: int = WARNING,
        interval: float = 10.0,  # seconds
    ) -> None:
        self.logger = logger
        self.event = event
        self.message = message
        self.level = level
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._last = -math.inf
        self._lock = _thread.allocate_lock()  # (not `threading`: see the module docstring)

    def __repr__(self) -> str:
        return f"<ThrottledLog {self.event} total={self.total}>"

    def record(self, now: float, detail: str = "") -> bool:
        """Count one event; returns whether this call wrote the line."""
        with self._lock:
            self.total += 1
            self._pending += 1
            if self._last <= now < self._last + self.interval:
                return False
            count, self._pending, self._last = self._pending, 0, now
            total = self.total
        self.logger.log(
            self.level,
            "%s: %d since the last report, %d in all%s",
            self.message,
            count,
            total,
            f"; last: {detail}" if detail else "",
            extra={"event": self.event, "count": count, "total": total},
        )
        return True
