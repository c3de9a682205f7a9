"""What every adapter answers when a request's session cannot be loaded, checked or
committed: one table, so that ASGI, WSGI, Flask and Django answer alike and only render it.

At load, a store that is down gives `UNREACHABLE` (503), or with `fail_open` an anonymous
session that is never saved (`SessionManager.anonymous`); a failed CSRF check gives
`FORBIDDEN` (403), and `SessionRequired` from the application `unauthorized` (401). At
commit (`StoreFailures.at_commit`):

| raised by the commit | answer                                | logged                          |
|----------------------|---------------------------------------|---------------------------------|
| `WriteConflict`      | 409 Conflict                          | `session.conflict` (manager)    |
| `SessionLimitReached`| 403 Forbidden, `X-Coatcheck-Refused:  | `session.limit` (driver,        |
|                      | session-limit`                        | security log)                   |
| `SessionTooLarge`    | 413 Content Too Large                 | `session.too_large`, error      |
| `SessionDataError`   | 500 Internal Server Error             | `session.unserialisable`, error |
| `StoreError`         | 503, or with `fail_open` the app's    | `ThrottledLog`: once per 10 s,  |
|                      | response, the write dropped           | with the count                  |

Every answer replaces the application's response before it leaves: a short `text/plain`
body, `Cache-Control: no-store`, no `Set-Cookie` (nothing of the request's session was
saved, so the client keeps the cookie it has). Error lines carry the session's salted hash
(`manager.audit`), never a traceback; the exception never leaves the adapter.
"""

from __future__ import annotations

import logging

from ..assurance import Requirement
from ..audit import ThrottledLog
from ..exceptions import (
    SessionDataError,
    SessionLimitReached,
    SessionRequired,
    SessionTooLarge,
    StepUpRequired,
    StoreError,
    WriteConflict,
)
from ..manager import SessionManager
from ..responses import Answer
from ..session import Session

__all__ = [
    "COMMIT_ERRORS",
    "COMMIT_FAILURES",
    "FORBIDDEN",
    "UNAVAILABLE",
    "UNREACHABLE",
    "Answer",
    "CommitError",
    "StoreFailures",
    "refusal",
    "store_failure_logs",
    "unauthorized",
    "unmet",
    "unsaved_headers",
]

log = logging.getLogger("coatcheck")

#: What a commit raises that is not the store's fault; `refusal` answers each.
COMMIT_ERRORS = (WriteConflict, SessionTooLarge, SessionDataError, SessionLimitReached)
CommitError = WriteConflict | SessionTooLarge | SessionDataError | SessionLimitReached
#: Everything a commit raises that an adapter answers: the store's failures too.
COMMIT_FAILURES = (StoreError, *COMMIT_ERRORS)


UNREACHABLE = Answer(503, "Service Unavailable", b"Service Unavailable: session store unreachable")
UNAVAILABLE = Answer(503, "Service Unavailable", b"Service Unavailable: session not saved")
FORBIDDEN = Answer(403, "Forbidden", b"Forbidden: cross-origin request rejected (CSRF)")
CONFLICT = Answer(
    409,
    "Conflict",
    b"Conflict: the session was changed by another request meanwhile; nothing was saved. "
    b"Retry the request.",
)
TOO_LARGE = Answer(
    413,
    "Content Too Large",
    b"Content Too Large: the session is too large to keep; nothing was saved.",
)
#: A login refused by the session limit (`SessionLimit(on_exceed="refuse")`): the header
#: says why, for a client to tell it from a CSRF refusal without reading the body.
LIMIT_REACHED = Answer(
    403,
    "Forbidden",
    b"Forbidden: this account has reached its limit of concurrent sessions; log out of "
    b"another device first. Nothing was saved.",
    (("x-coatcheck-refused", "session-limit"),),
)
NOT_SAVED = Answer(500, "Internal Server Error", b"Internal Server Error: session not saved.")


def refusal(manager: SessionManager, session: Session, exc: CommitError) -> Answer:
    """The answer to `exc`, raised by the commit of `session`, logged once. (A conflict is
    logged by the manager, where it is found, as `session.conflict`.)"""
    if isinstance(exc, WriteConflict):
        return CONFLICT
    if isinstance(exc, SessionLimitReached):
        return LIMIT_REACHED  # (logged by the driver, where it is found, as `session.limit`)
    reason = f"reason={str(exc)[:160]!r}"
    if isinstance(exc, SessionTooLarge):
        manager.audit.error("session.too_large", session.id, reason)
        return TOO_LARGE
    manager.audit.error("session.unserialisable", session.id, reason)
    return NOT_SAVED


class StoreFailures:
    """An adapter's answers to a store that fails: `fail_open` or not, and the two counters
    (`load`, `commit`), each logged once per interval (not per request: an outage would
    flood the log)."""

    def __init__(self, fail_open: bool) -> None:
        self.fail_open = fail_open
        self.load, self.commit = store_failure_logs(fail_open)

    def at_load(self, manager: SessionManager, exc: StoreError) -> bool:
        """Count `exc`; whether the request is served all the same, with the anonymous
        session of `manager.anonymous` (else the adapter answers `UNREACHABLE`)."""
        self.load.record(manager.clock(), str(exc))
        manager.audit.emit("store.load_failed", None, "failed", type(exc).__name__)
        return self.fail_open

    def at_commit(
        self, manager: SessionManager, session: Session, exc: StoreError | CommitError
    ) -> Answer | None:
        """What replaces the application's response when the commit of `session` raised
        `exc`; None when the response goes out anyway, unsaved, with `unsaved_headers` (a
        store failure under `fail_open`)."""
        if not isinstance(exc, StoreError):
            return refusal(manager, session, exc)
        self.commit.record(manager.clock(), str(exc))
        manager.audit.emit("store.commit_failed", session.id, "failed", type(exc).__name__)
        return None if self.fail_open else UNAVAILABLE


def step_up(manager: SessionManager, session: Session, exc: SessionRequired) -> None:
    """Publish the `step_up` event of a 401 from a freshness or assurance check (no log
    line: an unmet requirement is the application's flow, not an attack)."""
    if isinstance(exc, StepUpRequired):
        manager.audit.emit("session.step_up", session.id, "rejected", f"reason={exc.reason}")


def unauthorized(exc: SessionRequired) -> Answer:
    """The 401 for a route that raised `SessionRequired`, with its `WWW-Authenticate`; for
    `StepUpRequired`, its JSON body (reason, `max_age`, `acr_values`)."""
    if isinstance(exc, StepUpRequired):
        return Answer(401, "Unauthorized", exc.body, tuple(exc.headers), "application/json")
    body = b"Unauthorized: this route requires a session"
    return Answer(401, "Unauthorized", body, tuple(exc.headers))


def unmet(requirement: Requirement, session: Session) -> Answer | None:
    """The 401 of a view guarded by `requirement` (Flask's and Django's
    `recent_login_required`, each rendering it as its framework's response) for a
    `session` that fails it, else None."""
    try:
        requirement.check(session)
    except StepUpRequired as exc:
        return unauthorized(exc)
    return None


def store_failure_logs(fail_open: bool) -> tuple[ThrottledLog, ThrottledLog]:
    """An adapter's two counters of store failures, at load and at commit, each logged once
    per interval (not once per request: an outage would flood the log)."""
    if fail_open:
        return (
            ThrottledLog(
                log,
                "store.load_failed",
                "session store unavailable at load: "
                "anonymous sessions served, not saved (fail_open)",
            ),
            ThrottledLog(
                log,
                "store.write_dropped",
                "session store unavailable at commit: "
                "session writes dropped, responses sent as the app made them "
                "(fail_open)",
            ),
        )
    return (
        ThrottledLog(
            log,
            "store.load_failed",
            "session store unavailable at load: answered 503",
            level=logging.ERROR,
        ),
        ThrottledLog(
            log,
            "store.commit_failed",
            "session store unavailable at commit: answered 503, session not saved",
            level=logging.ERROR,
        ),
    )


def unsaved_headers(manager: SessionManager, session: Session) -> list[tuple[str, str]]:
    """The session headers of a response whose commit failed under `fail_open`: no cookie
    for what was not saved; `Vary` if the response depends on the session; and a session
    that ended (logout) is still cleared in the client, although the store could not
    delete it (it ends there at its idle timeout)."""
    transport = session.transport or manager.transport
    headers: list[tuple[str, str]] = []
    if session.ended:
        headers += transport.clear(request=session.request)
        headers.append(("cache-control", "no-store"))
    if session.accessed:
        headers.append(("vary", transport.vary))
    return headers
