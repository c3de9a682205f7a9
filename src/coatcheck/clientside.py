"""`ClientSide`: the whole session travels in a signed (JWS) or encrypted (JWE) token.

The request path stays free of network round trips: a token is verified with the
`KeyRing`, its deadlines are checked against the injected clock, and its `sid` is looked up
in this process's copy of the revocation list. What client-side sessions usually lack is
added on the side, off the hot path:

- a **registry**: a small record per logged-in session (user, created, last seen, IP,
  user agent) in a store, written at login and refreshed at most once per
  `Lifetimes.touch_interval`, so sessions can be listed exactly as server-side ones
  (anonymous sessions too with `list_anonymous=True`; otherwise a new visitor costs no
  store write);
- a **revocation list**: `logout()`, `SessionAdmin.revoke` and "log out everywhere" write
  entries that every replica picks up within `staleness` seconds (0: checked every request).

Tokens verify without a store, so an outage of the registry and revocation store degrades
this mode instead of stopping it, for a bounded time (`max_staleness`): see `ClientSide`.

Claims (all times are NumericDates): `sid` (the session's handle: 128 random bits, kept
from creation to logout or login), `sub` (the user), `iat` (when the session began, in
milliseconds, kept across re-issues), `exp` (absolute deadline), `idl` (idle deadline),
`auth_time`, `acr` (the assurance level of that authentication, OIDC's claim; absent for
the lowest), `rot` (when the token was last renewed), `gen` (how many times `regenerate()`
replaced the session's tokens; absent for 0), `dat` (the session data), `csrf`, `per`
(persistent session), `pla` / `pli` (the absolute / idle limit a persistent session asked
for at `set_persistent`, seconds; absent when as configured). A token that fails verification, is
past a deadline, or is revoked is treated as no session and logged on `coatcheck.security`.
"""

from __future__ import annotations

import _thread
import math
from typing import TYPE_CHECKING, Any, Literal

from . import reuse
from .audit import ThrottledLog
from .exceptions import (
    ConfigurationError,
    InvalidToken,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
)
from .ids import handle_of, is_handle, is_wellformed, new_handle
from .keys import KeyRing
from .lifetimes import RENEW, TOKEN_LIMITS, TOUCH, Expiry, put_limits, read_limits
from .plans import NOTHING, STALE, Commit, Context, Opening, Write, new_opening, rejected
from .records import decode, encode
from .revocation import (
    REVOKED,
    SUPERSEDED,
    AsyncRevocationStore,
    Revocation,
    RevocationList,
    RevocationStore,
)
from .serverside import RecordReader, describe, hash_keys
from .session import DEFAULT_ASSURANCE, CommitState, Session, SessionInfo
from .stores import (
    AsyncStore,
    Store,
    from_url,
    revocations_for,
    revocations_to_async,
    to_async,
)
from .tokens import JWECodec, JWSCodec, TokenCodec, check_times

if TYPE_CHECKING:
    from .request import RequestInfo
    from .stores.base import Record
    from .transports import Transport

__all__ = ["ClientSide"]


#: How long (seconds) a process serves from its copy of the revocation list while the
#: revocation store cannot be read, unless `strict=True` (then 0: 503 at once).
DEFAULT_MAX_STALENESS = 60.0
#: After a failed sync the store is asked again no sooner than this (seconds), or than
#: `staleness` if longer: during an outage, requests are not each held up by a timeout.
SYNC_RETRY = 1.0


def _codec(keys: KeyRing, encrypted: bool, compress: bool, algorithm: str | None) -> TokenCodec:
    """The token codec `ClientSide` uses: JWE, HS256 JWS, or EdDSA / ES256 JWS."""
    if encrypted:
        if algorithm is not None:
            raise ConfigurationError("algorithm=... applies to signed tokens, not encrypted=True")
        return JWECodec(keys, compress=compress)
    if algorithm == "HS256" or (algorithm is None and keys.signing_algorithm is None):
        return JWSCodec(keys)
    from .asymmetric import AsymmetricJWSCodec

    return AsymmetricJWSCodec(keys.signing_keys(), algorithm=algorithm)


class ClientSide:
    """Client-side sessions: tokens signed (default) or encrypted (`encrypted=True`) with
    `keys`.

    `store` keeps the registry and the revocation list: a URL (`sqlite:///sessions.db`,
    the default, shared by every process on the machine; `memory://` for one process) or a
    `Store` for the registry with `revocations=` for the list. `store=None` makes sessions
    fully stateless: no listing, and `logout()` only clears the client's copy.

    The registry lists the sessions that have a user: a new visitor's token is issued
    without a store write, and its record is created when it logs in (`unbind_user()`
    deletes it again). `list_anonymous=True` lists anonymous sessions too, at the price of
    a registry write per new visitor; turned on later, it ends the anonymous sessions that
    began before (their tokens have no record: see `vanished`).

    `algorithm` picks the signature: "HS256" (the default for a ring of symmetric keys),
    "EdDSA" or "ES256" (asymmetric, `coatcheck.asymmetric`: the default when the ring holds
    signing keys; downstream services verify with the public JWK set alone). It is fixed
    here, by the configuration and the key type, never by a token's header.

    `staleness` bounds how old (seconds) a process's copy of the revocation list may be;
    `strict=True` checks the store on every request. `leeway` tolerates clock skew between
    replicas when checking deadlines. `compress` enables DEFLATE for encrypted tokens (see
    `JWECodec` for when that is unsafe).

    With a Redis or PostgreSQL URL, the first request also starts a listener (pub/sub,
    LISTEN/NOTIFY) that applies revocations to this process's copy as they happen. The polls
    every `staleness` seconds remain the resync that corrects a missed message: a listener
    shortens the delay, the bound never depends on it. `close()` / `aclose()` stop it and
    release what the mode built from the URL. A revocation store passed as an object stays
    the caller's: to push into this mode's list, call
    `store.listen(mode.revocation_list.apply_one)`.

    When the store is down, valid tokens keep being served for up to `max_staleness`
    seconds (default 60; 0 with `strict=True`: 503 at once) after the last successful sync
    of the revocation list; past that, requests get 503: revocations can no longer be
    trusted. Meanwhile (the store is retried every `staleness`, at least every second):

    - the staleness bound of "revoked => refused" is `max_staleness`, not `staleness`: a
      revocation written elsewhere after this process's last sync is not seen;
    - a registry write that fails is dropped and the token issued anyway, so the promise
      "accepted => listed" is suspended: a session that starts, logs in or is refreshed
      during the outage may be missing from listings (and one that never got its record
      ends at its next registry write after the outage, as any token that is not listed);
    - writes of revocation entries (logout, login, `regenerate()`, revocations) still fail
      with `StoreError`, and the adapter answers 503 (with its `fail_open`, it drops them).

    `served_stale` counts requests verified against a list older than `staleness` because
    the store failed, `dropped_registry_writes` the registry writes dropped; each logs a
    line per 10 s at most, with the count since the last. `max_staleness=0` keeps the
    fail-closed behaviour: every request that needs the store gets 503 while it is down.
    """

    name = "client"

    def __init__(
        self,
        keys: Any,  # a KeyRing; `Any` so the compiled core raises ConfigurationError too
        *,
        encrypted: bool = False,
        compress: bool = False,
        store: Store | AsyncStore | str | None = "sqlite:///sessions.db",
        revocations: RevocationStore | AsyncRevocationStore | None = None,
        staleness: float = 1.0,  # seconds
        strict: bool = False,
        leeway: float = 5.0,  # seconds
        max_staleness: float | None = None,  # seconds; None: 60, or 0 with strict=True
        list_anonymous: bool = False,
        algorithm: str | None = None,
    ) -> None:
        if not isinstance(keys, KeyRing):
            raise ConfigurationError(
                "ClientSide(keys=...) takes a KeyRing, e.g. KeyRing.from_env()"
            )
        if compress and not encrypted:
            raise ConfigurationError("compress=True applies to encrypted tokens only")
        self.keys: KeyRing = keys
        self.list_anonymous = list_anonymous
        #: Reads the server-side sessions this mode migrates: their secrets are hashed
        #: with its keys, or with none.
        self._server = RecordReader((*hash_keys(keys), None), self.name)
        self.encrypted = encrypted
        self.codec: TokenCodec = _codec(keys, encrypted, compress, algorithm)
        self.staleness = 0.0 if strict else staleness
        self.leeway = leeway
        if max_staleness is None:
            max_staleness = 0.0 if strict else max(DEFAULT_MAX_STALENESS, self.staleness)
        if not (math.isfinite(max_staleness) and max_staleness >= 0):
            raise ConfigurationError(
                "ClientSide(max_staleness=...) is seconds, finite and >= 0 (0: answer 503 "
                "as soon as the revocation store cannot be read)"
            )
        if 0 < max_staleness < self.staleness:
            raise ConfigurationError(
                f"max_staleness ({max_staleness} s) is shorter than staleness "
                f"({self.staleness} s): the list would be refused before it is due for a "
                "sync; use 0 to refuse at once when the store is down, or at least staleness"
            )
        self.max_staleness = float(max_staleness)
        import logging  # here, not at import: `logging` imports `threading`

        self._log = log = logging.getLogger("coatcheck")
        self.served_stale = ThrottledLog(
            log,
            "revocations.stale",
            f"revocation store unavailable: tokens verified against this process's last "
            f"copy of the revocation list, for up to max_staleness={self.max_staleness:g} s; "
            "revocations written since are not seen",
        )
        self.dropped_registry_writes = ThrottledLog(
            log,
            "registry.write_dropped",
            "registry store unavailable: registry writes dropped, tokens issued for "
            "sessions that are not listed ('accepted => listed' suspended until the store "
            "is back)",
        )
        self._sync_failed_at = -math.inf
        self.revocation_list = RevocationList()
        self._store: Store | None = None
        self._async_store: AsyncStore | None = None
        #: The revocation store's sync and async twins (None: revocations hold in this
        #: process only); read by the drivers and `SessionAdmin`.
        self.revocations: RevocationStore | None = None
        self.async_revocations: AsyncRevocationStore | None = None
        self._listening = _thread.allocate_lock()
        # Stores built here from a URL: `close` releases them; their listeners start lazily.
        self._owned: list[Any] = []
        self._listen_sync = self._listen_async = False
        if isinstance(store, str):
            self._store = from_url(store)
            self._async_store = to_async(self._store)
            self._owned += [self._store, self._async_store]
            if revocations is None:
                self.revocations = revocations_for(store)
                self.async_revocations = revocations_to_async(self.revocations)
                self._owned += [self.revocations, self.async_revocations]
                self._listen_sync = self._listen_async = True
        elif isinstance(store, Store):
            self._store, self._async_store = store, to_async(store)
        elif isinstance(store, AsyncStore):
            self._async_store = store
        elif store is not None:
            raise ConfigurationError("ClientSide(store=...) takes a store, a URL or None")
        if isinstance(revocations, RevocationStore):
            self.revocations = revocations
        elif isinstance(revocations, AsyncRevocationStore):
            self.async_revocations = revocations
        if self.revocations is not None and self.async_revocations is None:
            self.async_revocations = revocations_to_async(self.revocations)
        if store is not None and self.revocations is None and self.async_revocations is None:
            raise ConfigurationError(
                "ClientSide with a store object also needs revocations=... (a RevocationStore); "
                "or pass a store URL, which provides both"
            )

    def __repr__(self) -> str:
        kind = "JWE" if self.encrypted else "JWS"
        return f"ClientSide({kind}, store={self._store or self._async_store!r})"

    # -- what the drivers use ------------------------------------------------------------

    @property
    def store(self) -> Store | None:
        """The registry's sync store (None: no registry)."""
        return self._store

    @property
    def async_store(self) -> AsyncStore | None:
        return self._async_store

    @property
    def client_mode(self) -> ClientSide:
        return self

    def listen(self, *, asynchronous: bool = False) -> None:
        """Start the push feed (pub/sub, LISTEN/NOTIFY) of the revocation store this mode
        built from its `store` URL, if it has one, once: the sync twin's listener thread,
        or with `asynchronous` the async twin's task in the running event loop. The
        drivers call it before they poll, so it starts with the first request; an app may
        call it at startup instead. Safe to call from concurrent requests."""
        if not (self._listen_async if asynchronous else self._listen_sync):
            return  # started already, or nothing to start: the common case, no lock
        with self._listening:
            if asynchronous and self._listen_async:
                self._listen_async = False
                _listen(self.async_revocations, self.revocation_list)
            elif not asynchronous and self._listen_sync:
                self._listen_sync = False
                _listen(self.revocations, self.revocation_list)

    def close(self) -> None:
        """Stop the revocation listeners and close the stores built from the `store` URL
        (sync twins; `aclose` closes both). Objects passed in stay the caller's to close."""
        self._listen_sync = self._listen_async = False
        for store in self._owned:
            if hasattr(store, "close"):
                store.close()

    async def aclose(self) -> None:
        """Async twin of `close`: also closes the async twins built from the URL."""
        self._listen_sync = self._listen_async = False
        for store in self._owned:
            if hasattr(store, "aclose"):
                await store.aclose()
        self.close()

    # -- degraded mode (no I/O: the drivers report, these decide) ------------------------

    def backing_off(self, now: float) -> bool:
        """Whether a sync failed so recently (within `staleness`, at least `SYNC_RETRY`)
        that the store is not asked again yet. Never with `max_staleness=0`: fail-closed
        mode asks the store on every request that needs the list, as it always did."""
        return self.max_staleness > 0 and (
            0 <= now - self._sync_failed_at < max(self.staleness, SYNC_RETRY)
        )

    def serve_stale(self, now: float, error: StoreError | None = None) -> None:
        """The revocation list is due for a sync that failed (`error`), or that is not tried
        while `backing_off`. Carry on with this process's copy if its last successful sync
        is less than `max_staleness` old (counted in `served_stale`); otherwise raise
        `StoreUnavailable`, for a 503: revocations can no longer be trusted."""
        if error is not None:
            self._sync_failed_at = now
        age = now - self.revocation_list.synced_at
        if age >= self.max_staleness:
            since = "never synced" if math.isinf(age) else f"last synced {age:.1f} s ago"
            raise StoreUnavailable(
                f"revocation list {since}, over max_staleness ({self.max_staleness:g} s): "
                "revocations can no longer be trusted"
            ) from error
        self.served_stale.record(now, f"list {age:.1f} s old; {error or 'retry pending'}")

    def poll_due(self, now: float, *, force: bool = False) -> bool:
        """Whether a request should poll the revocation store now (always when `force`d).
        Not when the list is fresh enough, nor while `backing_off`: then the copy is served
        as it is, if still trusted (`serve_stale`)."""
        if force:
            return True
        if not self.revocation_list.due(now, self.staleness):
            return False
        if self.backing_off(now):
            self.serve_stale(now)
            return False
        return True

    def polled(
        self, now: float, result: tuple[list[Revocation], int] | StoreError, *, force: bool
    ) -> bool:
        """Apply what a poll of the revocation store returned, or handle its failure: a
        forced poll re-raises it, another serves the copy while it is trusted. True when
        the page was full: the poll asks again (the list is not up to date until a short
        page; a failure then keeps the pages before it)."""
        if isinstance(result, StoreError):
            if force:
                raise result
            self.serve_stale(now, result)
            return False
        entries, cursor = result
        more = self.revocation_list.apply(entries, cursor, now)
        if not more:
            self.synced(now)
        return more

    def synced(self, now: float) -> None:
        """A sync succeeded: if it ends an outage, say so once."""
        if self._sync_failed_at != -math.inf:
            self._sync_failed_at = -math.inf
            self._log.warning(
                "revocation store reachable again: revocation list synced, degraded mode "
                "over (%d requests served on a stale list, %d registry writes dropped in all)",
                self.served_stale.total,
                self.dropped_registry_writes.total,
                extra={"event": "revocations.synced"},
            )

    def write_failed(self, now: float, error: StoreError) -> None:
        """A registry write (or delete) failed: drop it (counted in
        `dropped_registry_writes`; the token is still issued) unless `max_staleness` is 0,
        which re-raises `error` (503)."""
        if self.max_staleness == 0:
            raise error
        self.dropped_registry_writes.record(now, str(error))

    # -- decisions (no I/O) --------------------------------------------------------------

    def open(
        self, context: Context, request: RequestInfo, now: float, transport: Transport, token: str
    ) -> Opening:
        """Verify `token`; an invalid or revoked one becomes no session."""
        if "." not in token:
            # A server-side session secret: migrate it if the registry store also holds it.
            if is_wellformed(token) and self._store is not None:
                key = handle_of(token)
                return new_opening((request, now, key, transport, token, True, None, False, False))
            context.audit.security("token.malformed", token)
            return rejected(request, now, transport)
        try:
            decoded = self.codec.decode(token)
            claims = decoded.claims
            check_times(claims, now=now, leeway=self.leeway)
            sid, user, iat = claims["sid"], claims.get("sub"), float(claims["iat"])
            generation = claims.get("gen", 0)
            if (
                not is_handle(sid)
                or not isinstance(claims.get("dat", {}), dict)
                or generation.__class__ is not int
            ):
                raise InvalidToken("token claims have the wrong types")
            if user is not None and not isinstance(user, str):
                raise InvalidToken("token sub is not a string")
            if ("pla" in claims or "pli" in claims) and _token_limits(claims) is None:
                raise InvalidToken("token lifetime limits are not seconds > 0")
            level = claims.get("acr")
            if level is not None and (level.__class__ is not str or not level or user is None):
                raise InvalidToken("token acr is not a level of a logged-in session")
        except (InvalidToken, KeyError, TypeError, ValueError) as exc:
            context.audit.security("token.invalid", token, _reason(exc))
            return rejected(request, now, transport)
        verdict = self.revocation_list.check(sid, user, iat, generation, now)
        if verdict == REVOKED and self.revocation_list.retired(sid, user, iat, generation, now):
            if reuse.report(context, sid, self.name):  # the session is ended at commit
                return new_opening((request, now, sid, transport, None, True, None, False, True))
            return rejected(request, now, transport)
        if verdict == REVOKED:
            context.audit.security("token.revoked", sid)
            return rejected(request, now, transport)
        older_key, superseded = not decoded.is_current, verdict == SUPERSEDED
        return new_opening(
            (request, now, None, transport, token, True, claims, older_key, superseded)
        )

    def attach(self, context: Context, opening: Opening, record: Record | None) -> Session:
        """The session a verified token carries; or, for a server-side secret, the session
        stored in `record`, migrated: it becomes a client-side session (its record is
        deleted once the token is issued)."""
        claims = opening.claims
        if claims is None:
            if opening.superseded:  # a reuse (`open`): a fresh session that ends `key`
                session = self._server.attach(context, opening, None)
                session._state.reused = opening.key
                return session
            return self._migrate(context, opening, record)
        persistent = bool(claims.get("per"))
        limits = _token_limits(claims) if persistent else None
        lifetimes = context.lifetimes.of(persistent, limits)
        now = opening.now
        state = CommitState(
            opening.secret or "", now, 0, opening.transport, opening.request, context.lifetimes
        )
        state.generation = claims.get("gen", 0)
        state.superseded = opening.superseded
        state.listed = self.list_anonymous or "sub" in claims
        created_at, rotated_at = float(claims["iat"]), float(claims.get("rot", claims["iat"]))
        last_seen = float(claims["idl"]) - lifetimes.idle
        csrf_secret = claims.get("csrf")
        session = Session(
            dict(claims.get("dat") or {}),
            state,
            claims["sid"],
            False,
            created_at,
            last_seen,
            rotated_at,
            claims.get("sub"),
            _opt_float(claims.get("auth_time")),
            persistent,
            csrf_secret if isinstance(csrf_secret, str) else None,
            "client",
        )
        if limits is not None:
            session.persistent_limits = limits
        level = claims.get("acr")
        if level is not None:
            session.assurance = level
        due = lifetimes.assess(now, created_at, last_seen, rotated_at)
        if due.__class__ is Expiry:  # accepted within `leeway` of a deadline
            due = lifetimes.assess(now, now, now, rotated_at)
            if due is None and now - last_seen >= lifetimes.touch_interval:
                due = TOUCH
        if due is RENEW:
            state.rotate = "renewal"
        elif opening.older_key or due is TOUCH:
            # Verified by an older key (re-issue under the newest), or due for a refresh.
            state.meta_changed = True
        return session

    def _migrate(self, context: Context, opening: Opening, record: Record | None) -> Session:
        session = self._server.attach(context, opening, record)
        if session.is_new:
            return session
        # A server-side session arriving at a client-side manager: migrate it.
        state = session._state
        session.is_new = True
        state.rotate = None
        state.stale_key = opening.key
        state.meta_changed = True
        context.audit.lifecycle("session.migrated", session.id, "to=client")
        return session

    def commit(self, context: Context, session: Session) -> Commit:
        """The token to issue, the registry write and the revocations `session` needs.

        The token's `sid` is the session's handle: renewal and `regenerate()` keep it (the
        latter advances `gen`, and the older generation is refused after the grace
        window), `login()` and logout end it with a revocation entry that outlives every
        token of it. The registry record of a listed session is written whenever an
        issued token's idle deadline moves (at most once per `touch_interval`: in between,
        tokens keep the deadline they had), so it lives as long as any token of the session
        is accepted; an unlisted one (anonymous, without `list_anonymous`) gets its first
        record, at version 0, when it logs in.
        """
        lifetimes = context.lifetimes
        if session.persistent:
            lifetimes = lifetimes.of(True, session.persistent_limits)
        state = session._state
        reused = state.reused
        if reused is not None:  # the request presented a replaced token: end its session
            state.reused = None
            plan = self.commit(context, session)
            return plan._replace(
                deletes=(*plan.deletes, reused) if self._has_registry else plan.deletes,
                revocations=(*plan.revocations, self.revocation(context, reused)),
            )
        now = state.now
        if state.ended:
            if session.is_new:
                return Commit(clear=state.client_stale)
            context.audit.lifecycle("session.logout", session.id)
            return Commit(
                deletes=(session.id,) if self._has_registry else (),
                revocations=(self.revocation(context, session.id),),
                clear=True,
            )
        if not session.modified:
            return Commit(clear=True) if state.client_stale else NOTHING

        old_sid = session.id
        revocations: tuple[Revocation, ...] = ()
        login = state.rotate == "login" and not session.is_new
        if login:
            revocations = (self.revocation(context, old_sid),)
            session.id = new_handle()
            state.generation = 0
        elif session.is_new:
            session.id = new_handle()
        elif state.rotate == "regenerate":
            # Above every generation this session is known to have: two requests that
            # both regenerate from one token must not hand out two tokens of the same
            # generation, or the earlier one would outlive the grace window (the driver
            # brings the list up to date first).
            state.generation = max(state.generation, self.revocation_list.generation(old_sid)) + 1
            revocations = (self.revocation(context, old_sid, generation=state.generation),)
        if state.rotate is not None:
            session.rotated_at = now
        touched = session.is_new or now - session.last_seen >= lifetimes.touch_interval
        if touched:
            session.last_seen = now
        token = self.codec.encode(self._claims(context, session))
        if session.is_new:
            context.audit.lifecycle("session.created", session.id)
        if state.rotate == "login" or (state.rotate == "regenerate" and not session.is_new):
            # (Events only: no log line, as before; a new session's login too.)
            name = "session.login" if state.rotate == "login" else "session.rotated"
            handle = session.id if session.is_new else old_sid
            context.audit.emit(name, handle, "ok", f"new={context.audit.hash(session.id)}")
        write = None
        # A migrated server-side session leaves its old record behind to delete.
        deletes: tuple[str, ...] = () if state.stale_key is None else (state.stale_key,)
        if self._has_registry:
            listed = session.user is not None or self.list_anonymous
            if listed and (touched or login or state.meta_changed):
                ttl = lifetimes.ttl(now=now, created_at=session.created_at) + self.leeway
                data = encode(session, data={})
                if session.is_new or not state.listed:  # its first record
                    write = Write(session.id, data, 0, ttl, session.user)
                elif login:
                    write = Write(session.id, data, STALE, ttl, session.user, replaces=old_sid)
                else:
                    write = Write(session.id, data, STALE, ttl, session.user)
            elif state.listed and not listed:  # `unbind_user()`: it leaves the listing
                deletes += (session.id,)
        return Commit(
            write=write,
            deletes=deletes,
            revoke_user=session.user if state.logout_others else None,
            revocations=revocations,
            token=token,
        )

    def rebase(
        self, context: Context, session: Session, write: Write, record: Record | None
    ) -> Write | None:
        """Registry writes carry no known version: take the stored one, and keep the later
        of the two `last_seen`. A registry record that is gone was deleted by a logout or a
        revocation: it is not created again (the session's tokens are revoked)."""
        if record is None:
            if write.version == 0:  # a new session's record, not written yet
                return write
            context.audit.lifecycle("session.vanished", session.id)
            return None
        if write.version == 0:
            return None  # its handle is taken: never happens with 128 random bits
        try:
            seen = decode(record.data).last_seen
        except StoreCorrupted:
            return write._replace(version=record.version)
        if seen > session.last_seen:
            saved = session.last_seen
            session.last_seen = seen
            write = write._replace(data=encode(session, data={}))
            session.last_seen = saved
        return write._replace(version=record.version)

    def _claims(self, context: Context, session: Session) -> dict[str, Any]:
        lifetimes = context.lifetimes
        if session.persistent:
            lifetimes = lifetimes.of(True, session.persistent_limits)
        claims: dict[str, Any] = {
            "sid": session.id,
            # Milliseconds: "log out everywhere" refuses tokens issued before it, and a
            # login in the same second as the revocation must not be one of them.
            "iat": math.floor(session.created_at * 1000) / 1000,
            "exp": int(session.created_at + lifetimes.absolute),
            "idl": int(session.last_seen + lifetimes.idle),
            "rot": int(session.rotated_at),
            "dat": session.data(),
        }
        if session._state.generation:
            claims["gen"] = session._state.generation
        if session.user is not None:
            claims["sub"] = session.user
        if session.authenticated_at is not None:
            claims["auth_time"] = int(session.authenticated_at)
        level = session.assurance
        if level is not None and level != DEFAULT_ASSURANCE and session.user is not None:
            claims["acr"] = level
        if session.csrf_secret is not None:
            claims["csrf"] = session.csrf_secret
        if session.persistent:
            claims["per"] = 1
            put_limits(claims, session.persistent_limits, TOKEN_LIMITS)
        return claims

    def revocation(
        self,
        context: Context,
        subject: str,
        kind: Literal["sid", "user"] = "sid",
        *,
        keep: str | None = None,
        generation: int | None = None,
    ) -> Revocation:
        """The entry that ends session `subject` (kind "user": every session of user
        `subject` but `keep`; with a `generation`, only the session's older tokens, after
        the grace window), kept until every token it covers has expired anyway: tokens
        never outlive their session's absolute deadline, which began at the latest now (the
        longest a session may have: a persistent one's, if configured longer)."""
        now = context.clock()
        at = now + context.lifetimes.grace if generation is not None else now
        expires = now + context.lifetimes.longest + self.leeway
        return Revocation(kind, subject, at, expires, keep, generation)

    def vanished(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        """The registry record of `session` is gone (a logout or revocation elsewhere, or
        a registry that lost its data): its token is revoked too, since a token that is
        not listed must not be accepted."""
        return (self.revocation(context, session.id),)

    def migration_revocations(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        return ()

    def describe(
        self, context: Context, key: str, record: Record, now: float
    ) -> SessionInfo | None:
        return describe(context, key, record, now, self.leeway)

    @property
    def shares_revocations(self) -> bool:
        """Whether revocations reach every replica (a revocation store is configured);
        without one they hold in this process only."""
        return self.revocations is not None or self.async_revocations is not None

    @property
    def _has_registry(self) -> bool:
        return self._store is not None or self._async_store is not None


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _token_limits(claims: dict[str, Any]) -> tuple[float, float] | None:
    """The `pla` / `pli` claims of a persistent token as `Session.persistent_limits`
    (`math.inf` for one absent), or None if both are absent or either is not a number of
    seconds > 0 (`open` refuses such a token)."""
    try:
        limits = read_limits(claims, TOKEN_LIMITS)
    except ValueError:
        return None
    return None if limits == (math.inf, math.inf) else limits


def _reason(exc: Exception) -> str:
    return f"reason={str(exc)[:80]!r}" if isinstance(exc, InvalidToken) else "reason='claims'"


def _listen(store: object, revocations: RevocationList) -> None:
    """Start `store`'s push feed into `revocations`, if the store offers one."""
    listen = getattr(store, "listen", None)
    if callable(listen):
        listen(revocations.apply_one)
