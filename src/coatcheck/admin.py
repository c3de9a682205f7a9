"""List and revoke sessions outside a request: `SessionAdmin` and `AsyncSessionAdmin`.

Sessions are named by their public ID (`Session.id`, `SessionInfo.id`), which is safe to
show in an admin page or a "my devices" list: it cannot be turned into the cookie. Both
modes work alike: server-side sessions are deleted from their store; client-side ones are
deleted from the registry and put on the revocation list, which every replica picks up
within the mode's staleness bound.
"""

from __future__ import annotations

from collections.abc import Iterable

from .clientside import ClientSide
from .exceptions import ConfigurationError
from .manager import SessionManager
from .revocation import Revocation
from .session import SessionInfo
from .stores.base import AsyncStore, Record, Store

__all__ = ["AsyncSessionAdmin", "SessionAdmin"]


def client_mode(manager: SessionManager) -> ClientSide | None:
    """The client-side mode whose tokens the manager accepts: its own, or the one a
    server-side manager migrates from. None if it accepts no tokens."""
    mode = manager.mode
    return mode if isinstance(mode, ClientSide) else mode.migrate_from


def _infos(manager: SessionManager, rows: list[tuple[str, Record]]) -> list[SessionInfo]:
    now = manager.clock()
    found = (manager.describe(key, record, now) for key, record in rows)
    return sorted((i for i in found if i is not None), key=lambda i: -i.last_seen)


def _registry(store: Store | AsyncStore | None) -> Store | AsyncStore:
    if store is None:
        raise ConfigurationError(
            "these sessions are stateless (ClientSide(store=None)): there is no registry "
            "to list or revoke from; give ClientSide a store"
        )
    return store


def _revocations(manager: SessionManager, sessions: Iterable[str] = (),
                 user: str | None = None) -> list[Revocation]:  # fmt: skip
    """The revocation entries that end `sessions` (and all of `user`'s), if client-side."""
    mode = manager.mode
    if not isinstance(mode, ClientSide):
        return []
    entries = [mode.revocation(manager, sid) for sid in sessions]
    if user is not None:
        entries.append(mode.revocation(manager, user, "user"))
    return entries


class SessionAdmin:
    """Session listing and revocation against the manager's sync store."""

    def __init__(self, manager: SessionManager, store: Store | None = None) -> None:
        self.manager = manager
        self.store = manager.mode.store if store is None else store

    def sessions(self, user: str) -> list[SessionInfo]:
        """`user`'s live sessions, most recently seen first."""
        store = _registry(self.store)
        assert isinstance(store, Store)  # noqa: S101
        return _infos(self.manager, store.list_user(user))

    def revoke(self, session_id: str) -> None:
        """End the session with public ID `session_id` at its next request."""
        self.record_revocations(_revocations(self.manager, [session_id]))
        if self.store is not None:
            self.store.delete(session_id)
        self.manager.audit.lifecycle("session.revoked", session_id)

    def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        """End every session of `user` except `keep` (a public ID); returns how many were
        listed. Client-side without `keep` also refuses every older token of the user,
        listed or not ("log out everywhere")."""
        doomed = [] if self.store is None else [
            key for key, _ in self.store.list_user(user) if key != keep
        ]  # fmt: skip
        self.record_revocations(_revocations(self.manager, doomed, None if keep else user))
        if self.store is not None:
            self.store.delete_user(user, keep=keep)
        self.manager.audit.lifecycle("session.revoked_user", None, f"count={len(doomed)}")
        return len(doomed)

    def record_revocations(self, entries: Iterable[Revocation]) -> None:
        """Write revocation entries and apply them to this process's copy at once."""
        mode = client_mode(self.manager)
        entries = list(entries)
        if not entries or mode is None:
            return
        if mode.revocations is not None:
            for entry in entries:
                mode.revocations.revoke(entry)
        lst = mode.revocation_list
        lst.apply(entries, lst.cursor, lst.synced_at)

    def purge_expired(self) -> int:
        """Delete expired records now; returns how many."""
        store = _registry(self.store)
        assert isinstance(store, Store)  # noqa: S101
        return store.purge_expired()


class AsyncSessionAdmin:
    """Async twin of `SessionAdmin`."""

    def __init__(self, manager: SessionManager, store: AsyncStore | None = None) -> None:
        self.manager = manager
        self.store = manager.mode.async_store if store is None else store

    async def sessions(self, user: str) -> list[SessionInfo]:
        store = _registry(self.store)
        assert isinstance(store, AsyncStore)  # noqa: S101
        return _infos(self.manager, await store.list_user(user))

    async def revoke(self, session_id: str) -> None:
        await self.record_revocations(_revocations(self.manager, [session_id]))
        if self.store is not None:
            await self.store.delete(session_id)
        self.manager.audit.lifecycle("session.revoked", session_id)

    async def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        doomed = [] if self.store is None else [
            key for key, _ in await self.store.list_user(user) if key != keep
        ]  # fmt: skip
        await self.record_revocations(_revocations(self.manager, doomed, None if keep else user))
        if self.store is not None:
            await self.store.delete_user(user, keep=keep)
        self.manager.audit.lifecycle("session.revoked_user", None, f"count={len(doomed)}")
        return len(doomed)

    async def record_revocations(self, entries: Iterable[Revocation]) -> None:
        mode = client_mode(self.manager)
        entries = list(entries)
        if not entries or mode is None:
            return
        if mode.async_revocations is not None:
            for entry in entries:
                await mode.async_revocations.revoke(entry)
        lst = mode.revocation_list
        lst.apply(entries, lst.cursor, lst.synced_at)

    async def purge_expired(self) -> int:
        store = _registry(self.store)
        assert isinstance(store, AsyncStore)  # noqa: S101
        return await store.purge_expired()
