"""How a session ID travels: the `Cookie` transport (and its parsing and rendering).

The defaults are the strictest that browsers accept and OWASP asks for (ASVS 5.0 3.3.1-3.3.4):
a `__Host-` name, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`, and no
`Max-Age` unless the application asks for a persistent session. Chromium and Firefox accept
`Secure` and `__Host-` cookies on `http://localhost`, so development needs no downgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .exceptions import ConfigurationError
from .request import RequestInfo

__all__ = ["Cookie"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a valid cookie name
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")  # no controls, spaces or semicolons
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


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
            raise ConfigurationError(
                "'__Secure-' cookies and same_site='none' need secure=True"
            )
        if self.partitioned and not self.secure:
            raise ConfigurationError("partitioned cookies need secure=True")

    def read(self, request: RequestInfo) -> str | None:
        """The session cookie's value, or None. The first cookie of that name wins, as
        browsers send the most specific path first."""
        for header in request.header_values("cookie"):
            value = find_cookie(header, self.name)
            if value is not None:
                return value
        return None

    def render(self, value: str, *, max_age: int | None = None) -> str:
        """A `Set-Cookie` value storing `value` (a session cookie unless `max_age` is set)."""
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={max(0, max_age)}")
        return self._attributes(parts)

    def clear(self) -> str:
        """A `Set-Cookie` value that makes the browser forget the cookie."""
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


def find_cookie(header: str, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie` header, parsed as browsers write it.

    Pairs are separated by `;`, whitespace around names and values is ignored, a value in
    double quotes is unquoted, and a malformed pair elsewhere in the header does not hide
    the cookie (unlike `http.cookies.SimpleCookie`, which stops at the first bad pair).
    """
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None
