"""Session lifetimes: idle timeout, absolute timeout and renewal, enforced together.

The defaults follow OWASP ASVS 5.0 level 2 (7.3.1, 7.3.2) and NIST SP 800-63B AAL2: a
session ends after 30 minutes without a request or 12 hours after it began, whichever
comes first, and its ID is rotated every 15 minutes so a stolen ID goes stale. Every check
is made on the server from timestamps the server wrote; nothing the client sends about time
is trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from .exceptions import ConfigurationError

__all__ = ["Expiry", "Lifetimes"]


class Expiry(str, Enum):
    """Why a session is over."""

    IDLE = "idle"
    ABSOLUTE = "absolute"


#: What `Lifetimes.assess` says of a live session: rotate its ID, or refresh `last_seen`.
RENEW = "renew"
TOUCH = "touch"


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long a session lives. All durations are in seconds.

    `renewal` rotates the session ID once the ID is that old; the old ID keeps resolving to
    the session for `grace` seconds so requests already in flight do not fork or lose it.
    `touch_interval` bounds how often a request that changed nothing writes, only to move
    `last_seen` forward; it must stay below `idle` or idle sessions would be cut short.
    """

    idle: float = 30 * 60  # 30 minutes
    absolute: float = 12 * 60 * 60  # 12 hours
    renewal: float | None = 15 * 60  # 15 minutes; None never rotates on its own
    grace: float = 10.0
    touch_interval: float = 60.0

    def __post_init__(self) -> None:
        for name in ("idle", "absolute", "renewal", "grace", "touch_interval"):
            value = getattr(self, name)
            if name == "renewal" and value is None:
                continue
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                raise ConfigurationError(f"Lifetimes.{name} must be a number of seconds >= 0")
        if self.idle <= 0 or self.absolute <= 0:
            raise ConfigurationError("Lifetimes.idle and Lifetimes.absolute must be > 0 seconds")
        if self.renewal is not None and not self.renewal > 0:
            raise ConfigurationError("Lifetimes.renewal must be > 0 seconds, or None to disable")
        if self.touch_interval >= self.idle:
            raise ConfigurationError(
                "Lifetimes.touch_interval must be shorter than Lifetimes.idle, "
                "or a session in use could expire between two refreshes of last_seen"
            )

    def assess(
        self, now: float, created_at: float, last_seen: float, rotated_at: float
    ) -> Expiry | str | None:
        """The rules, in one place: the `Expiry` if a session with these timestamps is over
        at `now`, else `RENEW` if its ID is due for rotation, else `TOUCH` if `last_seen`
        is due for a refresh, else None. (Positional: it runs on every request.)"""
        if now - created_at >= self.absolute:
            return Expiry.ABSOLUTE
        if now - last_seen >= self.idle:
            return Expiry.IDLE
        if self.renewal is not None and now - rotated_at >= self.renewal:
            return RENEW
        if now - last_seen >= self.touch_interval:
            return TOUCH
        return None

    def expiry(self, *, now: float, created_at: float, last_seen: float) -> Expiry | None:
        """Why a session with these timestamps is over at `now`, or None if it is alive."""
        due = self.assess(now, created_at, last_seen, now)
        return due if isinstance(due, Expiry) else None

    def ttl(self, *, now: float, created_at: float) -> float:
        """How long the store should keep a record written at `now`: until it idles out, or
        until its absolute deadline if that comes first."""
        return max(0.0, min(self.idle, created_at + self.absolute - now))
