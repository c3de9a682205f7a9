"""`SessionStore`: Django's `SessionBase` over coatcheck's manager and stores.

Django's `request.session` API is kept whole (the mapping, `cycle_key`, `flush`,
`set_expiry`, `save(must_create=...)`, `clear_expired` and every `a*` async twin), with
coatcheck underneath:

- the session key in the cookie is a coatcheck secret (a handle and a 256-bit verifier);
  the store keeps the record under the handle with only the secret's hash, so a store
  dump holds no usable cookie;
- a save writes only the keys this request changed, compared-and-set on the record's
  version: parallel requests that write different keys all keep their writes (Django's
  own engines keep only the last request's whole dict);
- a save of a session deleted meanwhile (logout or revocation elsewhere) raises
  `UpdateError` and writes nothing: a deleted session is never resurrected;
- a save that changes a key which another request changed since this one read it raises
  `ConflictError` (a `coatcheck.WriteConflict` and an `UpdateError`) and writes nothing:
  `coatcheck.adapters.django.SessionMiddleware` answers it `409 Conflict`, Django's own
  middleware with its `SessionInterrupted` (400);
- the user Django's auth stores in the session is indexed, so `SessionAdmin` (and the
  `coatcheck_sessions` command) lists and revokes a user's sessions; a user bound
  without a `cycle_key` (custom login code) still gets a new session key;
- idle and absolute timeouts and periodic ID renewal come from the manager, within which
  `set_expiry` keeps Django's meaning; expired records are never loaded and are purged by
  `clear_expired` (`manage.py clearsessions`).

A record that is not valid coatcheck JSON (tampered with, or written by something else)
loads as an empty session and is logged on `django.security.SuspiciousSession`, as
Django logs a bad signature. Session keys that are not well-formed coatcheck IDs (Django
accepts any 8+ characters) are ignored before any store is asked.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError

from ...admin import AsyncSessionAdmin, SessionAdmin
from ...drivers import MAX_ATTEMPTS
from ...exceptions import StoreCorrupted, StoreError, WriteConflict
from ...ids import handle_of, is_wellformed, new_secret
from ...manager import Opening, ServerSide, SessionManager, Write
from ...records import decode
from ...request import RequestInfo
from ...session import Session
from ...stores.base import AsyncStore, Record, Store
from .config import get_manager

__all__ = ["ConflictError", "SessionStore"]

#: Where `django.contrib.auth` keeps the logged-in user's primary key.
AUTH_USER_KEY = "_auth_user_id"
CREATE_ATTEMPTS = 10

suspicious = logging.getLogger("django.security.SuspiciousSession")


class ConflictError(WriteConflict, UpdateError):
    """The save's change to a key was computed from a value another request has replaced
    since (`coatcheck.WriteConflict`); nothing was saved. Also an `UpdateError`, Django's
    error for a save that a concurrent request made impossible, so that Django's own
    middleware answers it (`SessionInterrupted`) rather than with a 500."""


class SessionStore(SessionBase):
    """`SESSION_ENGINE = "coatcheck.adapters.django"`.

    `request` (a `RequestInfo`, passed by `coatcheck.adapters.django.SessionMiddleware`)
    supplies the client IP and user agent that session listings show.
    """

    _session_cache: Session

    def __init__(
        self, session_key: str | None = None, *, request: RequestInfo | None = None
    ) -> None:
        self.manager: SessionManager = get_manager()
        self._request = request if request is not None else RequestInfo()
        self._modified = False
        self._cycled = False
        self._written: Record | None = None
        super().__init__(session_key)

    def __repr__(self) -> str:
        cache = self.__dict__.get("_session_cache")
        return f"<SessionStore {cache!r}>" if cache is not None else "<SessionStore (not loaded)>"

    # -- state -----------------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        """Whether `save()` is due: Django's flag, or coatcheck's need to refresh the
        record's last-seen time or renew its ID."""
        cache = self.__dict__.get("_session_cache")
        return self._modified or (
            cache is not None and (cache.rotate is not None or cache.meta_changed)
        )

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value

    @property
    def _store(self) -> Store:
        mode = self.manager.mode
        assert isinstance(mode, ServerSide)  # noqa: S101 - get_manager() refuses other modes
        return mode.store

    @property
    def _astore(self) -> AsyncStore:
        mode = self.manager.mode
        assert isinstance(mode, ServerSide)  # noqa: S101 - get_manager() refuses other modes
        return mode.async_store

    @property
    def coatcheck(self) -> Session:
        """The underlying coatcheck `Session` (public `id`, `user`, `info()`, ...)."""
        return self._get_session()

    def _validate_session_key(self, key: str | None) -> bool:
        return isinstance(key, str) and is_wellformed(key)

    def _get_new_session_key(self) -> str:
        return new_secret()

    async def _aget_new_session_key(self) -> str:
        return new_secret()

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            if self.session_key is None or no_load:
                self._session_cache = self._fresh()
            elif self._written is not None:
                self._session_cache = self._adopt(self.session_key, self._written)
            else:
                self._session_cache = self._load()
        return self._session_cache

    async def _aget_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            if self.session_key is None or no_load:
                self._session_cache = self._fresh()
            elif self._written is not None:
                self._session_cache = self._adopt(self.session_key, self._written)
            else:
                self._session_cache = await self._aload()
        return self._session_cache

    _session = property(_get_session)

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        return self._loaded(self._load())

    async def aload(self) -> dict[str, Any]:
        return self._loaded(await self._aload())

    def _loaded(self, session: Session) -> dict[str, Any]:
        # Kept unless a session is already in use: loading may forget the key, and the
        # session it leaves (with any dead record to delete) is the one to save next.
        self.__dict__.setdefault("_session_cache", session)
        return dict(session.data())

    def _load(self) -> Session:
        store = self._store
        result: Session | Opening = self._opening(self.session_key)
        record = None
        while isinstance(result, Opening):
            record = None if result.key is None else store.load(result.key)
            result = self.manager.attach(result, record)
        return self._opened(result, record)

    async def _aload(self) -> Session:
        store = self._astore
        result: Session | Opening = self._opening(self.session_key)
        record = None
        while isinstance(result, Opening):
            record = None if result.key is None else await store.load(result.key)
            result = self.manager.attach(result, record)
        return self._opened(result, record)

    def _opened(self, session: Session, record: Record | None) -> Session:
        if not session.is_new and self._expired(session):
            self.manager.audit.security("session.expired", session.id, "reason=django_expiry")
            stale = session.id
            session = self._fresh()
            session.stale_key = stale  # deleted when the new session is saved
        if session.is_new:
            # Unknown, expired or unreadable: Django's rule is to forget the key and
            # create nothing (a later save makes a new key).
            if record is not None and _corrupted(record):
                suspicious.warning("Session data corrupted")
            self._session_key = None
        return session

    def _expired(self, session: Session) -> bool:
        """Whether Django's expiry (`set_expiry`, else `SESSION_COOKIE_AGE`, counted from the
        last save or refresh) has passed, by the manager's clock. Records also expire in
        the store; this check keeps the rule exact whatever the store's TTL resolution."""
        expiry = session.data().get("_session_expiry")
        seen = session.last_seen
        if expiry is None or type(expiry) is int:  # seconds of inactivity: no dates needed
            age = expiry or self.get_session_cookie_age()
        else:
            age = self.get_expiry_age(modification=_datetime(seen), expiry=expiry)
        return seen + age <= self.manager.clock()

    def _opening(self, secret: str | None) -> Opening:
        manager = self.manager
        key = None if secret is None else handle_of(secret)
        return Opening(request=self._request, now=manager.clock(), key=key,
                       transport=manager.transport, secret=secret,
                       presented=secret is not None)  # fmt: skip

    def _fresh(self) -> Session:
        """A new session that is not stored yet (its ID becomes the key once saved)."""
        fresh = self.manager.attach(self._opening(None), None)
        assert isinstance(fresh, Session)  # noqa: S101 - no key: always a fresh session
        return fresh

    def _blank(self, secret: str, source: Session | None) -> Session:
        """A new session under the given key, holding `source`'s data and user."""
        now = self.manager.clock()
        session = Session(
            dict(source.data()) if source is not None else {},
            secret=secret, id=handle_of(secret), is_new=True, now=now, created_at=now,
            last_seen=now, rotated_at=now, ip=self._request.client_ip,
            user_agent=self._request.header("user-agent"),
            user=source.user if source is not None else None,
            authenticated_at=source.authenticated_at if source is not None else None,
        )  # fmt: skip
        session.transport = self.manager.transport
        session.stale_key = source.stale_key if source is not None else None
        return session

    # -- Django's storage API ----------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        assert session_key is not None  # noqa: S101 - validated above
        key = handle_of(session_key)
        record = self._store.load(key)
        return record is not None and self.manager.describe(key, record) is not None

    async def aexists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        assert session_key is not None  # noqa: S101 - validated above
        key = handle_of(session_key)
        record = await self._astore.load(key)
        return record is not None and self.manager.describe(key, record) is not None

    def create(self) -> None:
        for attempt in range(CREATE_ATTEMPTS):
            self._session_key = self._creation_key(attempt)
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise StoreError("could not create a session under a fresh key")

    async def acreate(self) -> None:
        for attempt in range(CREATE_ATTEMPTS):
            self._session_key = self._creation_key(attempt)
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise StoreError("could not create a session under a fresh key")

    def _creation_key(self, attempt: int) -> str:
        """A key for a new record: the unsaved session's own ID first (it carries the dead
        record to delete, if any), then fresh ones."""
        cache = self.__dict__.get("_session_cache")
        if attempt == 0 and cache is not None and cache.is_new:
            secret: str = cache.secret
            return secret
        return new_secret()

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        session = self._prepare(must_create, self._get_session(no_load=must_create))
        write = _execute(self.manager, self._store, session, self._ttl(session))
        self._saved(session, write)

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        session = self._prepare(must_create, await self._aget_session(no_load=must_create))
        store = self._astore
        write = await _aexecute(self.manager, store, session, self._ttl(session))
        self._saved(session, write)

    def _prepare(self, must_create: bool, current: Session) -> Session:
        """The session to commit: a new one under the key when creating, else the loaded
        one (`UpdateError` if the key resolved to nothing, as Django's engines raise)."""
        key = self.session_key
        if key is None or (current.is_new and not must_create):
            raise UpdateError  # loading found nothing under the key
        if must_create and not (current.is_new and current.secret == key):
            current = self._blank(key, current)
            self._session_cache = current
        self._bind_user(current)
        current.modified = True  # Django's save() always writes
        return current

    def _bind_user(self, session: Session) -> None:
        """Index the user `django.contrib.auth` put in the session. Binding a user to a
        session whose key was not cycled in this request rotates the key (fixation)."""
        value = session.data().get(AUTH_USER_KEY)
        user = None if value is None else str(value)
        if user == session.user:
            return
        if user is not None and not (self._cycled or session.is_new):
            session.login(user)
            return
        session.user = user
        session.authenticated_at = None if user is None else self.manager.clock()
        session.modified = True

    def _saved(self, session: Session, write: Write | None) -> None:
        """Adopt the state just stored, so that later changes in this request (and a
        second save) start from it."""
        self._written = None
        if session.ended or write is None:
            self._session_key = None
            self._session_cache = self._fresh()
            return
        self._session_key = session.secret
        del self._session_cache  # what is stored now is adopted on the next access, if any
        version = 1 if write.replaces is not None or write.version == 0 else write.version + 1
        self._written = Record(write.data, version)

    def _adopt(self, secret: str, record: Record) -> Session:
        """The session as it was just written (without reading it back from the store)."""
        self._written = None
        stored = self.manager.attach(self._opening(secret), record)
        return stored

    def _ttl(self, session: Session) -> float:
        """How long the record lives by Django's rules (`set_expiry`, `SESSION_COOKIE_AGE`),
        counted from now; the manager's lifetimes cap it."""
        expiry = session.data().get("_session_expiry")
        if expiry is None or type(expiry) is int:
            return max(0.0, float(expiry or self.get_session_cookie_age()))
        now = _datetime(self.manager.clock())
        return max(0.0, float(self.get_expiry_age(modification=now, expiry=expiry)))

    def delete(self, session_key: str | None = None) -> None:
        key = self._public(session_key)
        if key is not None:
            self._store.delete(key)
            self.manager.audit.lifecycle("session.deleted", key)

    async def adelete(self, session_key: str | None = None) -> None:
        key = self._public(session_key)
        if key is not None:
            await self._astore.delete(key)
            self.manager.audit.lifecycle("session.deleted", key)

    def _public(self, session_key: str | None) -> str | None:
        secret = self.session_key if session_key is None else session_key
        if secret is None or not self._validate_session_key(secret):
            return None  # nothing can be stored under a key coatcheck never issues
        return handle_of(secret)

    def clear(self) -> None:
        # Loaded first, so that each key is deleted explicitly: keys another request adds
        # meanwhile survive, as with every other write.
        self._get_session().clear()
        self.accessed = True
        self.modified = True

    def flush(self) -> None:
        self.delete()
        self._forget()

    async def aflush(self) -> None:
        await self.adelete()
        self._forget()

    def _forget(self) -> None:
        self._written = None
        self._session_cache = self._fresh()
        self._session_key = None
        self.accessed = True
        self.modified = True

    def cycle_key(self) -> None:
        session = self._get_session()
        if self.session_key is None:
            self.create()
        else:
            self._cycle(session)
            try:
                write = _execute(self.manager, self._store, session, self._ttl(session))
            except ConflictError:
                raise  # nothing saved: the request is refused, not started over
            except UpdateError:  # deleted meanwhile: start over under a new key
                self._session_cache = session
                self._session_key = None
                self.create()
            else:
                self._saved(session, write)
        self._cycled = True

    async def acycle_key(self) -> None:
        session = await self._aget_session()
        if self.session_key is None:
            await self.acreate()
        else:
            self._cycle(session)
            store = self._astore
            try:
                write = await _aexecute(self.manager, store, session, self._ttl(session))
            except ConflictError:
                raise
            except UpdateError:
                self._session_cache = session
                self._session_key = None
                await self.acreate()
            else:
                self._saved(session, write)
        self._cycled = True

    def _cycle(self, session: Session) -> None:
        # A login's rotation: the old handle ends and its key stops working at once, as
        # Django's cycle_key promises (auth.login relies on it against session fixation).
        session.rotate = "login"
        self._bind_user(session)
        session.modified = True

    @classmethod
    def clear_expired(cls) -> None:
        SessionAdmin(get_manager()).purge_expired()

    @classmethod
    async def aclear_expired(cls) -> None:
        await AsyncSessionAdmin(get_manager()).purge_expired()


# -- committing ------------------------------------------------------------------------------


def _execute(manager: SessionManager, store: Store, session: Session, ttl: float) -> Write | None:
    """Run the manager's commit of `session` against `store`, by Django's rules: a new
    record's key must be free (`CreateError`), an existing record must still exist
    (`UpdateError`); version conflicts are rebased onto the stored record. Returns the
    write that succeeded."""
    commit = manager.commit(session)
    for key in commit.deletes:
        store.delete(key)
    write = commit.write
    if write is not None:
        for _ in range(MAX_ATTEMPTS):
            if _apply(store, write, ttl):
                break
            if write.version == 0:
                raise CreateError
            write = _rebase(manager, session, write, store.load(write.source))
            if write is None:
                raise UpdateError
        else:
            raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")
    if commit.revoke_user is not None:
        keep = None if write is None else write.key
        SessionAdmin(manager, store).revoke_user(commit.revoke_user, keep=keep)
    manager.finish(session, commit, write)
    return write


async def _aexecute(
    manager: SessionManager, store: AsyncStore, session: Session, ttl: float
) -> Write | None:
    """Async twin of `_execute`."""
    commit = manager.commit(session)
    for key in commit.deletes:
        await store.delete(key)
    write = commit.write
    if write is not None:
        for _ in range(MAX_ATTEMPTS):
            if await _aapply(store, write, ttl):
                break
            if write.version == 0:
                raise CreateError
            write = _rebase(manager, session, write, await store.load(write.source))
            if write is None:
                raise UpdateError
        else:
            raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")
    if commit.revoke_user is not None:
        keep = None if write is None else write.key
        await AsyncSessionAdmin(manager, store).revoke_user(commit.revoke_user, keep=keep)
    manager.finish(session, commit, write)
    return write


def _rebase(
    manager: SessionManager, session: Session, write: Write, record: Record | None
) -> Write | None:
    """`manager.rebase`, its `WriteConflict` raised as the engine's `ConflictError`."""
    try:
        return manager.rebase(session, write, record)
    except WriteConflict as exc:
        raise ConflictError(*exc.args) from None


def _apply(store: Store, write: Write, cap: float) -> bool:
    """Run `write`, its record kept no longer than `cap` seconds (Django's expiry)."""
    ttl = min(write.ttl, cap)
    if write.replaces is None:
        return store.save(write.key, write.data, version=write.version, ttl=ttl, user=write.user)
    return store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=ttl,
        user=write.user,
    )  # fmt: skip


async def _aapply(store: AsyncStore, write: Write, cap: float) -> bool:
    ttl = min(write.ttl, cap)
    if write.replaces is None:
        return await store.save(
            write.key, write.data, version=write.version, ttl=ttl, user=write.user
        )
    return await store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=ttl,
        user=write.user,
    )  # fmt: skip


def _corrupted(record: Record) -> bool:
    try:
        decode(record.data)
    except StoreCorrupted:
        return True
    return False


def _datetime(timestamp: float) -> datetime:
    """`timestamp` as Django's `timezone.now()` would give it (aware only with USE_TZ)."""
    if settings.USE_TZ:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return datetime.fromtimestamp(timestamp)
