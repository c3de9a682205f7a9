"""Session lifetimes: idle timeout, absolute timeout and renewal, enforced together.

The defaults follow OWASP ASVS 5.0 level 2 (7.3.1, 7.3.2) and NIST SP 800-63B AAL2: a
session ends after 30 minutes without a request or 12 hours after it began, whichever
comes first, and its ID is rotated every 15 minutes so a stolen ID goes stale. Every check
is made on the server from timestamps the server wrote; nothing the client sends about time
is trusted.

A persistent ("remember me") session may have limits of its own: `persistent_absolute` and
`persistent_idle` in the configuration, which `Session.set_persistent(absolute=...,
idle=...)` may shorten for one session but never lengthen (`Lifetimes.of` takes the smaller
of the two, on every request, so lowering the configuration also shortens the sessions that
began before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["Expiry", "Lifetimes"]

#: The keys a session's `set_persistent` limits (absolute, idle) are written under: in a
#: server-side record, and in a client-side token's claims.
RECORD_LIMITS = ("pa", "pi")
TOKEN_LIMITS = ("pla", "pli")


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
    #: A persistent session's own limits (None: the same as `absolute` / `idle`).
    persistent_absolute: float | None = None
    persistent_idle: float | None = None
    #: `of(True)`: these lifetimes with the persistent limits in place (self if none).
    _persistent: Lifetimes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "idle",
            "absolute",
            "renewal",
            "grace",
            "touch_interval",
            "persistent_absolute",
            "persistent_idle",
        ):
            value = getattr(self, name)
            if value is None and name in ("renewal", "persistent_absolute", "persistent_idle"):
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
        if self.persistent_absolute is not None and not self.persistent_absolute > 0:
            raise ConfigurationError("Lifetimes.persistent_absolute must be > 0 seconds")
        if self.persistent_idle is not None and self.touch_interval >= self.persistent_idle:
            raise ConfigurationError(
                "Lifetimes.persistent_idle must be longer than Lifetimes.touch_interval, "
                "or a session in use could expire between two refreshes of last_seen"
            )
        if self.persistent_absolute is not None or self.persistent_idle is not None:
            persistent = Lifetimes(
                self.persistent_idle if self.persistent_idle is not None else self.idle,
                (
                    self.persistent_absolute
                    if self.persistent_absolute is not None
                    else self.absolute
                ),
                self.renewal,
                self.grace,
                self.touch_interval,
            )
            object.__setattr__(self, "_persistent", persistent)

    @property
    def longest(self) -> float:
        """The longest absolute limit any session can have (seconds): how long a
        revocation entry must outlive the tokens it covers."""
        if self.persistent_absolute is None:
            return self.absolute
        return max(self.absolute, self.persistent_absolute)

    def of(self, persistent: bool, limits: tuple[float, float] | None = None) -> Lifetimes:
        """The lifetimes of one session: these, or for a persistent one the persistent
        limits, each shortened to what the session asked for at `set_persistent`
        (`limits`: its absolute and idle, `math.inf` for "as configured"). The request's
        own choice can only shorten what the configuration allows, never lengthen it.
        (Positional: it runs on every request; the common cases allocate nothing.)"""
        if not persistent:
            return self
        base = self._persistent or self
        if limits is None:
            return base
        absolute, idle = limits
        if absolute >= base.absolute and idle >= base.idle:
            return base
        return replace(
            base,
            absolute=min(absolute, base.absolute),
            idle=min(idle, base.idle),
            # A shorter idle than the touch interval: refresh on every request instead.
            touch_interval=min(base.touch_interval, idle / 2),
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


def put_limits(
    doc: dict[str, Any], limits: tuple[float, float] | None, keys: tuple[str, str]
) -> None:
    """Write a persistent session's `limits` (`Session.persistent_limits`, the argument
    of `Lifetimes.of`) into `doc` under `keys` (`RECORD_LIMITS` or `TOKEN_LIMITS`): each
    one it set, leaving out the ones "as configured" (`math.inf`) and None."""
    if limits is not None:
        if limits[0] != math.inf:
            doc[keys[0]] = limits[0]
        if limits[1] != math.inf:
            doc[keys[1]] = limits[1]


def read_limits(doc: dict[str, Any], keys: tuple[str, str]) -> tuple[float, float]:
    """The limits `put_limits` wrote into `doc` under `keys`, one absent (or null) being
    `math.inf`. `ValueError` if either is not a number of seconds > 0 (a bool, a string,
    not finite), `OverflowError` for an integer beyond float range."""
    return (_limit(doc.get(keys[0])), _limit(doc.get(keys[1])))


def _limit(value: object) -> float:
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError
    return seconds
