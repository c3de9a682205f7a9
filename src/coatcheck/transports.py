"""How a session ID travels: the `Cookie` and `Header` transports.

The defaults are the strictest that browsers accept and OWASP asks for (ASVS 5.0 3.3.1-3.3.4):
a `__Host-` name, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`, and no
`Max-Age` unless the application asks for a persistent session. Chromium and Firefox accept
`Secure` and `__Host-` cookies on `http://localhost`, so development needs no downgrade.
Anywhere else over plain HTTP the browser keeps a `Secure` cookie but never sends it back;
`Cookie.issue` then logs a warning, once per transport, naming the fix
(`Cookie.warn_if_unsent`; docs/testing.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ._mypyc import mypyc_attr
from ._protocols import Transport
from .exceptions import ConfigurationError, SessionTooLarge
from .request import RequestInfo

__all__ = ["Cookie", "Header", "Transport", "choose"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a valid cookie name
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")  # no controls, spaces or semicolons
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
#: A request header by which a client without a token asks for the header transport.
SELECT_HEADER = "session-transport"


def choose(transports: Sequence[Transport], request: RequestInfo) -> tuple[Transport, str | None]:
    """The transport of `transports` that serves `request`, and the ID or token it carries.

    A request is answered in the transport it used; one without an ID, in the first that
    applies to its path and claims it (`Session-Transport: header` claims a `Header`), else
    in the first that applies, else in the first."""
    if len(transports) == 1:
        only = transports[0]
        return only, only.read(request) or None
    applicable = [t for t in transports if t.applies(request)] or [transports[0]]
    for transport in applicable:
        secret = transport.read(request)
        if secret:
            return transport, secret
    for transport in applicable:
        if transport.claims(request):
            return transport, None
    return applicable[0], None


def _under(path: str, prefixes: Sequence[str] | None) -> bool:
    return prefixes is None or any(path.startswith(p) for p in prefixes)


# Subclassed by tests and applications: compiled, the class must allow it explicitly.
@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Cookie:
    """Carry the session ID in a cookie.

    `__Host-` names require `secure=True`, `path="/"` and no `domain`; `__Secure-` names
    require `secure=True`; `same_site="none"` requires `secure=True`. A mismatch raises
    `ConfigurationError` at construction, since browsers would silently drop the cookie.
    """

    name: str = "__Host-session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    http_only: bool = True
    same_site: Literal["lax", "strict", "none"] | None = "lax"
    partitioned: bool = False
    #: Route prefixes this transport serves (None: every route).
    paths: tuple[str, ...] | None = None
    #: Longest `Set-Cookie` value per cookie (bytes; browsers keep at least 4096) and how many
    #: numbered cookies (`name.0`, `name.1`, ...) a larger value may be split across.
    max_size: int = 4096
    max_chunks: int = 5
    #: A response header (e.g. "Session-Expires") that tells the client how many whole
    #: seconds its session has left unless refreshed (None: not sent). See `Header`.
    expiry_header: str | None = None
    #: The attributes around `Max-Age` in `render`, joined once (a new visitor's response
    #: renders a cookie): `; Path=/[; Domain=...]` and `; HttpOnly; Secure; SameSite=...`.
    _before: str = field(default="", init=False, repr=False, compare=False)
    _after: str = field(default="", init=False, repr=False, compare=False)
    #: Whether `warn_if_unsent` has logged (once per transport, so once per manager), and
    #: the last plain-HTTP host it found to be this machine (checked once, not per issue).
    _warned: bool = field(default=False, init=False, repr=False, compare=False)
    _local_host: str | None = field(default=None, init=False, repr=False, compare=False)

    ambient = True

    @property
    def vary(self) -> str:
        return "Cookie"

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name):
            raise ConfigurationError(f"cookie name {self.name!r} is not a valid HTTP token")
        if not _PATH.fullmatch(self.path):
            raise ConfigurationError(f"cookie path {self.path!r} must start with '/'")
        if self.domain is not None and not _TOKEN.fullmatch(self.domain):
            raise ConfigurationError(f"cookie domain {self.domain!r} is not a host name")
        if self.same_site not in ("lax", "strict", "none", None):
            raise ConfigurationError("same_site must be 'lax', 'strict', 'none' or None")
        if self.name.startswith("__Host-") and (
            not self.secure or self.path != "/" or self.domain is not None
        ):
            raise ConfigurationError(
                "a '__Host-' cookie needs secure=True, path='/' and no domain; "
                "rename the cookie (e.g. name='session') to relax these"
            )
        if (self.name.startswith("__Secure-") or self.same_site == "none") and not self.secure:
            raise ConfigurationError("'__Secure-' cookies and same_site='none' need secure=True")
        if self.partitioned and not self.secure:
            raise ConfigurationError("partitioned cookies need secure=True")
        if self.max_chunks < 1 or self.max_size < 256:
            raise ConfigurationError("max_chunks must be >= 1 and max_size >= 256 bytes")
        if self.expiry_header is not None and not _TOKEN.fullmatch(self.expiry_header):
            raise ConfigurationError("Cookie(expiry_header=...) must be a valid HTTP header name")
        before = [f"Path={self.path}"]
        if self.domain is not None:
            before.append(f"Domain={self.domain}")
        object.__setattr__(self, "_before", "; " + "; ".join(before))
        after = self._attributes([])
        object.__setattr__(self, "_after", f"; {after}" if after else "")

    def applies(self, request: RequestInfo) -> bool:
        return _under(request.path, self.paths)

    def claims(self, request: RequestInfo) -> bool:
        return False  # cookies are the default, never asked for explicitly

    def issue(
        self, value: str, *, max_age: int | None = None, request: RequestInfo | None = None
    ) -> list[tuple[str, str]]:
        """`Set-Cookie` headers for `value`: one cookie, or numbered chunks if it is too
        large for one (`SessionTooLarge` past `max_chunks`). Cookies of the other layout
        that the request carried are cleared, so old chunks never mix with new ones."""
        if (
            self.secure
            and request is not None
            and request.scheme == "http"
            and not self._warned
            and request.host != self._local_host
        ):
            self.warn_if_unsent(request)
        single = self.render(value, max_age=max_age)
        if len(single) <= self.max_size:
            return [("set-cookie", single), *self._clear_present(request, keep=self.name)]
        room = self.max_size - len(self.render("", max_age=max_age)) - len(f".{self.max_chunks}")
        parts = [value[i : i + room] for i in range(0, len(value), room)]
        if len(parts) > self.max_chunks:
            raise SessionTooLarge(
                f"the session needs {len(parts)} cookies of {self.max_size} bytes, over the "
                f"limit of {self.max_chunks}; keep less in the session, or use server-side "
                "sessions (ServerSide), whose cookie holds only an ID"
            )
        names = [f"{self.name}.{i}" for i in range(len(parts))]
        headers = [
            ("set-cookie", replace(self, name=name).render(part, max_age=max_age))
            for name, part in zip(names, parts, strict=True)
        ]
        return headers + self._clear_present(request, keep=names)

    def clear(self, *, request: RequestInfo | None = None) -> list[tuple[str, str]]:
        return [("set-cookie", self.render_clear()), *self._clear_present(request, keep=self.name)]

    def warn_if_unsent(self, request: RequestInfo) -> None:
        """Log a warning, once, if this `Secure` cookie is being set in answer to a
        plain-HTTP `request` to a host other than localhost: the browser stores it but never
        sends it back over HTTP, so every request starts a new, empty session, silently.

        Browsers make an exception for `localhost` (and `*.localhost`, 127.0.0.0/8, ::1),
        which is why development there needs no change. Behind a proxy that terminates
        TLS, the app sees `http` although the browser uses HTTPS: the warning then means the
        app does not know its real scheme (which also affects redirects and CSRF origins).
        """
        if not self.secure or request.scheme != "http":
            return
        if _is_loopback(request.host):
            object.__setattr__(self, "_local_host", request.host)
            return
        object.__setattr__(self, "_warned", True)
        import logging

        logging.getLogger("coatcheck.session").warning(
            "the session cookie %s is Secure, but it is set in answer to a plain-HTTP request "
            "to %s: browsers never send a Secure cookie back over HTTP (except to localhost), "
            "so every request will start a new session. Serve HTTPS (behind a proxy that "
            "terminates TLS, let the app see the original scheme: uvicorn --proxy-headers, "
            "werkzeug's ProxyFix); for development over HTTP use "
            'Cookie(name="session", secure=False). Logged once.',
            self.name,
            request.host or "(no Host header)",
            extra={"event": "cookie.secure_over_http"},
        )

    def _clear_present(
        self, request: RequestInfo | None, keep: str | list[str]
    ) -> list[tuple[str, str]]:
        if request is None:
            return []
        # Only the other layout's cookies are cleared: chunks (`name.0`, ...) when one
        # cookie is kept, the single cookie when chunks are. The usual request carries the
        # kept cookie alone, and this test spares parsing its header on every issue.
        marker = f"{self.name}." if keep == self.name else self.name
        headers = [h for h in request.header_values("cookie") if marker in h]
        if not headers:  # the usual case: nothing to clear
            return []
        names = {self.name, *(f"{self.name}.{i}" for i in range(self.max_chunks))}
        present = [
            name
            for header in headers
            for name in cookie_names(header)
            if name in names and name != keep and name not in keep
        ]
        return [
            ("set-cookie", replace(self, name=name).render_clear())
            for name in dict.fromkeys(present)
        ]

    def read(self, request: RequestInfo) -> str | None:
        """The session cookie's value, or None. The first cookie of that name wins, as
        browsers send the most specific path first. A value split across `name.0`,
        `name.1`, ... is put back together."""
        name = self.name
        values = request.header_values("cookie")
        for header in values:
            if name in header:
                value = find_cookie(header, name)
                if value is not None:
                    return value
        headers = [v for v in values if name in v]
        if not headers:
            return None
        parts: list[str] = []
        for i in range(self.max_chunks):
            part = next(
                (v for h in headers if (v := find_cookie(h, f"{self.name}.{i}")) is not None),
                None,
            )
            if part is None:
                break
            parts.append(part)
        return "".join(parts) or None

    def render(self, value: str, *, max_age: int | None = None) -> str:
        """A `Set-Cookie` value storing `value` (a session cookie unless `max_age` is set)."""
        if max_age is None:
            return f"{self.name}={value}{self._before}{self._after}"
        return f"{self.name}={value}{self._before}; Max-Age={max(0, max_age)}{self._after}"

    def render_clear(self) -> str:
        """A `Set-Cookie` value that makes the browser drop the cookie."""
        parts = [f"{self.name}=", f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        parts += ["Max-Age=0", f"Expires={_EXPIRED}"]
        return self._attributes(parts)

    def _attributes(self, parts: list[str]) -> str:
        if self.http_only:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        if self.same_site is not None:
            parts.append(f"SameSite={self.same_site.capitalize()}")
        if self.partitioned:
            parts.append("Partitioned")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Header:
    """Carry the session ID or token in a request header and hand new ones out in a
    response header, for API clients and the JavaScript client (`static/coatcheck.js`).

    By default the request sends `Authorization: Bearer <token>` and responses carry a new
    or rotated token in `Session-Token` (listed in `Access-Control-Expose-Headers` so
    cross-origin pages may read it); an ended session is answered with an empty
    `Session-Token` so the client forgets it. Tokens are never read from the URL.

    `expiry_header="Session-Expires"` (opt-in; `Cookie` takes it too) adds to every
    response of a live session the whole seconds until it expires unless another request
    refreshes it (`Session.remaining()`: the earlier of its idle and absolute deadlines,
    as they stand after this request), and "0" when the session ended or what the request
    presented was refused. Seconds rather than a date, so the client's clock does not
    matter. The JavaScript client reads it for its "expiring" and "expired" events.

    Browsers never attach a custom header on their own, so requests carried this way need
    no CSRF check; what remains is XSS: script on the page can read a token it can attach.
    """

    name: str = "authorization"
    scheme: str | None = "Bearer"
    response_header: str = "Session-Token"
    #: Route prefixes this transport serves (None: every route).
    paths: tuple[str, ...] | None = None
    #: Seconds left, in this response header (None: not sent).
    expiry_header: str | None = None

    ambient = False

    @property
    def vary(self) -> str:
        return self.name

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name) or not _TOKEN.fullmatch(self.response_header):
            raise ConfigurationError("Header names must be valid HTTP header names")
        if self.expiry_header is not None and not _TOKEN.fullmatch(self.expiry_header):
            raise ConfigurationError("Header names must be valid HTTP header names")
        if self.scheme is not None and not _TOKEN.fullmatch(self.scheme):
            raise ConfigurationError(f"authorization scheme {self.scheme!r} is not a token")
        object.__setattr__(self, "name", self.name.lower())

    def applies(self, request: RequestInfo) -> bool:
        return _under(request.path, self.paths)

    def claims(self, request: RequestInfo) -> bool:
        """A request without a token asks for its new one in this header by sending
        `Session-Transport: header` (the JavaScript client does)."""
        return (request.header(SELECT_HEADER) or "").strip().lower() == "header"

    def read(self, request: RequestInfo) -> str | None:
        value = request.header(self.name)
        if value is None:
            return None
        if self.scheme is None:
            return value.strip() or None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != self.scheme.lower():
            return None
        return token.strip() or None

    def issue(
        self, value: str, *, max_age: int | None = None, request: RequestInfo | None = None
    ) -> list[tuple[str, str]]:
        return [
            (self.response_header.lower(), value),
            ("access-control-expose-headers", self.response_header),
        ]

    def clear(self, *, request: RequestInfo | None = None) -> list[tuple[str, str]]:
        return self.issue("")


def _is_loopback(host: str | None) -> bool:
    """Whether the `Host` header `host` names this machine as browsers treat it (they send
    `Secure` cookies over plain HTTP there): localhost, *.localhost, a loopback address."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:  # host:port
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cookie_names(header: str) -> list[str]:
    """The names of the cookies in a `Cookie` header, in order."""
    return [n.strip() for n, sep, _ in (p.partition("=") for p in header.split(";")) if sep]


def find_cookie(header: str, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie` header, parsed as browsers write it.

    Pairs are separated by `;`, whitespace around names and values is ignored, a value in
    double quotes is unquoted, and a malformed pair elsewhere in the header does not hide
    the cookie (unlike `http.cookies.SimpleCookie`, which stops at the first bad pair).
    """
    for pair in header.split(";"):
        if name not in pair:  # another cookie: skip it cheaply
            continue
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None
