"""The two plan executors: the manager decides, these run its decisions against a store.

`open_session` / `commit_session` for a `Store`, `aopen_session` / `acommit_session` for an
`AsyncStore`. They differ only in `await`; every decision lives in `SessionManager` (and,
for revocations, in `SessionAdmin`). Store failures propagate as `StoreError` for the
adapter to answer (503, by default).

In client-side mode the store is the registry (None when sessions are stateless), and
opening a session first brings this process's revocation list up to date if it is older
than the mode's `staleness`. While that store is down the mode degrades instead of
failing (`ClientSide.max_staleness`): a sync that fails leaves the list as it is, for as
long as the mode allows, and a registry write that fails is dropped, its token issued.
"""

from __future__ import annotations

from .admin import AsyncSessionAdmin, SessionAdmin
from .clientside import ClientSide
from .exceptions import StoreError
from .manager import SessionManager, Write
from .request import RequestInfo
from .revocation import Revocation
from .session import Session
from .stores.base import AsyncStore, Store

__all__ = ["acommit_session", "aopen_session", "commit_session", "open_session"]

#: Version conflicts one commit retries before giving up; each retry means another request
#: of the same session committed in between, so this is only reached under extreme contention.
MAX_ATTEMPTS = 100


def open_session(
    manager: SessionManager, request: RequestInfo, store: Store | None = None
) -> Session:
    """Load the session of `request` (a fresh one if it has none)."""
    mode = manager.mode
    store = mode.store if store is None else store
    if manager.client_mode is not None:
        _sync_revocations(manager)
    opening = manager.open(request)
    record = None if opening.key is None or store is None else store.load(opening.key)
    return manager.attach(opening, record)


def commit_session(
    manager: SessionManager, session: Session, store: Store | None = None
) -> list[tuple[str, str]]:
    """Carry out what the request did to `session`; returns the response headers to add."""
    store = manager.mode.store if store is None else store
    commit = manager.commit(session)
    if commit.revocations:
        SessionAdmin(manager, store).record_revocations(commit.revocations)
    write = commit.write if store is not None else None
    if store is not None and (write is not None or commit.deletes):
        try:
            for key in commit.deletes:
                store.delete(key)
            saved = _save(manager, session, store, write)
        except StoreError as exc:
            _registry_down(manager, exc)  # dropped: `write` stays, its token is issued
        else:
            if write is not None:  # (a read that changed nothing wrote nothing)
                write = saved
                if write is not None and manager.migrated_under(session, write):
                    # See `SessionManager.revoked_meanwhile`: check, then revoke the token.
                    _sync_revocations(manager, force=True)
                    if manager.revoked_meanwhile(session):
                        store.delete(write.key)
                        write = None
                    else:
                        entries = manager.migration_revocations(session)
                        SessionAdmin(manager, store).record_revocations(entries)
                if write is None:
                    SessionAdmin(manager, store).record_revocations(manager.vanished(session))
    if commit.revoke_user is not None:
        keep = session.id if write is None else write.key
        SessionAdmin(manager, store).revoke_user(commit.revoke_user, keep=keep)
    return manager.finish(session, commit, write)


def _save(manager: SessionManager, session: Session, store: Store, write: Write | None
          ) -> Write | None:  # fmt: skip
    """Apply `write`, rebased on each version conflict; the write that succeeded, or None
    if there was none or it was dropped (its record vanished)."""
    for _ in range(MAX_ATTEMPTS):
        if write is None or _apply(store, write):
            return write
        write = manager.rebase(session, write, store.load(write.source))
    raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")


def _registry_down(manager: SessionManager, exc: StoreError) -> None:
    """A store failure while writing: re-raised, except client-side, where the mode may
    drop a registry write (`ClientSide.registry_write_failed`)."""
    if not isinstance(manager.mode, ClientSide):
        raise exc
    manager.mode.registry_write_failed(manager.clock(), exc)


def _apply(store: Store, write: Write) -> bool:
    if write.replaces is None:
        return store.save(
            write.key, write.data, version=write.version, ttl=write.ttl, user=write.user
        )
    return store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=write.ttl,
        user=write.user,
    )  # fmt: skip


async def aopen_session(
    manager: SessionManager, request: RequestInfo, store: AsyncStore | None = None
) -> Session:
    """Async twin of `open_session`."""
    mode = manager.mode
    store = mode.async_store if store is None else store
    if manager.client_mode is not None:
        await _async_sync_revocations(manager)
    opening = manager.open(request)
    record = None if opening.key is None or store is None else await store.load(opening.key)
    return manager.attach(opening, record)


async def acommit_session(
    manager: SessionManager, session: Session, store: AsyncStore | None = None
) -> list[tuple[str, str]]:
    """Async twin of `commit_session`."""
    store = manager.mode.async_store if store is None else store
    commit = manager.commit(session)
    if commit.revocations:
        await AsyncSessionAdmin(manager, store).record_revocations(commit.revocations)
    write = commit.write if store is not None else None
    if store is not None and (write is not None or commit.deletes):
        try:
            for key in commit.deletes:
                await store.delete(key)
            saved = await _asave(manager, session, store, write)
        except StoreError as exc:
            _registry_down(manager, exc)  # dropped: `write` stays, its token is issued
        else:
            if write is not None:  # (a read that changed nothing wrote nothing)
                write = saved
                if write is not None and manager.migrated_under(session, write):
                    # See `SessionManager.revoked_meanwhile`: check, then revoke the token.
                    await _async_sync_revocations(manager, force=True)
                    if manager.revoked_meanwhile(session):
                        await store.delete(write.key)
                        write = None
                    else:
                        entries = manager.migration_revocations(session)
                        await AsyncSessionAdmin(manager, store).record_revocations(entries)
                if write is None:
                    await AsyncSessionAdmin(manager, store).record_revocations(
                        manager.vanished(session)
                    )
    if commit.revoke_user is not None:
        keep = session.id if write is None else write.key
        await AsyncSessionAdmin(manager, store).revoke_user(commit.revoke_user, keep=keep)
    return manager.finish(session, commit, write)


async def _asave(manager: SessionManager, session: Session, store: AsyncStore,
                 write: Write | None) -> Write | None:  # fmt: skip
    """Async twin of `_save`."""
    for _ in range(MAX_ATTEMPTS):
        if write is None or await _aapply(store, write):
            return write
        write = manager.rebase(session, write, await store.load(write.source))
    raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")


async def _aapply(store: AsyncStore, write: Write) -> bool:
    if write.replaces is None:
        return await store.save(
            write.key, write.data, version=write.version, ttl=write.ttl, user=write.user
        )
    return await store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=write.ttl,
        user=write.user,
    )  # fmt: skip


def _sync_revocations(manager: SessionManager, *, force: bool = False) -> None:
    """Bring this process's revocation list up to date, if it is older than the mode's
    staleness (or `force`); `ClientSide.poll_due` and `polled` decide, here is the I/O."""
    client = manager.client_mode
    if client is None or client.revocations is None:
        return
    now = manager.clock()
    if client.poll_due(now, force=force):
        try:
            result: tuple[list[Revocation], int] | StoreError = client.revocations.changes(
                client.revocation_list.cursor
            )
        except StoreError as exc:
            result = exc
        client.polled(now, result, force=force)


async def _async_sync_revocations(manager: SessionManager, *, force: bool = False) -> None:
    client = manager.client_mode
    if client is None or client.async_revocations is None:
        return
    now = manager.clock()
    if client.poll_due(now, force=force):
        try:
            result: (
                tuple[list[Revocation], int] | StoreError
            ) = await client.async_revocations.changes(client.revocation_list.cursor)
        except StoreError as exc:
            result = exc
        client.polled(now, result, force=force)
