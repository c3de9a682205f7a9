"""Recent login and assurance level: what a route may ask of the session's latest
authentication, sans-IO, for every adapter.

A login records when (`Session.authenticated_at`) and how strongly (`Session.assurance`,
e.g. `"aal2"` after a second factor) the user proved who they are; `reauthenticate()`
records a later proof (a step-up) without a new login. Both are written by the server
only: into the record (server side) or the signed token (client side, as OIDC's
`auth_time` and `acr`), so a client cannot claim a later login or a higher level.

A route asks for a `Requirement`: a latest authentication at most `max_age` seconds old,
at level `assurance` or above on a `Ladder` (default `DEFAULT_LADDER`, NIST SP 800-63B's
`("aal1", "aal2", "aal3")`). `unmet` says why a session does not satisfy it, and `require`
raises `StepUpRequired`, which adapters answer with a 401 whose `WWW-Authenticate`
challenge follows RFC 9470 (OAuth 2.0 Step-Up Authentication Challenge)::

    WWW-Authenticate: Bearer error="insufficient_user_authentication",
        error_description="login_too_old", max_age="300", acr_values="aal2 aal3"

The scheme is the header transport's (`Bearer`); a cookie-carried session gets `Session`
(no registered HTTP scheme describes a cookie). A level the ladder does not know (a
typo, or the default `"aal1"` under a ladder of other names) ranks below every level of
it: it never satisfies an assurance requirement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from .exceptions import ConfigurationError, StepUpRequired
from .session import Session
from .transports import Header

__all__ = [
    "ASSURANCE_TOO_LOW",
    "DEFAULT_LADDER",
    "LOGIN_REQUIRED",
    "LOGIN_TOO_OLD",
    "Ladder",
    "Requirement",
    "challenge",
    "require",
    "unmet",
]

#: Why a session does not satisfy a requirement (`StepUpRequired.reason`).
LOGIN_REQUIRED = "login_required"
LOGIN_TOO_OLD = "login_too_old"
ASSURANCE_TOO_LOW = "assurance_too_low"


class Ladder:
    """Assurance levels, lowest first: a level satisfies a requirement for itself and for
    every level below it. Names are non-empty strings without spaces or quotes (they go
    into a `WWW-Authenticate` header, space-separated)."""

    __slots__ = ("_rank", "levels")

    def __init__(self, levels: Iterable[str]) -> None:
        names = tuple(levels)
        if not names or len(set(names)) != len(names):
            raise ConfigurationError("an assurance Ladder needs distinct levels, lowest first")
        for name in names:
            if not isinstance(name, str) or not name or any(c in name for c in ' "\\,'):
                raise ConfigurationError(
                    "assurance levels are non-empty str without spaces, quotes or commas"
                )
        self.levels = names
        self._rank = {name: i for i, name in enumerate(names)}

    def __repr__(self) -> str:
        return f"Ladder({self.levels!r})"

    def rank(self, level: str | None) -> int:
        """The position of `level` on the ladder; -1 for None or a level it does not know."""
        return -1 if level is None else self._rank.get(level, -1)

    def satisfying(self, required: str) -> tuple[str, ...]:
        """The levels that satisfy `required`: it and those above it, lowest first."""
        return self.levels[self._known(required) :]

    def _known(self, level: str) -> int:
        rank = self.rank(level)
        if rank < 0:
            raise ConfigurationError(
                f"assurance level {level!r} is not on the ladder {list(self.levels)!r}"
            )
        return rank


DEFAULT_LADDER = Ladder(("aal1", "aal2", "aal3"))


class Requirement(NamedTuple):
    """What a route asks of the session's latest authentication: a logged-in user, who
    authenticated at most `max_age` seconds ago (None: any time), at level `assurance` or
    above on `ladder` (None: any level). Build it with `Requirement.of`, which checks it."""

    max_age: int | None = None
    assurance: str | None = None
    ladder: Ladder = DEFAULT_LADDER

    @classmethod
    def of(
        cls,
        max_age: float | None = None,
        assurance: str | None = None,
        ladder: Ladder = DEFAULT_LADDER,
    ) -> Requirement:
        """A checked requirement: `ConfigurationError` for a `max_age` that is not a number
        of seconds >= 0 (a fraction is dropped: RFC 9470's `max_age` is whole seconds), or
        a level that is not on `ladder` (raised where the route is declared, not per
        request)."""
        seconds: int | None = None
        if max_age is not None:
            if (
                isinstance(max_age, bool)
                or not isinstance(max_age, (int, float))
                or not math.isfinite(max_age)
                or max_age < 0
            ):
                raise ConfigurationError("max_age is a number of seconds >= 0, e.g. 300")
            seconds = int(max_age)
        if not isinstance(ladder, Ladder):
            raise ConfigurationError("ladder= takes a coatcheck.assurance.Ladder")
        if assurance is not None:
            ladder.satisfying(assurance)  # raises for a level the ladder does not know
        return cls(seconds, assurance, ladder)

    @property
    def acr_values(self) -> str | None:
        """The levels that satisfy the requirement, space-separated, lowest first (RFC
        9470's `acr_values`); None without an assurance requirement."""
        if self.assurance is None:
            return None
        return " ".join(self.ladder.satisfying(self.assurance))

    def unmet(self, session: Session) -> str | None:
        """Why `session` does not satisfy this requirement, or None if it does. No user
        (or a session that ended or was never established) is `LOGIN_REQUIRED`; a level
        below the required one `ASSURANCE_TOO_LOW` (checked first: a step-up at the
        required level also makes the login recent); an authentication older than
        `max_age` `LOGIN_TOO_OLD`. The answer depends on the session: it counts as read
        (the response varies on it, `Vary`)."""
        session._accessed = True
        if session.user is None or session.ended or session.authenticated_at is None:
            return LOGIN_REQUIRED
        required = self.assurance
        if required is not None:
            ladder = self.ladder
            if ladder.rank(session.assurance) < ladder.rank(required):
                return ASSURANCE_TOO_LOW
        max_age = self.max_age
        if max_age is not None and not session.is_fresh(max_age):
            return LOGIN_TOO_OLD
        return None

    def check(self, session: Session) -> Session:
        """`session` if it satisfies this requirement; otherwise raise `StepUpRequired`
        with the reason and the challenge (see `challenge`)."""
        reason = self.unmet(session)
        if reason is None:
            return session
        acr_values = self.acr_values
        headers = challenge(session, reason, self.max_age, acr_values)
        raise StepUpRequired(reason, self.max_age, acr_values, headers)


def unmet(
    session: Session,
    *,
    max_age: float | None = None,
    assurance: str | None = None,
    ladder: Ladder = DEFAULT_LADDER,
) -> str | None:
    """Why `session` does not satisfy the requirement (see `Requirement.unmet`): None if
    it does, else `"login_required"`, `"login_too_old"` or `"assurance_too_low"`."""
    return Requirement.of(max_age, assurance, ladder).unmet(session)


def require(
    session: Session,
    *,
    max_age: float | None = None,
    assurance: str | None = None,
    ladder: Ladder = DEFAULT_LADDER,
) -> Session:
    """`session` if it satisfies the requirement; otherwise raise `StepUpRequired`, which
    every adapter answers with a 401 (see `Requirement.check`)."""
    return Requirement.of(max_age, assurance, ladder).check(session)


def challenge(
    session: Session, reason: str, max_age: int | None, acr_values: str | None
) -> list[tuple[str, str]]:
    """The `WWW-Authenticate` header of a step-up 401 for `session` (RFC 9470, section 3):
    `error="insufficient_user_authentication"`, the reason as `error_description`, and the
    route's `max_age` and `acr_values` when it has them. The scheme is the request's
    header transport's, or `Session` for a cookie. Names no user, session or secret."""
    transport = session.transport
    scheme = "Session"
    if isinstance(transport, Header) and transport.scheme is not None:
        scheme = transport.scheme
    params = f'error="insufficient_user_authentication", error_description="{reason}"'
    if max_age is not None:
        params += f', max_age="{max_age}"'
    if acr_values is not None:
        params += f', acr_values="{acr_values}"'
    return [("www-authenticate", f"{scheme} {params}")]
