"""The plan objects the sans-IO core hands to the drivers: `Opening`, `Write`, `Commit`.

They are NamedTuples: immutable like frozen dataclasses, and built five times faster,
which counts here since every request makes two or three of them. Their `repr` never
shows a secret, a token or session data.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .request import RequestInfo
    from .revocation import Revocation
    from .transports import Transport

__all__ = ["CLEAR", "NOTHING", "STALE", "Commit", "Opening", "Write"]

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
    reissue: bool = False
    #: Client-side mode: a `regenerate()` replaced the token; it is accepted only for the
    #: grace window.
    superseded: bool = False

    def __repr__(self) -> str:  # never the secret or the claims
        return (
            f"Opening(key={self.key!r}, now={self.now!r}, transport={self.transport!r}, "
            f"presented={self.presented}, reissue={self.reissue}, "
            f"request={self.request!r})"
        )


_NO_CHANGES: Mapping[str, Any] = MappingProxyType({})


class Write(NamedTuple):
    """One store write of a commit.

    With `replaces`, the record moves from that handle to `key` (a login ends the old
    handle). `version` is compared against the record being replaced or updated (0: the key
    must be free). `issue` is the secret to send to the client once the write succeeded.
    """

    key: str
    data: bytes
    version: int
    ttl: float
    user: str | None
    changes: Mapping[str, Any] = _NO_CHANGES
    replaces: str | None = None
    issue: str | None = None

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
    issue: str | None = None

    def __repr__(self) -> str:  # never the token
        return (
            f"Commit(write={self.write!r}, deletes={self.deletes!r}, "
            f"revoke_user={self.revoke_user!r}, clear={self.clear}, "
            f"revocations={len(self.revocations)})"
        )


#: The commit of a request that changed nothing (shared: it is the common case).
NOTHING = Commit()
CLEAR = Commit(clear=True)
