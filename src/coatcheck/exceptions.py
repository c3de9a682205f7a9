"""Every exception coatcheck raises, in one tree.

```
CoatcheckError
├── ConfigurationError       bad settings, raised at construction; the message says how to fix it
├── SessionDataError         a session value cannot be stored (not JSON-serialisable)
├── SessionTooLarge          the session does not fit the transport
├── CSRFError                an unsafe request failed the cross-origin check
├── SessionRequired          the route needs an established session and the request has none
│   └── StepUpRequired       ... or a recent login, or a higher assurance level (RFC 9470)
├── SessionExcluded          code used the session of a route excluded from sessions
├── WriteConflict            a write computed from a value another request has since replaced
├── SessionVanished          a strict commit found its record gone (logged out or revoked meanwhile)
├── SessionLimitReached      a login beyond the user's session limit, refused (`SessionLimit`)
├── SessionWriteRefused      a WebSocket write that needs a new cookie or token, refused
├── InvalidToken             a token or session ID failed verification (never leaves coatcheck)
└── StoreError               the session store failed
    ├── StoreUnavailable     it could not be reached or timed out; nothing was saved
    └── StoreCorrupted       it returned bytes that are not a coatcheck record
```

`InvalidToken` is caught inside the core: a request carrying a tampered, expired or malformed
token gets a fresh anonymous session and a `coatcheck.security` log line, never an exception.
Messages never contain a token, a session ID or key material.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CSRFError",
    "CoatcheckError",
    "ConfigurationError",
    "InvalidToken",
    "SessionDataError",
    "SessionExcluded",
    "SessionLimitReached",
    "SessionRequired",
    "SessionTooLarge",
    "SessionVanished",
    "SessionWriteRefused",
    "StepUpRequired",
    "StoreCorrupted",
    "StoreError",
    "StoreUnavailable",
    "WriteConflict",
]


class CoatcheckError(Exception):
    """Base class of every exception raised by coatcheck."""


class ConfigurationError(CoatcheckError, ValueError):
    """A setting is missing or invalid. Raised at construction, never per request."""


class SessionDataError(CoatcheckError, TypeError):
    """A value put in the session cannot be serialised to JSON."""


class SessionTooLarge(CoatcheckError):
    """The session is larger than the transport can carry."""


class CSRFError(CoatcheckError):
    """An unsafe request came from another origin without the session's CSRF token."""


class WriteConflict(CoatcheckError):
    """The request changed a key it had read, and another request has changed that key
    since: applying this write would silently undo an acknowledged one. Nothing of the
    request's session changes is stored; adapters answer 409 Conflict (the client may retry
    the request). Counters and collections avoid conflicts with `Session.increment` and
    `Session.append`, which are re-applied as operations instead."""


class SessionVanished(CoatcheckError):
    """A strict commit (`commit_session(..., strict=True)`) found the session's record
    gone: another request logged it out, or an admin revoked it, while this one ran. The
    default commit drops such a write silently instead (the session is over either way);
    Django's session API expects an error here (`UpdateError`)."""


class SessionLimitReached(CoatcheckError):
    """A login would have given its user more live sessions than `SessionLimit` allows, and
    the limit refuses such logins (`on_exceed="refuse"`). Nothing of the request's session
    was stored: the user's other sessions are untouched, and the client keeps what it had.
    Adapters answer 403 with the header `X-Coatcheck-Refused: session-limit`; an
    application that commits itself may catch it and show its own page."""

    def __init__(self, max_sessions: int) -> None:
        super().__init__(f"the user already has the maximum of {max_sessions} live sessions")
        self.max_sessions = max_sessions


class SessionRequired(CoatcheckError):
    """Raised by `require_session`: the route needs an established session and the request
    has none. `SessionMiddleware` answers it with `401 Unauthorized` and `headers`."""

    status_code = 401

    def __init__(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__("this route requires a session")
        self.headers = list(headers)


class StepUpRequired(SessionRequired):
    """Raised by `require_session(..., max_age=..., assurance=...)` and the adapters'
    `recent_login_required`: the route needs a user who logged in (or re-authenticated)
    recently enough, at a high enough assurance level, and the session's latest
    authentication is not that (`coatcheck.assurance`).

    `reason` says what is missing, for the application or the JavaScript client to act on:
    `"login_required"` (no user), `"login_too_old"` (older than `max_age` seconds) or
    `"assurance_too_low"` (a level below the route's); `max_age` and `acr_values` (the
    levels that satisfy the route, space-separated, lowest first) are what the route asks.
    Adapters answer `401 Unauthorized` with `headers` (a `WWW-Authenticate` challenge
    modelled on RFC 9470) and `body`, a small JSON object of the four. Neither names the
    user, the session or its secret.
    """

    def __init__(
        self,
        reason: str,
        max_age: int | None,
        acr_values: str | None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(headers)
        self.args = (f"this route requires a recent login ({reason})",)
        self.reason = reason
        self.max_age = max_age
        self.acr_values = acr_values

    @property
    def detail(self) -> dict[str, str | int | None]:
        """What the 401's JSON body holds: `error`, `reason`, `max_age`, `acr_values`."""
        return {
            "error": "insufficient_user_authentication",
            "reason": self.reason,
            "max_age": self.max_age,
            "acr_values": self.acr_values,
        }

    @property
    def body(self) -> bytes:
        """The 401's JSON body: `detail`, compact."""
        import json

        return json.dumps(self.detail, separators=(",", ":")).encode()


class SessionExcluded(CoatcheckError, AttributeError):
    """Code used the session of a route excluded from sessions (`exclude=[...]` or
    `no_session`, `coatcheck.routes`): the route has none, by configuration. A programming
    error (a 500), never a silently unsaved session. It is an `AttributeError` as well, so
    that code probing for a session (`getattr(request.session, "accessed", None)`, as
    Django's own session middleware does) finds none."""


class InvalidToken(CoatcheckError):
    """A token or session ID is malformed, tampered with, expired or unknown.

    The message names the failed check for the security log only; it is never shown to the
    client, so a client cannot learn which check failed.
    """


class StoreError(CoatcheckError):
    """The session store failed."""


class StoreUnavailable(StoreError):
    """The store could not be reached or did not answer in time. Nothing was saved."""


class StoreCorrupted(StoreError):
    """The store returned a record that coatcheck cannot read."""


class SessionWriteRefused(CoatcheckError):
    """A WebSocket handler asked to save a session change that needs a new cookie or token
    (a new session, `login()`, `regenerate()`, `set_persistent()`, or any client-side
    write), which no WebSocket message can set. Nothing was saved; make the change over
    HTTP (`coatcheck.adapters.websocket.commit_websocket`, docs/websockets.md)."""
