"""The demo's strategies: how replicas keep sessions, and what each must show.

Each strategy is one declarative `Strategy` entry: how a replica builds its
`SessionManager`, how the balancer spreads requests, how the browser carries the session,
and what `coatcheck demo --check` expects to observe. Adding a strategy means adding an
entry to `STRATEGIES`; nothing else in the demo knows their names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..clientside import ClientSide
from ..exceptions import ConfigurationError
from ..keys import DEFAULT_ENV, KeyRing, generate_key
from ..manager import ServerSide, SessionManager
from ..stores import MemoryStore, revocations_for
from ..transports import Header

__all__ = [
    "STALENESS",
    "STRATEGIES",
    "Balancing",
    "Carrier",
    "Expectations",
    "Settings",
    "Strategy",
    "describe_tokens",
]

Balancing = Literal["round-robin", "sticky"]
#: How the browser carries its session: a cookie it attaches by itself, or a token that
#: the page's script (`coatcheck.js`) keeps and sends in `Authorization: Bearer`.
Carrier = Literal["cookie", "header"]
#: Seconds a replica's copy of the revocation list may lag behind the shared store in the
#: client-side strategies. Smaller than coatcheck's default (1 s) so that a revocation is
#: visibly quick in the demo; each replica then polls the store at most 4 times a second.
STALENESS = 0.25


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line chose for one cluster: the common store (`store_url`, given
    to strategies with `shared_store`; None otherwise) and whether client-side tokens are
    encrypted (JWE) rather than signed (JWS)."""

    store_url: str | None = None
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class Expectations:
    """What `--check` must observe; `None` means "not checked" (shown, not judged).

    - `keeps_sessions`: every request through the balancer saw the right session while all
      replicas were up (False: some request must have seen another session).
    - `survives_replica_death`: the session carried on after its replica was killed.
    - `revocation_everywhere`: a session revoked from a second device ends on every replica,
      and "log out other devices" ends every other device on every replica.
    - `revocation_within`: seconds after a revocation's response by which every replica
      must refuse the session (0: at once). A probe sent later that still sees it is a
      deviation.
    """

    keeps_sessions: bool
    survives_replica_death: bool | None = None
    revocation_everywhere: bool | None = None
    revocation_within: float | None = None


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to run sessions on a cluster.

    `manager(settings)` builds a replica's `SessionManager`; `settings.store_url` is the
    common store when `shared_store` is true (the demo creates a SQLite file unless
    `--store` names one) and None otherwise. `store_problem(url)` says why this strategy
    cannot use the store at `url` (the demo then uses its SQLite file), or returns None.
    `client_side` strategies hand out tokens (`ClientSide`). `carrier` is how the browser
    carries the session (the page works with forms for "cookie", with script for
    "header"). `environment()` is called once per cluster and its variables are given to every
    replica: secrets the replicas must share, such as `COATCHECK_KEYS` for client-side
    tokens. `unavailable(settings)` says why the strategy cannot run here (a missing
    optional dependency, say), or returns None.
    """

    name: str
    summary: str
    balancing: Balancing
    manager: Callable[[Settings], SessionManager]
    expect: Expectations
    shared_store: bool = False
    client_side: bool = False
    carrier: Carrier = "cookie"
    store_problem: Callable[[str], str | None] = lambda url: None
    environment: Callable[[], Mapping[str, str]] = dict
    unavailable: Callable[[Settings], str | None] = lambda settings: None


def describe_tokens(settings: Settings) -> str:
    """What client-side strategies issue under `settings`, for people to read."""
    kind = (
        "encrypted (JWE dir + A256GCM)"
        if settings.encrypted
        else "signed (JWS HS256; the data is readable, not changeable)"
    )
    return f"{kind}, revocations reach every replica within {STALENESS * 1000:.0f} ms"


def _memory_manager(settings: Settings) -> SessionManager:
    return SessionManager(ServerSide(MemoryStore()))


def _shared_manager(settings: Settings) -> SessionManager:
    if settings.store_url is None:
        raise ValueError("the shared strategy needs a store URL")
    return SessionManager(ServerSide(settings.store_url))


def _client_side(settings: Settings) -> ClientSide:
    if settings.store_url is None:
        raise ValueError("client-side strategies need a store URL for the registry")
    # Every replica reads the keys the demo generated for this cluster (`_cluster_keys`).
    return ClientSide(
        KeyRing.from_env(),
        encrypted=settings.encrypted,
        store=settings.store_url,
        staleness=STALENESS,
    )


def _client_manager(settings: Settings) -> SessionManager:
    return SessionManager(_client_side(settings))


def _header_manager(settings: Settings) -> SessionManager:
    return SessionManager(_client_side(settings), transport=Header())


def _cluster_keys() -> Mapping[str, str]:
    """One fresh key per cluster: every replica signs and verifies with it, and it dies
    with the demo (tokens from an earlier run are refused, as after a key change)."""
    return {DEFAULT_ENV: generate_key()}


def _revocation_store_problem(url: str) -> str | None:
    """Why client-side sessions cannot keep their revocation list at `url`, or None."""
    try:
        revocations = revocations_for(url)
    except ConfigurationError as exc:
        return str(exc)
    revocations.close()
    return None


_CLIENT_EXPECT = Expectations(
    keeps_sessions=True,
    survives_replica_death=True,
    revocation_everywhere=True,
    revocation_within=STALENESS,
)

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
                keeps_sessions=True,
                survives_replica_death=True,
                revocation_everywhere=True,
                revocation_within=0.0,
            ),
            shared_store=True,
        ),
        Strategy(
            name="client",
            summary="the whole session travels in the cookie as a signed (or --encrypted) "
            "token that any replica verifies; a shared registry lists the sessions and a "
            "revocation list reaches every replica",
            balancing="round-robin",
            manager=_client_manager,
            expect=_CLIENT_EXPECT,
            shared_store=True,
            client_side=True,
            store_problem=_revocation_store_problem,
            environment=_cluster_keys,
        ),
        Strategy(
            name="header",
            summary="client-side tokens as in 'client', carried in an Authorization header "
            "by the JavaScript client (coatcheck.js) instead of a cookie",
            balancing="round-robin",
            manager=_header_manager,
            expect=_CLIENT_EXPECT,
            shared_store=True,
            client_side=True,
            carrier="header",
            store_problem=_revocation_store_problem,
            environment=_cluster_keys,
        ),
    )
}
