"""`RequestInfo`: the few facts about an HTTP request that session handling needs.

Adapters build one from their framework's request (`from_asgi` for an ASGI scope,
`from_wsgi` for a WSGI environ; the Django adapter from its `HttpRequest`); the core reads
nothing else, which keeps it free of I/O and of frameworks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

from ._fast import fast_constructor

__all__ = ["RawHeaders", "RequestInfo", "from_asgi", "from_wsgi"]


class RawHeaders(Sequence[tuple[str, str]]):
    """Header pairs as ASGI gives them (lower-case `bytes`), decoded only when read.

    A request carries a dozen headers and the core reads two or three: decoding them all
    up front was a fifth of coatcheck's per-request cost (`bench/asgi_overhead.py`).
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        # A list, as ASGI servers give them: compiled, its loops index it directly and
        # compare `bytes` natively (a generic iterable's cost 5k instructions a scan).
        self._raw: list[tuple[bytes, bytes]] = raw if type(raw) is list else list(raw)

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        if isinstance(index, slice):
            return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw[index]]
        key, value = self._raw[index]
        return key.decode("latin-1"), value.decode("latin-1")

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for key, value in self._raw:
            yield key.decode("latin-1"), value.decode("latin-1")

    def get(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        wanted = name.encode("latin-1")
        for key, value in self._raw:
            if key == wanted:
                return value.decode("latin-1")
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of header `name` (lower-case), in order."""
        wanted = name.encode("latin-1")
        found = []
        for key, value in self._raw:  # (a loop: a comprehension is one call more)
            if key == wanted:
                found.append(value.decode("latin-1"))
        return found


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
        headers = self.headers
        if isinstance(headers, RawHeaders):
            return headers.get(name)
        for key, value in headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (lower-case), in order."""
        headers = self.headers
        if isinstance(headers, RawHeaders):
            return headers.get_all(name)
        return [value for key, value in headers if key == name]


new_request = fast_constructor(
    RequestInfo, "method", "headers", "scheme", "host", "path", "client_ip"
)


def from_asgi(scope: Mapping[str, Any]) -> RequestInfo:
    """The `RequestInfo` of an ASGI HTTP or WebSocket scope; headers are decoded when read."""
    headers = RawHeaders(scope.get("headers", ()))
    client = scope.get("client")
    return new_request(
        (
            scope.get("method", "GET"),
            headers,
            scope.get("scheme", "http"),
            headers.get("host"),
            scope.get("path", "/"),
            client[0] if client else None,
        )
    )


def from_wsgi(environ: Mapping[str, Any]) -> RequestInfo:
    """The `RequestInfo` of a WSGI environ (PEP 3333: headers are `HTTP_*` keys, except
    `CONTENT_TYPE` and `CONTENT_LENGTH`)."""
    headers = [
        (key[5:].replace("_", "-").lower(), value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    headers += [
        (key.replace("_", "-").lower(), environ[key])
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH")
        if environ.get(key)
    ]
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host, port = environ.get("SERVER_NAME"), environ.get("SERVER_PORT")
        if host and port and (scheme, str(port)) not in (("http", "80"), ("https", "443")):
            host = f"{host}:{port}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
    method = environ.get("REQUEST_METHOD", "GET").upper()
    return RequestInfo(method, headers, scheme, host, path, environ.get("REMOTE_ADDR") or None)
