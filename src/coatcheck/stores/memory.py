"""`MemoryStore` and `MemoryRevocationStore`: sessions and revocations in this process's
memory.

For tests and single-process development only: every replica or worker process has its own
copy, so a session disappears whenever a request lands on another one (the demo's `local`
strategy shows exactly that), and a revocation holds in this process only. Thread-safe: one
lock around each operation.

Layout: `_records` maps a key to an `_Entry` (the `Record` that `load` returns as it is,
its expiry, its user and its expiry bucket: nothing is rebuilt or recomputed on a read);
`_users` maps a user to the set of their keys.

Expiry. A record is invisible once expired, dropped when touched, and also dropped without
being touched, so memory follows the live sessions, not every session ever made. Each
record is filed in an expiry bucket (`_buckets`: bucket *n* holds the keys expiring in
((n-1)·GRAIN, n·GRAIN] seconds), and the bucket numbers form a heap (`_due`). Every `load`,
`save` and `rotate` first drops at most `SWEEP` records from buckets wholly expired by the
store's clock. A write files one record and every operation may drop `SWEEP`, so the sweep
keeps up with any write rate, at O(1) work per operation (plus O(log buckets) for a new
bucket, one per GRAIN seconds of expiry times in use); an expired record outlives its
expiry by at most GRAIN seconds plus the operations needed to reach it. `purge_expired`
drops every expired record at once, in time proportional to their number.

Compact data. orjson returns its output buffer itself as the `bytes` object: 4-8 KB stay
allocated for a record of a few hundred bytes (tracemalloc: 8.3 KB held per 265-byte
record). The store keeps a copy of the bytes given to `save` (~150 ns a write);
`bench/memory_per_session.py` measures ~630 bytes of RSS per 306-byte anonymous session at
1M sessions, ~950 with a user.
"""

from __future__ import annotations

import bisect
import heapq
import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .._fast import fast_constructor
from .._mypyc import mypyc_attr
from ..limits import oldest_first
from ..revocation import CHANGES_PAGE, Revocation
from .base import CONFLICTED, Admission, Record, new_record

__all__ = ["AsyncMemoryRevocationStore", "AsyncMemoryStore", "MemoryRevocationStore", "MemoryStore"]

SWEEP = 4  # expired records (or emptied buckets) an operation drops at most, besides its own
GRAIN = 60.0  # seconds: the width of an expiry bucket


class _Entry(NamedTuple):
    """What `MemoryStore` keeps per key."""

    record: Record
    expires_at: float
    user: str | None
    bucket: int | None  # ceil(expires_at / GRAIN); None: it never expires


_new_entry = fast_constructor(_Entry, "record", "expires_at", "user", "bucket")


def _entry(data: bytes, version: int, expires_at: float, user: str | None) -> _Entry:
    """What the store keeps for `data`: a copy of it in an allocation of its own size (see
    the module docstring: `bytes(data)` of a `bytes` object returns the object itself)."""
    record = new_record((bytes(memoryview(data)), version))
    bucket = math.ceil(expires_at / GRAIN) if expires_at < math.inf else None
    return _new_entry((record, expires_at, user, bucket))


def _seq_of(logged: tuple[int, Revocation]) -> int:
    return logged[0]


# Subclassed by tests and applications (fault injection, counting): compiled, the class
# must allow it explicitly.
@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryStore:
    """A dict of records with expiry, a per-user index, expiry buckets swept a few records
    per operation, and a lock around each operation."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Entry] = {}
        self._users: dict[str, set[str]] = {}
        self._buckets: dict[int, set[str]] = {}
        self._due: list[int] = []  # a heap of the numbers in `_buckets`, each once

    def __repr__(self) -> str:
        return f"<MemoryStore records={len(self._records)}>"

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._records.get(key)
        if entry is not None and entry[1] <= now:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._records.pop(key, None)
        if entry is not None:
            self._unfile(key, entry.bucket)
            if entry.user is not None:
                self._unindex(key, entry.user)

    def _unindex(self, key: str, user: str) -> None:
        keys = self._users.get(user)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[user]

    def _file(self, key: str, number: int | None) -> None:
        """Put `key` in expiry bucket `number` (None: it never expires)."""
        if number is None:
            return
        bucket = self._buckets.get(number)
        if bucket is None:
            self._buckets[number] = bucket = set()
            heapq.heappush(self._due, number)
        bucket.add(key)

    def _unfile(self, key: str, number: int | None) -> None:
        """Take `key` out of expiry bucket `number` (the bucket stays, empty or not, until
        the sweep reaches it)."""
        if number is not None:
            self._buckets[number].discard(key)

    def _sweep(self, now: float, budget: float) -> int:
        """Drop the records of buckets wholly expired at `now`, oldest first, spending at
        most `budget` units of work (a record dropped, or an empty bucket removed); returns
        how many records it dropped."""
        due, buckets = self._due, self._buckets
        dropped = spent = 0
        while due and due[0] * GRAIN <= now and spent < budget:
            bucket = buckets[due[0]]
            while bucket and spent < budget:
                key = bucket.pop()
                user = self._records.pop(key).user
                if user is not None:
                    self._unindex(key, user)
                dropped += 1
                spent += 1
            if not bucket and spent < budget:
                del buckets[heapq.heappop(due)]
                spent += 1
        return dropped

    def _put(self, key: str, entry: _Entry, old: _Entry | None = None) -> None:
        """Store `entry`; `old`, the live entry under `key` if the caller has it, lets an
        update of the same user's record skip the user index."""
        if old is not None and old.user == entry.user:
            self._records[key] = entry
            if old.bucket != entry.bucket:
                self._unfile(key, old.bucket)
                self._file(key, entry.bucket)
            return
        self._drop(key)
        self._records[key] = entry
        self._file(key, entry.bucket)
        if entry.user is not None:
            self._users.setdefault(entry.user, set()).add(key)

    def load(self, key: str) -> Record | None:
        with self._lock:
            now = self._clock()
            if self._due and self._due[0] * GRAIN <= now:  # (inline: most calls sweep nothing)
                self._sweep(now, SWEEP)
            entry = self._live(key, now)
            return None if entry is None else entry[0]

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        with self._lock:
            now = self._clock()
            if self._due and self._due[0] * GRAIN <= now:  # (inline: most calls sweep nothing)
                self._sweep(now, SWEEP)
            entry = self._live(key, now)
            if (entry[0][1] if entry else 0) != version:
                return False
            self._put(key, _entry(data, version + 1, now + ttl, user), entry)
            return True

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        with self._lock:
            now = self._clock()
            if self._due and self._due[0] * GRAIN <= now:  # (inline: most calls sweep nothing)
                self._sweep(now, SWEEP)
            entry = self._live(old_key, now)
            if entry is None or entry[0][1] != version:
                return False
            self._put(new_key, _entry(data, 1, now + ttl, user))
            self._drop(old_key)
            return True

    def admit(
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
        """`save` or `rotate` under a per-user session limit (`LimitedStore.admit`), under
        the store's one lock: nothing else runs in between."""
        with self._lock:
            now = self._clock()
            if self._due and self._due[0] * GRAIN <= now:
                self._sweep(now, SWEEP)
            source = key if replaces is None else replaces
            entry = self._live(source, now)
            if (entry[0][1] if entry else 0) != version or (replaces is not None and not entry):
                return CONFLICTED
            others = []
            for other in list(self._users.get(user, ())):
                found = self._live(other, now)
                if found is not None and other != key and other != replaces:
                    others.append((other, found.record.data))
            doomed = oldest_first(others, limit)
            if doomed and not evict:
                return Admission(False, True)
            for other in doomed:
                self._drop(other)
            if replaces is None:
                self._put(key, _entry(data, version + 1, now + ttl, user), entry)
            else:
                self._put(key, _entry(data, 1, now + ttl, user))
                self._drop(replaces)
            return Admission(True, False, tuple(doomed))

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
                    found.append((key, entry.record))
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
        """Drop every expired record now: the wholly expired buckets, then the expired
        records of the one bucket that `now` falls in."""
        with self._lock:
            now = self._clock()
            removed = self._sweep(now, math.inf)
            current = self._buckets.get(math.ceil(now / GRAIN), ())
            for key in [k for k in current if self._records[k].expires_at <= now]:
                self._drop(key)
                removed += 1
            return removed

    def close(self) -> None:
        """Nothing to release."""


class AsyncMemoryStore:
    """The async twin of `MemoryStore`. Pass a `MemoryStore` to share its records."""

    def __init__(
        self, store: MemoryStore | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.sync = store if store is not None else MemoryStore(clock=clock)

    @classmethod
    def wrapping(cls, store: MemoryStore) -> AsyncMemoryStore:
        """The async twin of `store`, sharing its records."""
        return cls(store)

    def __repr__(self) -> str:
        return f"<AsyncMemoryStore records={len(self.sync._records)}>"

    async def load(self, key: str) -> Record | None:
        return self.sync.load(key)

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return self.sync.save(key, data, version=version, ttl=ttl, user=user)

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return self.sync.rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)

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
        return self.sync.admit(
            key,
            data,
            version=version,
            ttl=ttl,
            user=user,
            replaces=replaces,
            limit=limit,
            evict=evict,
        )

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


# Subclassed by tests and applications (fault injection, counting): compiled, the class
# must allow it explicitly.
@mypyc_attr(allow_interpreted_subclasses=True)
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
            start = bisect.bisect_right(self._log, cursor, key=_seq_of)
            page = self._log[start : start + CHANGES_PAGE]
            last = page[-1][0] if len(page) == CHANGES_PAGE else self._seq
            return [entry for _, entry in page], last

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

    @classmethod
    def wrapping(cls, store: MemoryRevocationStore) -> AsyncMemoryRevocationStore:
        """The async twin of `store`, sharing its entries."""
        return cls(store)

    async def revoke(self, entry: Revocation) -> None:
        self.sync.revoke(entry)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return self.sync.changes(cursor)

    async def purge_expired(self) -> int:
        return self.sync.purge_expired()

    async def aclose(self) -> None:
        self.sync.close()
