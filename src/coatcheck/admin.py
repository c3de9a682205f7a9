"""List and revoke sessions outside a request: `SessionAdmin` and `AsyncSessionAdmin`.

Sessions are named by their public ID (`Session.id`, `SessionInfo.id`), which is safe to
show in an admin page or a "my devices" list: it cannot be turned into the cookie.
"""

from __future__ import annotations

from .manager import SessionManager
from .session import SessionInfo
from .stores.base import AsyncStore, Record, Store

__all__ = ["AsyncSessionAdmin", "SessionAdmin"]


def _infos(manager: SessionManager, rows: list[tuple[str, Record]]) -> list[SessionInfo]:
    now = manager.clock()
    found = (manager.describe(key, record, now) for key, record in rows)
    return sorted((i for i in found if i is not None), key=lambda i: -i.last_seen)


class SessionAdmin:
    """Session listing and revocation against the manager's sync store."""

    def __init__(self, manager: SessionManager, store: Store | None = None) -> None:
        self.manager = manager
        self.store = manager.mode.store if store is None else store

    def sessions(self, user: str) -> list[SessionInfo]:
        """`user`'s live sessions, most recently seen first."""
        return _infos(self.manager, self.store.list_user(user))

    def revoke(self, session_id: str) -> None:
        """End the session with public ID `session_id` at its next request."""
        self.store.delete(session_id)
        self.manager.audit.lifecycle("session.revoked", session_id)

    def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        """End every session of `user` except `keep` (a public ID); returns how many."""
        count = self.store.delete_user(user, keep=keep)
        self.manager.audit.lifecycle("session.revoked_user", None, f"count={count}")
        return count

    def purge_expired(self) -> int:
        """Delete expired records now; returns how many."""
        return self.store.purge_expired()


class AsyncSessionAdmin:
    """Async twin of `SessionAdmin`."""

    def __init__(self, manager: SessionManager, store: AsyncStore | None = None) -> None:
        self.manager = manager
        self.store = manager.mode.async_store if store is None else store

    async def sessions(self, user: str) -> list[SessionInfo]:
        return _infos(self.manager, await self.store.list_user(user))

    async def revoke(self, session_id: str) -> None:
        await self.store.delete(session_id)
        self.manager.audit.lifecycle("session.revoked", session_id)

    async def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        count = await self.store.delete_user(user, keep=keep)
        self.manager.audit.lifecycle("session.revoked_user", None, f"count={count}")
        return count

    async def purge_expired(self) -> int:
        return await self.store.purge_expired()
