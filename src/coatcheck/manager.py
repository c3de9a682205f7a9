"""`SessionManager`: every session decision, without I/O.

The manager turns header strings and stored bytes into decisions, and the application's
use of a `Session` into a plan of store operations and response headers. It never reads a
socket, a store or the clock by itself (the clock is injected), so one logic serves the sync
and async drivers, every adapter, and tests that need no server::

    opening = manager.open(request)                    # which record to load
    result = manager.attach(opening, store.load(opening.key))   # -> Session (or next hop)
    ...the application reads and writes the session...
    commit = manager.commit(session)                   # what to write, delete, send
    ...the driver writes, retrying rebased writes on version conflicts...
    headers = manager.finish(session, commit, final_write)

`coatcheck.drivers` runs exactly that loop against a `Store` or `AsyncStore`.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from . import csrf, records
from .audit import Audit
from .clientside import ClientSide
from .exceptions import ConfigurationError, StoreCorrupted, WriteConflict
from .ids import HANDLE_LENGTH, handle_of, is_wellformed, new_secret, verifier_hash
from .keys import ID_HASH, KeyRing
from .plans import CLEAR, NOTHING, STALE, Commit, Opening, Write
from .lifetimes import RENEW, TOUCH, Expiry, Lifetimes
from .request import RequestInfo
from .revocation import REVOKED, Revocation
from .session import (
    ABSENT,
    DELETED,
    FROM_REQUEST,
    NOT_READ,
    Operations,
    Session,
    SessionInfo,
)
from .stores import AsyncStore, Store, from_url, to_async
from .stores.base import Record
from .transports import Cookie, Transport

__all__ = ["STALE", "Commit", "Opening", "ServerSide", "SessionManager", "Write"]

_new_tuple = tuple.__new__
_same = hmac.compare_digest


class ServerSide:
    """Server-side sessions: the client holds an opaque ID, `store` holds the data.

    `store` is a `Store`, an `AsyncStore` or a URL for `coatcheck.stores.from_url`; a URL
    gives each driver the matching twin, and a sync store is wrapped for the async driver.
    The default is the embedded SQLite store in `./sessions.db`.

    `keys=KeyRing(...)` binds the records to this app: the store keeps an HMAC of each
    secret under the ring's `ID_HASH` subkey instead of its plain SHA-256, so another app
    sharing the store (same table or key prefix, other keys) cannot open them. Without
    keys, apps that share a store must use distinct tables or prefixes.

    `migrate_from=ClientSide(keys, ...)` accepts the tokens of an app that used client-side
    sessions until now: a valid token becomes a server-side session (same data, same user,
    and the token's `sid` as its handle) and the client gets a server-side secret, so
    switching modes logs no one out. The token is then revoked, so that ClientSide needs a
    revocation store every replica shares (a store URL, or `revocations=`): a token
    migrated and logged out on one replica must not be migrated again on another.
    """

    __slots__ = ("_async", "_sync", "keys", "migrate_from")

    def __init__(
        self,
        store: Store | AsyncStore | str = "sqlite:///sessions.db",
        *,
        keys: KeyRing | None = None,
        migrate_from: ClientSide | None = None,
    ) -> None:
        if keys is not None and not isinstance(keys, KeyRing):
            raise ConfigurationError(
                "ServerSide(keys=...) takes a KeyRing, e.g. KeyRing.from_env()"
            )
        self.keys = keys
        if migrate_from is not None and not migrate_from.shares_revocations:
            raise ConfigurationError(
                "ServerSide(migrate_from=ClientSide(...)) revokes each token it migrates, "
                "and every replica must see that: give the ClientSide a revocation store "
                "they share, e.g. ClientSide(keys, store='redis://...') or "
                "ClientSide(keys, store=None, revocations=RedisRevocationStore(...))"
            )
        self.migrate_from = migrate_from
        self._sync: Store | None = None
        self._async: AsyncStore | None = None
        if isinstance(store, str):
            self._sync = from_url(store)
            self._async = to_async(self._sync)
        elif isinstance(store, Store):
            self._sync = store
            self._async = to_async(store)
        elif isinstance(store, AsyncStore):
            self._async = store
        else:
            raise ConfigurationError(
                f"ServerSide(store=...) takes a store or a URL, not {type(store).__name__}"
            )

    def __repr__(self) -> str:
        return f"ServerSide(store={self._sync or self._async!r})"

    @property
    def store(self) -> Store:
        if self._sync is None:
            raise ConfigurationError(
                "this manager was given an async store; use the async driver and adapters, "
                "or pass a sync store (or a URL) to ServerSide"
            )
        return self._sync

    @property
    def async_store(self) -> AsyncStore:
        assert self._async is not None  # noqa: S101 - set by every constructor path
        return self._async


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
    increments). See docs/operating.md, "Write semantics".
    """

    def __init__(
        self,
        mode: ServerSide | ClientSide | None = None,
        *,
        transport: Transport | Sequence[Transport] | None = None,
        lifetimes: Lifetimes | None = None,
        csrf: bool = True,
        trusted_origins: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        log_salt: bytes | None = None,
        on_conflict: Literal["refuse", "last-write-wins"] = "refuse",
    ) -> None:
        self.mode = mode if mode is not None else ServerSide()
        #: The client-side mode whose tokens this manager accepts: its own, or the one a
        #: server-side manager migrates from (None: it accepts no tokens).
        self.client_mode = (
            self.mode if isinstance(self.mode, ClientSide) else self.mode.migrate_from
        )
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
        self.audit = Audit(log_salt if log_salt is not None else os.urandom(16))
        if on_conflict not in ("refuse", "last-write-wins"):
            raise ConfigurationError(
                f"on_conflict must be 'refuse' or 'last-write-wins', not {on_conflict!r}"
            )
        self.on_conflict = on_conflict
        # What server-side secrets are hashed with (`ServerSide(keys=...)`), newest first;
        # a client-side manager accepts server-side sessions hashed with its own keys or
        # with none, to migrate them.
        keys = self.mode.keys
        self._hash_keys: tuple[bytes | None, ...] = (None,)
        if keys is not None:
            self._hash_keys = tuple(k.secret for k in keys.subkeys(ID_HASH))
            if isinstance(self.mode, ClientSide):
                self._hash_keys += (None,)

    def __repr__(self) -> str:
        return f"SessionManager({self.mode!r}, transport={self.transports!r})"

    @property
    def transport(self) -> Transport:
        """The first (default) transport."""
        return self.transports[0]

    def transport_for(self, request: RequestInfo) -> tuple[Transport, str | None]:
        """The transport that serves `request`, and the ID or token it carries."""
        if len(self.transports) == 1:
            only = self.transports[0]
            return only, only.read(request) or None
        applicable = [t for t in self.transports if t.applies(request)] or [self.transports[0]]
        for transport in applicable:
            secret = transport.read(request)
            if secret:
                return transport, secret
        for transport in applicable:
            if transport.claims(request):
                return transport, None
        return applicable[0], None

    # -- request in ----------------------------------------------------------------------

    def open(self, request: RequestInfo) -> Opening:
        """Read the session ID from the request and say which record to load.

        A malformed ID never reaches the store: it is logged and the request starts fresh.
        """
        now = self.clock()
        transport, secret = self.transport_for(request)
        if not secret:
            return Opening(request, now, None, transport)
        if isinstance(self.mode, ClientSide):
            opening = Opening(request, now, None, transport, secret, True)
            return self.mode.open(self, opening)
        if "." in secret and self.mode.migrate_from is not None:
            opening = Opening(request, now, None, transport, secret, True)
            return self.mode.migrate_from.open(self, opening)
        if not is_wellformed(secret):
            self.audit.security("session.malformed", secret)
            return Opening(request, now, None, transport, presented=True)
        # tuple.__new__ with every field: a NamedTuple's own __new__ is one Python call more.
        return _new_tuple(
            Opening,
            (request, now, secret[:HANDLE_LENGTH], transport, secret, True, None, False, False),
        )

    def attach(self, opening: Opening, record: Record | None) -> Session:
        """The session for a request, given the record stored under `opening.key`.

        Unknown, expired or unreadable records, and secrets that do not match the record's
        verifier (a guessed or forged handle, a secret replaced longer ago than the grace
        window), give a fresh session with a new handle (strict mode: nothing is ever taken
        from the client) and a security log line. The record itself is left alone: a
        presented handle proves nothing, so it cannot end anyone's session.
        """
        if opening.claims is not None:
            if isinstance(self.mode, ClientSide):
                return self.mode.attach(self, opening)
            assert self.mode.migrate_from is not None  # noqa: S101 - only it sets claims
            return self._migrate(self.mode.migrate_from.attach(self, opening))
        if opening.key is None:
            return self._fresh(opening)
        if record is None:
            self.audit.security("session.unknown", opening.key)
            return self._fresh(opening)
        try:
            stored = records.decode(record.data)
        except StoreCorrupted:
            self.audit.security("session.corrupted", opening.key)
            return self._fresh(opening, stale=opening.key)
        now = opening.now
        credentials = stored.credentials
        superseded = False
        if credentials is None:  # a client-side registry record: no secret opens it
            self.audit.security("session.unknown", opening.key)
            return self._fresh(opening)
        secret = opening.secret or ""
        if not _same(verifier_hash(secret, self._hash_keys[0]), credentials.verifier):
            opens = self._opens(secret, credentials, now)
            if opens is None:
                self.audit.security("session.mismatch", opening.key)
                return self._fresh(opening)
            superseded = opens
        due = self.lifetimes.assess(now, stored.created_at, stored.last_seen, stored.rotated_at)
        if due.__class__ is Expiry:
            self.audit.security("session.expired", opening.key, f"reason={due.value}")
            return self._fresh(opening, stale=opening.key)
        request = opening.request
        session = Session(
            stored.data, opening.secret or "", opening.key, False, now,
            stored.created_at, stored.last_seen, stored.rotated_at, stored.user,
            stored.authenticated_at, request.client_ip, FROM_REQUEST,
            stored.persistent, stored.csrf_secret, record.version, "server",
            opening.transport, request,
        )  # fmt: skip
        session._credentials = credentials
        session._superseded = superseded
        if isinstance(self.mode, ClientSide):
            # A server-side session arriving at a client-side manager: migrate it.
            session.mode = "client"
            session.is_new = True
            session.stale_key = opening.key
            session.meta_changed = True
            self.audit.lifecycle("session.migrated", opening.key, "to=client")
            return session
        if due is RENEW and not superseded:
            session.rotate = "renewal"
        elif due is TOUCH:
            session.meta_changed = True
        return session

    def _opens(self, secret: str, credentials: records.Credentials, now: float) -> bool | None:
        """Whether `secret` opens a record although it is not its current secret hashed
        with the newest key: False if it is under an older key, True if it is the previous
        secret inside its grace window, None if it does not open it at all."""
        for key in self._hash_keys:  # newest first; one unless keys are being rotated
            presented = verifier_hash(secret, key)
            if _same(presented, credentials.verifier):
                return False
            if (
                credentials.previous is not None
                and now < credentials.previous_until
                and _same(presented, credentials.previous)
            ):
                return True
        return None

    def _migrate(self, session: Session) -> Session:
        """A client-side session arriving at a server-side manager: a new server-side
        session with the same data and metadata, under the token's handle (`sid`).

        Its record is created only if the handle is free, so of two replicas migrating the
        same token at once only one succeeds, and the token is revoked in the client mode's
        shared revocation store, so it is not migrated again (after a logout, say)."""
        self.audit.lifecycle("session.migrated", session.id, "to=server")
        session.migrated_sid = session.id
        session._rekey(new_secret(session.id))
        session.mode = "server"
        session.is_new = True
        session.rotate = None
        session.meta_changed = True
        return session

    def _fresh(self, opening: Opening, *, stale: str | None = None) -> Session:
        secret = new_secret()
        now = opening.now
        request = opening.request
        session = Session(
            {}, secret, handle_of(secret), True, now, now, now, now, None, None,
            request.client_ip, FROM_REQUEST, False, None, 0, "server",
            opening.transport, request,
        )  # fmt: skip
        session.client_stale = opening.presented
        session.stale_key = stale
        if isinstance(self.mode, ClientSide):
            session.mode = "client"
        return session

    def anonymous(self, request: RequestInfo) -> Session:
        """A fresh anonymous session for `request`, loaded from nothing: what an adapter
        serves with `fail_open` while the store is down (the client's ID is left alone)."""
        transport, _ = self.transport_for(request)
        return self._fresh(Opening(request, self.clock(), None, transport))

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
        """The store operations and cookie change that the request's use of `session` needs.

        Nothing is written for a session that did not change, unless `last_seen` is due for
        its periodic refresh or the secret for renewal. Every write of an existing session
        is a compare-and-set on its handle's record, so a logout or revocation (a delete of
        that record) is never undone by a concurrent request: its write finds no record.
        """
        if isinstance(self.mode, ClientSide):
            return self.mode.commit(self, session)
        deletes: tuple[str, ...] = () if session.stale_key is None else (session.stale_key,)
        if session.ended:
            if not session.is_new or session.migrated_sid is not None:
                deletes += (session.id,)
                self.audit.lifecycle("session.logout", session.id)
            if not (session.data() or session.user is not None or session.csrf_secret):
                clear = not session.is_new or session.client_stale or session.migrated_sid
                return Commit(deletes=deletes, clear=bool(clear),
                              revocations=self.migration_revocations(session))  # fmt: skip
            # Used again after it ended: a new session, under a handle never sent before.
            session._rekey(new_secret())
            session.created_at = session.rotated_at = session._now
            session.is_new = True
        elif not session.modified:
            if deletes:
                return Commit(deletes=deletes, clear=session.client_stale)
            return CLEAR if session.client_stale else NOTHING

        now = session._now
        changes = session.changes()
        session.last_seen = now
        ttl = self.lifetimes.ttl(now=now, created_at=session.created_at)
        revoke_user = session.user if session.logout_others else None
        # Write and Commit are built with positional arguments: the NamedTuples cost a third
        # more with keywords, and a request that writes builds both.
        if session.rotate == "login":
            # A privilege change ends the handle: the record moves to a new one, and every
            # secret of the old handle dies with it (no grace window).
            secret = new_secret()
            session.rotated_at = now
            replaces = None if session.is_new else session.id
            write = Write(
                handle_of(secret),
                records.encode(session, None, self._credentials(secret)),
                0 if session.is_new else session.version, ttl, session.user, changes,
                replaces, secret,
            )  # fmt: skip
            if session.is_new:
                self.audit.lifecycle("session.created", handle_of(secret))
        elif session.is_new:
            write = Write(
                session.id, records.encode(session, None, self._credentials(session.secret)),
                0, ttl, session.user, changes, None, session.secret,
            )  # fmt: skip
            self.audit.lifecycle("session.created", session.id)
        elif session.rotate is not None:
            # Renewal and regenerate(): a new secret for the same handle; the one it
            # replaces still opens the record for the grace window.
            secret = new_secret(session.id)
            session.rotated_at = now
            write = Write(
                session.id, records.encode(session, None, self._renewed(session, secret, now)),
                session.version, ttl, session.user, changes, None, secret,
            )  # fmt: skip
        else:
            write = Write(
                session.id, records.encode(session, None, session._credentials),
                session.version, ttl, session.user, changes, None,
                session.secret if session.reissue and not session._superseded else None,
            )  # fmt: skip
        if session.migrated_sid is None:
            return Commit(write, deletes, revoke_user)
        if write.key == session.migrated_sid:
            return Commit(write, deletes, revoke_user)  # the driver revokes the token after
        # A login (or a logout and more) in the request that migrates the token: the
        # session it would have become is over; a concurrent migration of the same token
        # may have created it already. The entry is recorded before that delete: see
        # `revoked_meanwhile`.
        return Commit(write, deletes + (session.migrated_sid,), revoke_user,
                      revocations=self.migration_revocations(session))  # fmt: skip

    def migration_revocations(self, session: Session) -> tuple[Revocation, ...]:
        """The entry that revokes the client-side token `session` was migrated from, if
        any: it must not be migrated again (after a logout, say)."""
        client = self.mode.migrate_from if isinstance(self.mode, ServerSide) else None
        if session.migrated_sid is None or client is None:
            return ()
        return (client.revocation(self, session.migrated_sid),)

    def _renewed(self, session: Session, secret: str, now: float) -> records.Credentials:
        """The credentials of `session` once `secret` replaces the one it was loaded with."""
        old = session._credentials
        assert old is not None  # noqa: S101 - every loaded server-side session has them
        return self._credentials(secret)._replace(
            previous=old.verifier, previous_until=now + self.lifetimes.grace
        )

    def _credentials(self, secret: str) -> records.Credentials:
        """The credentials of a record that `secret` alone opens."""
        return records.Credentials(verifier_hash(secret, self._hash_keys[0]))

    def rebase(self, session: Session, write: Write, record: Record | None) -> Write | None:
        """Redo `write` on top of `record`, the current record under `write.source`, after
        the store refused it for a version conflict.

        The keys this request changed are applied to the fresh data, so writes to distinct
        keys all survive. A key the request read and then changed, which another request
        has changed since, raises `WriteConflict` (nothing is saved: the adapter answers
        409), since the change was computed from a value that is gone; a key written without
        being read is last-write-wins; `increment` / `append` are re-applied to the stored
        value, so they never conflict. Returns None when the
        record is gone (logout or revocation elsewhere: the session is not recreated) or
        when a new record's handle is taken (a concurrent migration of the same token won).
        If another request renewed the secret meanwhile, its secret stays the current one
        and this write hands out none.
        """
        if isinstance(self.mode, ClientSide):
            return self.mode.rebase(self, session, write, record)
        if record is None:
            self.audit.lifecycle("session.vanished", session.id)
            return None
        try:
            stored = records.decode(record.data)
        except StoreCorrupted:
            return None
        if write.version == 0:
            # A migrated token's handle may still hold its registry record (registry and
            # sessions in one store): replace it, compared on its version, so that of two
            # replicas migrating one token only one succeeds.
            if stored.credentials is None and session.migrated_sid == write.key:
                return write._replace(version=record.version)
            return None
        if stored.credentials is None:
            return None
        data = dict(stored.data)
        for key, value in write.changes.items():
            if value.__class__ is Operations:
                data[key] = value.apply(data.get(key, ABSENT))
                continue
            read = NOT_READ if self.on_conflict != "refuse" else session.read_value(key)
            if read is not NOT_READ and data.get(key, ABSENT) != read:
                # Computed from a value another request has replaced since: applying it
                # would silently undo that acknowledged write.
                self.audit.lifecycle("session.conflict", session.id, f"keys={len(write.changes)}")
                raise WriteConflict(
                    "the request changed a session key that another request changed since "
                    "it was read; nothing was saved"
                )
            if value is DELETED:
                data.pop(key, None)
            else:
                data[key] = value
        login = write.replaces is not None
        credentials = stored.credentials
        issue = write.issue
        renewed = False
        if login:
            credentials = self._credentials(write.issue or "")
        elif credentials.verifier != (session._credentials or credentials).verifier:
            issue = None  # renewed by another request meanwhile: its secret is the current one
        elif write.issue is not None and session.rotate is not None:
            credentials = self._renewed(session, write.issue, session._now)
            renewed = True
        doc: dict[str, Any] = {
            "d": data,
            "c": session.created_at if login else stored.created_at,
            "s": max(session.last_seen, stored.last_seen),
            "r": session.rotated_at if login or renewed else stored.rotated_at,
        }
        user = session.user if login else stored.user
        auth = session.authenticated_at if login else stored.authenticated_at
        csrf_secret = session.csrf_secret if login else stored.csrf_secret or session.csrf_secret
        persistent = session.persistent if session.meta_changed else stored.persistent
        for name, value in (("u", user), ("a", auth), ("ip", session.ip),
                            ("ua", session.user_agent), ("x", csrf_secret)):  # fmt: skip
            if value is not None:
                doc[name] = value
        if persistent:
            doc["p"] = 1
        records.put_credentials(doc, credentials)
        return write._replace(
            data=records.dumps(doc), version=record.version, user=user, issue=issue
        )

    def migrated_under(self, session: Session, write: Write) -> bool:
        """Whether `write` created the server-side session of a migrated token, under the
        token's own handle (a login in the same request moves it to a new one)."""
        return session.migrated_sid is not None and write.key == session.migrated_sid

    def revoked_meanwhile(self, session: Session) -> bool:
        """Whether the token that `session` was migrated from was revoked while its
        request ran (by an admin, or "log out everywhere"), with the revocation list just
        brought up to date. The driver then deletes the session it created.

        Ordering makes this race-free: a revocation (or a login in another request that
        migrates the same token) writes its entry, then deletes the handle's record; a
        migration creates the record, then reads the entries, then writes its own entry.
        Whichever comes second sees the other, so the record is gone."""
        client = self.client_mode
        assert client is not None and session.migrated_sid is not None  # noqa: S101
        verdict = client.revocation_list.check(
            session.migrated_sid, session.user, session.created_at, session._generation,
            self.clock(),
        )  # fmt: skip
        return verdict == REVOKED

    def vanished(self, session: Session) -> tuple[Revocation, ...]:
        """What ends `session` for good once its commit found its record gone (`rebase`
        returned None). Server-side, nothing more: the record is the session. Client-side,
        the registry record is gone (a logout or revocation elsewhere, or a registry that
        lost its data), so the token is revoked too: a token that is not listed must not be
        accepted, and a write that cannot be kept must not pass for kept."""
        if not isinstance(self.mode, ClientSide):
            return ()
        return (self.mode.revocation(self, session.id),)

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
        transport = session.transport or self.transport
        request = session.request
        headers: list[tuple[str, str]] = []
        if commit.issue is not None and (write is not None or commit.write is None):
            max_age = None
            if session.persistent:
                max_age = int(session.created_at + self.lifetimes.absolute - session._now)
            headers += transport.issue(commit.issue, max_age=max_age, request=request)
        elif commit.clear:
            headers += transport.forget(request=request)
        elif write is not None and write.issue is not None:
            if write.issue != session.secret:
                self.audit.lifecycle(
                    "session.login" if write.replaces is not None else "session.rotated",
                    session.id, f"new={self.audit.hash(write.key)}",
                )  # fmt: skip
                session._rekey(write.issue)
            max_age = None
            if session.persistent:
                max_age = int(session.created_at + self.lifetimes.absolute - session._now)
            headers += transport.issue(write.issue, max_age=max_age, request=request)
        if headers:
            headers.append(("cache-control", "no-store"))
        if session.accessed:
            headers.append(("vary", transport.vary))
        return headers

    # -- listing -------------------------------------------------------------------------

    def describe(self, key: str, record: Record, now: float | None = None) -> SessionInfo | None:
        """What a listing shows of the record under `key`; None for records that are
        corrupted or past their lifetimes."""
        try:
            stored = records.decode(record.data)
        except StoreCorrupted:
            return None
        client = stored.credentials is None  # a client-side registry record
        now = self.clock() if now is None else now
        if client and self.client_mode is not None:
            # A token is accepted up to `leeway` past its deadlines: so long is it listed.
            now -= self.client_mode.leeway
        if self.lifetimes.expiry(now=now, created_at=stored.created_at, last_seen=stored.last_seen):
            return None
        return SessionInfo(
            id=key,
            user=stored.user,
            created_at=stored.created_at,
            authenticated_at=stored.authenticated_at,
            last_seen=stored.last_seen,
            ip=stored.ip,
            user_agent=stored.user_agent,
            mode="client" if client else "server",
        )
