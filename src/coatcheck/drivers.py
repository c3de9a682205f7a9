"""The two plan executors: the manager decides, these run its decisions against a store.

`open_session` / `commit_session` for a `Store`, `aopen_session` / `acommit_session` for an
`AsyncStore`. They differ only in `await`; every decision lives in `SessionManager`.
Store failures propagate as `StoreError` for the adapter to answer (503, by default).
"""

from __future__ import annotations

from .exceptions import StoreError
from .manager import Opening, SessionManager, Write
from .request import RequestInfo
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
    store = manager.mode.store if store is None else store
    opening = manager.open(request)
    result = manager.attach(opening, None if opening.key is None else store.load(opening.key))
    while isinstance(result, Opening):
        assert result.key is not None  # noqa: S101 - an alias hop always names its target
        result = manager.attach(result, store.load(result.key))
    return result


def commit_session(
    manager: SessionManager, session: Session, store: Store | None = None
) -> list[tuple[str, str]]:
    """Carry out what the request did to `session`; returns the response headers to add."""
    store = manager.mode.store if store is None else store
    commit = manager.commit(session)
    for key in commit.deletes:
        store.delete(key)
    write = commit.write
    for _ in range(MAX_ATTEMPTS):
        if write is None or _apply(store, write):
            break
        write = manager.rebase(session, write, store.load(write.source))
    else:
        raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")
    if commit.revoke_user is not None:
        store.delete_user(commit.revoke_user, keep=None if write is None else write.key)
    return manager.finish(session, commit, write)


def _apply(store: Store, write: Write) -> bool:
    if write.replaces is None:
        return store.save(
            write.key, write.data, version=write.version, ttl=write.ttl, user=write.user
        )
    return store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=write.ttl,
        user=write.user, alias=write.alias, alias_ttl=write.alias_ttl,
    )  # fmt: skip


async def aopen_session(
    manager: SessionManager, request: RequestInfo, store: AsyncStore | None = None
) -> Session:
    """Async twin of `open_session`."""
    store = manager.mode.async_store if store is None else store
    opening = manager.open(request)
    result = manager.attach(
        opening, None if opening.key is None else await store.load(opening.key)
    )
    while isinstance(result, Opening):
        assert result.key is not None  # noqa: S101 - an alias hop always names its target
        result = manager.attach(result, await store.load(result.key))
    return result


async def acommit_session(
    manager: SessionManager, session: Session, store: AsyncStore | None = None
) -> list[tuple[str, str]]:
    """Async twin of `commit_session`."""
    store = manager.mode.async_store if store is None else store
    commit = manager.commit(session)
    for key in commit.deletes:
        await store.delete(key)
    write = commit.write
    for _ in range(MAX_ATTEMPTS):
        if write is None or await _aapply(store, write):
            break
        write = manager.rebase(session, write, await store.load(write.source))
    else:
        raise StoreError(f"session commit gave up after {MAX_ATTEMPTS} version conflicts")
    if commit.revoke_user is not None:
        await store.delete_user(commit.revoke_user, keep=None if write is None else write.key)
    return manager.finish(session, commit, write)


async def _aapply(store: AsyncStore, write: Write) -> bool:
    if write.replaces is None:
        return await store.save(
            write.key, write.data, version=write.version, ttl=write.ttl, user=write.user
        )
    return await store.rotate(
        write.replaces, write.key, write.data, version=write.version, ttl=write.ttl,
        user=write.user, alias=write.alias, alias_ttl=write.alias_ttl,
    )  # fmt: skip
