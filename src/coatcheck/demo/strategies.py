"""The demo's strategies: how replicas keep sessions, and what each must show.

Each strategy is one declarative `Strategy` entry: how a replica builds its
`SessionManager`, how the balancer spreads requests, and what `coatcheck demo --check`
expects to observe. Adding a strategy means adding an entry to `STRATEGIES`; nothing else
in the demo knows their names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..manager import ServerSide, SessionManager
from ..stores import MemoryStore

__all__ = ["STRATEGIES", "Balancing", "Expectations", "Strategy"]

Balancing = Literal["round-robin", "sticky"]


@dataclass(frozen=True, slots=True)
class Expectations:
    """What `--check` must observe; `None` means "not checked" (shown, not judged).

    - `keeps_sessions`: every request through the balancer saw the right session while all
      replicas were up (False: some request must have seen another session).
    - `survives_replica_death`: the session carried on after its replica was killed.
    - `revocation_everywhere`: a session revoked from a second device ends on every replica,
      and "log out other devices" ends every other device on every replica.
    """

    keeps_sessions: bool
    survives_replica_death: bool | None = None
    revocation_everywhere: bool | None = None


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to run sessions on a cluster.

    `manager(store_url)` builds a replica's `SessionManager`; `store_url` is the common
    store when `shared_store` is true (the demo creates a SQLite file unless `--store`
    names one) and None otherwise. `environment()` is called once per cluster and its
    variables are given to every replica: secrets the replicas must share, such as
    `COATCHECK_KEYS` for client-side tokens. `unavailable(store_url)` says why the strategy
    cannot run here (a missing optional dependency, say), or returns None.
    """

    name: str
    summary: str
    balancing: Balancing
    manager: Callable[[str | None], SessionManager]
    expect: Expectations
    shared_store: bool = False
    environment: Callable[[], Mapping[str, str]] = dict
    unavailable: Callable[[str | None], str | None] = lambda store_url: None


def _memory_manager(store_url: str | None) -> SessionManager:
    return SessionManager(ServerSide(MemoryStore()))


def _shared_manager(store_url: str | None) -> SessionManager:
    if store_url is None:
        raise ValueError("the shared strategy needs a store URL")
    return SessionManager(ServerSide(store_url))


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            name="local",
            summary="each replica keeps sessions in its own memory; round-robin balancing",
            balancing="round-robin",
            manager=_memory_manager,
            expect=Expectations(keeps_sessions=False),
        ),
        Strategy(
            name="sticky",
            summary="memory per replica; the balancer pins each browser to one replica",
            balancing="sticky",
            manager=_memory_manager,
            expect=Expectations(keeps_sessions=True, survives_replica_death=False),
        ),
        Strategy(
            name="shared",
            summary="every replica uses one store (SQLite by default, or --store URL)",
            balancing="round-robin",
            manager=_shared_manager,
            expect=Expectations(
                keeps_sessions=True, survives_replica_death=True, revocation_everywhere=True
            ),
            shared_store=True,
        ),
    )
}
