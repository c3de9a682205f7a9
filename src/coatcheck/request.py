"""`RequestInfo`: the few facts about an HTTP request that session handling needs.

Adapters build one from their framework's request (an ASGI scope, a WSGI environ, a Django
`HttpRequest`); the core reads nothing else, which keeps it free of I/O and of frameworks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["RequestInfo"]


class RequestInfo(NamedTuple):
    """Method, target and headers of one request. Header names are lower-case.

    A NamedTuple: immutable, and built per request at a fifth of a frozen dataclass's cost.

    The `repr` names the headers but shows none of their values: `Cookie`, `Authorization`
    and any header a transport is configured to read carry the session's secret.
    """

    method: str = "GET"
    headers: Sequence[tuple[str, str]] = ()
    scheme: str = "https"
    host: str | None = None
    path: str = "/"
    client_ip: str | None = None

    def __repr__(self) -> str:
        names = ", ".join(dict.fromkeys(name for name, _ in self.headers))
        return (
            f"RequestInfo(method={self.method!r}, scheme={self.scheme!r}, host={self.host!r}, "
            f"path={self.path!r}, client_ip={self.client_ip!r}, headers=<{names}>)"
        )

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]
