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
`RevocationList`, brought up to date from the store's change feed (`changes(cursor)`, a
page of at most `CHANGES_PAGE` entries at a time) at most `staleness` seconds apart, so
checking a token costs a dictionary lookup.

This module is pure: the entries, their one wire form (`encode_entry` / `decode_entry`,
`decode_rows` for a change feed's rows), the list, and the store protocols. The stores
themselves live beside the session stores of the same backend in `coatcheck.stores`
(`MemoryRevocationStore`, `SQLiteRevocationStore`, `RedisRevocationStore`,
`PostgresRevocationStore`, each with an `Async` twin), sharing their connection code.
"""

from __future__ import annotations

import _thread
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ._protocols import AsyncRevocationStore, RevocationStore

__all__ = [
    "CHANGES_PAGE",
    "REVOKED",
    "SUPERSEDED",
    "VALID",
    "AsyncRevocationStore",
    "Revocation",
    "RevocationList",
    "RevocationStore",
    "decode_entry",
    "decode_rows",
    "encode_entry",
    "more_after",
]

#: Entries one `changes` call of a built-in store returns at most. A poll that gets a full
#: page asks again from where it ended, so no call outgrows the store's timeout however far
#: behind a process is (a burst of revocations, a long outage), and a call that fails
#: keeps what the pages before it brought: the next poll goes on from there.
CHANGES_PAGE = 1000


def more_after(entries: list[Revocation]) -> bool:
    """Whether a poll that got `entries` from `changes` should ask again (a full page)."""
    return len(entries) >= CHANGES_PAGE


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


def decode_rows(
    rows: Iterable[tuple[int, str | bytes]], cursor: int
) -> tuple[list[Revocation], int]:
    """The entries of change-feed rows `(sequence number, encoded entry)`, in order, and the
    cursor after the last row. A row that does not decode (not written by coatcheck) is
    skipped, never applied, and the cursor still moves past it (a page that held one reads
    as short: the rest comes with the next poll)."""
    entries = []
    for seq, doc in rows:
        try:
            entries.append(decode_entry(doc))
        except ValueError:
            pass
        cursor = seq
    return entries, cursor


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
    (`apply`) may merge at once; `check` reads without one. (The lock is `_thread`'s, which
    the interpreter always has loaded: importing this module imports no `threading`.)
    """

    __slots__ = ("_lock", "_sids", "_users", "cursor", "synced_at")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
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

    def apply(self, entries: list[Revocation], cursor: int, now: float) -> bool:
        """Merge `entries` (a page of the change feed, up to `cursor`) and forget expired
        ones. True when the page was full (`more_after`): the cursor moves on, but the copy
        is not up to date until a short page, so `synced_at` stays; ask again."""
        more = more_after(entries)
        with self._lock:
            for entry in entries:
                self._merge(entry)
            self.cursor = max(self.cursor, cursor)
            if not more:
                self.synced_at = now
            for table in (self._sids, self._users):
                for subject, held in list(table.items()):
                    live = tuple(e for e in held if e.expires_at > now)
                    if len(live) != len(held):
                        if live:
                            table[subject] = live
                        else:
                            del table[subject]
        return more

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

    def retired(
        self, sid: str, user: str | None, issued_at: float, generation: int, now: float
    ) -> bool:
        """Whether a token that `check` refuses is refused only for its generation: its
        session is live, and a `regenerate()` replaced it longer ago than the grace window
        (a reuse: `coatcheck.reuse`). False if the session or its user's tokens are revoked."""
        replaced = False
        for entry in self._sids.get(sid, ()):
            if now < entry.at:
                continue
            if entry.generation is None:
                return False
            replaced = replaced or generation < entry.generation
        if user is not None:
            for entry in self._users.get(user, ()):
                if issued_at <= entry.at and sid != entry.keep:
                    return False
        return replaced

    def generation(self, sid: str) -> int:
        """The newest generation that entries of session `sid` supersede older tokens
        for (0 if none): where a `regenerate()` starts counting."""
        return max((e.generation or 0 for e in self._sids.get(sid, ())), default=0)

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
