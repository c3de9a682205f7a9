"""`SessionManager`: the front of the sans-IO core, where each request begins and ends.

The manager turns header strings and stored bytes into decisions, and the application's
use of a `Session` into a plan of store operations and response headers. It never reads a
socket, a store or the clock by itself (the clock is injected), so one logic serves the sync
and async drivers, every adapter, and tests that need no server::

    opening = manager.open(request)                    # which record to load
    session = manager.attach(opening, store.load(opening.key))
    ...the application reads and writes the session...
    commit = manager.commit(session)                   # what to write, delete, send
    ...the driver writes, retrying rebased writes on version conflicts...
    headers = manager.finish(session, commit, final_write)

The manager picks the transport, checks CSRF and writes the response headers; where the
session lives is its mode's business (`ServerSide`, `ClientSide`: the `Mode` protocol).
`coatcheck.drivers` runs exactly that loop against a `Store` or `AsyncStore`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from . import csrf
from ._mypyc import mypyc_attr
from .audit import Audit
from .clientside import ClientSide
from .events import Events
from .exceptions import ConfigurationError
from .lifetimes import Lifetimes
from .limits import SessionLimit
from .plans import STALE, Commit, Context, Mode, Opening, Write, new_opening
from .request import RequestInfo
from .revocation import REVOKED, Revocation
from .serverside import ServerSide
from .session import Session, SessionInfo, fresh
from .stores.base import Record
from .transports import Cookie, Transport, choose

__all__ = ["STALE", "Commit", "Opening", "ServerSide", "SessionManager", "Write"]


# Subclassed by tests and applications: compiled, the class must allow it explicitly.
@mypyc_attr(allow_interpreted_subclasses=True)
class SessionManager:
    """Opens, commits and renews sessions; configuration is validated here, once.

    `mode` chooses where sessions live (`ServerSide(store=...)`), `transport` how the ID
    travels (`Cookie(...)`, `Header(...)`, or several: a request is answered in the
    transport it used, and one without an ID in the first that applies to its path and
    claims it), `lifetimes` how long sessions last. `csrf` enables the
    cross-origin check for unsafe methods (cookie transport only) and `trusted_origins`
    lists origins (`"https://app.example"`) allowed to post cross-origin. `log_salt` salts
    the session hashes in log lines; give replicas the same salt to correlate their logs.
    `on_conflict` says what happens to a key a request read and then changed when another
    request changed it in between: `"refuse"` (the default: `WriteConflict`, answered 409,
    nothing stored) or `"last-write-wins"` (the later commit overwrites; counters lose
    increments). See docs/operating.md, "Write semantics". `session_limit`
    (`SessionLimit(max_sessions, on_exceed=...)`) caps each user's live sessions, enforced
    by the store at login (see `coatcheck.limits` and docs/policies.md).
    `on_reuse` says what a secret or token that its session replaced more than
    `lifetimes.grace` ago does when presented (theft detection, `coatcheck.reuse`): it is
    always logged as `session.reuse`; `"revoke"` (the default) also ends that session,
    `"log"` leaves it alone. See docs/policies.md, "Theft detection on reuse".
    """

    def __init__(
        self,
        mode: Mode | None = None,
        *,
        transport: Transport | Sequence[Transport] | None = None,
        lifetimes: Lifetimes | None = None,
        csrf: bool = True,
        trusted_origins: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        log_salt: bytes | None = None,
        on_conflict: Literal["refuse", "last-write-wins"] = "refuse",
        session_limit: SessionLimit | None = None,
        on_reuse: Literal["log", "revoke"] = "revoke",
        events: Events | None = None,
    ) -> None:
        self.mode: Mode = mode if mode is not None else ServerSide()
        #: The client-side mode whose tokens this manager accepts: its own, or the one a
        #: server-side manager migrates from (None: it accepts no tokens).
        self.client_mode: ClientSide | None = self.mode.client_mode
        if transport is None:
            transport = Cookie()
        self.transports: tuple[Transport, ...] = (
            (transport,) if isinstance(transport, Transport) else tuple(transport)
        )
        if not self.transports:
            raise ConfigurationError("SessionManager needs at least one transport")
        self.lifetimes = lifetimes if lifetimes is not None else Lifetimes()
        self.csrf = csrf
        self.trusted_origins = frozenset(o.rstrip("/") for o in trusted_origins)
        self.clock = clock
        #: Where events go besides the log (`coatcheck.events`): subscribers, off-request.
        self.events = events if events is not None else Events()
        self.audit = Audit(
            log_salt if log_salt is not None else os.urandom(16),
            self.events,
            clock,
            self.mode.name,
        )
        if on_conflict not in ("refuse", "last-write-wins"):
            raise ConfigurationError(
                f"on_conflict must be 'refuse' or 'last-write-wins', not {on_conflict!r}"
            )
        self.on_conflict = on_conflict
        if on_reuse not in ("log", "revoke"):
            raise ConfigurationError(f"on_reuse must be 'revoke' or 'log', not {on_reuse!r}")
        self.on_reuse = on_reuse
        #: What the mode is given of this manager.
        self.context = Context(
            self.clock, self.lifetimes, self.audit, on_conflict, on_reuse=on_reuse
        )
        if session_limit is not None:
            _check_limit(self.mode, session_limit)
        #: The per-user session limit the drivers apply to logins (None: no limit).
        self.session_limit = session_limit

    def __repr__(self) -> str:
        return f"SessionManager({self.mode!r}, transport={self.transports!r})"

    @property
    def transport(self) -> Transport:
        """The first (default) transport."""
        return self.transports[0]

    # -- request in ----------------------------------------------------------------------

    def open(self, request: RequestInfo, secret: str | None = None) -> Opening:
        """Read the session ID or token from the request and say which record to load;
        `secret`: the one to open instead ("": none), for an adapter that reads it itself.

        What the request presented is verified by the mode: a malformed ID never reaches
        the store, it is logged and the request starts fresh.
        """
        transport, presented = choose(self.transports, request)
        if secret is None:
            secret = presented
        if not secret:
            return new_opening(
                (request, self.clock(), None, transport, None, False, None, False, False)
            )
        return self.mode.open(self.context, request, self.clock(), transport, secret)

    def attach(self, opening: Opening, record: Record | None) -> Session:
        """The request's `Session`, given the record stored under `opening.key`: a fresh
        one for anything that does not verify (see `Mode.attach`)."""
        return self.mode.attach(self.context, opening, record)

    def anonymous(self, request: RequestInfo) -> Session:
        """A fresh anonymous session for `request`, loaded from nothing: what an adapter
        serves with `fail_open` while the store is down (the client's ID is left alone)."""
        return fresh(self.open(request, ""), self.mode.name, self.context.lifetimes)

    def check_csrf(
        self, request: RequestInfo, session: Session, submitted: str | None = None
    ) -> None:
        """Raise `CSRFError` if an unsafe request is cross-origin and does not carry the
        session's CSRF token (`submitted`, or the `X-CSRF-Token` header). See `csrf`."""
        if (
            not self.csrf
            or not (session.transport or self.transport).ambient
            or csrf.check_origin(request, self.trusted_origins)
        ):
            return
        token = submitted if submitted is not None else request.header(csrf.TOKEN_HEADER)
        try:
            csrf.check_token(session.csrf_secret, token)
        except Exception:
            self.audit.security("csrf.rejected", session.id, f"method={request.method}")
            raise

    # -- response out --------------------------------------------------------------------

    def commit(self, session: Session) -> Commit:
        """What the request's use of `session` needs: writes, deletes, revocations, the
        secret or token to send (see `Mode.commit`)."""
        return self.mode.commit(self.context, session)

    def rebase(self, session: Session, write: Write, record: Record | None) -> Write | None:
        """`write` redone on top of `record` after a version conflict; None drops it;
        `WriteConflict` for a key read and changed meanwhile (see `Mode.rebase`)."""
        return self.mode.rebase(self.context, session, write, record)

    def vanished(self, session: Session) -> tuple[Revocation, ...]:
        """What ends `session` for good once its commit found its record gone."""
        return self.mode.vanished(self.context, session)

    def migration_revocations(self, session: Session) -> tuple[Revocation, ...]:
        """The entry that revokes the token `session` was migrated from, if any."""
        return self.mode.migration_revocations(self.context, session)

    def migrated_under(self, session: Session, write: Write) -> bool:
        """Whether `write` created the server-side session of a migrated token, under the
        token's own handle (a login in the same request moves it to a new one)."""
        sid = session._state.migrated_sid
        return sid is not None and write.key == sid

    def revoked_meanwhile(self, session: Session) -> bool:
        """Whether the token that `session` was migrated from was revoked while its
        request ran (by an admin, or "log out everywhere"), with the revocation list just
        brought up to date. The driver then deletes the session it created.

        Ordering makes this race-free: a revocation (or a login in another request that
        migrates the same token) writes its entry, then deletes the handle's record; a
        migration creates the record, then reads the entries, then writes its own entry.
        Whichever comes second sees the other, so the record is gone."""
        client = self.client_mode
        sid = session._state.migrated_sid
        assert client is not None and sid is not None  # noqa: S101
        verdict = client.revocation_list.check(
            sid, session.user, session.created_at, session._state.generation, self.clock()
        )
        return verdict == REVOKED

    def finish(
        self, session: Session, commit: Commit, write: Write | None
    ) -> list[tuple[str, str]]:
        """Response headers once the commit's writes are done; `write` is the write that
        succeeded (after rebases), or None if there was none or it was dropped.

        A write dropped because its record vanished meanwhile (logout, revocation or a
        login's rotation by a concurrent request; client-side, the registry record of a
        revoked session) sends no header at all. No token is handed out for a session that
        is not listed, and clearing the cookie here would also erase the new cookie that a
        concurrent login hands out if this response reaches the browser last. The session
        is dead in the store either way; the next request that presents its secret starts
        fresh and has it cleared then.
        """
        state = session._state
        transport = state.transport or self.transport
        request = state.request
        issue = commit.token
        if issue is not None and write is None and commit.write is not None:
            issue = None  # the registry record vanished: no token for an unlisted session
        elif issue is None and write is not None and write.secret is not None:
            issue = write.secret
            if issue != state.secret:
                self.audit.lifecycle(
                    "session.login" if write.replaces is not None else "session.rotated",
                    session.id,
                    f"new={self.audit.hash(write.key)}",
                    "login" if state.rotate == "login" else "",  # (a new session's too)
                )
                session._rekey(issue)
        headers: list[tuple[str, str]] = []
        if issue is not None:
            max_age = None
            if session.persistent:  # until the session's own absolute deadline
                max_age = int(session.absolute_deadline - state.now)
            headers += transport.issue(issue, max_age=max_age, request=request)
        elif commit.clear:
            headers += transport.clear(request=request)
        if headers:
            headers.append(("cache-control", "no-store"))
        expiry_header = getattr(transport, "expiry_header", None)
        if expiry_header is not None:
            # (Not a reason for `no-store` by itself; it depends on the session, though.)
            expiry = _expiry(expiry_header, session, commit, write, issue)
            headers += expiry
            if expiry and not session.accessed:
                headers.append(("vary", transport.vary))
        if session.accessed:
            headers.append(("vary", transport.vary))
        return headers

    # -- listing -------------------------------------------------------------------------

    def describe(self, key: str, record: Record, now: float | None = None) -> SessionInfo | None:
        """What a listing shows of the record under `key`; None for records that are
        corrupted or past their lifetimes."""
        return self.mode.describe(self.context, key, record, self.clock() if now is None else now)


def _expiry(
    name: str, session: Session, commit: Commit, write: Write | None, issue: str | None
) -> list[tuple[str, str]]:
    """The opt-in `expiry_header` of a transport: whole seconds until the session expires
    unless refreshed (`Session.remaining`, the deadline after this request), "0" for a
    session that ended or was refused, nothing for a session that is not kept (a new
    one that stored nothing, or one whose write was dropped)."""
    if commit.clear and issue is None:
        seconds = 0
    elif (session.is_new and issue is None) or (write is None and commit.write is not None):
        return []
    else:
        seconds = math.floor(session.remaining())
    return [(name.lower(), str(seconds)), ("access-control-expose-headers", name)]


def _check_limit(mode: Mode, limit: object) -> None:
    """Refuse, at construction, a session limit that could not be enforced."""
    if not isinstance(limit, SessionLimit):
        raise ConfigurationError("session_limit takes a SessionLimit(max_sessions, on_exceed=...)")
    stores: list[object] = []
    for twin in ("store", "async_store"):
        try:
            found = getattr(mode, twin)
        except ConfigurationError:  # (a server-side mode given only the other twin)
            continue
        if found is not None:
            stores.append(found)
    if not stores:
        raise ConfigurationError(
            "a session limit counts each user's live sessions in the registry, and these "
            "client-side sessions have none (ClientSide(store=None)): without one a login "
            "cannot know the user's other tokens, nor end them; give ClientSide a store "
            "(e.g. store='sqlite:///sessions.db' or a Redis or PostgreSQL URL)"
        )
    for store in stores:
        inner = getattr(store, "sync", store)  # (a ThreadedStore's own store)
        if not callable(getattr(inner, "admit", None)):
            raise ConfigurationError(
                f"{type(inner).__name__} cannot enforce a session limit (it has no atomic "
                "`admit`, see coatcheck.stores.base.LimitedStore): use one of coatcheck's "
                "stores (memory, SQLite, Redis, PostgreSQL)"
            )
        reason = getattr(inner, "limit_unsupported", None)
        if isinstance(reason, str):
            raise ConfigurationError(reason)
