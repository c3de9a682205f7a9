"""`SessionLimit`: at most N live sessions per user (OWASP ASVS 7.1.2; Spring Session's
`maximumSessions`), and the one rule every store applies to enforce it.

The limit is checked by the store, in the same atomic operation that indexes the login's new
session under its user (`Store.admit`): a store lock, transaction or script that runs the
version check, counts the user's other live sessions, and either makes room or refuses,
before anyone else may add a session of that user. So two logins on two replicas sharing
one store cannot both take the last slot, and the user never has more than N live sessions
(expired ones do not count), whatever the interleaving.

"Oldest" is the session whose record says it began first (`created_at`: for a logged-in
session, the time of its login). The order is the one thing of the record format a store
reads (`created_of`); a record that does not decode counts as the oldest, so a damaged
record is the first to go rather than a slot held forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .exceptions import ConfigurationError
from .jsonio import loads

__all__ = ["SessionLimit", "created_of", "oldest_first"]

#: What a login beyond the limit does: end the user's oldest sessions, or be refused.
OnExceed = Literal["revoke-oldest", "refuse"]


@dataclass(frozen=True, slots=True)
class SessionLimit:
    """At most `max_sessions` live sessions per user; give it to
    `SessionManager(session_limit=...)`.

    On a login that would make one more, `on_exceed="revoke-oldest"` (the default) ends the
    user's oldest sessions to make room (client-side, through the revocation list, as
    `SessionAdmin.revoke` does), and `"refuse"` refuses the login: `SessionLimitReached`,
    which the adapters answer 403 with nothing stored.
    """

    max_sessions: int
    on_exceed: OnExceed = "revoke-oldest"

    def __post_init__(self) -> None:
        count = self.max_sessions
        if count.__class__ is not int or count < 1:
            raise ConfigurationError(
                f"SessionLimit(max_sessions=...) takes a whole number of sessions, at least 1, "
                f"not {count!r}"
            )
        if self.on_exceed not in ("revoke-oldest", "refuse"):
            raise ConfigurationError(
                f"SessionLimit(on_exceed=...) is 'revoke-oldest' or 'refuse', "
                f"not {self.on_exceed!r}"
            )

    @property
    def evicts(self) -> bool:
        """Whether a login beyond the limit ends the oldest sessions (else it is refused)."""
        return self.on_exceed == "revoke-oldest"


def created_of(data: bytes) -> float:
    """When the session stored as `data` began (its `c` field); minus infinity for a record
    that does not decode, so that it is the first to go."""
    try:
        created = loads(data)["c"]
    except (ValueError, TypeError, KeyError):
        return float("-inf")
    if created.__class__ is int or created.__class__ is float:
        return float(created)
    return float("-inf")


def oldest_first(others: list[tuple[str, bytes]], limit: int) -> list[str]:
    """Which of `others` (the user's other live sessions, as (key, record data) pairs) one
    more session under `limit` displaces, oldest first (ties broken by key); [] if there is
    room. A store that must not evict refuses when this is not empty."""
    excess = len(others) - limit + 1
    if excess <= 0:
        return []
    ordered = sorted(others, key=lambda pair: (created_of(pair[1]), pair[0]))
    return [key for key, _ in ordered[:excess]]
