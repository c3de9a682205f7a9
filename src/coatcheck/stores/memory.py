"""`MemoryStore` and `MemoryRevocationStore`: sessions and revocations in this process's
memory.

For tests and single-process development only: every replica or worker process has its own
copy, so a session disappears whenever a request lands on another one (the demo's `local`
strategy shows exactly that), and a revocation holds in this process only. Thread-safe;
expired records are dropped when touched and by `purge_expired`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..revocation import Revocation
from .base import Record

__all__ = ["AsyncMemoryRevocationStore", "AsyncMemoryStore", "MemoryRevocationStore", "MemoryStore"]


class MemoryStore:
    """A dict of records with expiry, a per-user index, and a lock around each operation."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, tuple[Record, float, str | None]] = {}
        self._users: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore records={len(self._records)}>"

    def _live(self, key: str, now: float) -> tuple[Record, float, str | None] | None:
        entry = self._records.get(key)
        if entry is not None and entry[1] <= now:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._records.pop(key, None)
        if entry is not None and entry[2] is not None:
            keys = self._users.get(entry[2])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._users[entry[2]]

    def _put(
        self,
        key: str,
        record: Record,
        expires_at: float,
        user: str | None,
        old: tuple[Record, float, str | None] | None = None,
    ) -> None:
        """Store a record; `old`, the live entry under `key` if the caller has it, lets an
        update of the same user's record skip the user index."""
        if old is not None and old[2] == user:
            self._records[key] = (record, expires_at, user)
            return
        self._drop(key)
        self._records[key] = (record, expires_at, user)
        if user is not None:
            self._users.setdefault(user, set()).add(key)

    def load(self, key: str) -> Record | None:
        with self._lock:
            entry = self._live(key, self._clock())
            return None if entry is None else entry[0]

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if (entry[0].version if entry else 0) != version:
                return False
            self._put(key, Record(data, version + 1), now + ttl, user, entry)
            return True

    def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
    ) -> bool:
        with self._lock:
            now = self._clock()
            entry = self._live(old_key, now)
            if entry is None or entry[0].version != version:
                return False
            self._put(new_key, Record(data, 1), now + ttl, user)
            self._drop(old_key)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        with self._lock:
            now = self._clock()
            found = []
            for key in list(self._users.get(user, ())):
                entry = self._live(key, now)
                if entry is not None:
                    found.append((key, entry[0]))
            return found

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        with self._lock:
            now = self._clock()
            removed = 0
            for key in [k for k in self._users.get(user, ()) if k != keep]:
                removed += self._live(key, now) is not None  # expired ones are dropped uncounted
                self._drop(key)
            return removed

    def purge_expired(self) -> int:
        with self._lock:
            now = self._clock()
            doomed = [k for k, (_, expires_at, _) in self._records.items() if expires_at <= now]
            for key in doomed:
                self._drop(key)
            return len(doomed)

    def close(self) -> None:
        """Nothing to release."""


class AsyncMemoryStore:
    """The async twin of `MemoryStore`. Pass a `MemoryStore` to share its records."""

    def __init__(
        self, store: MemoryStore | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.sync = store if store is not None else MemoryStore(clock=clock)

    def __repr__(self) -> str:
        return f"<AsyncMemoryStore records={len(self.sync._records)}>"

    async def load(self, key: str) -> Record | None:
        return self.sync.load(key)

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return self.sync.save(key, data, version=version, ttl=ttl, user=user)

    async def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
    ) -> bool:
        return self.sync.rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)

    async def delete(self, key: str) -> None:
        self.sync.delete(key)

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        return self.sync.list_user(user)

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return self.sync.delete_user(user, keep=keep)

    async def purge_expired(self) -> int:
        return self.sync.purge_expired()

    async def aclose(self) -> None:
        self.sync.close()


class MemoryRevocationStore:
    """Revocations in this process (one process, tests). Changes are visible at once."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._log: list[tuple[int, Revocation]] = []
        self._seq = 0

    def __repr__(self) -> str:
        return f"<MemoryRevocationStore entries={len(self._log)}>"

    def revoke(self, entry: Revocation) -> None:
        with self._lock:
            self._seq += 1
            self._log.append((self._seq, entry))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        with self._lock:
            return [e for seq, e in self._log if seq > cursor], self._seq

    def purge_expired(self) -> int:
        with self._lock:
            now = self._clock()
            before = len(self._log)
            self._log = [(s, e) for s, e in self._log if e.expires_at > now]
            return before - len(self._log)

    def close(self) -> None:
        """Nothing to release."""


class AsyncMemoryRevocationStore:
    """Async twin of `MemoryRevocationStore`, sharing its entries."""

    def __init__(self, store: MemoryRevocationStore | None = None) -> None:
        self.sync = store if store is not None else MemoryRevocationStore()

    async def revoke(self, entry: Revocation) -> None:
        self.sync.revoke(entry)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return self.sync.changes(cursor)

    async def purge_expired(self) -> int:
        return self.sync.purge_expired()

    async def aclose(self) -> None:
        self.sync.close()
