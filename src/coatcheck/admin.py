"""List and revoke sessions outside a request: `SessionAdmin` and `AsyncSessionAdmin`.

Sessions are named by their handle (`Session.id`, `SessionInfo.id`): it stays the same from
the session's creation to its end, whatever renewals and `regenerate()` do to the secret the
client holds, and it cannot be turned into that secret, so it is safe to show in an admin
page or a "my devices" list. Both modes work alike:

- server-side, ending a session deletes its handle's record. Every write of a session is a
  compare-and-set on that record, so no concurrent request brings it back;
- client-side, it deletes the registry record and writes a revocation entry for the handle
  (or, for `revoke_user`, one for the user), which every replica applies within the mode's
  `staleness` and keeps until every token it covers has expired.

Each operation is written once, as a plan: a generator that decides and yields the store
calls to make, one at a time, as argument-less callables, and is sent back each result (or
has the `StoreError` a call raised thrown into it). `run` carries a plan out against sync
stores, `arun` against async ones: the two differ in one `await`, and `coatcheck.drivers`
runs its request plans with them too (the pattern of sans-IO libraries such as h11).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any, TypeVar

from .exceptions import ConfigurationError, StoreError
from .ids import is_handle
from .manager import SessionManager
from .revocation import Revocation
from .session import SessionInfo
from .stores.base import AsyncStore, Record, Store

__all__ = ["AsyncSessionAdmin", "SessionAdmin"]

T = TypeVar("T")
#: A plan: yields store calls (`lambda: store.load(key)`), is sent each one's result.
Plan = Generator[Callable[[], Any], Any, T]


def run(plan: Plan[T]) -> T:
    """Carry out `plan` with sync stores: `_drive` never suspends then, so one `send` runs
    it to the end."""
    try:
        _drive(plan, awaits=False).send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    raise RuntimeError("a sync store call awaited")  # pragma: no cover - a broken store


def arun(plan: Plan[T]) -> Coroutine[Any, Any, T]:
    """Carry out `plan` with async stores (to be awaited)."""
    return _drive(plan, awaits=True)


async def _drive(plan: Plan[T], *, awaits: bool) -> T:
    """Make each call `plan` yields and send it the result; a `StoreError` is thrown into
    the plan instead, which handles it or lets it propagate."""
    reply: Any = None
    error: StoreError | None = None
    while True:
        try:
            call = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            reply, error = call(), None
            if awaits:
                reply = await reply
        except StoreError as exc:
            reply, error = None, exc


def _infos(manager: SessionManager, rows: list[tuple[str, Record]]) -> list[SessionInfo]:
    now = manager.clock()
    found = (manager.describe(key, record, now) for key, record in rows)
    return sorted((i for i in found if i is not None), key=lambda i: -i.last_seen)


def _registry(store: Store | AsyncStore | None) -> Store | AsyncStore:
    if store is None:
        raise ConfigurationError(
            "these sessions are stateless (ClientSide(store=None)): there is no registry "
            "to list sessions from; give ClientSide a store"
        )
    return store


def _handle(value: object, what: str = "session_id") -> str:
    if not is_handle(value):
        raise ValueError(
            f"{what} must be a session handle (Session.id or SessionInfo.id: 22 base64url "
            "characters), not a secret, a token or anything else"
        )
    assert isinstance(value, str)  # noqa: S101 - is_handle checked it
    return value


def _entries(
    manager: SessionManager,
    handle: str | None = None,
    user: str | None = None,
    keep: str | None = None,
) -> list[Revocation]:
    """The revocation entries that end session `handle`, or every session of `user` but
    `keep`, for the client-side tokens the manager accepts (its own, or those a server-side
    manager migrates: a token not migrated yet is a session too); refuses when revocations
    cannot be shared."""
    mode = manager.client_mode
    if mode is None:
        return []
    if not mode.shares_revocations:
        raise ConfigurationError(
            "these client-side sessions have no revocation store (ClientSide(store=None)): "
            "a revocation would hold in this process only while other replicas accept the "
            "token; pass ClientSide(..., revocations=<a RevocationStore every replica "
            "shares>) or a store URL"
        )
    if handle is not None:
        return [mode.revocation(manager.context, handle)]
    assert user is not None  # noqa: S101
    return [mode.revocation(manager.context, user, "user", keep=keep)]


# -- the plans: `store` and `revocations` are the sync or the async twins, alike -------------


def revoking(manager: SessionManager, store: Any, revocations: Any, handle: str) -> Plan[bool]:
    """`SessionAdmin.revoke`: the entries first, then the delete (see
    `SessionManager.revoked_meanwhile`); whether the session was live."""
    yield from recording(manager, revocations, _entries(manager, handle))
    live = False
    if store is not None:
        live = (yield lambda: store.load(handle)) is not None
        yield lambda: store.delete(handle)
    manager.audit.lifecycle("session.revoked", handle)
    return live


def revoking_user(
    manager: SessionManager, store: Any, revocations: Any, user: str, keep: str | None
) -> Plan[int]:
    """`SessionAdmin.revoke_user`: how many live sessions it ended."""
    keep = None if keep is None else _handle(keep, "keep")
    yield from recording(manager, revocations, _entries(manager, user=user, keep=keep))
    count: int = 0 if store is None else (yield lambda: store.delete_user(user, keep=keep))
    manager.audit.lifecycle("session.revoked_user", None, f"count={count}")
    return count


def recording(
    manager: SessionManager, revocations: Any, entries: Iterable[Revocation]
) -> Plan[None]:
    """`SessionAdmin.record_revocations`: write the entries to the shared `revocations`
    store (if any) and apply them to this process's copy at once."""
    mode = manager.client_mode
    entries = list(entries)
    if not entries or mode is None:
        return
    if revocations is not None:
        for entry in entries:
            yield lambda: revocations.revoke(entry)  # noqa: B023 - called before the next one
    lst = mode.revocation_list
    lst.apply(entries, lst.cursor, lst.synced_at)


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

    def revoke(self, session_id: str) -> bool:
        """End the session with handle `session_id`, whatever its secret is by now, on
        every replica (client-side: within the staleness bound). Returns whether it was
        live (listed); ValueError if `session_id` is not a handle at all."""
        handle = _handle(session_id)
        return run(revoking(self.manager, self.store, self._revocations, handle))

    def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        """End every session of `user` but the one with handle `keep`; returns how many
        live sessions it ended. Client-side, every token of the user issued until now is
        refused, listed or not, except those of `keep`."""
        return run(revoking_user(self.manager, self.store, self._revocations, user, keep))

    def record_revocations(self, entries: Iterable[Revocation]) -> None:
        """Write revocation entries and apply them to this process's copy at once."""
        run(recording(self.manager, self._revocations, entries))

    def purge_expired(self) -> int:
        """Delete expired records now; returns how many."""
        store = _registry(self.store)
        assert isinstance(store, Store)  # noqa: S101
        return store.purge_expired()

    @property
    def _revocations(self) -> Any:
        mode = self.manager.client_mode
        return None if mode is None else mode.revocations


class AsyncSessionAdmin:
    """Async twin of `SessionAdmin`."""

    def __init__(self, manager: SessionManager, store: AsyncStore | None = None) -> None:
        self.manager = manager
        self.store = manager.mode.async_store if store is None else store

    async def sessions(self, user: str) -> list[SessionInfo]:
        store = _registry(self.store)
        assert isinstance(store, AsyncStore)  # noqa: S101
        return _infos(self.manager, await store.list_user(user))

    async def revoke(self, session_id: str) -> bool:
        handle = _handle(session_id)
        return await arun(revoking(self.manager, self.store, self._revocations, handle))

    async def revoke_user(self, user: str, *, keep: str | None = None) -> int:
        plan = revoking_user(self.manager, self.store, self._revocations, user, keep)
        return await arun(plan)

    async def record_revocations(self, entries: Iterable[Revocation]) -> None:
        await arun(recording(self.manager, self._revocations, entries))

    async def purge_expired(self) -> int:
        store = _registry(self.store)
        assert isinstance(store, AsyncStore)  # noqa: S101
        return await store.purge_expired()

    @property
    def _revocations(self) -> Any:
        mode = self.manager.client_mode
        return None if mode is None else mode.async_revocations
