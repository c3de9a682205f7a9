"""`ServerSide`: the client holds an opaque secret, a store holds the session.

The secret is `handle + verifier` (`coatcheck.ids`): the record lives under the handle and
stores only a hash of the whole secret, compared in constant time, so a leaked store
(or log line) opens no session. Renewal and `regenerate()` replace the secret of the same
record (the previous one keeps opening it for the grace window), a login moves the record
to a new handle, a logout deletes it; every write is a compare-and-set on the record's
version, so a logout or revocation can never be undone by a concurrent request.

`ClientSide` reads the server-side sessions it migrates with a `RecordReader`, the part of
`ServerSide` that opens records.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from . import records, reuse
from .exceptions import ConfigurationError, StoreCorrupted, StoreError, WriteConflict
from .ids import HANDLE_LENGTH, handle_of, is_wellformed, new_secret, verifier_hash
from .keys import ID_HASH, KeyRing
from .lifetimes import RENEW, TOUCH, Expiry
from .plans import CLEAR, NOTHING, Commit, Context, Opening, Write, new_opening, rejected
from .session import (
    ABSENT,
    DEFAULT_ASSURANCE,
    DELETED,
    NOT_READ,
    CommitState,
    Operations,
    Session,
    SessionInfo,
    fresh,
)
from .stores import AsyncStore, Store, from_url, to_async

if TYPE_CHECKING:
    from .clientside import ClientSide
    from .request import RequestInfo
    from .revocation import Revocation
    from .stores.base import Record
    from .transports import Transport

__all__ = ["RecordReader", "ServerSide", "describe", "hash_keys"]

_same = hmac.compare_digest


class RecordReader:
    """Opens server-side records: the part of `ServerSide` that `ClientSide` also needs, to
    read the server-side sessions it migrates. `keys`: what secrets are hashed with,
    newest first (None: plain SHA-256); `name`: `Session.mode` of the sessions it makes."""

    __slots__ = ("_hash_keys", "migrate_from", "name")

    def __init__(
        self,
        keys: tuple[bytes | None, ...],
        name: str,
        migrate_from: ClientSide | None = None,
    ) -> None:
        self._hash_keys = keys
        self.name = name
        self.migrate_from = migrate_from

    def attach(self, context: Context, opening: Opening, record: Record | None) -> Session:
        """The session stored in `record` for the secret of `opening` (or the session of a
        `migrate_from` token, migrated); `is_new` is False only for a session loaded from
        the record, which is marked for renewal or for a refresh of `last_seen` when due.

        Unknown, expired or unreadable records, and secrets that do not match the record's
        verifier (a guessed or forged handle, a secret replaced longer ago than the grace
        window), give a fresh session with a new handle (strict mode: nothing is ever taken
        from the client) and a security log line. The record itself is left alone: a
        presented handle proves nothing, so it cannot end anyone's session. The exception
        is a secret the record replaced, presented after its grace window: only the server
        handed it out, so it is a reuse (`coatcheck.reuse`), which by default ends the
        session.
        """
        if opening.claims is not None:
            assert self.migrate_from is not None  # noqa: S101 - only it sets claims
            return self._migrate(context, self.migrate_from.attach(context, opening, None))
        key = opening.key
        audit = context.audit
        if key is None or opening.superseded:  # (superseded: a client token's reuse)
            return fresh(opening, self.name, context.lifetimes)
        if record is None:
            audit.security("session.unknown", key)
            return fresh(opening, self.name, context.lifetimes)
        try:
            stored = records.decode(record.data)
        except StoreCorrupted:
            audit.security("session.corrupted", key)
            return fresh(opening, self.name, context.lifetimes, key)
        now = opening.now
        (
            data,
            created,
            seen,
            rotated,
            user,
            auth,
            _,
            _,
            persistent,
            csrf,
            credentials,
            limits,
            lvl,
        ) = stored
        superseded = False
        if credentials is None:  # a client-side registry record: no secret opens it
            audit.security("session.unknown", key)
            return fresh(opening, self.name, context.lifetimes)
        secret = opening.secret or ""
        if not _same(verifier_hash(secret, self._hash_keys[0]), credentials.verifier):
            opens = _opens(secret, credentials, now, self._hash_keys)
            if opens is None and reuse.is_retired(secret, credentials, now, self._hash_keys):
                if not context.lifetimes.expiry(now=now, created_at=created, last_seen=seen):
                    return reuse.detected(context, opening, self.name, key)
            if opens is None:
                audit.security("session.mismatch", key)
                return fresh(opening, self.name, context.lifetimes)
            superseded = opens
        lifetimes = context.lifetimes.of(persistent, limits) if persistent else context.lifetimes
        due = lifetimes.assess(now, created, seen, rotated)
        if due.__class__ is Expiry:
            audit.security("session.expired", key, f"reason={due.value}")
            return fresh(opening, self.name, context.lifetimes, key)
        state = CommitState(
            secret, now, record.version, opening.transport, opening.request, context.lifetimes
        )
        state.credentials = credentials
        state.superseded = superseded
        if due is RENEW and not superseded:
            state.rotate = "renewal"
        elif due is TOUCH:
            state.meta_changed = True
        session = Session(
            data, state, key, False, created, seen, rotated, user, auth, persistent, csrf, self.name
        )
        if limits is not None:
            session.persistent_limits = limits
        if lvl is not None:
            session.assurance = lvl
        return session

    def _migrate(self, context: Context, session: Session) -> Session:
        """A client-side session arriving here: a new server-side session with the same
        data and metadata, under the token's handle (`sid`).

        Its record is created only if the handle is free, so of two replicas migrating the
        same token at once only one succeeds, and the token is revoked in the client mode's
        shared revocation store, so it is not migrated again (after a logout, say)."""
        context.audit.lifecycle("session.migrated", session.id, "to=server")
        state = session._state
        state.migrated_sid = session.id
        session._rekey(new_secret(session.id))
        session.mode = "server"
        session.is_new = True
        state.rotate = None
        state.meta_changed = True
        return session


class ServerSide(RecordReader):
    """Server-side sessions: the client holds an opaque ID, `store` holds the data.

    `store` is a `Store`, an `AsyncStore` or a URL for `coatcheck.stores.from_url`; a URL
    gives each driver the matching twin, and a sync store is wrapped for the async driver.
    The default is the embedded SQLite store in `./sessions.db`, created on first use.

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

    __slots__ = ("_async", "_sync", "keys")

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
        super().__init__(hash_keys(keys), "server", migrate_from)
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

    @property
    def client_mode(self) -> ClientSide | None:
        return self.migrate_from

    # -- request in ----------------------------------------------------------------------

    def open(
        self, context: Context, request: RequestInfo, now: float, transport: Transport, secret: str
    ) -> Opening:
        """The record under the secret's handle; a token goes to `migrate_from`. A
        malformed secret never reaches the store: it is logged and the request starts
        fresh."""
        if "." in secret and self.migrate_from is not None:
            return self.migrate_from.open(context, request, now, transport, secret)
        if not is_wellformed(secret):
            context.audit.security("session.malformed", secret)
            return rejected(request, now, transport)
        handle = secret[:HANDLE_LENGTH]
        return new_opening((request, now, handle, transport, secret, True, None, False, False))

    # -- response out --------------------------------------------------------------------

    def commit(self, context: Context, session: Session) -> Commit:
        """The store operations and cookie change that the request's use of `session` needs.

        Nothing is written for a session that did not change, unless `last_seen` is due for
        its periodic refresh or the secret for renewal. Every write of an existing session
        is a compare-and-set on its handle's record, so a logout or revocation (a delete of
        that record) is never undone by a concurrent request: its write finds no record.
        """
        state = session._state
        deletes: tuple[str, ...] = () if state.stale_key is None else (state.stale_key,)
        if state.ended:
            if not session.is_new or state.migrated_sid is not None:
                deletes += (session.id,)
                context.audit.lifecycle("session.logout", session.id)
            if not (session.data() or session.user is not None or session.csrf_secret):
                clear = not session.is_new or state.client_stale or state.migrated_sid
                revocations = self.migration_revocations(context, session)
                return Commit(None, deletes, None, bool(clear), revocations)
            # Used again after it ended: a new session, under a handle never sent before.
            session._rekey(new_secret())
            session.created_at = session.rotated_at = state.now
            session.is_new = True
        elif not session.modified:
            if deletes:
                return Commit(None, deletes, None, state.client_stale)
            return CLEAR if state.client_stale else NOTHING

        now = state.now
        changes = session.changes()
        session.last_seen = now
        lifetimes = context.lifetimes
        if session.persistent:
            lifetimes = lifetimes.of(True, session.persistent_limits)
        ttl = lifetimes.ttl(now=now, created_at=session.created_at)
        revoke_user = session.user if state.logout_others else None
        secret: str | None
        credentials: records.Credentials | None
        # Write and Commit are built with positional arguments: the NamedTuples cost a third
        # more with keywords, and a request that writes builds both.
        if state.rotate == "login":
            # A privilege change ends the handle: the record moves to a new one, and every
            # secret of the old handle dies with it (no grace window).
            secret = new_secret()
            session.rotated_at = now
            key, replaces = handle_of(secret), None if session.is_new else session.id
            credentials = self._credentials(secret)
            version = 0 if session.is_new else state.version
        elif session.is_new:
            secret, key, replaces = state.secret, session.id, None
            credentials, version = self._credentials(secret), 0
        elif state.rotate is not None:
            # Renewal and regenerate(): a new secret for the same handle; the one it
            # replaces still opens the record for the grace window.
            secret, key, replaces = new_secret(session.id), session.id, None
            session.rotated_at = now
            credentials, version = self._renewed(context, session, secret, now), state.version
        else:
            reissue = state.reissue and not state.superseded
            secret = state.secret if reissue else None
            key, replaces, credentials, version = session.id, None, state.credentials, state.version
        if session.is_new:
            context.audit.lifecycle("session.created", key)
        data = records.encode(session, None, credentials)
        write = Write(key, data, version, ttl, session.user, changes, replaces, secret)
        migrated = state.migrated_sid
        if migrated is None or key == migrated:
            return Commit(write, deletes, revoke_user)  # (the driver revokes a token after)
        # A login (or a logout and more) in the request that migrates the token: the
        # session it would have become is over; a concurrent migration of the same token
        # may have created it already. The entry is recorded before that delete: see
        # `SessionManager.revoked_meanwhile`.
        revocations = self.migration_revocations(context, session)
        return Commit(write, (*deletes, migrated), revoke_user, False, revocations)

    def migration_revocations(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        """The entry that revokes the client-side token `session` was migrated from, if
        any: it must not be migrated again (after a logout, say)."""
        sid = session._state.migrated_sid
        if sid is None or self.migrate_from is None:
            return ()
        return (self.migrate_from.revocation(context, sid),)

    def still_opens(self, secret: str, record: Record, now: float) -> bool:
        """Whether `secret` opens `record` at `now` without being a reuse: it is the current
        secret, or the one it replaced, inside the grace window. A WebSocket re-opens its
        handshake's session with it only then (`coatcheck.adapters.websocket`): a secret
        renewed by another request longer ago would otherwise count as stolen."""
        try:
            credentials = records.decode(record.data).credentials
        except StoreCorrupted:
            return False
        if credentials is None:
            return False
        return _opens(secret, credentials, now, self._hash_keys) is not None

    def write_failed(self, now: float, error: StoreError) -> None:
        """A failed write is never dropped: the session is the record (503)."""
        raise error

    def vanished(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        """Nothing more ends a server-side session whose record is gone: it is the session."""
        return ()

    def _renewed(
        self, context: Context, session: Session, secret: str, now: float
    ) -> records.Credentials:
        """The credentials of `session` once `secret` replaces the one it was loaded with."""
        old = session._state.credentials
        assert old is not None  # noqa: S101 - every loaded server-side session has them
        return records.Credentials(
            verifier_hash(secret, self._hash_keys[0]),
            old.verifier,
            now + context.lifetimes.grace,
            reuse.retire(old),
        )

    def _credentials(self, secret: str) -> records.Credentials:
        """The credentials of a record that `secret` alone opens."""
        return records.Credentials(verifier_hash(secret, self._hash_keys[0]))

    def rebase(
        self, context: Context, session: Session, write: Write, record: Record | None
    ) -> Write | None:
        """Redo `write` on top of `record`, the current record under `write.source`, after
        the store refused it for a version conflict.

        The keys this request changed are applied to the fresh data, so writes to distinct
        keys all survive. A key the request read and then changed, which another request
        has changed since, raises `WriteConflict` (nothing is saved: the adapter answers
        409), since the change was computed from a value that is gone; a key written without
        being read is last-write-wins; `increment` / `append` are re-applied to the stored
        value, so they never conflict. Returns None when the record is gone (logout or
        revocation elsewhere: the session is not recreated) or when a new record's handle
        is taken (a concurrent migration of the same token won). If another request renewed
        the secret meanwhile, its secret stays the current one and this write hands out
        none.
        """
        if record is None:
            context.audit.lifecycle("session.vanished", session.id)
            return None
        try:
            stored = records.decode(record.data)
        except StoreCorrupted:
            return None
        state = session._state
        if write.version == 0:
            # A migrated token's handle may still hold its registry record (registry and
            # sessions in one store): replace it, compared on its version, so that of two
            # replicas migrating one token only one succeeds.
            if stored.credentials is None and state.migrated_sid == write.key:
                return write._replace(version=record.version)
            return None
        if stored.credentials is None:
            return None
        data = _merge(context, session, write, stored.data)
        login = write.replaces is not None
        credentials = stored.credentials
        secret = write.secret
        renewed = False
        if login:
            credentials = self._credentials(write.secret or "")
        elif credentials.verifier != (state.credentials or credentials).verifier:
            secret = None  # renewed by another request meanwhile: its secret is the current one
        elif write.secret is not None and state.rotate is not None:
            credentials = self._renewed(context, session, write.secret, state.now)
            renewed = True
        mine = login or renewed
        # A login or re-authentication in this request: its authentication is the latest.
        authenticated = login or state.reauthenticated
        rebased = records.Stored(
            data,
            session.created_at if login else stored.created_at,
            max(session.last_seen, stored.last_seen),
            session.rotated_at if mine else stored.rotated_at,
            session.user if login else stored.user,
            session.authenticated_at if authenticated else stored.authenticated_at,
            session.ip,
            session.user_agent,
            session.persistent if state.meta_changed else stored.persistent,
            session.csrf_secret if login else stored.csrf_secret or session.csrf_secret,
            credentials,
            session.persistent_limits if state.meta_changed else stored.persistent_limits,
            session.assurance if authenticated else stored.assurance,
        )
        return write._replace(
            data=records.encode(rebased, data, credentials),
            version=record.version,
            user=rebased.user,
            secret=secret,
        )

    def describe(
        self, context: Context, key: str, record: Record, now: float
    ) -> SessionInfo | None:
        leeway = 0.0 if self.migrate_from is None else self.migrate_from.leeway
        return describe(context, key, record, now, leeway)


def _merge(
    context: Context, session: Session, write: Write, stored: dict[str, Any]
) -> dict[str, Any]:
    """`stored` with the keys `write` changed applied on top (see `ServerSide.rebase`)."""
    data = dict(stored)
    for key, value in write.changes.items():
        if value.__class__ is Operations:
            data[key] = value.apply(data.get(key, ABSENT))
            continue
        read = NOT_READ if context.on_conflict != "refuse" else session.read_value(key)
        if read is not NOT_READ and data.get(key, ABSENT) != read:
            # Computed from a value another request has replaced since: applying it
            # would silently undo that acknowledged write.
            context.audit.lifecycle("session.conflict", session.id, f"keys={len(write.changes)}")
            raise WriteConflict(
                "the request changed a session key that another request changed since "
                "it was read; nothing was saved"
            )
        if value is DELETED:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def hash_keys(keys: KeyRing | None) -> tuple[bytes | None, ...]:
    """What server-side secrets are hashed with for `keys`, newest first: the ring's
    `ID_HASH` subkeys, or None for plain SHA-256."""
    if keys is None:
        return (None,)
    return tuple(k.secret for k in keys.subkeys(ID_HASH))


def _opens(
    secret: str, credentials: records.Credentials, now: float, keys: tuple[bytes | None, ...]
) -> bool | None:
    """Whether `secret` opens a record although it is not its current secret hashed with
    the newest key: False if it is under an older key, True if it is the previous secret
    inside its grace window, None if it does not open it at all."""
    for key in keys:  # newest first; one unless keys are being rotated
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


def describe(
    context: Context, key: str, record: Record, now: float, leeway: float
) -> SessionInfo | None:
    """What a listing shows of the record under `key`; None for records that are
    corrupted or past their lifetimes. A client-side registry record is listed `leeway`
    past its deadlines: so long is its token accepted."""
    try:
        stored = records.decode(record.data)
    except StoreCorrupted:
        return None
    client = stored.credentials is None
    level = stored.assurance
    if level is None and stored.user is not None:
        level = DEFAULT_ASSURANCE
    if client:
        now -= leeway
    lifetimes = context.lifetimes.of(stored.persistent, stored.persistent_limits)
    if lifetimes.expiry(now=now, created_at=stored.created_at, last_seen=stored.last_seen):
        return None
    return SessionInfo(
        key,
        stored.user,
        stored.created_at,
        stored.authenticated_at,
        stored.last_seen,
        stored.ip,
        stored.user_agent,
        "client" if client else "server",
        stored.persistent,
        stored.created_at + lifetimes.absolute,
        stored.last_seen + lifetimes.idle,
        level,
    )
