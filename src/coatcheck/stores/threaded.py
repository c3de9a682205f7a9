"""`ThreadedStore` and `ThreadedRevocationStore`: a sync store, awaited by running each call
in a worker thread.

The fallback that lets a third-party sync store serve an async app, and a revocation store
built on a client object (which its async twin cannot copy) serve one. Each call pays a
thread hand-off (tens of microseconds); the built-in stores have native async twins instead.
"""

from __future__ import annotations

import asyncio

from ..revocation import Revocation, RevocationStore
from .base import Admission, Record, Store

__all__ = ["ThreadedRevocationStore", "ThreadedStore"]


class ThreadedStore:
    """Adapt a sync `Store` to the `AsyncStore` protocol."""

    def __init__(self, store: Store) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"ThreadedStore({self.sync!r})"

    async def load(self, key: str) -> Record | None:
        return await asyncio.to_thread(self.sync.load, key)

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.save, key, data, version=version, ttl=ttl, user=user
        )

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.rotate, old_key, new_key, data, version=version, ttl=ttl, user=user
        )

    async def admit(
        self,
        key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> Admission:
        """The sync store's `admit` (`LimitedStore`), in a worker thread; AttributeError
        if it has none (`SessionManager` checks for it first)."""
        admission: Admission = await asyncio.to_thread(
            self.sync.admit,  # type: ignore[attr-defined]
            key,
            data,
            version=version,
            ttl=ttl,
            user=user,
            replaces=replaces,
            limit=limit,
            evict=evict,
        )
        return admission

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.sync.delete, key)

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        return await asyncio.to_thread(self.sync.list_user, user)

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return await asyncio.to_thread(self.sync.delete_user, user, keep=keep)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self.sync.purge_expired)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)


class ThreadedRevocationStore:
    """Adapt a sync `RevocationStore` to the `AsyncRevocationStore` protocol."""

    def __init__(self, store: RevocationStore) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"ThreadedRevocationStore({self.sync!r})"

    async def revoke(self, entry: Revocation) -> None:
        await asyncio.to_thread(self.sync.revoke, entry)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return await asyncio.to_thread(self.sync.changes, cursor)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self.sync.purge_expired)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)
