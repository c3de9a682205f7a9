"""`SessionStore`: Django's `SessionBase` over coatcheck's manager, stores and drivers.

Django's `request.session` API is kept whole (the mapping, `cycle_key`, `flush`,
`set_expiry`, `save(must_create=...)`, `clear_expired` and every `a*` async twin), with
coatcheck underneath:

- the cookie holds a coatcheck secret; the store keeps the record under its handle with
  only the secret's hash, so a store dump holds no usable cookie;
- a save writes only the keys this request changed, compared-and-set on the record's
  version: parallel requests that write different keys all keep their writes (Django's
  own engines keep only the last request's whole dict). A save of a session deleted
  meanwhile raises `UpdateError` (it is never resurrected); one that changes a key another
  request changed since it was read raises `ConflictError` (`WriteConflict` and
  `UpdateError`: 409 with coatcheck's middleware, `SessionInterrupted` with Django's);
- the user `django.contrib.auth` stores is indexed, so `SessionAdmin` and the
  `coatcheck_sessions` command list and revoke a user's sessions; binding a user without
  `cycle_key` (custom login code) still rotates the key;
- the manager's timeouts and renewal apply, and `set_expiry` within them; expired records
  are never loaded, and `clear_expired` (`manage.py clearsessions`) purges them;
- with `ServerSide(migrate_from=ClientSide(...))`, a client-side token in the cookie
  becomes a server-side session and the token is revoked on every replica;
- with `COATCHECK["import_from"]`, a session of the previous Django engine becomes a
  coatcheck session on first sight, and the old one is deleted (`importing`).

Opening and committing are `coatcheck.drivers`', as for every adapter; Django's rules are
driver options (`max_ttl`: Django's expiry; `strict`: its `CreateError` / `UpdateError`)
and the glue below. A record that is not coatcheck JSON loads as an empty session and is
logged on `django.security.SuspiciousSession`, as Django logs a bad signature.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.utils.module_loading import import_string

from ...admin import AsyncSessionAdmin, SessionAdmin
from ...drivers import acommit_session, aopen_session, commit_session, open_session
from ...exceptions import SessionVanished, StoreError, WriteConflict
from ...ids import HANDLE_LENGTH, handle_of, is_wellformed, new_secret
from ...manager import ServerSide, SessionManager
from ...plans import Opening, new_opening
from ...request import RequestInfo
from ...session import Session, fresh
from ...stores.base import AsyncStore, Record, Store
from .config import SETTINGS, get_manager, import_from
from .importing import Legacy, read
from .middleware import info_of
from .rules import AUTH_USER_KEY, as_datetime, bind_user, corrupted, handle, listed

__all__ = ["ConflictError", "SessionStore"]

CREATE_ATTEMPTS = 10

suspicious = logging.getLogger("django.security.SuspiciousSession")


class ConflictError(WriteConflict, UpdateError):
    """A key the save changed was changed by another request since it was read
    (`coatcheck.WriteConflict`); nothing was saved. Also an `UpdateError` (a save that a
    concurrent request made impossible), which Django's own middleware answers."""


class SessionStore(SessionBase):
    """`SESSION_ENGINE = "coatcheck.adapters.django"`. `request` (from coatcheck's
    `SessionMiddleware`) gives the client IP and user agent that session listings show."""

    def __init__(
        self, session_key: str | None = None, *, request: RequestInfo | None = None
    ) -> None:
        # Not `SessionBase.__init__`: it imports `SESSION_SERIALIZER` on every request, for
        # Django's `encode` / `decode`, which coatcheck never calls (see `serializer`).
        self.manager: SessionManager = get_manager()
        if not SETTINGS.loaded:
            SETTINGS.load()
        #: The session in use (`_session_cache`, Django's name for it), None until loaded.
        self._live: Session | None = None
        self._info = request
        #: The Django request's method and `META`, when `SessionMiddleware` made this
        #: object: `_request` is built from them on first use (a session that is never
        #: loaded never needs it).
        self._http: tuple[str | None, dict[str, Any]] | None = None
        if self._validate_session_key(session_key):
            self._key = session_key
            self._legacy: str | None = None
        else:
            self._key = None
            #: A cookie value that may be a session of `import_from`'s engine, not read yet.
            self._legacy = session_key if session_key and import_from() is not None else None
        #: The session `_import` carried over, until its coatcheck session is saved.
        self._imported: Legacy | None = None
        self.accessed = False
        self._modified = False
        #: The loaded session wants a save of its own: a refresh of its last-seen time or
        #: a renewal of its key is due, or it is a migrated token to store.
        self._due = False
        self._cycled = False
        #: This object saved the current key: a record missing now was deleted meanwhile.
        self._stored = False

    # -- state -----------------------------------------------------------------------------

    # The key lives in `_key`, read directly on the request path (`SessionBase` keeps it
    # behind a property that calls `_get_session_key`).

    def _get_session_key(self) -> str | None:
        return self._key

    def _set_session_key(self, value: str | None) -> None:
        self._key = value if self._validate_session_key(value) else None

    @property
    def session_key(self) -> str | None:
        return self._key

    @property
    def _session_key(self) -> str | None:
        return self._key

    @_session_key.setter
    def _session_key(self, value: str | None) -> None:
        self._set_session_key(value)

    @property
    def serializer(self) -> Any:
        """Django's `SESSION_SERIALIZER`, for `encode` / `decode` (coatcheck stores its own
        JSON records and never calls them)."""
        serializer = self._serializer
        return import_string(settings.SESSION_SERIALIZER) if serializer is None else serializer

    @serializer.setter
    def serializer(self, value: Any) -> None:
        self._serializer = value

    _serializer: Any = None

    @property
    def _session_cache(self) -> Session:
        """Django's attribute for the session in use; missing until one is (`hasattr`).
        It lives in `_live`, which the request path reads (an attribute that is always
        there: no `__dict__` look-up, which would also slow every attribute access)."""
        live = self._live
        if live is None:
            raise AttributeError("_session_cache")
        return live

    @_session_cache.setter
    def _session_cache(self, session: Session) -> None:
        self._live = session

    @_session_cache.deleter
    def _session_cache(self) -> None:
        self._live = None

    @property
    def _request(self) -> RequestInfo:
        """What the session records of the request (client IP, user agent)."""
        info = self._info
        if info is None:
            http = self._http
            info = self._info = RequestInfo() if http is None else info_of(http[0], http[1])
        return info

    @property
    def modified(self) -> bool:
        """Whether `save()` is due: Django's flag, or the loaded session's own need."""
        return self._modified or self._due

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value

    @property
    def _store(self) -> Store:
        return cast(Store, self.manager.mode.store)  # server-side: see get_manager()

    @property
    def _astore(self) -> AsyncStore:
        return cast(AsyncStore, self.manager.mode.async_store)

    @property
    def coatcheck(self) -> Session:
        """The underlying coatcheck `Session` (public `id`, `user`, `info()`, ...)."""
        return self._get_session()

    def _validate_session_key(self, key: str | None) -> bool:
        # A client-side token (when migrating from one) is verified by the mode on load.
        if not isinstance(key, str):
            return False
        return is_wellformed(key) or ("." in key and self.manager.client_mode is not None)

    # -- the mapping: Django's, without its two calls per access (`_session`, `_get_session`)

    def __getitem__(self, key: str) -> Any:
        session = self._live
        if session is None:
            session = self._get_session()
        self.accessed = True
        return session[key]

    def get(self, key: str, default: Any = None) -> Any:
        session = self._live
        if session is None:
            session = self._get_session()
        self.accessed = True
        return session.get(key, default)

    def __contains__(self, key: object) -> bool:
        session = self._live
        if session is None:
            session = self._get_session()
        self.accessed = True
        return key in session

    def __setitem__(self, key: str, value: Any) -> None:
        session = self._live
        if session is None:
            session = self._get_session()
        self.accessed = True
        session[key] = value
        self._modified = True

    def is_empty(self) -> bool:
        if self._key:
            return False
        if self._legacy is not None and self._live is None:
            self._get_session()  # (a session to import is not empty: read it first)
        session = self._live
        return session is None or not session.data()

    def _get_new_session_key(self) -> str:
        return new_secret()

    async def _aget_new_session_key(self) -> str:
        return new_secret()

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        session = self._live
        if session is None:
            if no_load or self._key is None:
                legacy = None if no_load else self._legacy
                session = self._live = self._anonymous() if legacy is None else self._import()
            else:
                session = self._live = self._load()
        return session

    async def _aget_session(self, no_load: bool = False) -> Session:
        if self._legacy is not None and not no_load and self._live is None:
            self._live = await sync_to_async(self._import, thread_sensitive=True)()
        if self._unloaded(no_load):
            self._session_cache = await self._aload()
        return self._session_cache

    def _unloaded(self, no_load: bool) -> bool:
        """Whether the session is to be read from the store: none is in use yet and there
        is a key to read (without one, a fresh session is put in use)."""
        self.accessed = True
        if self._live is not None:
            return False
        if no_load or self._key is None:
            self._session_cache = self._anonymous()
            return False
        return True

    def _anonymous(self) -> Session:
        """`manager.anonymous`: a fresh session. With one transport (the usual case), built
        without `choose` reading the key from the request's headers (Django read it)."""
        manager = self.manager
        transports = manager.transports
        if len(transports) != 1:
            return manager.anonymous(self._request)
        opening = (self._request, manager.clock(), None, transports[0], None, False, None)
        return fresh(
            new_opening((*opening, False, False)), manager.mode.name, manager.context.lifetimes
        )

    _session = property(_get_session)

    def _import(self) -> Session:
        """A new session holding what `import_from`'s engine keeps under the cookie
        value (`importing.read`: that engine's checks apply), or a fresh one if it keeps
        nothing there that passes them. Read once per request."""
        key, self._legacy = self._legacy, None
        engine = import_from()
        legacy = None if key is None or engine is None else read(engine, key)
        session = self._anonymous()
        if legacy is not None:
            for name, value in legacy.data.items():
                session[name] = value
            self._imported = legacy
            self._modified = True
        return session

    def _finish_import(self) -> None:
        """After the imported session's first save: delete the old one, log the import."""
        legacy, self._imported = self._imported, None
        if legacy is None:
            return
        deleted = legacy.delete()
        audit = self.manager.audit
        detail = f"from={legacy.engine} old={audit.hash(legacy.key)}"
        audit.lifecycle(
            "session.imported", handle(self._key), detail + ("" if deleted else " old_deleted=no")
        )

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        if self._legacy is not None and self._key is None:  # (`import_from`: as a read)
            return self._loaded(self._import())
        return self._loaded(self._load())

    async def aload(self) -> dict[str, Any]:
        if self._legacy is not None and self._key is None:
            return self._loaded(await sync_to_async(self._import, thread_sensitive=True)())
        return self._loaded(await self._aload())

    def _loaded(self, session: Session) -> dict[str, Any]:
        # Kept unless a session is already in use: loading may forget the key, and the
        # session it leaves (with any dead record to delete) is the one to save next.
        if self._live is None:
            self._live = session
        return dict(session.data())

    def _load(self) -> Session:
        manager = self.manager
        mode = manager.mode
        store: Store = mode.store  # type: ignore[assignment]  # see get_manager()
        key = self._key
        transports = manager.transports
        if (
            mode.__class__ is ServerSide
            and manager.client_mode is None
            and key is not None
            and len(transports) == 1
        ):
            # `open_session` with `ServerSide.open` inline: without `migrate_from`, the key
            # is well-formed (`_validate_session_key`), so it names its handle's record.
            handle = key[:HANDLE_LENGTH]
            opening = (self._request, manager.clock(), handle, transports[0], key, True)
            record = store.load(handle)
            opened = new_opening((*opening, None, False, False))
            session = mode.attach(manager.context, opened, record)
            if session.is_new:  # (its record tells a corrupted one, see `_opened`)
                if session._state.reused is not None:  # see `_unopened`
                    store.delete(session._state.reused)
                return self._opened(session, record)
            # `_opened` for a session that opened, its expiry inline when Django's is the
            # default (no `set_expiry`): the common load.
            if "_session_expiry" in session.data():
                return self._opened(session, None)
            if session.last_seen + self.get_session_cookie_age() <= manager.clock():
                return self._opened(session, None)  # (expired: `_opened` says so)
            state = session._state  # (`session.modified`: nothing read or changed yet)
            self._due = state.rotate is not None or state.meta_changed
            return session
        session = open_session(manager, self._request, store, opener=self._opening)
        dead = self._unopened(session)
        if session._state.reused is not None:
            store.delete(session._state.reused)
        return self._opened(session, None if dead is None else store.load(dead))

    async def _aload(self) -> Session:
        store = self._astore
        session = await aopen_session(self.manager, self._request, store, opener=self._opening)
        dead = self._unopened(session)
        if session._state.reused is not None:
            await store.delete(session._state.reused)
        return self._opened(session, None if dead is None else await store.load(dead))

    def _opening(self, request: RequestInfo) -> Opening:
        """`manager.open` for the key Django read from its own cookie (not a header): with
        one transport, without `choose` reading the request's headers for it."""
        manager = self.manager
        transports = manager.transports
        key = self._key
        if key is None or len(transports) != 1:
            return manager.open(request, key or "")
        return manager.mode.open(manager.context, request, manager.clock(), transports[0], key)

    def _unopened(self, session: Session) -> str | None:
        """The handle of a key that opened no session; its record is read again only to
        tell a corrupted one, which Django logs as suspicious (rare: a stale cookie). A
        session ended for the reuse of a replaced key (`coatcheck.reuse`) is deleted at
        load: Django saves no empty session, whose commit would delete it."""
        return handle(self._key) if session.is_new else None

    def _opened(self, session: Session, record: Record | None) -> Session:
        seen = session.last_seen
        if not session.is_new and seen + self._age(session, seen) <= self.manager.clock():
            # Django's expiry, by the manager's clock: exact whatever the store's TTL
            # resolution (the record's TTL was capped to it: it ends in the store too).
            self.manager.audit.security("session.expired", session.id, "reason=django_expiry")
            session = self.manager.anonymous(self._request)
        elif record is not None and corrupted(record):
            suspicious.warning("Session data corrupted")
        if session.is_new and not self._stored:
            # Unknown, expired, unreadable or a migrated token: Django's rule is to forget
            # the key and create nothing (a later save stores the session under a new key).
            self._session_key = None
        self._due = session.modified
        return session

    def _age(self, session: Session, since: float) -> float:
        """How long Django lets the session live from `since` (its last save or now):
        `set_expiry`, else `SESSION_COOKIE_AGE`."""
        expiry = session.data().get("_session_expiry")
        if expiry is None or type(expiry) is int:  # seconds of inactivity: no dates needed
            return float(expiry or self.get_session_cookie_age())
        return float(self.get_expiry_age(modification=as_datetime(since), expiry=expiry))

    def cookie_max_age(self) -> int | None:
        """The `max_age` of the cookie Django's middleware sets when it saves: None when it
        ends with the browser (`get_expire_at_browser_close()`), else `get_expiry_age()`,
        reading the session once."""
        expiry = self._get_session().data().get("_session_expiry")
        if expiry is None:
            if SETTINGS.SESSION_EXPIRE_AT_BROWSER_CLOSE:
                return None
            return self.get_session_cookie_age()
        if expiry == 0:
            return None
        return self.get_expiry_age()

    def get_session_cookie_age(self) -> int:
        return SETTINGS.SESSION_COOKIE_AGE  # type: ignore[no-any-return]

    def _blank(self, secret: str, source: Session) -> Session:
        """A new session under the key Django chose, holding `source`'s data and user."""
        return Session.create(
            dict(source.data()),
            secret=secret,
            id=handle_of(secret),
            now=self.manager.clock(),
            user=source.user,
            authenticated_at=source.authenticated_at,
            assurance=source.assurance,
            transport=self.manager.transport,
            request=self._request,
            lifetimes=self.manager.context.lifetimes,
        )

    # -- Django's storage API ----------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        key = handle(session_key)
        return key is not None and listed(self.manager, key, self._store.load(key))

    async def aexists(self, session_key: str | None) -> bool:
        key = handle(session_key)
        return key is not None and listed(self.manager, key, await self._astore.load(key))

    def create(self) -> None:
        for _ in self._creating():
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            return

    async def acreate(self) -> None:
        for _ in self._creating():
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            return

    def _creating(self) -> Iterator[None]:
        """Sets the key of each attempt to create a record: the unsaved session's own
        (it carries the dead record to delete, if any), then fresh ones."""
        cache = self._live
        own = cache.secret if cache is not None and cache.is_new else None
        for attempt in range(CREATE_ATTEMPTS):
            self._session_key = own if attempt == 0 and own is not None else new_secret()
            self._modified = True
            yield
        raise StoreError("could not create a session under a fresh key")

    def save(self, must_create: bool = False) -> None:
        if self._key is None:
            return self.create()
        session = self._prepare(must_create, self._get_session(no_load=must_create))
        manager = self.manager
        store: Store = manager.mode.store  # type: ignore[assignment]  # see get_manager()
        try:
            commit_session(manager, session, store, max_ttl=self._max_ttl(session), strict=True)
        except (SessionVanished, WriteConflict) as exc:
            raise _refusal(exc, must_create) from None
        self._saved(session)
        if self._imported is not None:
            self._finish_import()

    async def asave(self, must_create: bool = False) -> None:
        if self._key is None:
            return await self.acreate()
        session = self._prepare(must_create, await self._aget_session(no_load=must_create))
        store = self._astore
        try:
            await acommit_session(
                self.manager, session, store, max_ttl=self._max_ttl(session), strict=True
            )
        except (SessionVanished, WriteConflict) as exc:
            raise _refusal(exc, must_create) from None
        self._saved(session)
        if self._imported is not None:
            await sync_to_async(self._finish_import, thread_sensitive=True)()

    def _prepare(self, must_create: bool, current: Session) -> Session:
        """The session to commit: a new one under the key when creating, else the loaded
        one (`UpdateError` if the key resolved to nothing, as Django's engines raise)."""
        key = self._key
        if key is None or (current.is_new and not must_create):
            raise UpdateError  # loading found nothing under the key
        if must_create and not (current.is_new and current.secret == key):
            current = self._blank(key, current)
            self._session_cache = current
        user = current.data().get(AUTH_USER_KEY)
        if (None if user is None else str(user)) != current.user:  # (`bind_user`'s own test)
            bind_user(current, self.manager.clock(), cycled=self._cycled)
        current.modified = True  # Django's save() always writes
        return current

    def _max_ttl(self, session: Session) -> float:
        """Django's rule as a driver option: the record lives no longer than Django's
        expiry (the manager's lifetimes cap it too). (With `strict`: a write that cannot be
        made raises, see `_refusal`.)"""
        return max(0.0, self._age(session, self.manager.clock()))

    def _saved(self, session: Session) -> None:
        """Take the key the commit issued; the session is read again on its next use, so
        that later changes in this request start from what is stored."""
        self._due = False
        if session.ended:
            self._forget()
            return
        self._session_key = session.secret
        self._stored = True
        self._live = None

    def delete(self, session_key: str | None = None) -> None:
        key = handle(self.session_key if session_key is None else session_key)
        if key is not None:
            self._store.delete(key)
            self.manager.audit.lifecycle("session.deleted", key)

    async def adelete(self, session_key: str | None = None) -> None:
        key = handle(self.session_key if session_key is None else session_key)
        if key is not None:
            await self._astore.delete(key)
            self.manager.audit.lifecycle("session.deleted", key)

    def clear(self) -> None:
        # Loaded first, so that each key is deleted explicitly: keys another request adds
        # meanwhile survive, as with every other write.
        self._get_session().clear()
        self.accessed = True
        self.modified = True

    def flush(self) -> None:
        self.delete()
        if self._imported is not None or self._legacy is not None:
            self._drop_legacy()
        self._forget()

    async def aflush(self) -> None:
        await self.adelete()
        if self._imported is not None or self._legacy is not None:
            await sync_to_async(self._drop_legacy, thread_sensitive=True)()
        self._forget()

    def _drop_legacy(self) -> None:
        """On `flush` (Django's `logout`) before an imported session was saved: delete the
        previous engine's session too, so that its cookie, replayed, imports nothing."""
        if self._imported is None and self._legacy is not None:
            self._import()  # (its engine's checks decide what is there to delete)
        legacy, self._imported = self._imported, None
        if legacy is not None:
            deleted = legacy.delete()
            detail = f"from={legacy.engine}" + ("" if deleted else " old_deleted=no")
            self.manager.audit.lifecycle("session.import_discarded", None, detail)

    def _forget(self) -> None:
        self._stored = False
        self._session_cache = self.manager.anonymous(self._request)
        self._session_key = None
        self.accessed = True
        self.modified = True

    def cycle_key(self) -> None:
        with self._cycling(self._get_session()):
            self.save()
        if self.session_key is None:
            self.create()

    async def acycle_key(self) -> None:
        with self._cycling(await self._aget_session()):
            await self.asave()
        if self.session_key is None:
            await self.acreate()

    @contextmanager
    def _cycling(self, session: Session) -> Iterator[None]:
        """Around `cycle_key`'s save: a login's rotation (`renew_handle`), so that the old
        key stops working at once, as Django promises and `auth.login` relies on against
        session fixation; the user is left as it is (`auth.login` cycles before it stores
        the user). A record deleted meanwhile leaves no key, and the caller creates a new
        one; a conflict is raised (nothing saved). A key that a renewal had already
        replaced (grace window) keeps its handle: not cycled, so the user bound next logs in
        (`bind_user`) and the holder of the current key never inherits that login."""
        before = self.session_key
        if before is not None:
            session.renew_handle()
        try:
            yield
        except ConflictError:
            raise
        except UpdateError:
            self._session_cache = session
            self._session_key = None
        self._cycled = self.session_key is None or handle(self.session_key) != handle(before)

    @classmethod
    def clear_expired(cls) -> None:
        SessionAdmin(get_manager()).purge_expired()

    @classmethod
    async def aclear_expired(cls) -> None:
        await AsyncSessionAdmin(get_manager()).purge_expired()


def _refusal(exc: SessionVanished | WriteConflict, must_create: bool) -> Exception:
    """A strict commit's refusal as Django's error: the key taken (`CreateError`), the
    record gone (`UpdateError`), a key changed meanwhile (`ConflictError`)."""
    if isinstance(exc, SessionVanished):
        return UpdateError()
    if must_create:  # a new record's key is taken: Django tries another
        return CreateError()
    return ConflictError(*exc.args)
