"""`RequestInfo`: the few facts about an HTTP request that session handling needs.

Adapters build one from their framework's request (an ASGI scope, a WSGI environ, a Django
`HttpRequest`); the core reads nothing else, which keeps it free of I/O and of frameworks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RequestInfo"]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Method, target and headers of one request. Header names are lower-case."""

    method: str = "GET"
    headers: Sequence[tuple[str, str]] = ()
    scheme: str = "https"
    host: str | None = None
    path: str = "/"
    client_ip: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]
