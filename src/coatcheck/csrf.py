"""Cross-site request forgery defence for cookie-carried sessions.

A browser attaches cookies to requests that other sites trigger, so an unsafe request
(`POST`, `PUT`, `PATCH`, `DELETE`, ...) is only accepted when it provably comes from the
application's own pages:

1. `Sec-Fetch-Site: same-origin` (or `none`: typed in, bookmarked) passes; any other value
   (`cross-site`, `same-site`) fails.
2. Without `Sec-Fetch-Site` (older browsers), an `Origin` whose scheme, host and port are
   the request's (its `scheme` and `Host`, default ports 80 and 443 filled in) passes,
   another `Origin` fails, and no `Origin` at all passes: every current browser sends
   `Origin` on cross-origin unsafe requests, so its absence means a non-browser client,
   which cannot be forged into sending a victim's cookie. The scheme counts because
   `http://app.example` is another origin than `https://app.example`: a page served over
   plain HTTP can be rewritten by anyone on the network. Behind a proxy that terminates
   TLS, the adapter must see the client's scheme (uvicorn `--proxy-headers`, werkzeug
   `ProxyFix`), though only older browsers reach this step: every current one sends
   `Sec-Fetch-Site` over HTTPS.
3. A request that failed 1 or 2 still passes if it carries the session's CSRF token in the
   `X-CSRF-Token` header or the `csrf_token` form field, or if its origin is trusted.

This is the check Go 1.25's `http.CrossOriginProtection` makes (which compares hosts
only), plus the classic synchroniser token for pages that send `Origin: null` or cross
origins on purpose. `form_limit` says how much of a body an adapter may read for that
token and `form_token` finds it in a urlencoded form, for every adapter alike.
Header-carried sessions need none of it: a browser never adds a custom header by itself.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from .exceptions import CSRFError
from .request import RequestInfo

__all__ = [
    "MAX_FORM_BYTES",
    "MAX_FORM_FIELDS",
    "SAFE_METHODS",
    "check_origin",
    "check_token",
    "form_limit",
    "form_token",
    "is_form",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
TOKEN_HEADER = "x-csrf-token"  # noqa: S105 - a header name, not a secret
TOKEN_FIELD = "csrf_token"  # noqa: S105 - a form field name, not a secret
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 1024 * 1024  # a form larger than this is not searched for a CSRF token
MAX_FORM_FIELDS = 1000  # nor is a form with more fields than this
#: The origin scheme of each request scheme (a WebSocket handshake comes from an HTTP page),
#: and the port a URL of that scheme means when it names none.
_WEB_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}


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
    if not host:
        return False
    scheme = request.scheme.lower()
    scheme = _WEB_SCHEME.get(scheme, scheme)
    origin_scheme, sep, origin_host = origin.partition("://")
    if not sep or origin_scheme.lower() != scheme:
        return False
    expected = _host_port(host, scheme)
    return expected is not None and _host_port(origin_host, scheme) == expected


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """`netloc` (a `Host` header, or an origin's `host[:port]`) as (lower-case host, port),
    the scheme's default port filled in; None if it is not a plain `host[:port]`."""
    if not (netloc.isascii() and netloc.isprintable()) or any(c in netloc for c in "/?#@\\ "):
        return None  # a path, userinfo, spaces or controls: neither an origin's host nor a Host
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, _DEFAULT_PORT.get(scheme) if port is None else port


def check_token(expected: str | None, submitted: str | None) -> None:
    """Raise `CSRFError` unless `submitted` is the session's CSRF token (constant time)."""
    if (
        expected is None
        or submitted is None
        or not hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass"))
    ):
        raise CSRFError("cross-origin request without a valid CSRF token")


def is_form(content_type: str | None) -> bool:
    """Whether a `Content-Type` is a urlencoded form, the only body searched for a token.

    Adapters ask before reading a body: any other body is not read for the CSRF check.
    """
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() == FORM_TYPE


def form_limit(content_type: str | None, content_length: str | None) -> int:
    """How many bytes of a request body an adapter may read to find its `csrf_token`.

    0 when the body is not to be read: not a urlencoded form, or a declared
    `Content-Length` that is not a plain number or is over `MAX_FORM_BYTES` (the token is
    then simply missing: a 403, never a 500). Otherwise the declared length, or
    `MAX_FORM_BYTES` when none is declared (a chunked or HTTP/2 body: the adapter stops
    reading, and refuses, past it). WSGI passes `"0"` for a missing `CONTENT_LENGTH`,
    which there means that no body may be read (PEP 3333).
    """
    if not is_form(content_type):
        return 0
    if content_length is None:
        return MAX_FORM_BYTES
    digits = content_length.strip()
    # Plain ASCII digits only (int() also takes "+1", "1_0", "٣"), and few enough that
    # int() neither refuses them (over 4300) nor spends time on them.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        return 0
    length = int(digits)
    return length if length <= MAX_FORM_BYTES else 0


def form_token(content_type: str | None, body: bytes) -> str | None:
    """The `csrf_token` field of a urlencoded form `body`, or None.

    Never raises, whatever the body: a request whose form cannot be searched (another
    content type, more than `MAX_FORM_BYTES` bytes or `MAX_FORM_FIELDS` fields, bytes that
    are not UTF-8) simply carries no token, so the adapter answers 403 rather than 500.
    Every adapter calls this one function, so they all accept and refuse the same forms.
    """
    if not is_form(content_type) or len(body) > MAX_FORM_BYTES:
        return None
    try:
        # latin-1 maps every byte to a character; percent-escapes decode as UTF-8 with
        # replacement characters, which no token contains.
        fields = parse_qs(body.decode("latin-1"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # more fields than allowed
        return None
    values = fields.get(TOKEN_FIELD)
    return values[0] if values else None
