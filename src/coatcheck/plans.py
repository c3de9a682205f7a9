"""What the sans-IO core plans and who plans it: the plan objects the drivers carry out
(`Opening`, `Write`, `Commit`), the `Mode` protocol that the two session modes
(`ServerSide`, `ClientSide`) implement, and the `Context` the manager gives them.

The plans are NamedTuples: immutable like frozen dataclasses, and built five times faster,
which counts here since every request makes two or three of them. Their `repr` never
shows a secret, a token or session data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from ._fast import fast_constructor

# The types in the NamedTuples' and `Context`'s annotations are imported for real: the
# compiled core (mypyc) looks them up when it builds those classes.
from ._protocols import Transport
from .audit import Audit
from .lifetimes import Lifetimes
from .request import RequestInfo
from .revocation import Revocation

if TYPE_CHECKING:
    from .clientside import ClientSide
    from .exceptions import StoreError
    from .session import Session, SessionInfo
    from .stores.base import AsyncStore, Record, Store

__all__ = [
    "CLEAR",
    "NOTHING",
    "STALE",
    "Commit",
    "Context",
    "Mode",
    "Opening",
    "Write",
    "rejected",
]

#: A version no record has: a write carrying it fails, so the driver reloads and rebases.
STALE = -1


class Opening(NamedTuple):
    """What to load for a request: the record under `key` (None: start a fresh session)."""

    request: RequestInfo
    now: float
    key: str | None
    transport: Transport
    secret: str | None = None
    presented: bool = False
    #: Client-side mode: the verified claims of the token, and whether an older key of the
    #: ring verified it (the token is then re-issued under the newest key).
    claims: dict[str, Any] | None = None
    older_key: bool = False
    #: Client-side mode: a `regenerate()` replaced the token; it is accepted only for the
    #: grace window. With no `claims`, it came after that window: a reuse, and `key` is
    #: the session to end (`coatcheck.reuse`).
    superseded: bool = False

    def __repr__(self) -> str:  # never the secret or the claims
        return (
            f"Opening(key={self.key!r}, now={self.now!r}, transport={self.transport!r}, "
            f"presented={self.presented}, older_key={self.older_key}, "
            f"request={self.request!r})"
        )


new_opening = fast_constructor(
    Opening,
    "request",
    "now",
    "key",
    "transport",
    "secret",
    "presented",
    "claims",
    "older_key",
    "superseded",
)


def rejected(request: RequestInfo, now: float, transport: Transport) -> Opening:
    """The opening of a request whose secret or token did not verify: a fresh session,
    and the client's copy is cleared unless that session is saved."""
    return new_opening((request, now, None, transport, None, True, None, False, False))


_NO_CHANGES: Mapping[str, Any] = MappingProxyType({})


class Write(NamedTuple):
    """One store write of a commit.

    With `replaces`, the record moves from that handle to `key` (a login ends the old
    handle). `version` is compared against the record being replaced or updated (0: the key
    must be free). `secret` is the secret to send to the client once the write succeeded.
    """

    key: str
    data: bytes
    version: int
    ttl: float
    user: str | None
    changes: Mapping[str, Any] = _NO_CHANGES
    replaces: str | None = None
    secret: str | None = None

    def __repr__(self) -> str:  # never the data or the new secret
        return (
            f"Write(key={self.key!r}, version={self.version}, ttl={self.ttl!r}, "
            f"user={self.user!r}, replaces={self.replaces!r})"
        )

    @property
    def source(self) -> str:
        """The key whose record this write is compared against."""
        return self.replaces if self.replaces is not None else self.key


class Commit(NamedTuple):
    """What a request's session use requires: one write at most, deletions, and whether to
    end other sessions of the user or clear the client's cookie."""

    write: Write | None = None
    deletes: tuple[str, ...] = ()
    revoke_user: str | None = None
    clear: bool = False
    #: Client-side mode: revocation entries to record, and the token to hand out.
    revocations: tuple[Revocation, ...] = ()
    token: str | None = None

    def __repr__(self) -> str:  # never the token
        return (
            f"Commit(write={self.write!r}, deletes={self.deletes!r}, "
            f"revoke_user={self.revoke_user!r}, clear={self.clear}, "
            f"revocations={len(self.revocations)})"
        )


#: The commit of a request that changed nothing (shared: it is the common case).
NOTHING = Commit()
CLEAR = Commit(clear=True)


@dataclass(frozen=True, slots=True)
class Context:
    """What a mode needs of the manager that drives it: the clock, the lifetimes, the
    audit log, the conflict policy and the reuse policy (see `SessionManager`). Frozen: one
    per manager."""

    clock: Callable[[], float]
    lifetimes: Lifetimes
    audit: Audit
    on_conflict: Literal["refuse", "last-write-wins"] = "refuse"
    on_reuse: Literal["log", "revoke"] = "revoke"


class Mode(Protocol):
    """Where sessions live: `ServerSide` (the client holds an opaque secret, a store
    holds the data) or `ClientSide` (the client holds the whole session in a token).

    A mode makes the decisions of its half of a request, without I/O: `open` says which
    record a request needs, `attach` builds the `Session` from it, `commit` plans the
    writes and the token or secret to send, `rebase` redoes a write the store refused for
    a version conflict. The `SessionManager` in front picks the transport, checks CSRF and
    writes the response headers; `coatcheck.drivers` carries the plans out.
    """

    #: "server" or "client": `Session.mode` of the sessions this mode makes.
    name: str

    @property
    def store(self) -> Store | None: ...

    @property
    def async_store(self) -> AsyncStore | None: ...

    @property
    def client_mode(self) -> ClientSide | None:
        """The client-side mode whose tokens this mode accepts (itself, or the one a
        server-side mode migrates from), whose revocation list the drivers keep fresh."""

    def open(
        self, context: Context, request: RequestInfo, now: float, transport: Transport, secret: str
    ) -> Opening:
        """Verify the secret or token `request` presented in `transport`; say which record
        to load (`rejected` if none: it is not trusted)."""

    def attach(self, context: Context, opening: Opening, record: Record | None) -> Session:
        """The request's session, given the record stored under `opening.key`: a fresh one
        for anything that does not verify."""

    def commit(self, context: Context, session: Session) -> Commit:
        """The store operations and secret or token that the request's use of `session`
        requires."""

    def rebase(
        self, context: Context, session: Session, write: Write, record: Record | None
    ) -> Write | None:
        """Redo `write` on top of `record` after a version conflict; None drops it."""

    def write_failed(self, now: float, error: StoreError) -> None:
        """A store write of a commit failed with `error`: raise it (the adapter answers
        503), or drop the write and carry on (client-side registry writes, for a while)."""

    def vanished(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        """What ends `session` for good once its commit found its record gone."""

    def migration_revocations(self, context: Context, session: Session) -> tuple[Revocation, ...]:
        """The entry that revokes the token `session` was migrated from, if any."""

    def describe(
        self, context: Context, key: str, record: Record, now: float
    ) -> SessionInfo | None:
        """What a listing shows of the record under `key` (None: dead or unreadable)."""
