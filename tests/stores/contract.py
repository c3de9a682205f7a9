"""The one store contract every backend passes, sync and async; and the one revocation
store contract.

Each scenario below is written once, as a generator that yields operations (`Call`,
`Advance`, `Pause`, `Parallel`, ...) and receives their results: sans-IO, like the core.
Two small runners execute a scenario against a sync store (threads for `Parallel`) or an
async one (tasks for `Parallel`). A backend gets the whole suite by subclassing:

```python
from .contract import AsyncStoreContract, StoreContract  # relative: one module name

class TestRedisStore(StoreContract):
    purge_counts_expired = False  # Redis drops expired keys on its own

    @pytest.fixture
    def store(self, redis_server: RedisServer) -> Iterator[Store]:
        store = RedisStore(redis_server.url, prefix=fresh_prefix())  # empty per test
        yield store
        store.close()


class TestAsyncRedisStore(AsyncStoreContract):
    @pytest.fixture
    async def astore(self, redis_server: RedisServer) -> AsyncIterator[AsyncStore]: ...
```

Every scenario runs as `test_contract[<scenario name>]` (select with `-k`).

The subclass provides a `store` (or `astore`) fixture yielding a fresh, empty store per
test. If the store accepts an injected clock, also override `clock` to return a
`ManualClock` and build the store with it: time then moves only when a scenario says so,
and TTL scenarios run instantly. With the default `clock` (None) TTLs run out in real time:
`SHORT_TTL` is short, and expiry is awaited by bounded polling, never asserted by timing.

Revocation stores (`RevocationStore` and its async twin) have their own scenarios, run by
the same runners. A backend subclasses `RevocationStoreContract` once for both twins, since
its scenarios need several clients on one set of entries (as replicas are), sync and async:

```python
class TestRedisRevocationStore(RevocationStoreContract):
    @pytest.fixture
    def connect(self, redis_server: RedisServer, prefix: str, clock: ManualClock) -> Connect:
        return lambda: RedisRevocationStore(redis_server.url, prefix=prefix, clock=clock)

    @pytest.fixture
    def aconnect(self, ...) -> AsyncConnect: ...   # async clients of the same entries

    @pytest.fixture
    def plant(self, ...) -> Plant: ...   # writes a raw row, as a bug or an attacker would
```

Each scenario runs as `test_contract[<name>]` and `test_async_contract[<name>]`; the
clients a test opened are closed after it. Revocation stores always take a `ManualClock`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import pytest

from coatcheck.revocation import (
    CHANGES_PAGE,
    AsyncRevocationStore,
    Revocation,
    RevocationStore,
)
from coatcheck.stores import AsyncStore, Record, Store

__all__ = [
    "LONG_TTL",
    "REVOCATION_SCENARIOS",
    "SCENARIOS",
    "SHORT_TTL",
    "AsyncConnect",
    "AsyncStoreContract",
    "Backend",
    "Connect",
    "ManualClock",
    "Plant",
    "RevocationStoreContract",
    "StoreContract",
    "run_async",
    "run_sync",
]

SHORT_TTL = 0.3  # seconds: long enough to write and read back, short enough to wait out
LONG_TTL = 3600.0  # seconds: never runs out during a test
POLL_INTERVAL = 0.05  # seconds between checks while waiting for a store to expire a record
POLLS = 100  # so a record still alive 5 s after its TTL ran out fails the scenario
WRITERS = 8  # concurrent writers in the lost-update scenarios
INCREMENTS = 25  # increments per writer
MAX_ATTEMPTS = 10_000  # CAS retries one increment may take before the scenario gives up


class ManualClock:
    """A clock that moves only when told to, for stores that accept `clock=`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- operations a scenario yields ----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """Call a store method; the scenario receives its result. `client` 0 is the store under
    test; another number, another client of the same data (opened on first use)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    client: int = 0


@dataclass(frozen=True)
class Advance:
    """Let `seconds` pass: move a `ManualClock`, or sleep in real time."""

    seconds: float


@dataclass(frozen=True)
class Pause:
    """Sleep in real time (0: just let other threads or tasks run)."""

    seconds: float


@dataclass(frozen=True)
class Setting:
    """Ask for a `Backend` setting, for the few scenarios where backends may differ."""

    name: str


@dataclass(frozen=True)
class Parallel:
    """Run scenarios concurrently; the scenario receives the list of their return values."""

    scenarios: tuple[Scenario, ...]


@dataclass(frozen=True)
class Now:
    """Ask for the time: the `ManualClock`'s, or the real one."""


@dataclass(frozen=True)
class PlantRow:
    """Write a raw revocation row holding `doc` (not necessarily an entry), bypassing the
    store, as a bug or an attacker with access to the backend could."""

    doc: str
    expires_at: float


Op = Call | Advance | Pause | Setting | Parallel | Now | PlantRow


Scenario = Generator[Op, Any, Any]

#: A fixture's way to open another client of the store under test (the same data).
Connect = Callable[[], RevocationStore]
AsyncConnect = Callable[[], AsyncRevocationStore]
#: A fixture's way to plant a raw row (`PlantRow`); None for a store that keeps no rows.
Plant = Callable[[str, float], None] | None


@dataclass(frozen=True)
class Backend:
    """What a runner knows besides the store: its clock, the backend's settings, and how to
    reach other clients of the same data and plant raw rows."""

    clock: ManualClock | None = None
    purge_counts_expired: bool = True
    client: Callable[[int], Any] | None = None
    plant: Plant = None


def load(key: str) -> Call:
    return Call("load", (key,))


def save(
    key: str, data: bytes, *, version: int, ttl: float = LONG_TTL, user: str | None = None
) -> Call:
    return Call("save", (key, data), (("version", version), ("ttl", ttl), ("user", user)))


def rotate(
    old_key: str,
    new_key: str,
    data: bytes,
    *,
    version: int,
    ttl: float = LONG_TTL,
    user: str | None = None,
) -> Call:
    options = (("version", version), ("ttl", ttl), ("user", user))
    return Call("rotate", (old_key, new_key, data), options)


def delete(key: str) -> Call:
    return Call("delete", (key,))


def list_user(user: str) -> Call:
    return Call("list_user", (user,))


def delete_user(user: str, *, keep: str | None = None) -> Call:
    return Call("delete_user", (user,), (("keep", keep),))


def purge_expired() -> Call:
    return Call("purge_expired")


# -- runners ---------------------------------------------------------------------------------


def _target(store: Any, op: Call, backend: Backend) -> Any:
    if op.client == 0:
        return store
    assert backend.client is not None, "this contract has one client only"
    return backend.client(op.client)


def _other(op: Now | PlantRow, backend: Backend) -> Any:
    """Carry out the operations that are the same for both runners."""
    if isinstance(op, Now):
        return time.time() if backend.clock is None else backend.clock()
    if backend.plant is None:
        pytest.skip("this store keeps entries, not rows that could fail to decode")
    backend.plant(op.doc, op.expires_at)
    return None


def run_sync(store: Any, scenario: Scenario, backend: Backend = Backend()) -> Any:
    """Drive `scenario` against a sync store; returns the scenario's return value."""
    result: Any = None
    while True:
        try:
            op = scenario.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(op, Call):
            target = _target(store, op, backend)
            result = getattr(target, op.method)(*op.args, **dict(op.kwargs))
        elif isinstance(op, Now | PlantRow):
            result = _other(op, backend)
        elif isinstance(op, Advance):
            if backend.clock is None:
                time.sleep(op.seconds)
            else:
                backend.clock.advance(op.seconds)
            result = None
        elif isinstance(op, Pause):
            time.sleep(op.seconds)
            result = None
        elif isinstance(op, Setting):
            result = getattr(backend, op.name)
        else:
            with ThreadPoolExecutor(max_workers=len(op.scenarios)) as pool:
                futures = [pool.submit(run_sync, store, s, backend) for s in op.scenarios]
                result = [future.result(timeout=120) for future in futures]


async def run_async(store: Any, scenario: Scenario, backend: Backend = Backend()) -> Any:
    """Drive `scenario` against an async store; returns the scenario's return value."""
    result: Any = None
    while True:
        try:
            op = scenario.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(op, Call):
            target = _target(store, op, backend)
            result = await getattr(target, op.method)(*op.args, **dict(op.kwargs))
        elif isinstance(op, Now | PlantRow):
            result = _other(op, backend)
        elif isinstance(op, Advance):
            if backend.clock is None:
                await anyio.sleep(op.seconds)
            else:
                backend.clock.advance(op.seconds)
            result = None
        elif isinstance(op, Pause):
            await anyio.sleep(op.seconds)
            result = None
        elif isinstance(op, Setting):
            result = getattr(backend, op.name)
        else:
            result = await _run_all(store, op.scenarios, backend)


async def _run_all(store: Any, scenarios: tuple[Scenario, ...], backend: Backend) -> list[Any]:
    """Run `scenarios` as concurrent tasks; their return values, in order."""
    results: list[Any] = [None] * len(scenarios)

    async def one(index: int, scenario: Scenario) -> None:
        results[index] = await run_async(store, scenario, backend)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as group:
            for index, child in enumerate(scenarios):
                group.start_soon(one, index, child)
    return results


# -- helpers used by scenarios ---------------------------------------------------------------


def new_key() -> str:
    """A fresh key shaped like a public session ID (43 base64url characters)."""
    return secrets.token_urlsafe(32)


def new_user() -> str:
    return f"user-{secrets.token_hex(4)}"


def run_out(ttl: float = SHORT_TTL) -> Advance:
    """Let a record saved with `ttl` expire (strictly past its deadline)."""
    return Advance(ttl + 0.01)


def eventually(op: Call, check: Callable[[Any], bool], what: str) -> Scenario:
    """Repeat `op` until `check` accepts its result, for at most POLLS * POLL_INTERVAL s.

    Stores that expire records on their own (a server's clock, lazy expiry) may need a
    moment after the TTL; this waits for it without asserting any timing.
    """
    result = None
    for _ in range(POLLS):
        result = yield op
        if check(result):
            return result
        yield Pause(POLL_INTERVAL)
    raise AssertionError(f"{what}: still {result!r} {POLLS * POLL_INTERVAL:g}s after the TTL")


def gone(key: str) -> Scenario:
    """Wait (bounded) until `key` loads as None."""
    yield from eventually(load(key), lambda record: record is None, "expired record loads")


def as_dict(pairs: list[tuple[str, Record]]) -> dict[str, Record]:
    """`list_user` output as a dict, asserting no key is listed twice."""
    found = dict(pairs)
    assert len(found) == len(pairs), f"a key is listed twice: {pairs!r}"
    return found


# -- the scenarios ---------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[], Scenario]] = {}


def scenario(function: Callable[[], Scenario]) -> Callable[[], Scenario]:
    """Register a scenario for both contract classes, under its function name."""
    SCENARIOS[function.__name__] = function
    return function


@scenario
def missing_key_loads_none() -> Scenario:
    assert (yield load(new_key())) is None


@scenario
def create_with_version_0_starts_at_version_1() -> Scenario:
    key = new_key()
    assert (yield save(key, b"first", version=0)) is True
    assert (yield load(key)) == Record(b"first", 1)


@scenario
def second_create_fails_and_writes_nothing() -> Scenario:
    key = new_key()
    assert (yield save(key, b"first", version=0)) is True
    assert (yield save(key, b"second", version=0)) is False
    assert (yield load(key)) == Record(b"first", 1)


@scenario
def update_of_missing_record_fails() -> Scenario:
    key = new_key()
    assert (yield save(key, b"data", version=1)) is False
    assert (yield load(key)) is None


@scenario
def update_with_current_version_increments_it() -> Scenario:
    key = new_key()
    yield save(key, b"v1", version=0)
    assert (yield save(key, b"v2", version=1)) is True
    assert (yield load(key)) == Record(b"v2", 2)
    assert (yield save(key, b"v3", version=2)) is True
    assert (yield load(key)) == Record(b"v3", 3)


@scenario
def update_with_wrong_version_writes_nothing() -> Scenario:
    key = new_key()
    yield save(key, b"v1", version=0)
    yield save(key, b"v2", version=1)
    assert (yield save(key, b"stale", version=1)) is False
    assert (yield save(key, b"future", version=3)) is False
    assert (yield save(key, b"recreate", version=0)) is False
    assert (yield load(key)) == Record(b"v2", 2)


@scenario
def record_expires_after_its_ttl() -> Scenario:
    short, long = new_key(), new_key()
    yield save(short, b"short", version=0, ttl=SHORT_TTL)
    yield save(long, b"long", version=0, ttl=LONG_TTL)
    yield run_out()
    yield from gone(short)
    assert (yield load(long)) == Record(b"long", 1)


@scenario
def update_sets_a_new_ttl() -> Scenario:
    extended, shortened = new_key(), new_key()
    yield save(extended, b"a", version=0, ttl=SHORT_TTL)
    yield save(extended, b"b", version=1, ttl=LONG_TTL)
    yield save(shortened, b"a", version=0, ttl=LONG_TTL)
    yield save(shortened, b"b", version=1, ttl=SHORT_TTL)
    yield run_out()
    yield from gone(shortened)
    assert (yield load(extended)) == Record(b"b", 2)


@scenario
def expired_record_is_recreated_with_version_0() -> Scenario:
    key = new_key()
    yield save(key, b"old", version=0, ttl=SHORT_TTL)
    yield save(key, b"old2", version=1, ttl=SHORT_TTL)
    yield run_out()
    yield from gone(key)
    assert (yield save(key, b"stale", version=2)) is False
    assert (yield save(key, b"new", version=0)) is True
    assert (yield load(key)) == Record(b"new", 1)


@scenario
def expired_record_without_a_load_is_recreated_with_version_0() -> Scenario:
    key = new_key()
    yield save(key, b"old", version=0, ttl=SHORT_TTL)
    yield run_out()
    # No load first: the create itself must see that the old record has expired.
    created = yield from eventually(
        save(key, b"new", version=0), lambda saved: saved is True, "create over expired"
    )
    assert created is True
    assert (yield load(key)) == Record(b"new", 1)


@scenario
def rotate_moves_data_and_deletes_old_key() -> Scenario:
    old, new = new_key(), new_key()
    yield save(old, b"session", version=0)
    yield save(old, b"session2", version=1)
    assert (yield rotate(old, new, b"moved", version=2)) is True
    assert (yield load(new)) == Record(b"moved", 1)
    assert (yield load(old)) is None
    # The old record is gone: a write with its version must fail, a create succeeds.
    assert (yield save(old, b"lost", version=2)) is False
    assert (yield load(old)) is None
    assert (yield save(old, b"again", version=0)) is True
    assert (yield load(new)) == Record(b"moved", 1)


@scenario
def rotated_record_expires_after_its_ttl() -> Scenario:
    old, new = new_key(), new_key()
    yield save(old, b"session", version=0)
    assert (yield rotate(old, new, b"moved", version=1, ttl=SHORT_TTL)) is True
    assert (yield load(old)) is None
    yield run_out()
    yield from gone(new)
    assert (yield load(old)) is None


@scenario
def rotate_with_wrong_version_writes_nothing() -> Scenario:
    old, new = new_key(), new_key()
    yield save(old, b"session", version=0)
    yield save(old, b"session2", version=1)
    assert (yield rotate(old, new, b"moved", version=1)) is False
    assert (yield rotate(old, new, b"moved", version=0)) is False
    assert (yield load(old)) == Record(b"session2", 2)
    assert (yield load(new)) is None


@scenario
def rotate_of_missing_or_expired_record_writes_nothing() -> Scenario:
    missing, expired, new = new_key(), new_key(), new_key()
    assert (yield rotate(missing, new, b"moved", version=1)) is False
    yield save(expired, b"session", version=0, ttl=SHORT_TTL)
    yield run_out()
    yield from gone(expired)
    assert (yield rotate(expired, new, b"moved", version=1)) is False
    assert (yield load(new)) is None
    assert (yield load(missing)) is None


@scenario
def rotate_moves_the_user_index() -> Scenario:
    user, old, new = new_user(), new_key(), new_key()
    yield save(old, b"session", version=0, user=user)
    assert (yield rotate(old, new, b"moved", version=1, user=user)) is True
    assert as_dict((yield list_user(user))) == {new: Record(b"moved", 1)}
    assert (yield load(old)) is None
    assert (yield delete_user(user)) == 1
    assert (yield load(new)) is None


@scenario
def delete_removes_the_record() -> Scenario:
    key, other, user = new_key(), new_key(), new_user()
    yield save(key, b"data", version=0, user=user)
    yield save(other, b"other", version=0)
    assert (yield delete(key)) is None
    assert (yield load(key)) is None
    assert (yield list_user(user)) == []
    assert (yield load(other)) == Record(b"other", 1)
    yield delete(key)  # deleting nothing is not an error
    assert (yield save(key, b"again", version=0)) is True


@scenario
def list_user_lists_only_that_users_live_records() -> Scenario:
    alice, bob = new_user(), new_user()
    a1, a2, b1, anonymous = new_key(), new_key(), new_key(), new_key()
    yield save(a1, b"a1", version=0, user=alice)
    yield save(a2, b"a2", version=0, user=alice)
    yield save(a2, b"a2'", version=1, user=alice)
    yield save(b1, b"b1", version=0, user=bob)
    yield save(anonymous, b"anon", version=0)
    assert as_dict((yield list_user(alice))) == {a1: Record(b"a1", 1), a2: Record(b"a2'", 2)}
    assert as_dict((yield list_user(bob))) == {b1: Record(b"b1", 1)}
    assert (yield list_user(new_user())) == []


@scenario
def delete_user_removes_all_of_that_users_records() -> Scenario:
    alice, bob = new_user(), new_user()
    a1, a2, b1, anonymous = new_key(), new_key(), new_key(), new_key()
    yield save(a1, b"a1", version=0, user=alice)
    yield save(a2, b"a2", version=0, user=alice)
    yield save(b1, b"b1", version=0, user=bob)
    yield save(anonymous, b"anon", version=0)
    assert (yield delete_user(alice)) == 2
    assert (yield load(a1)) is None
    assert (yield load(a2)) is None
    assert (yield list_user(alice)) == []
    assert (yield load(b1)) == Record(b"b1", 1)
    assert (yield load(anonymous)) == Record(b"anon", 1)
    assert (yield delete_user(alice)) == 0
    assert (yield delete_user(new_user())) == 0


@scenario
def delete_user_keeps_the_kept_key() -> Scenario:
    user, keep, other1, other2 = new_user(), new_key(), new_key(), new_key()
    for key in (keep, other1, other2):
        yield save(key, b"data", version=0, user=user)
    assert (yield delete_user(user, keep=keep)) == 2
    assert as_dict((yield list_user(user))) == {keep: Record(b"data", 1)}
    assert (yield load(other1)) is None
    assert (yield load(other2)) is None
    assert (yield delete_user(user, keep=new_key())) == 1
    assert (yield load(keep)) is None


@scenario
def index_follows_the_user_given_to_save() -> Scenario:
    alice, bob, key = new_user(), new_user(), new_key()
    yield save(key, b"anon", version=0)
    assert (yield list_user(alice)) == []
    yield save(key, b"alice", version=1, user=alice)
    assert as_dict((yield list_user(alice))) == {key: Record(b"alice", 2)}
    yield save(key, b"bob", version=2, user=bob)
    assert (yield list_user(alice)) == []
    assert as_dict((yield list_user(bob))) == {key: Record(b"bob", 3)}
    assert (yield delete_user(alice)) == 0
    assert (yield load(key)) == Record(b"bob", 3)
    yield save(key, b"logged out", version=3, user=None)
    assert (yield list_user(bob)) == []
    assert (yield delete_user(bob)) == 0
    assert (yield load(key)) == Record(b"logged out", 4)


@scenario
def recreated_record_is_indexed_under_its_new_user() -> Scenario:
    alice, bob, key = new_user(), new_user(), new_key()
    yield save(key, b"alice", version=0, ttl=SHORT_TTL, user=alice)
    yield run_out()
    yield from gone(key)
    yield save(key, b"bob", version=0, user=bob)
    assert (yield list_user(alice)) == []
    assert as_dict((yield list_user(bob))) == {key: Record(b"bob", 1)}


@scenario
def expired_records_are_not_listed() -> Scenario:
    user, short, long = new_user(), new_key(), new_key()
    yield save(short, b"short", version=0, ttl=SHORT_TTL, user=user)
    yield save(long, b"long", version=0, user=user)
    yield run_out()
    # Polls list_user itself, not load: the listing must hide expired records on its own.
    listed = yield from eventually(
        list_user(user), lambda pairs: len(pairs) == 1, "expired record listed"
    )
    assert as_dict(listed) == {long: Record(b"long", 1)}


@scenario
def delete_user_counts_only_live_records() -> Scenario:
    user, short, long, probe = new_user(), new_key(), new_key(), new_key()
    yield save(short, b"short", version=0, ttl=SHORT_TTL, user=user)
    yield save(long, b"long", version=0, user=user)
    yield save(probe, b"probe", version=0, ttl=SHORT_TTL)
    yield run_out()
    # Wait on a probe saved after `short`, so nothing touches the user's records first.
    yield from gone(probe)
    assert (yield delete_user(user)) == 1
    assert (yield load(long)) is None


@scenario
def purge_expired_removes_expired_records_only() -> Scenario:
    expired = [new_key() for _ in range(3)]
    live, user = new_key(), new_user()
    for key in expired:
        yield save(key, b"expired", version=0, ttl=SHORT_TTL, user=user)
    yield save(live, b"live", version=0)
    yield run_out()
    purged = yield purge_expired()
    if (yield Setting("purge_counts_expired")):
        assert purged == len(expired)
    else:
        assert 0 <= purged <= len(expired)
    assert (yield purge_expired()) == 0
    for key in expired:
        yield from gone(key)
    assert (yield list_user(user)) == []
    assert (yield load(live)) == Record(b"live", 1)


@scenario
def data_is_binary_safe() -> Scenario:
    every_byte = bytes(range(256))
    key, empty, old, new = new_key(), new_key(), new_key(), new_key()
    yield save(key, every_byte, version=0)
    assert (yield load(key)) == Record(every_byte, 1)
    yield save(key, every_byte[::-1] * 64, version=1)
    assert (yield load(key)) == Record(every_byte[::-1] * 64, 2)
    yield save(empty, b"", version=0)
    assert (yield load(empty)) == Record(b"", 1)
    yield save(old, b"\x00", version=0)
    assert (yield rotate(old, new, every_byte, version=1)) is True
    assert (yield load(new)) == Record(every_byte, 1)
    assert (yield load(old)) is None


def increment(key: str, times: int) -> Scenario:
    """Add 1 to the counter under `key` `times` times by load, then CAS save, retrying."""
    conflicts = 0
    for _ in range(times):
        for _attempt in range(MAX_ATTEMPTS):
            record = yield load(key)
            yield Pause(0)  # let the other writers load the same version
            saved = yield save(key, b"%d" % (int(record.data) + 1), version=record.version)
            if saved:
                break
            conflicts += 1
        else:
            raise AssertionError(f"no increment landed in {MAX_ATTEMPTS} attempts")
    return conflicts


@scenario
def concurrent_increments_lose_no_update() -> Scenario:
    key = new_key()
    yield save(key, b"0", version=0)
    conflicts = yield Parallel(tuple(increment(key, INCREMENTS) for _ in range(WRITERS)))
    total = WRITERS * INCREMENTS
    assert (yield load(key)) == Record(b"%d" % total, total + 1), f"conflicts: {conflicts}"


def create(key: str, data: bytes) -> Scenario:
    yield Pause(0)
    return (yield save(key, data, version=0))


@scenario
def concurrent_creates_have_one_winner() -> Scenario:
    key = new_key()
    results = yield Parallel(tuple(create(key, b"%d" % i) for i in range(WRITERS)))
    assert results.count(True) == 1, results
    winner = results.index(True)
    assert (yield load(key)) == Record(b"%d" % winner, 1)


def one(call: Call) -> Scenario:
    yield Pause(0)
    return (yield call)


@scenario
def rotate_racing_a_save_has_one_winner() -> Scenario:
    old, new = new_key(), new_key()
    yield save(old, b"session", version=0)
    racing_save = save(old, b"saved", version=1)
    racing_rotate = rotate(old, new, b"rotated", version=1)
    saved, rotated = yield Parallel((one(racing_save), one(racing_rotate)))
    assert [saved, rotated].count(True) == 1
    if saved:
        assert (yield load(old)) == Record(b"saved", 2)
        assert (yield load(new)) is None
    else:
        assert (yield load(new)) == Record(b"rotated", 1)
        assert (yield load(old)) is None


# -- the test classes a backend subclasses ---------------------------------------------------


class _Contract:
    #: False for a backend that drops expired records on its own (Redis): its
    #: `purge_expired` may find fewer (or none) left to remove.
    purge_counts_expired: ClassVar[bool] = True

    @pytest.fixture
    def clock(self) -> ManualClock | None:
        """The clock the store was built with; None (the default) means real time."""
        return None

    def backend(self, clock: ManualClock | None) -> Backend:
        return Backend(clock=clock, purge_counts_expired=self.purge_counts_expired)


class StoreContract(_Contract):
    """The contract for a sync `Store`. Subclass it and provide a `store` fixture."""

    @pytest.mark.parametrize("name", list(SCENARIOS))
    def test_contract(self, store: Store, clock: ManualClock | None, name: str) -> None:
        assert isinstance(store, Store)
        run_sync(store, SCENARIOS[name](), self.backend(clock))


class AsyncStoreContract(_Contract):
    """The contract for an `AsyncStore`. Subclass it and provide an `astore` fixture."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("name", list(SCENARIOS))
    async def test_contract(self, astore: AsyncStore, clock: ManualClock | None, name: str) -> None:
        assert isinstance(astore, AsyncStore)
        await run_async(astore, SCENARIOS[name](), self.backend(clock))


# -- revocation stores ---------------------------------------------------------------------

REVOCATION_SCENARIOS: dict[str, Callable[[], Scenario]] = {}
REVOKERS = 8  # concurrent writers in the parallel-revocations scenario
REVOCATIONS = 50  # revocations per writer
#: Rows no coatcheck version writes: not JSON, a NaN, a wrong length, a wrong shape or
#: kind, nothing at all.
UNDECODABLE = (
    "not an entry",
    '["sid","s",NaN,1e300]',
    '["sid","s",1,2,"keep"]',
    '{"kind":"sid","subject":"s"}',
    '["other","s",1,2]',
    "",
)


def revocation_scenario(function: Callable[[], Scenario]) -> Callable[[], Scenario]:
    """Register a scenario for `RevocationStoreContract`, under its function name."""
    REVOCATION_SCENARIOS[function.__name__] = function
    return function


def revoke(entry: Revocation, *, client: int = 0) -> Call:
    return Call("revoke", (entry,), client=client)


def changes(cursor: int, *, client: int = 0) -> Call:
    return Call("changes", (cursor,), client=client)


def sid_entry(subject: str, at: float, *, ttl: float = 100.0) -> Revocation:
    return Revocation("sid", subject, at, at + ttl)


@revocation_scenario
def empty_feed_has_nothing() -> Scenario:
    entries, cursor = yield changes(0)
    assert entries == []
    assert (yield changes(cursor))[0] == []


@revocation_scenario
def entries_arrive_once_in_order_and_exactly() -> Scenario:
    now = yield Now()
    first = [
        Revocation("sid", "s-1", now + 0.123456789, now + 3600.5),
        Revocation("user", "ünïcode user ✓", now + 1 / 3, now + 7200.25),
        Revocation("sid", "s-2", now, now + 1),
        Revocation("user", "kim", now + 2, now + 60, keep="kept-session"),
        Revocation("sid", "s-3", now + 10, now + 60, generation=3),
        Revocation("sid", "s-4", now, now + 60, generation=0),
    ]
    for entry in first:
        yield revoke(entry)
    entries, cursor = yield changes(0)
    assert entries == first  # every field, `keep` and `generation` included
    assert (yield changes(cursor))[0] == []
    later = Revocation("user", "bob", now + 2, now + 50)
    yield revoke(later)
    entries, after = yield changes(cursor)
    assert entries == [later]
    assert after > cursor
    assert (yield changes(after))[0] == []


@revocation_scenario
def two_clients_see_each_other() -> Scenario:
    now = yield Now()
    writer, reader = 0, 1
    _, cursor = yield changes(0, client=reader)
    yield revoke(sid_entry("from-writer", now), client=writer)
    entries, cursor = yield changes(cursor, client=reader)
    assert entries == [sid_entry("from-writer", now)]
    yield revoke(sid_entry("from-reader", now), client=reader)
    both = [sid_entry("from-writer", now), sid_entry("from-reader", now)]
    assert (yield changes(0, client=writer))[0] == both


@revocation_scenario
def purge_forgets_only_expired_entries() -> Scenario:
    now = yield Now()
    short = [sid_entry(f"short-{i}", now, ttl=10) for i in range(3)]
    live = sid_entry("live", now, ttl=100)
    for entry in [*short, live]:
        yield revoke(entry)
    _, cursor = yield changes(0)
    yield Advance(10)  # expires_at == now counts as expired
    assert (yield purge_expired()) == 3
    assert (yield purge_expired()) == 0
    assert (yield changes(0))[0] == [live]
    newer = sid_entry("newer", now + 10)
    yield revoke(newer)
    assert (yield changes(cursor))[0] == [newer]  # a cursor from before the purge still works


def revoker(index: int, at: float, done: list[int]) -> Scenario:
    for i in range(REVOCATIONS):
        yield revoke(sid_entry(f"w{index}-{i}", at), client=2 + index)
    done.append(index)


def poller(done: list[int]) -> Scenario:
    """Poll (client 1) until every revoker is done, then once more; what it saw."""
    seen: list[Revocation] = []
    cursor = 0
    while True:
        finished = len(done) == REVOKERS
        entries, cursor = yield changes(cursor, client=1)
        seen.extend(entries)
        if finished:
            return seen
        yield Pause(0)


@revocation_scenario
def parallel_writers_never_make_a_poller_skip_an_entry() -> Scenario:
    """A poller running during parallel revocations (each writer its own client) ends up
    with each entry exactly once: a cursor never moves past an entry that becomes visible
    later."""
    now = yield Now()
    done: list[int] = []
    revokers = (revoker(index, now, done) for index in range(REVOKERS))
    seen, *_ = yield Parallel((poller(done), *revokers))
    subjects = [entry.subject for entry in seen]
    assert len(subjects) == len(set(subjects)) == REVOKERS * REVOCATIONS


@revocation_scenario
def undecodable_rows_are_skipped() -> Scenario:
    """A row that is not an entry is never applied, never fails a poll, and the cursor
    moves past it."""
    now = yield Now()
    before, after = sid_entry("before", now), sid_entry("after", now)
    yield revoke(before)
    for doc in UNDECODABLE:
        yield PlantRow(doc, now + 100)
    entries, cursor = yield changes(0)
    assert entries == [before]
    assert (yield changes(cursor)) == ([], cursor)
    yield revoke(after)
    assert (yield changes(cursor))[0] == [after]
    assert (yield changes(0))[0] == [before, after]


@revocation_scenario
def changes_come_a_page_at_a_time() -> Scenario:
    """More than `CHANGES_PAGE` entries behind, a poll gets the first page and the cursor
    at its end; asked again from there, the rest. So each call stays short however far
    behind a process is, and a poll that fails between pages keeps the ones it got."""
    now = yield Now()
    written = [sid_entry(f"s-{i}", now) for i in range(CHANGES_PAGE + 3)]
    for entry in written:
        yield revoke(entry)
    first, cursor = yield changes(0)
    assert first == written[:CHANGES_PAGE]
    rest, after = yield changes(cursor)
    assert rest == written[CHANGES_PAGE:]
    assert after > cursor
    assert (yield changes(after)) == ([], after)


class RevocationStoreContract:
    """The contract for a `RevocationStore` and its `AsyncRevocationStore` twin. Subclass it
    and provide `connect` and `aconnect` fixtures: functions that open a client (sync,
    async) of one fresh, empty set of entries, built with the `clock` fixture; and `plant`,
    if the store keeps rows that could fail to decode."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def plant(self) -> Plant:
        return None

    @pytest.mark.parametrize("name", list(REVOCATION_SCENARIOS))
    def test_contract(self, connect: Connect, clock: ManualClock, plant: Plant, name: str) -> None:
        clients: dict[int, RevocationStore] = {}

        def client(index: int) -> RevocationStore:
            if index not in clients:
                clients[index] = connect()
            return clients[index]

        try:
            store = client(0)
            assert isinstance(store, RevocationStore)
            backend = Backend(clock=clock, client=client, plant=plant)
            run_sync(store, REVOCATION_SCENARIOS[name](), backend)
        finally:
            for opened in clients.values():
                opened.close()

    @pytest.mark.anyio
    @pytest.mark.parametrize("name", list(REVOCATION_SCENARIOS))
    async def test_async_contract(
        self, aconnect: AsyncConnect, clock: ManualClock, plant: Plant, name: str
    ) -> None:
        clients: dict[int, AsyncRevocationStore] = {}

        def client(index: int) -> AsyncRevocationStore:
            if index not in clients:
                clients[index] = aconnect()
            return clients[index]

        try:
            store = client(0)
            assert isinstance(store, AsyncRevocationStore)
            backend = Backend(clock=clock, client=client, plant=plant)
            await run_async(store, REVOCATION_SCENARIOS[name](), backend)
        finally:
            for opened in clients.values():
                await opened.aclose()

    @pytest.mark.anyio
    async def test_twins_share_entries(
        self, connect: Connect, aconnect: AsyncConnect, clock: ManualClock
    ) -> None:
        sync, twin = connect(), aconnect()
        try:
            wrote = [sid_entry("sync-wrote", clock()), sid_entry("async-wrote", clock())]
            sync.revoke(wrote[0])
            await twin.revoke(wrote[1])
            assert (await twin.changes(0))[0] == wrote
            assert sync.changes(0)[0] == wrote
        finally:
            sync.close()
            await twin.aclose()
