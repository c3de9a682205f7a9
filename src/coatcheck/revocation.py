"""Revocation of client-side sessions: the list every replica checks without a round trip.

A client-side token stays cryptographically valid until it expires, so ending one early
takes a list. Two kinds of entries:

- `sid`: one session, revoked from `at` on. Kept only until `expires_at`, the moment its
  token would have expired anyway, so the list holds only what is still dangerous.
- `user`: "log out everywhere": every token of that user issued before `at` is refused.
  Kept until every token issued before `at` has expired.

Entries are written to a `RevocationStore`, which numbers them; each process keeps a local
`RevocationList`, brought up to date from the store's change feed (`changes(cursor)`) at
most `staleness` seconds apart, so checking a token costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .exceptions import ConfigurationError, StoreUnavailable
from .stores.sqlite import SETUP_TIMEOUT

__all__ = [
    "AsyncRevocationStore",
    "MemoryRevocationStore",
    "Revocation",
    "RevocationList",
    "RevocationStore",
    "SQLiteRevocationStore",
]


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry: session `subject` (kind "sid") or user `subject` (kind "user") is revoked
    from time `at` on; the entry may be forgotten after `expires_at`."""

    kind: Literal["sid", "user"]
    subject: str
    at: float
    expires_at: float


class RevocationList:
    """This process's copy of the revocations. Pure data; the driver feeds it.

    Memory grows with the entries that have not expired yet, never with history: `apply`
    drops entries past their `expires_at`. Merging takes a lock, since a push feed's
    listener thread (`apply_one`) and request threads (`apply`) may merge at once;
    `is_revoked` reads without one.
    """

    __slots__ = ("_lock", "_sids", "_users", "cursor", "synced_at")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sids: dict[str, tuple[float, float]] = {}
        self._users: dict[str, tuple[float, float]] = {}
        self.cursor = 0
        self.synced_at = -math.inf

    def __len__(self) -> int:
        return len(self._sids) + len(self._users)

    def __repr__(self) -> str:
        return f"<RevocationList sids={len(self._sids)} users={len(self._users)}>"

    def due(self, now: float, staleness: float) -> bool:
        """Whether the copy is older than `staleness` seconds."""
        return now - self.synced_at >= staleness

    def apply(self, entries: Iterable[Revocation], cursor: int, now: float) -> None:
        """Merge `entries` (from the change feed, up to `cursor`) and forget expired ones."""
        with self._lock:
            for entry in entries:
                self._merge(entry)
            self.cursor = max(self.cursor, cursor)
            self.synced_at = now
            for table in (self._sids, self._users):
                for subject in [s for s, (_, expires_at) in table.items() if expires_at <= now]:
                    del table[subject]

    def apply_one(self, entry: Revocation) -> None:
        """Merge one entry pushed by a listener (Redis pub/sub, PostgreSQL NOTIFY). The
        cursor and `synced_at` stay as they are: a push may have overtaken entries not yet
        polled, so the next poll still runs on time and fills any gap."""
        with self._lock:
            self._merge(entry)

    def _merge(self, entry: Revocation) -> None:
        table = self._sids if entry.kind == "sid" else self._users
        old = table.get(entry.subject)
        if entry.kind == "user" and old is not None:
            # The latest "not before" wins, kept as long as the longest-lived token.
            entry = Revocation("user", entry.subject, max(old[0], entry.at),
                               max(old[1], entry.expires_at))  # fmt: skip
        table[entry.subject] = (entry.at, entry.expires_at)

    def is_revoked(self, sid: str, user: str | None, issued_at: float, now: float) -> bool:
        """Whether a token for session `sid` of `user`, issued at `issued_at`, is revoked."""
        entry = self._sids.get(sid)
        if entry is not None and now >= entry[0]:
            return True
        if user is not None:
            entry = self._users.get(user)
            if entry is not None and issued_at < entry[0]:
                return True
        return False


@runtime_checkable
class RevocationStore(Protocol):
    """Where revocations are shared between processes, with a numbered change feed."""

    def revoke(self, entry: Revocation) -> None:
        """Record `entry`; every process sees it at its next sync."""

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        """Entries recorded after `cursor`, and the cursor to pass next time."""

    def purge_expired(self) -> int:
        """Forget entries past their `expires_at`; returns how many."""

    def close(self) -> None: ...


@runtime_checkable
class AsyncRevocationStore(Protocol):
    """Async twin of `RevocationStore`."""

    async def revoke(self, entry: Revocation) -> None: ...

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]: ...

    async def purge_expired(self) -> int: ...

    async def aclose(self) -> None: ...


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


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SQLiteRevocationStore:
    """Revocations in a SQLite file: an append-only table whose row number is the cursor.

    Each process polls `changes` (one indexed query, usually returning nothing) at most once
    per staleness interval; that is the SQLite change feed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        *,
        table: str = "coatcheck_revocations",
        timeout: float = 5.0,  # seconds
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"SQLite table name {table!r} is not a plain identifier")
        self.path = os.fspath(path)
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._local = threading.local()
        # Set up now; processes starting together may find the file locked (see SQLiteStore).
        deadline = time.monotonic() + max(timeout, SETUP_TIMEOUT)
        while True:
            try:
                self._connection()
                break
            except StoreUnavailable as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01 + random.random() * 0.04)  # noqa: S311 - jitter, not a secret

    def __repr__(self) -> str:
        return f"SQLiteRevocationStore({self.path!r}, table={self.table!r})"

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None
            try:
                db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} (seq INTEGER PRIMARY KEY "
                    "AUTOINCREMENT, entry TEXT NOT NULL, expires_at REAL NOT NULL)"
                )
            except sqlite3.Error as exc:
                db.close()
                raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None
            self._local.db = db
        return db

    def revoke(self, entry: Revocation) -> None:
        doc = json.dumps([entry.kind, entry.subject, entry.at, entry.expires_at])
        try:
            self._connection().execute(
                f"INSERT INTO {self.table} (entry, expires_at) VALUES (?, ?)",  # noqa: S608
                (doc, entry.expires_at),
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        try:
            rows = self._connection().execute(
                f"SELECT seq, entry FROM {self.table} WHERE seq > ? ORDER BY seq",  # noqa: S608
                (cursor,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None
        entries = []
        for _, doc in rows:
            kind, subject, at, expires_at = json.loads(doc)
            entries.append(Revocation(kind, subject, float(at), float(expires_at)))
        return entries, rows[-1][0] if rows else cursor

    def purge_expired(self) -> int:
        try:
            return self._connection().execute(
                f"DELETE FROM {self.table} WHERE expires_at <= ?",  # noqa: S608
                (self._clock(),),
            ).rowcount
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class AsyncSQLiteRevocationStore:
    """Async twin of `SQLiteRevocationStore`; writes run in a worker thread, polls inline
    (a read in WAL mode never waits for a writer)."""

    def __init__(self, store: SQLiteRevocationStore) -> None:
        self.sync = store

    async def revoke(self, entry: Revocation) -> None:
        await asyncio.to_thread(self.sync.revoke, entry)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return self.sync.changes(cursor)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self.sync.purge_expired)

    async def aclose(self) -> None:
        self.sync.close()
