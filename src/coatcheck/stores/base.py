"""What a session store is: bytes with a TTL, keyed by a session's handle, with a version.

A store knows nothing of sessions. It keeps opaque records (`Record`) under keys that are
session handles (the public half of a secret, `coatcheck.ids`: a record holds only a hash
of the whole secret, so the keys open nothing), and offers the few operations the core
needs, every one of them atomic:

- `save` is a compare-and-set on the record's version, so parallel requests of one session
  never overwrite each other blindly: the loser reloads and re-applies its changes.
- `rotate` moves a record to a new key and deletes the old one, also compared against the
  version, so a write that raced the rotation is not lost.
- the per-user index (`list_user`, `delete_user`) follows the `user` given to `save`.
- `admit` (optional, `LimitedStore`) is `save` or `rotate` under a per-user session
  limit (`coatcheck.limits`): the count, the evictions and the write in one operation.

Constructing a store does nothing: it opens its file or connections, and creates its
tables, on first use, safely when many threads or tasks arrive first at once (an unused
store's `close` has nothing to do). A store may offer `open()` (awaited for an async one)
to do that now, so that a bad path or URL fails at start-up: `SQLiteStore` does.

Every backend ships a sync class and an `Async` twin and passes the contract suite in
`tests/stores/contract.py`.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from .._fast import fast_constructor

__all__ = ["Admission", "AsyncLimitedStore", "AsyncStore", "LimitedStore", "Record", "Store"]


class Record(NamedTuple):
    """One stored record: the encoded session and its version (1 for a new record, +1 per
    successful write)."""

    data: bytes
    version: int


new_record = fast_constructor(Record, "data", "version")


class Admission(NamedTuple):
    """What `admit` did: whether it wrote (False with `refused` False: a version conflict,
    as `save` returning False), whether the limit refused the write, and the keys of the
    user's sessions it deleted to make room, oldest first."""

    saved: bool
    refused: bool = False
    evicted: tuple[str, ...] = ()


#: `admit`'s answer to a write whose version did not match.
CONFLICTED = Admission(False)


@runtime_checkable
class Store(Protocol):
    """A synchronous session store. Durations are seconds; keys are public session IDs."""

    def load(self, key: str) -> Record | None:
        """The live record under `key`, or None if there is none or it has expired."""

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        """Write `data` under `key` if the stored version is `version` (0: no live record).

        Returns False, writing nothing, when the version does not match.
        """

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        """Atomically: if `old_key` holds `version`, write `data` under `new_key` (version 1)
        and delete `old_key`. Returns False, writing nothing, when the version does not
        match."""

    def delete(self, key: str) -> None:
        """Remove the record under `key`, if any."""

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        """Every live record saved with `user`, as (key, record) pairs."""

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        """Remove every live record of `user` except the one under `keep`; returns how many
        live records it removed (expired ones are left to `purge_expired`)."""

    def purge_expired(self) -> int:
        """Remove expired records now; returns how many. Stores also expire on their own."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous twin of `Store`: the same operations, awaited; `aclose` for `close`."""

    async def load(self, key: str) -> Record | None: ...

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool: ...

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def list_user(self, user: str) -> list[tuple[str, Record]]: ...

    async def delete_user(self, user: str, *, keep: str | None = None) -> int: ...

    async def purge_expired(self) -> int: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LimitedStore(Protocol):
    """A store that can enforce a per-user session limit (`SessionLimit`) atomically."""

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
        """In one atomic operation: `save(key, ...)`, or with `replaces`, `rotate(replaces,
        key, ...)` (the version compared as there), made only if `user` then has at most
        `limit` live records. Other live records of `user` (neither `key` nor `replaces`)
        beyond `limit - 1` are deleted first, oldest first (`coatcheck.limits.oldest_first`)
        when `evict`; otherwise nothing is written and the answer is `refused`. No other
        `admit` of the same user may interleave, on any process sharing the store."""


@runtime_checkable
class AsyncLimitedStore(Protocol):
    """The async twin of `LimitedStore`."""

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
    ) -> Admission: ...
