"""What a session adds to a response, sans-IO: one policy for every adapter.

The core hands an adapter the session's response headers (`Set-Cookie` or a header
transport's token, `Cache-Control: no-store`, `Vary`); `merge_headers` folds them into the
application's own, the same way in ASGI, WSGI, Flask and the Starlette drop-in:

- `Set-Cookie` and any other session header are appended, one field line each (cookies are
  never combined into one line: RFC 6265, section 3).
- `Cache-Control` replaces the application's: a response that hands out or clears a
  session credential must not be stored by a shared cache, whatever `max-age` or `public`
  the application chose. The core sends it only with such a response.
- `Vary` is merged into the application's first `Vary` line (RFC 9110, section 12.5.5),
  tokens compared case-insensitively: a token already present, in any `Vary` line, is not
  added again, nor is anything added to `Vary: *`. Without one, a new `Vary` line.

`Answer` is a short plain-text response an adapter sends instead of the application's (the
refusals of `coatcheck.adapters.failures`), `challenge` the `WWW-Authenticate` header of a
401 for a session (RFC 6750), and `ClientScript` the answer to a request for the header
transport's JavaScript client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.resources import files
from typing import Any, AnyStr, NamedTuple

from .request import RequestInfo
from .session import Session
from .transports import Header

__all__ = [
    "Answer",
    "ClientScript",
    "challenge",
    "client_script",
    "latin1",
    "merge_headers",
    "title_case",
]

# The headers the merge treats apart, by name in either string type: the session's names
# as the core, `latin1` or `title_case` spell them, and (`_LOWERED`) a lowered name.
_LOWERED = {b"vary": "vary", "vary": "vary", b"cache-control": "cache", "cache-control": "cache"}
_ROLES = {**_LOWERED, "Vary": "vary", "Cache-Control": "cache"}


def merge_headers(
    response: Iterable[tuple[AnyStr, AnyStr]],
    session: Iterable[tuple[str, str]],
    *,
    encode: bool = False,
) -> list[tuple[AnyStr, AnyStr]]:
    """The application's `response` headers with the `session`'s merged in (see above).

    `response` is in one string type: `bytes` as ASGI and h11 carry headers (then pass
    `encode=True`: the session's are encoded as `latin1` does, in the same pass), or `str`
    as WSGI does (PEP 3333's latin-1 "native strings"). The application's names may be in
    any case; the session's are as the core writes them (lower-case), or as `title_case`
    turns them, with one `Vary` and one `Cache-Control` at most (the core's). Returns a new
    list; a `Vary` line added is named as the session's. (A response with neither header of
    its own, the usual one, takes the session's as they are, after one scan of its names.)
    """
    merged: list[Any] = list(response)
    for present, _ in merged:
        if len(present) in (4, 13) and _LOWERED.get(present.lower()) is not None:
            break
    else:  # the usual response: no `Vary` or `Cache-Control` of its own, nothing to merge
        merged += latin1(session) if encode else session
        return merged
    for header in session:
        pair: Any = header
        if encode:
            known = _ENCODED.get(header)
            pair = known or (header[0].encode("latin-1"), header[1].encode("latin-1"))
        name, value = pair
        role = _ROLES.get(name)
        if role == "vary":
            for present, _ in merged:
                if len(present) == 4 and _LOWERED.get(present.lower()) == "vary":
                    _add_vary(merged, name, value)
                    break
            else:
                merged.append(pair)
            continue
        if role == "cache":
            merged = [pair for pair in merged if _LOWERED.get(pair[0].lower()) != "cache"]
        merged.append((name, value))
    return merged


#: The headers the core sends on most responses, encoded once.
_ENCODED = {
    ("vary", "Cookie"): (b"vary", b"Cookie"),
    ("cache-control", "no-store"): (b"cache-control", b"no-store"),
}


def latin1(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """`headers` as ASGI and h11 carry them: latin-1 `bytes` (the common ones encoded once,
    not per response)."""
    encoded = []
    for pair in headers:  # a loop, not a comprehension: one function call less (3.11)
        known = _ENCODED.get(pair)
        encoded.append(known or (pair[0].encode("latin-1"), pair[1].encode("latin-1")))
    return encoded


def title_case(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` named as WSGI applications conventionally write them (`Set-Cookie`, not
    the core's `set-cookie`): HTTP ignores the case, but WSGI middleware and tests often
    compare names as text."""
    return [
        ("-".join(part.capitalize() for part in name.split("-")), value) for name, value in headers
    ]


def _add_vary(headers: list[Any], vary: Any, token: Any) -> None:
    """Add `token` to the application's `Vary` in `headers`, in place, unless it is there
    already (in any `Vary` line). All `str` or all `bytes`; typed `Any` (as its one caller's
    values are) because mypyc's type check does not narrow an `AnyStr` by `isinstance`."""
    first = -1
    for i, (name, value) in enumerate(headers):
        if len(name) == 4 and _LOWERED.get(name.lower()) == "vary":
            separators: tuple[Any, Any, Any] = (
                (b",", b" ", b"*") if isinstance(token, bytes) else (",", " ", "*")
            )
            comma, space, star = separators
            present = {part.strip().lower() for part in value.split(comma)}
            if token.lower() in present or star in present:
                return
            if first < 0:
                first = i
    name, value = headers[first]
    headers[first] = (name, value + comma + space + token if value.strip() else token)


class Answer(NamedTuple):
    """A plain-text response an adapter sends instead of the application's: no cache keeps
    it, and it carries no `Set-Cookie` (nothing of the request's session was saved)."""

    status: int
    reason: str
    body: bytes
    #: Headers beyond the plain-text ones (a 401's `WWW-Authenticate`).
    extra: tuple[tuple[str, str], ...] = ()
    #: The body's type: plain text, or JSON for a step-up 401 (`StepUpRequired.body`).
    content_type: str = "text/plain; charset=utf-8"

    @property
    def status_line(self) -> str:
        """`"503 Service Unavailable"`: the status as WSGI's `start_response` takes it."""
        return f"{self.status} {self.reason}"

    def headers(self) -> list[tuple[str, str]]:
        return [*_plain(self.body, self.content_type), *self.extra]


def challenge(session: Session) -> list[tuple[str, str]]:
    """The `WWW-Authenticate` header of a 401 for `session` (RFC 6750, section 3).

    For a session whose request used a `Header` transport with a scheme: `Bearer
    error="invalid_token"` if the request carried a token that resolved to nothing
    (expired, revoked, unknown or malformed), a bare `Bearer` challenge if it carried none.
    Cookie-carried sessions get no challenge: no HTTP authentication scheme describes them.
    """
    transport = session.transport
    if not isinstance(transport, Header) or transport.scheme is None:
        return []
    if session.client_stale:
        return [("www-authenticate", f'{transport.scheme} error="invalid_token"')]
    return [("www-authenticate", transport.scheme)]


def client_script() -> bytes:
    """The JavaScript client for the header transport (`coatcheck/static/coatcheck.js`)."""
    return files("coatcheck").joinpath("static/coatcheck.js").read_bytes()


class ClientScript:
    """The answers to requests for the JavaScript client, read and hashed once.

    `no-cache` with an ETag: browsers revalidate (a cheap 304) and so pick up a new version
    as soon as the package changes. Only `GET` and `HEAD` are answered (else a 405).
    """

    def __init__(self) -> None:
        self.body = client_script()
        self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'

    def answer(self, request: RequestInfo) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body of the answer to `request` (its `If-None-Match` values
        may be weak or strong, comma-separated, or `*`)."""
        method = request.method
        if method not in ("GET", "HEAD"):
            body = b"Method Not Allowed"
            return 405, [*_plain(body), ("allow", "GET, HEAD")], body
        headers = [("etag", self.etag), ("cache-control", "no-cache")]
        if_none_match = request.header_values("if-none-match")
        tags = {tag.strip().removeprefix("W/") for v in if_none_match for tag in v.split(",")}
        if self.etag in tags or "*" in tags:
            return 304, headers, b""
        headers += [
            ("content-type", "text/javascript; charset=utf-8"),
            ("content-length", str(len(self.body))),
            ("x-content-type-options", "nosniff"),
        ]
        return 200, headers, b"" if method == "HEAD" else self.body


def _plain(body: bytes, content_type: str = "text/plain; charset=utf-8") -> list[tuple[str, str]]:
    """The headers of a short plain-text answer that no cache keeps."""
    return [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]
