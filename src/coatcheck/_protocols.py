"""The runtime-checkable protocols of the core, in a module mypyc does not compile.

A compiled module cannot define a `@runtime_checkable` protocol that `isinstance` works
with (mypyc#909), so `Transport`, `RevocationStore` and `AsyncRevocationStore` live here
and are re-exported where they are documented: `coatcheck.transports` and
`coatcheck.revocation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .request import RequestInfo
    from .revocation import Revocation

__all__ = ["AsyncRevocationStore", "RevocationStore", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """Where a request carries its session ID and how a response hands out a new one."""

    #: Whether a browser attaches the ID by itself (cookies), which calls for CSRF defence.
    ambient: bool

    @property
    def vary(self) -> str:
        """The request header that responses reading the session vary on."""

    def applies(self, request: RequestInfo) -> bool:
        """Whether this transport serves `request` (its route prefixes match)."""

    def claims(self, request: RequestInfo) -> bool:
        """Whether a request that carries no ID asks explicitly to get one in this
        transport (otherwise the first transport serving its path answers)."""

    def read(self, request: RequestInfo) -> str | None:
        """The ID or token the request carries, or None."""

    def issue(
        self, value: str, *, max_age: int | None = None, request: RequestInfo | None = None
    ) -> list[tuple[str, str]]:
        """Response headers that hand `value` to the client (in answer to `request`)."""

    def clear(self, *, request: RequestInfo | None = None) -> list[tuple[str, str]]:
        """Response headers that make the client drop its ID or token."""


@runtime_checkable
class RevocationStore(Protocol):
    """Where revocations are shared between processes, with a numbered change feed."""

    def revoke(self, entry: Revocation) -> None:
        """Record `entry`; every process sees it at its next sync."""

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        """Entries recorded after `cursor`, in order, and the cursor to pass next time:
        at most `CHANGES_PAGE` of them (a full page is asked again from its cursor), or
        all of them."""

    def purge_expired(self) -> int:
        """Forget entries past their `expires_at`; returns how many."""

    def close(self) -> None: ...


@runtime_checkable
class AsyncRevocationStore(Protocol):
    """Async twin of `RevocationStore`."""

    async def revoke(self, entry: Revocation) -> None: ...

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]: ...

    async def purge_expired(self) -> int: ...

    async def aclose(self) -> None: ...
