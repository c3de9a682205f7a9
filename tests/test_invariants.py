"""The revocation invariants, tested as a model (docs/security.md, "Session identity").

A hypothesis state machine drives two replicas (two managers sharing one store and, for
client-side sessions, one revocation store) through interleaved requests: some run start
to finish, others are opened, left in flight while other requests and admin actions happen,
and committed later. Requests renew, write, log in, log out, regenerate and log out other
devices; the admin revokes sessions and users; the clock jumps. Every secret or token ever
handed out is kept, as a thief would keep it. After every step:

(a) accepted => listed: a secret or token that either replica accepts for a logged-in
    session belongs to a session that `sessions(user)` lists;
(b) revoked => refused: no secret or token of an ended session (logout, login, `revoke`,
    `revoke_user`, "log out other devices") is accepted by either replica, and none that a
    renewal or `regenerate()` replaced is accepted past the grace window;
(c) an ended session never comes back: its handle is never listed or accepted again,
    whatever commits, rebases or migrations come after.

A third mode puts server-side replicas with `migrate_from` behind an app that handed out
client-side tokens: a migrated token must never be migrated again once its session ended.
Both replicas check revocations strictly (staleness 0), so "after the staleness bound"
is "at once" here; the bound itself is tested with real processes in test_clientside.py.
Runs on memory and SQLite, and on Redis and PostgreSQL (service tests, CI). A failure
prints the shortest sequence of steps that breaks an invariant, and the seed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, Session, SessionManager
from coatcheck.admin import SessionAdmin
from coatcheck.drivers import commit_session, open_session
from coatcheck.stores import MemoryRevocationStore, MemoryStore, SQLiteRevocationStore, SQLiteStore
from coatcheck.stores.base import Store
from helpers import FakeClock, cookie_value, request
from servers import postgres_server_fixture, redis_server_fixture  # noqa: F401 - fixtures

LIFETIMES = Lifetimes(idle=600, absolute=3600, renewal=120, grace=10, touch_interval=30)
USERS = ("ann", "bob")
KEY = b"Yq2pW7Zs4nX9vB1kL6mR3tD8fH0jG5cA"
MAX_POOL = 24  # secrets kept for the checks: enough to hold every session's recent ones

STORES = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.service),
    pytest.param("postgres", marks=pytest.mark.service),
]
#: Examples per store in CI; COATCHECK_MODEL_SCALE=20 (say) searches twenty times longer.
EXAMPLES = {"memory": 60, "sqlite": 25, "redis": 12, "postgres": 12}
SCALE = int(os.environ.get("COATCHECK_MODEL_SCALE", "1"))


@dataclass
class Issued:
    """A secret or token as handed to a client, with what the model knows of it."""

    value: str
    handle: str
    #: When a renewal or regenerate() replaced it (None: it is the session's current one).
    replaced_at: float | None = None


@dataclass
class World:
    """What the model expects: which handles ended, and who owns which handle."""

    ended: set[str] = field(default_factory=set)
    owner: dict[str, str | None] = field(default_factory=dict)
    pool: list[Issued] = field(default_factory=list)


Backends = Callable[[FakeClock], tuple[Store, Any]]


@pytest.fixture(params=STORES)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Backends]:
    """A factory of (session store, revocation store) pairs for one example each; the
    example closes them (`Model.teardown`), so pooled connections never pile up."""
    kind = request.param

    def make(clock: FakeClock) -> tuple[Store, Any]:
        tag = secrets.token_hex(6)
        store: Any
        revocations: Any
        if kind == "memory":
            store, revocations = MemoryStore(clock=clock), MemoryRevocationStore(clock=clock)
        elif kind == "sqlite":
            path = tmp_path / f"{tag}.db"
            store = SQLiteStore(path, clock=clock)
            revocations = SQLiteRevocationStore(path, clock=clock)
        elif kind == "redis":
            from coatcheck.stores import RedisRevocationStore, RedisStore

            url = request.getfixturevalue("redis_server").url
            store = RedisStore(url, prefix=f"m{tag}:", timeout=10)
            revocations = RedisRevocationStore(url, prefix=f"m{tag}:", timeout=10, clock=clock)
        else:
            from coatcheck.stores import PostgresRevocationStore, PostgresStore

            url = request.getfixturevalue("postgres_server").url
            store = PostgresStore(url, table=f"m_{tag}", clock=clock, timeout=10)
            revocations = PostgresRevocationStore(url, table=f"r_{tag}", clock=clock, timeout=10)
        return store, revocations

    return kind, make


@pytest.mark.parametrize("mode", ["server", "client", "migrating"])
def test_revocation_invariants(mode: str, backends: tuple[str, Backends]) -> None:
    """`migrating`: server-side replicas with `migrate_from`, fed client-side tokens by an
    app of the old mode (`Model.legacy`), which every migration must revoke for good."""
    kind, make = backends

    class Replicas(Model):
        def build(self) -> None:
            self.store, revocations = make(self.clock)
            self.resources = (self.store, revocations)

            def client(store: Store | None) -> ClientSide:
                return ClientSide(KeyRing([KEY]), store=store, revocations=revocations, strict=True)

            def manager(side: ServerSide | ClientSide) -> SessionManager:
                return SessionManager(
                    side, lifetimes=LIFETIMES, clock=self.clock, log_salt=b"model"
                )

            if mode == "server":
                self.replicas = (manager(ServerSide(self.store)), manager(ServerSide(self.store)))
            elif mode == "client":
                self.replicas = (manager(client(self.store)), manager(client(self.store)))
            else:
                self.replicas = tuple(  # type: ignore[assignment]
                    manager(ServerSide(self.store, migrate_from=client(None))) for _ in range(2)
                )
                self.legacy = manager(client(MemoryStore(clock=self.clock)))

    run_state_machine_as_test(
        Replicas,
        settings=settings(
            max_examples=EXAMPLES[kind] * SCALE,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        ),
    )


ACTIONS = ["read", "write", "login", "logout", "regenerate", "logout-others", "remember"]


class Model(RuleBasedStateMachine):
    """The rules and invariants; `build` supplies the replicas and their store."""

    in_flight = Bundle("in_flight")
    store: Store
    resources: tuple[Any, ...] = ()
    replicas: tuple[SessionManager, SessionManager]
    legacy: SessionManager | None = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.world = World()
        self.devices: list[str | None] = [None, None, None]
        self.build()

    def build(self) -> None:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------

    def open(self, replica: int, secret: str | None) -> Session:
        return open_session(self.replicas[replica], request(secret))

    def note_issued(
        self, session: Session, headers: Any, presented: str | None = None
    ) -> str | None:
        """Record what a response handed out; returns the client's new secret, if any.

        A response to a secret already replaced (inside its grace window, `presented`) may
        carry data (client-side: a re-issued token of the old generation), but what it
        hands out must die with the grace window of the secret it came from."""
        value = cookie_value(headers)
        if value:
            now = self.clock.now
            inherited = None
            if presented is not None:
                inherited = next(
                    (i.replaced_at for i in self.world.pool if i.value == presented), now
                )
            # A new secret of the same handle replaces the older ones (server side: every
            # renewal; client side: only regenerate(), which `replaced` says).
            for issued in self.world.pool:
                if (
                    inherited is None
                    and issued.handle == session.id
                    and issued.replaced_at is None
                    and issued.value != value  # (a re-issue of the same secret replaces none)
                    and (self.is_server or self.regenerated)
                ):
                    issued.replaced_at = now
            self.world.pool.append(Issued(value, session.id, inherited))
            self.world.owner.setdefault(session.id, session.user)
            del self.world.pool[:-MAX_POOL]
        return value

    @property
    def is_server(self) -> bool:
        return isinstance(self.replicas[0].mode, ServerSide)

    def act(self, session: Session, action: str, replica: int, user: str) -> str | None:
        """Apply `action` to an open session, then commit it and record what happened."""
        world = self.world
        before = session.id
        loaded = not session.is_new or session._state.migrated_sid is not None
        superseded = session._state.superseded
        self.regenerated = False
        ended: set[str] = set()
        if action == "write":
            # An increment, not `n = n + 1`: a read-then-write that another request changed
            # in between is refused (`WriteConflict`, docs/operating.md), which is not what
            # this model is about; the write still races logouts and renewals.
            session.increment("n")
        elif action == "login":
            session.login(user)
            if loaded and not superseded:
                ended.add(before)  # a login ends the handle it replaces
        elif action == "logout":
            session.logout()
            if loaded:
                ended.add(before)
        elif action == "regenerate":
            session.regenerate()
            self.regenerated = loaded and not superseded
        elif action == "logout-others" and session.user is not None:
            session.logout_other_devices()
            ended |= {h for h, u in world.owner.items() if u == session.user and h != before}
        elif action == "remember":
            session.set_persistent()
        presented = session.secret
        headers = commit_session(self.replicas[replica], session)
        if superseded and action == "login":  # a new, empty session: nothing carried over
            assert session.id != before and "n" not in session.data()
            value = self.note_issued(session, headers)
        else:  # (b) checks that whatever it hands out dies with the grace window
            value = self.note_issued(session, headers, presented if superseded else None)
        world.ended |= ended
        return value

    # -- rules -------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.regenerated = False

    @rule(
        device=st.integers(0, 2),
        replica=st.integers(0, 1),
        action=st.sampled_from(ACTIONS),
        user=st.sampled_from(USERS),
    )
    def request(self, device: int, replica: int, action: str, user: str) -> None:
        value = self.act(self.open(replica, self.devices[device]), action, replica, user)
        if value is not None:
            self.devices[device] = value or None

    @rule(target=in_flight, replica=st.integers(0, 1), pick=st.integers(0, MAX_POOL - 1))
    def begin(self, replica: int, pick: int) -> Any:
        """Open a request with a stolen or current secret and leave it in flight."""
        if not self.world.pool:
            return multiple()
        issued = self.world.pool[pick % len(self.world.pool)]
        return (replica, self.open(replica, issued.value))

    @rule(flight=consumes(in_flight), action=st.sampled_from(ACTIONS), user=st.sampled_from(USERS))
    def finish(self, flight: tuple[int, Session], action: str, user: str) -> None:
        replica, session = flight
        self.act(session, action, replica, user)

    @rule(user=st.sampled_from((None, *USERS)))
    def legacy_token(self, user: str | None) -> None:
        """A client-side token from the app before it switched modes (migrating only)."""
        if self.legacy is None:
            return
        session = open_session(self.legacy, request())
        if user is not None:
            session.login(user)
        else:
            session["n"] = 0
        self.note_issued(session, commit_session(self.legacy, session))

    @rule(pick=st.integers(0, MAX_POOL - 1))
    def admin_revoke(self, pick: int) -> None:
        handles = list(self.world.owner)  # (in order of creation: replays stay the same)
        if handles:
            handle = handles[pick % len(handles)]
            SessionAdmin(self.replicas[0]).revoke(handle)
            self.world.ended.add(handle)

    @rule(user=st.sampled_from(USERS), keep=st.booleans(), pick=st.integers(0, MAX_POOL - 1))
    def admin_revoke_user(self, user: str, keep: bool, pick: int) -> None:
        owned = [h for h, u in self.world.owner.items() if u == user]
        kept = owned[pick % len(owned)] if keep and owned else None
        SessionAdmin(self.replicas[1]).revoke_user(user, keep=kept)
        self.world.ended |= {h for h in owned if h != kept}

    @rule(seconds=st.sampled_from([1, 5, 9, 11, 29, 31, 61, 121, 300, 601]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def teardown(self) -> None:
        for resource in self.resources:
            resource.close()

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def accepted_means_listed_and_never_ended(self) -> None:
        now = self.clock.now
        listings = {user: self.listed(user) for user in USERS}
        for issued in self.world.pool:
            for replica in (0, 1):
                session = self.open(replica, issued.value)
                migrating = session._state.migrated_sid is not None
                if session.is_new and not migrating:
                    continue
                assert session.id == issued.handle, "a secret opened another session"
                assert session.id not in self.world.ended, "(b)/(c): an ended session opened"
                if migrating:
                    continue  # listed by the old app until this migration is committed
                if issued.replaced_at is not None:
                    assert now < issued.replaced_at + LIFETIMES.grace, (
                        "(b): a replaced secret outlived the grace window"
                    )
                if session.user is not None:
                    assert session.id in listings[session.user], "(a): accepted, not listed"
        for handles in listings.values():
            assert not handles & self.world.ended, "(c): an ended session is listed"

    def listed(self, user: str) -> set[str]:
        return {info.id for info in SessionAdmin(self.replicas[0]).sessions(user)}
