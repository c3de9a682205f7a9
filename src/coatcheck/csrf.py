"""Cross-site request forgery defence for cookie-carried sessions.

A browser attaches cookies to requests that other sites trigger, so an unsafe request
(`POST`, `PUT`, `PATCH`, `DELETE`, ...) is only accepted when it provably comes from the
application's own pages:

1. `Sec-Fetch-Site: same-origin` (or `none`: typed in, bookmarked) passes; any other value
   (`cross-site`, `same-site`) fails.
2. Without `Sec-Fetch-Site` (older browsers), an `Origin` whose host is the request's
   `Host` passes, another `Origin` fails, and no `Origin` at all passes: every current
   browser sends `Origin` on cross-origin unsafe requests, so its absence means a
   non-browser client, which cannot be forged into sending a victim's cookie.
3. A request that failed 1 or 2 still passes if it carries the session's CSRF token in the
   `X-CSRF-Token` header or the `csrf_token` form field, or if its origin is trusted.

This is the check Go 1.25's `http.CrossOriginProtection` makes, plus the classic
synchroniser token for pages that send `Origin: null` or cross origins on purpose.
Header-carried sessions need none of it: a browser never adds a custom header by itself.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from .exceptions import CSRFError
from .request import RequestInfo

__all__ = ["SAFE_METHODS", "check_origin", "check_token"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
TOKEN_HEADER = "x-csrf-token"  # noqa: S105 - a header name, not a secret
TOKEN_FIELD = "csrf_token"  # noqa: S105 - a form field name, not a secret


def check_origin(request: RequestInfo, trusted_origins: frozenset[str] = frozenset()) -> bool:
    """Whether the request is safe or provably same-origin (steps 1 and 2 above)."""
    if request.method.upper() in SAFE_METHODS:
        return True
    origin = request.header("origin")
    if origin is not None and origin in trusted_origins:
        return True
    site = request.header("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    if origin is None:
        return True
    host = request.host
    try:
        origin_host = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and origin_host == host


def check_token(expected: str | None, submitted: str | None) -> None:
    """Raise `CSRFError` unless `submitted` is the session's CSRF token (constant time)."""
    if (
        expected is None
        or submitted is None
        or not hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass"))
    ):
        raise CSRFError("cross-origin request without a valid CSRF token")
