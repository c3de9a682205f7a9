"""Stores and a manager that fail on cue, for the tests of what adapters answer when a
commit fails and of the degraded modes (issue 11, items 2, 3, 6, 7 and 8), and `act`, the
one view those tests run in every framework.

Each is a real store (or manager) with one fault added, so everything else behaves as in
production: the failures come from the same places a dead Redis or a lost race would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coatcheck import Lifetimes, ServerSide, SessionManager
from coatcheck.exceptions import StoreUnavailable, WriteConflict
from coatcheck.plans import Write
from coatcheck.revocation import Revocation
from coatcheck.session import Session
from coatcheck.stores import MemoryRevocationStore, MemoryStore
from coatcheck.stores.base import Record


def _unreachable() -> StoreUnavailable:
    return StoreUnavailable("store unreachable (test)")


class SwitchStore(MemoryStore):
    """A `MemoryStore` that fails like an unreachable backend while `down` (everything)
    or `writes_down` (saves, rotations and deletes: the store died after the load)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.writes_down = False

    def _check(self, *, write: bool) -> None:
        if self.down or (write and self.writes_down):
            raise _unreachable()

    def load(self, key: str) -> Record | None:
        self._check(write=False)
        return super().load(key)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        self._check(write=True)
        return super().save(key, data, version=version, ttl=ttl, user=user)

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        self._check(write=True)
        return super().rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)

    def delete(self, key: str) -> None:
        self._check(write=True)
        super().delete(key)

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        self._check(write=False)
        return super().list_user(user)

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        self._check(write=True)
        return super().delete_user(user, keep=keep)


class SwitchRevocations(MemoryRevocationStore):
    """A `MemoryRevocationStore` that fails while `down`, and its `changes` once it has
    answered `answers` more calls (unless None); `asked` counts `changes` calls (the sync
    attempts that reached it, failed or not), `cursors` lists the cursors they passed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.answers: int | None = None
        self.asked = 0
        self.cursors: list[int] = []

    def revoke(self, entry: Revocation) -> None:
        if self.down:
            raise _unreachable()
        super().revoke(entry)

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        self.asked += 1
        self.cursors.append(cursor)
        if self.down or self.answers == 0:
            raise _unreachable()
        if self.answers is not None:
            self.answers -= 1
        return super().changes(cursor)


class RacedStore(MemoryStore):
    """A `MemoryStore` where another request's write lands just before each write of an
    existing record: every such write meets a real version conflict, and the driver asks
    the manager to rebase it."""

    def _race(self, key: str) -> None:
        record = super().load(key)
        if record is not None:
            super().save(key, record.data, version=record.version, ttl=3600, user=None)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        if version > 0:
            self._race(key)
        return super().save(key, data, version=version, ttl=ttl, user=user)

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        if version > 0:
            self._race(old_key)
        return super().rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)


class ConflictingManager(SessionManager):
    """A manager for which every rebase is a real conflict: `rebase` raises
    `WriteConflict`, as the core does when a key the request read and changed was changed
    by another request meanwhile. Independent of how the core decides that."""

    def rebase(self, session: Session, write: Write, record: Record | None) -> Write | None:
        raise WriteConflict("computed from a value another request replaced (test)")


def conflicting_manager(store: MemoryStore, clock: Any) -> ConflictingManager:
    return ConflictingManager(
        ServerSide(store=store),
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"test-salt",
    )


def act(action: str, params: Mapping[str, str], session: Any) -> str:
    """The view of every failure test, for any framework's session object: `set` a key,
    `bump` a counter (read, then write), store a `big` (1 MB) or a `bad` (not JSON) value,
    `logout`, or `read` the session (JSON)."""
    if action == "set":
        session[params["key"]] = params.get("value", "")
    elif action == "bump":
        session["n"] = str(int(session.get("n", "0")) + 1)
    elif action == "big":
        session["blob"] = "x" * 1_000_000
    elif action == "bad":
        session["bad"] = {1, 2}  # a set: JSON cannot carry it
    elif action == "logout":
        if hasattr(session, "logout"):
            session.logout()
        else:
            session.flush()  # Django's
    elif action == "read":
        return json.dumps(dict(session.items()))
    else:
        raise LookupError(action)
    return "ok"
