"""The demo's live counters: a subscriber that counts the manager's events by kind.

The admin view shows them (and `GET /api/metrics` serves them as JSON), so a visitor sees
each login, logout, renewal and revocation counted as it happens, by the same event API an
operator would feed a metrics system with (`coatcheck.events`, docs/observability.md).
"""

from __future__ import annotations

import threading
from collections import Counter

from ..events import Event
from ..manager import SessionManager

__all__ = ["EventCounts"]


class EventCounts:
    """Counts `manager`'s events by kind, from the event hub's thread."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        manager.events.subscribe(self.count)

    def __repr__(self) -> str:
        return f"<EventCounts {dict(self._counts)}>"

    def count(self, event: Event) -> None:
        with self._lock:
            self._counts[event.kind] += 1

    def snapshot(self) -> dict[str, object]:
        """The counts so far, and how many events the hub dropped (none, unless a burst
        outran the counting thread)."""
        with self._lock:
            counts = dict(sorted(self._counts.items()))
        return {"events": counts, "dropped": self.manager.events.dropped}
