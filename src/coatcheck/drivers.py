"""The plan executors: the manager decides, these run its decisions against a store.

`open_session` / `commit_session` for a `Store`, `aopen_session` / `acommit_session` for an
`AsyncStore`. Every decision lives in the manager and its mode (and, for revocations, in
`coatcheck.admin`); what is left here is the order of the store calls, written once as a
plan (`coatcheck.admin.run` / `arun` carry it out, sync or async). Store failures
propagate as `StoreError` for the adapter to answer (503, by default).

Two options serve frameworks that keep their own session API (Django): `max_ttl` caps how
long a written record lives (Django's `set_expiry`), and `strict` raises instead of
dropping a write that cannot be made (`WriteConflict` when a new record's key is taken,
`SessionVanished` when the record is gone).

In client-side mode the store is the registry (None when sessions are stateless), and
opening a session first brings this process's revocation list up to date if it is older
than the mode's `staleness`. While that store is down the mode degrades instead of
failing (`ClientSide.max_staleness`): a sync that fails leaves the list as it is, for as
long as the mode allows, and a registry write that fails is dropped, its token issued.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

from .admin import Plan, arun, recording, revoking_user, run
from .exceptions import SessionLimitReached, SessionVanished, StoreError, WriteConflict
from .limits import SessionLimit
from .manager import STALE, Commit, Opening, SessionManager, Write
from .request import RequestInfo
from .session import Session
from .stores.base import AsyncStore, Store

__all__ = ["acommit_session", "aopen_session", "commit_session", "open_session"]

#: Version conflicts one commit retries before giving up; each retry means another request
#: of the same session committed in between, so this is only reached under extreme contention.
MAX_ATTEMPTS = 100

Headers = list[tuple[str, str]]
#: Reads the session key for `open_session` when the framework hands it over itself.
Opener = Callable[[RequestInfo], Opening]


def open_session(
    manager: SessionManager,
    request: RequestInfo,
    store: Store | None = None,
    *,
    opener: Opener | None = None,
) -> Session:
    """Load the session of `request` (a fresh one if it has none). `opener` replaces
    `manager.open` for a framework that reads the session key itself (Django)."""
    store = manager.mode.store if store is None else store
    client = manager.client_mode
    if client is not None:
        client.listen()
        if client.revocations is not None:  # (stateless tokens have nothing to poll)
            run(_polling(manager, client.revocations))
    opening = manager.open(request) if opener is None else opener(request)
    instrument = manager.events.instrument
    if instrument is not None and store is not None:  # (`coatcheck.otel`: timed, traced)
        store = cast(Store, instrument(store))
    record = None if opening.key is None or store is None else store.load(opening.key)
    return manager.mode.attach(manager.context, opening, record)  # (`manager.attach`)


async def aopen_session(
    manager: SessionManager,
    request: RequestInfo,
    store: AsyncStore | None = None,
    *,
    opener: Opener | None = None,
) -> Session:
    """Async twin of `open_session`."""
    store = manager.mode.async_store if store is None else store
    client = manager.client_mode
    if client is not None:
        client.listen(asynchronous=True)
        if client.async_revocations is not None:
            await arun(_polling(manager, client.async_revocations))
    opening = manager.open(request) if opener is None else opener(request)
    instrument = manager.events.instrument
    if instrument is not None and store is not None:  # (`coatcheck.otel`: timed, traced)
        store = cast(AsyncStore, instrument(store))
    record = None if opening.key is None or store is None else await store.load(opening.key)
    return manager.mode.attach(manager.context, opening, record)  # (`manager.attach`)


def commit_session(
    manager: SessionManager,
    session: Session,
    store: Store | None = None,
    *,
    max_ttl: float | None = None,
    strict: bool = False,
) -> Headers:
    """Carry out what the request did to `session`; returns the response headers to add.

    `max_ttl` caps the lifetime of the record written (seconds from now). `strict` raises
    `WriteConflict` when a new record's key is taken and `SessionVanished` when the
    session's record is gone, where the default drops the write (nothing is stored either
    way, and no header is returned)."""
    client = manager.client_mode
    if client is not None and session._state.rotate == "regenerate":
        run(_polling(manager, client.revocations, force=True))  # see `ClientSide.commit`
    commit = manager.mode.commit(manager.context, session)  # (`manager.commit`)
    write = commit.write
    if write is None and not (commit.deletes or commit.revocations or commit.revoke_user):
        return manager.finish(session, commit, None)  # the common read: no store call
    store = manager.mode.store if store is None else store
    instrument = manager.events.instrument
    if instrument is not None and store is not None:  # (`coatcheck.otel`: timed, traced)
        store = cast(Store, instrument(store))
    limit = None if store is None else _limit_of(manager, session, write)
    tried = _inline(manager, session, commit, store, limit)
    if tried and write is not None:  # the common write: one store call
        if max_ttl is not None and write.ttl > max_ttl:
            write = write._replace(ttl=max(max_ttl, 0.0))
        try:
            if _apply(store, write):
                return manager.finish(session, commit, write)
        except StoreError as exc:
            _dropped(manager, exc)  # `write` stays, its token is issued
            return manager.finish(session, commit, write)
    revocations = None if client is None else client.revocations
    plan = _committing(manager, session, commit, store, revocations, max_ttl, strict, tried, limit)
    return run(plan)


async def acommit_session(
    manager: SessionManager,
    session: Session,
    store: AsyncStore | None = None,
    *,
    max_ttl: float | None = None,
    strict: bool = False,
) -> Headers:
    """Async twin of `commit_session`."""
    client = manager.client_mode
    if client is not None and session._state.rotate == "regenerate":
        await arun(_polling(manager, client.async_revocations, force=True))
    commit = manager.mode.commit(manager.context, session)  # (`manager.commit`)
    write = commit.write
    if write is None and not (commit.deletes or commit.revocations or commit.revoke_user):
        return manager.finish(session, commit, None)  # the common read: no store call
    store = manager.mode.async_store if store is None else store
    instrument = manager.events.instrument
    if instrument is not None and store is not None:  # (`coatcheck.otel`: timed, traced)
        store = cast(AsyncStore, instrument(store))
    limit = None if store is None else _limit_of(manager, session, write)
    tried = _inline(manager, session, commit, store, limit)
    if tried and write is not None:  # the common write: one store call
        if max_ttl is not None and write.ttl > max_ttl:
            write = write._replace(ttl=max(max_ttl, 0.0))
        try:
            if await _apply(store, write):
                return manager.finish(session, commit, write)
        except StoreError as exc:
            _dropped(manager, exc)  # `write` stays, its token is issued
            return manager.finish(session, commit, write)
    revocations = None if client is None else client.async_revocations
    plan = _committing(manager, session, commit, store, revocations, max_ttl, strict, tried, limit)
    return await arun(plan)


def _inline(
    manager: SessionManager,
    session: Session,
    commit: Commit,
    store: object,
    limit: SessionLimit | None,
) -> bool:
    """Whether the commit is the common write, run without a plan (which costs a few
    thousand instructions more): one plain write whose version is known, not admitted
    under a session `limit` (`_limit_of`), tried once before the plan takes over on a
    version conflict. (A `max_ttl` caps it first, as the plan's `_saving` does.)"""
    write = commit.write
    return not (
        write is None
        or commit.deletes
        or commit.revocations
        or commit.revoke_user
        or store is None
        or write.version == STALE
        or manager.migrated_under(session, write)
        or limit is not None
    )


def _limit_of(
    manager: SessionManager, session: Session, write: Write | None
) -> SessionLimit | None:
    """The session limit that `write` must be admitted under: a write that adds a session
    to its user's (a login's, which moves the record to a new handle, or a new record
    written with a user, or a user bound to the session, as Django does), when the manager
    has a limit; its store then counts the user's sessions (`Store.admit`)."""
    limit = manager.session_limit
    if limit is None or write is None or write.user is None:
        return None
    state = session._state
    if state.joins_user or state.rotate == "login" or write.version == 0 or write.replaces:
        return limit
    return None


# -- the plans: `store` and `revocations` are the sync or the async twins, alike ---------------


def _committing(
    manager: SessionManager,
    session: Session,
    commit: Commit,
    store: Any,
    revocations: Any,
    max_ttl: float | None,
    strict: bool,
    tried: bool,
    limit: SessionLimit | None,
) -> Plan[Headers]:
    """Everything a commit may do, in order; `tried`: its write was made once already
    and met a version conflict; `limit`: the session limit its write is admitted under
    (`_limit_of`, found before the plan: None without a store)."""
    if commit.revocations:
        yield from recording(manager, revocations, commit.revocations)
    write = commit.write if store is not None else None
    evicted: list[str] = []
    if store is not None and (write is not None or commit.deletes):
        try:
            for key in commit.deletes:
                yield lambda: store.delete(key)  # noqa: B023 - called before the next one
            saved = yield from _saving(
                manager, session, store, write, max_ttl, strict, tried, limit, evicted
            )
        except StoreError as exc:
            if limit is not None:
                raise  # never dropped: a login the store did not count would pass the limit
            _dropped(manager, exc)  # `write` stays, its token is issued
        else:
            if evicted:
                yield from _evicting(manager, revocations, evicted, limit)
            if write is not None:  # (a read that changed nothing wrote nothing)
                write = saved
                if write is not None and manager.migrated_under(session, write):
                    # See `SessionManager.revoked_meanwhile`: check, then revoke the token.
                    yield from _polling(manager, revocations, force=True)
                    if manager.revoked_meanwhile(session):
                        created = write.key
                        yield lambda: store.delete(created)
                        write = None
                    else:
                        entries = manager.migration_revocations(session)
                        yield from recording(manager, revocations, entries)
                if write is None:
                    yield from recording(manager, revocations, manager.vanished(session))
                    if strict:
                        raise SessionVanished("the session ended while this request ran")
    if commit.revoke_user is not None:
        keep = session.id if write is None else write.key
        yield from revoking_user(manager, store, revocations, commit.revoke_user, keep)
    return manager.finish(session, commit, write)


def _saving(
    manager: SessionManager,
    session: Session,
    store: Any,
    write: Write | None,
    max_ttl: float | None,
    strict: bool,
    tried: bool,
    limit: SessionLimit | None = None,
    evicted: list[str] | None = None,
) -> Plan[Write | None]:
    """Apply `write`, rebased on each version conflict; the write that succeeded, or None
    if there was none or it was dropped (its record vanished). Under `limit`, the store
    admits it (`Store.admit`): the keys of the sessions it ended to make room are added to
    `evicted`, and a refusal raises `SessionLimitReached`."""
    for attempt in range(MAX_ATTEMPTS):
        if write is None:
            return None
        if max_ttl is not None and write.ttl > max_ttl:
            write = write._replace(ttl=max(max_ttl, 0.0))
        if not (tried and attempt == 0):
            if limit is None:
                if (yield partial(_apply, store, write)):
                    return write
            else:
                admission = yield partial(_admit, store, write, limit)
                if admission.refused:
                    manager.audit.security(
                        "session.limit", session.id, f"action=refused max={limit.max_sessions}"
                    )
                    raise SessionLimitReached(limit.max_sessions)
                if admission.saved:
                    session._state.joins_user = False  # counted: a later commit is an update
                    if evicted is not None:
                        evicted.extend(admission.evicted)
                    return write
        source = write.source
        record = yield lambda: store.load(source)  # noqa: B023 - called before the next one
        rebased = manager.rebase(session, write, record)
        if rebased is None and strict:
            if write.version == 0:
                raise WriteConflict("a record already exists under the new session's key")
            raise SessionVanished("the session's record is gone (logged out or revoked)")
        write = rebased
    raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")


def _apply(store: Any, write: Write) -> Any:
    """Make `write`: a compare-and-set save, or a rotation (a coroutine, for an async
    store). Whether it was made: False on a version conflict."""
    if write.replaces is None:
        return store.save(
            write.key, write.data, version=write.version, ttl=write.ttl, user=write.user
        )
    return store.rotate(
        write.replaces,
        write.key,
        write.data,
        version=write.version,
        ttl=write.ttl,
        user=write.user,
    )


def _admit(store: Any, write: Write, limit: SessionLimit) -> Any:
    """Make the login `write` under `limit` (`Store.admit`; a coroutine, for an async
    store): an `Admission`."""
    return store.admit(
        write.key,
        write.data,
        version=write.version,
        ttl=write.ttl,
        user=write.user,
        replaces=write.replaces,
        limit=limit.max_sessions,
        evict=limit.evicts,
    )


def _evicting(
    manager: SessionManager, revocations: Any, evicted: list[str], limit: SessionLimit | None
) -> Plan[None]:
    """The sessions a login's admission deleted to make room: logged, and in client-side
    mode revoked (the path of `SessionAdmin.revoke`), since their tokens verify without the
    store: every replica refuses them within the mode's staleness."""
    for handle in evicted:
        manager.audit.security(
            "session.limit",
            handle,
            f"action=revoked-oldest max={0 if limit is None else limit.max_sessions}",
        )
    client = manager.client_mode
    if client is not None and manager.mode is client:
        entries = [client.revocation(manager.context, handle) for handle in evicted]
        yield from recording(manager, revocations, entries)


def _polling(manager: SessionManager, revocations: Any, *, force: bool = False) -> Plan[None]:
    """Bring this process's revocation list up to date, if it is older than the mode's
    staleness (or `force`); `ClientSide.poll_due` and `polled` decide, here is the I/O."""
    client = manager.client_mode
    if client is None or revocations is None:
        return
    now = manager.clock()
    more = client.poll_due(now, force=force)
    while more:  # page by page (`CHANGES_PAGE`) until a short one
        cursor = client.revocation_list.cursor
        try:
            result = yield partial(revocations.changes, cursor)
        except StoreError as exc:
            result = exc
        more = client.polled(now, result, force=force)


def _dropped(manager: SessionManager, exc: StoreError) -> None:
    """A store failure while writing: re-raised, unless the mode drops the write
    (`Mode.write_failed`: client-side, a registry write while its store is down)."""
    manager.mode.write_failed(manager.clock(), exc)
