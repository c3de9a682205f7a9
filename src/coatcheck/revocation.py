"""Revocation of client-side sessions: the list every replica checks without a round trip.

A client-side token stays cryptographically valid until it expires, so ending one early
takes a list. Two kinds of entries (see `Revocation`):

- `sid`: one session (its handle), revoked from `at` on: logout, `revoke`, and `login`,
  which ends the handle it replaces; or only its tokens of an older generation, after the
  grace window (`regenerate()`). Kept until `expires_at`, when every token of that session
  would have expired anyway, so the list holds only what is still dangerous.
- `user`: "log out everywhere": every token of that user issued before `at` is refused,
  except those of one kept session ("log out other devices"). Kept just as long.

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
    "REVOKED",
    "SUPERSEDED",
    "VALID",
    "AsyncRevocationStore",
    "MemoryRevocationStore",
    "Revocation",
    "RevocationList",
    "RevocationStore",
    "SQLiteRevocationStore",
    "decode_entry",
    "encode_entry",
]


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry, forgotten after `expires_at` (when every token it covers has expired).

    - kind "sid": the tokens of session `subject` are refused from time `at` on; with a
      `generation`, only those of an older generation (`regenerate()`: the tokens it
      replaced, after the grace window).
    - kind "user": the tokens of user `subject` issued up to `at` are refused, except
      those of session `keep` ("log out other devices"). A token issued at the very
      instant of the entry is refused too: of two events in the same millisecond, the
      revocation is taken to come last.
    """

    kind: Literal["sid", "user"]
    subject: str
    at: float
    expires_at: float
    keep: str | None = None
    generation: int | None = None


def encode_entry(entry: Revocation) -> str:
    """The one wire form of an entry (JSON), shared by every revocation store and feed."""
    return json.dumps(
        [entry.kind, entry.subject, entry.at, entry.expires_at, entry.keep, entry.generation],
        separators=(",", ":"),
    )


def decode_entry(text: str | bytes) -> Revocation:
    """An entry back from `encode_entry`; ValueError for anything else, so a damaged or
    planted row can neither crash a listener nor smuggle a NaN past a comparison."""
    try:
        doc = json.loads(text)
        if doc.__class__ is not list or len(doc) not in (4, 6):
            raise ValueError
        kind, subject, at, expires_at = doc[:4]
        keep, generation = doc[4:] if len(doc) == 6 else (None, None)
        if (
            kind not in ("sid", "user")
            or subject.__class__ is not str
            or (keep is not None and keep.__class__ is not str)
            or (generation is not None and generation.__class__ is not int)
        ):
            raise ValueError
        at, expires_at = _finite(at), _finite(expires_at)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ValueError("not a coatcheck revocation entry") from None
    return Revocation(kind, subject, at, expires_at, keep, generation)


def _finite(value: object) -> float:
    if value.__class__ not in (int, float):
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


#: What `RevocationList.check` says of a token: accepted, accepted for the grace window
#: only (a `regenerate()` replaced it), or refused.
VALID, SUPERSEDED, REVOKED = 0, 1, 2


class RevocationList:
    """This process's copy of the revocations. Pure data; the driver feeds it.

    Memory grows with the entries that have not expired yet, never with history: `apply`
    drops entries past their `expires_at`, and entries that a newer one covers. Merging
    takes a lock, since a push feed's listener thread (`apply_one`) and request threads
    (`apply`) may merge at once; `check` reads without one.
    """

    __slots__ = ("_lock", "_sids", "_users", "cursor", "synced_at")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sids: dict[str, tuple[Revocation, ...]] = {}
        self._users: dict[str, tuple[Revocation, ...]] = {}
        self.cursor = 0
        self.synced_at = -math.inf

    def __len__(self) -> int:
        return sum(map(len, self._sids.values())) + sum(map(len, self._users.values()))

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
                for subject, held in list(table.items()):
                    live = tuple(e for e in held if e.expires_at > now)
                    if len(live) != len(held):
                        if live:
                            table[subject] = live
                        else:
                            del table[subject]

    def apply_one(self, entry: Revocation) -> None:
        """Merge one entry pushed by a listener (Redis pub/sub, PostgreSQL NOTIFY). The
        cursor and `synced_at` stay as they are: a push may have overtaken entries not yet
        polled, so the next poll still runs on time and fills any gap."""
        with self._lock:
            self._merge(entry)

    def _merge(self, entry: Revocation) -> None:
        table = self._sids if entry.kind == "sid" else self._users
        held = table.get(entry.subject, ())
        if entry in held or any(_covers(old, entry) for old in held):
            return
        table[entry.subject] = (*(old for old in held if not _covers(entry, old)), entry)

    def check(
        self, sid: str, user: str | None, issued_at: float, generation: int, now: float
    ) -> int:
        """`VALID`, `SUPERSEDED` or `REVOKED`: what the entries say of a token of session
        `sid` and `user`, issued at `issued_at`, of `generation`."""
        verdict = VALID
        for entry in self._sids.get(sid, ()):
            if entry.generation is None or generation < entry.generation:
                if now >= entry.at:
                    return REVOKED
                if entry.generation is not None:
                    verdict = SUPERSEDED
        if user is not None:
            for entry in self._users.get(user, ()):
                if issued_at <= entry.at and sid != entry.keep:
                    return REVOKED
        return verdict

    def is_revoked(self, sid: str, user: str | None, issued_at: float, now: float) -> bool:
        """Whether a token for session `sid` of `user`, issued at `issued_at`, is refused
        (whatever its generation)."""
        return self.check(sid, user, issued_at, 0, now) == REVOKED


def _covers(a: Revocation, b: Revocation) -> bool:
    """Whether entry `a` refuses every token `b` refuses, as early and as long."""
    if a.expires_at < b.expires_at:
        return False
    if a.kind == "sid":
        return a.at <= b.at and (
            a.generation is None or (b.generation is not None and a.generation >= b.generation)
        )
    return a.at >= b.at and (a.keep is None or a.keep == b.keep)


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
        doc = encode_entry(entry)
        try:
            self._connection().execute(
                f"INSERT INTO {self.table} (entry, expires_at) VALUES (?, ?)",  # noqa: S608
                (doc, entry.expires_at),
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        try:
            rows = (
                self._connection()
                .execute(
                    f"SELECT seq, entry FROM {self.table} WHERE seq > ? ORDER BY seq",  # noqa: S608
                    (cursor,),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite revocations {self.path!r}: {exc}") from None
        entries = []
        for _, doc in rows:
            try:
                entries.append(decode_entry(doc))
            except ValueError:
                continue  # not written by coatcheck: skipped, never applied
        return entries, rows[-1][0] if rows else cursor

    def purge_expired(self) -> int:
        try:
            return (
                self._connection()
                .execute(
                    f"DELETE FROM {self.table} WHERE expires_at <= ?",  # noqa: S608
                    (self._clock(),),
                )
                .rowcount
            )
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
