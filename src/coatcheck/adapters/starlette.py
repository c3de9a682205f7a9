"""A drop-in for `starlette.middleware.sessions.SessionMiddleware`: change one import.

    from coatcheck.adapters.starlette import SessionMiddleware   # was: starlette.middleware...

    app.add_middleware(SessionMiddleware, secret_key=os.environ["SECRET_KEY"])

It takes the same arguments with the same defaults, puts the same kind of `dict` in
`request.session`, and writes the same `Set-Cookie` text (only when the session changed,
with `Vary: Cookie` when it was read), so an application and its tests keep working. What
changes is the cookie's content: a standard JWS (HS256) token under a key derived from
`secret_key`, verified by coatcheck's strict codec, with a security log line for every
tampered or expired cookie. Cookies written by Starlette's own middleware are still read
(and re-issued in the new format) while `itsdangerous` is installed, so switching logs no one
out.

`max_age` means what it means in Starlette: the cookie's `Max-Age`, and how long after its
last change a session is accepted (None: a browser-session cookie that never expires on
the server side; 0 or negative: `Max-Age=0` or `Max-Age=-1`, a cookie the browser drops
at once, and never read back). Every value Starlette takes is taken, and written into the
`Set-Cookie` text as Starlette writes it, unchecked.

A session that cannot be kept (a token over the size limit, a value JSON cannot carry) is
answered `413` or `500` with a log line and no traceback, where Starlette's middleware
would raise (or set a cookie the browser drops).

`secret_key` is where the two differ on purpose: Starlette signs with any string, even an
empty one, so anyone can forge its cookies (every session, every user). An empty key is a
`ConfigurationError` here, and a key shorter than 32 bytes (256 bits, what `KeyRing`
requires) gives a `WeakSecretKeyWarning`: the derived signing key is only as hard to guess
as the text it comes from.

One addition: `exclude=[...]` and `@no_session` endpoints, as in
`coatcheck.adapters.asgi.SessionMiddleware`: those routes get no session, no cookie and
no `Vary: Cookie` (`request.session` raises `SessionExcluded` there).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import warnings
from collections.abc import Iterable
from typing import Any, Literal

from ..clientside import ClientSide
from ..drivers import acommit_session, aopen_session
from ..exceptions import ConfigurationError
from ..keys import MIN_KEY_BYTES, KeyRing
from ..lifetimes import Lifetimes
from ..manager import Opening, SessionManager
from ..request import RequestInfo
from ..responses import merge_headers
from ..routes import NO_SESSION, ExcludeSpec, RouteFilter, no_session
from ..session import Session
from ..transports import Cookie, find_cookie
from .asgi import ASGIApp, Message, Receive, Scope, Send, _refuse, request_info
from .failures import COMMIT_ERRORS, refusal

__all__ = ["SessionMiddleware", "WeakSecretKeyWarning", "no_session"]

log = logging.getLogger("coatcheck")
_FOREVER = 10 * 365 * 24 * 60 * 60  # 10 years, seconds: "no expiry" for max_age=None
_HOW_TO_GENERATE = (
    'generate one with `python -c "import secrets; print(secrets.token_urlsafe(32))"` '
    "and pass it from the environment"
)


class WeakSecretKeyWarning(UserWarning):
    """`secret_key` is shorter than 32 bytes: cookies signed under it may be forgeable."""


class StarletteSession(dict[str, Any]):
    """The `dict` Starlette puts in `request.session`, with its `accessed` / `modified`
    flags, so code that serialises or compares the session keeps working."""

    accessed: bool = False
    modified: bool = False

    def mark_accessed(self) -> None:
        self.accessed = True

    def mark_modified(self) -> None:
        self.accessed = True
        self.modified = True

    def __setitem__(self, key: str, value: Any) -> None:
        self.mark_modified()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.mark_modified()
        super().__delitem__(key)

    def clear(self) -> None:
        self.mark_modified()
        super().clear()

    def pop(self, key: str, *args: Any) -> Any:
        if key in self:
            self.mark_modified()
        return super().pop(key, *args)

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self.mark_modified()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.mark_modified()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.mark_modified()
        super().update(*args, **kwargs)

    def __ior__(self, other: Any, /) -> StarletteSession:  # type: ignore[override,misc]
        self.mark_modified()
        return super().__ior__(other)


class _StarletteCookie(Cookie):
    """Starlette's `Set-Cookie` text: lower-case attributes, `Max-Age` from `max_age`.

    It takes what Starlette takes and writes it as Starlette does, unchecked (a `__Host-`
    name with a `path`, say, which a browser then refuses, as it would Starlette's):
    `Cookie`'s own checks, meant for coatcheck's settings, are not applied to the name and
    path. `secure` is `https_only`, for the warning on plain-HTTP requests only."""

    __slots__ = ("_flags", "_max_age")
    _flags: str
    _max_age: int | None

    def __init__(self, name: str, path: str, flags: str, max_age: int | None, secure: bool) -> None:
        super().__init__(name="session", secure=False, same_site=None, http_only=False)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "secure", secure)
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_max_age", max_age)

    def render(self, value: str, *, max_age: int | None = None) -> str:
        age = f"Max-Age={self._max_age}; " if self._max_age is not None else ""
        return f"{self.name}={value}; path={self.path}; {age}{self._flags}"

    def issue(
        self, value: str, *, max_age: int | None = None, request: RequestInfo | None = None
    ) -> list[tuple[str, str]]:
        if self.secure and request is not None and not self._warned:
            self.warn_if_unsent(request)
        return [("set-cookie", self.render(value))]  # one cookie, however large, as Starlette

    def render_clear(self) -> str:
        expires = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        return f"{self.name}=null; path={self.path}; {expires}{self._flags}"


class SessionMiddleware:
    """Starlette's session middleware, backed by coatcheck's client-side sessions."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: object,
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,  # 14 days, in seconds
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        exclude: Iterable[ExcludeSpec] | None = None,
    ) -> None:
        self.app = app
        self._exclude = RouteFilter(exclude)
        secret = str(secret_key)  # a str, or Starlette's `Secret` (its str is the value)
        _check_secret(secret)
        flags = "httponly; samesite=" + same_site
        if https_only:
            flags += "; secure"
        if domain is not None:
            flags += f"; domain={domain}"
        if partitioned:
            flags += "; partitioned"
        self.cookie = _StarletteCookie(session_cookie, path, flags, max_age, https_only)
        # `max_age` <= 0 (which Starlette takes): a cookie the browser drops at once
        # (`Max-Age=0`, or negative), never read back; the lifetime below is then unused.
        self._read_back = max_age is None or max_age > 0
        lifetime = float(max_age) if max_age is not None and max_age > 0 else float(_FOREVER)
        master = hashlib.sha256(b"coatcheck/starlette\0" + secret.encode()).digest()
        self.manager = SessionManager(
            ClientSide(KeyRing([master]), store=None),
            transport=self.cookie,
            lifetimes=Lifetimes(
                idle=lifetime,
                absolute=_FOREVER + lifetime,
                renewal=None,
                touch_interval=lifetime / 2,
            ),
            csrf=False,  # Starlette's middleware has no CSRF check; SameSite=Lax is its defence
        )
        self.max_age = max_age
        self._legacy = _legacy_signer(secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._exclude.active and self._exclude.excluded(scope, self.app):
            scope["session"] = NO_SESSION
            await self.app(scope, receive, send)
            return
        request = request_info(scope)
        opener = None if self._read_back else self._nothing
        session = await aopen_session(self.manager, request, opener=opener)
        migrated = False
        if session.is_new and self._read_back:
            migrated = self._adopt_legacy(request, session)
        view = StarletteSession(session.data())
        initially_empty = session.is_new and not migrated
        scope["session"] = view

        refused = False

        async def send_wrapper(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                # As Starlette: `Vary: Cookie` when read, and no `Cache-Control` of ours.
                extra = [("vary", "Cookie")] if view.accessed else []
                if (view.modified and view) or (migrated and not view.modified):
                    session.clear()
                    session.update(view)
                    try:
                        committed = await acommit_session(self.manager, session)
                    except COMMIT_ERRORS as exc:  # too large, or not JSON: a 413 / 500
                        refused = True
                        await _refuse(scope, send, refusal(self.manager, session, exc))
                        return
                    extra += [pair for pair in committed if pair[0] == "set-cookie"]
                elif view.modified and not initially_empty:
                    extra.append(("set-cookie", self.cookie.render_clear()))
                message["headers"] = merge_headers(message.get("headers", ()), extra, encode=True)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _nothing(self, request: RequestInfo) -> Opening:
        """Open no session from the request's cookie: with `max_age` <= 0 no cookie is ever
        read back, as Starlette's signer refuses any cookie older than `max_age` seconds
        (always, for a negative one; from the next second on, for 0)."""
        return self.manager.open(request, "")

    def _adopt_legacy(self, request: RequestInfo, session: Session) -> bool:
        """Read a cookie written by Starlette's own middleware into `session`."""
        if self._legacy is None:
            return False
        value = next(
            (
                v
                for h in request.header_values("cookie")
                if (v := find_cookie(h, self.cookie.name)) is not None
            ),
            None,
        )
        if value is None:
            return False
        try:
            raw = self._legacy.unsign(value.encode("utf-8"), max_age=self.max_age)
            data = json.loads(base64.b64decode(raw))
        except Exception:  # any failure means: not a cookie Starlette signed with our key
            return False
        if not isinstance(data, dict):
            return False
        session.update(data)
        log.info("adopted a cookie written by starlette.middleware.sessions")
        return True


def _check_secret(secret: str) -> None:
    """Refuse an empty `secret_key` and warn about one under `MIN_KEY_BYTES` bytes: every
    cookie's signing key derives from it, so it must be as hard to guess as a real key."""
    if not secret:
        raise ConfigurationError(
            f"secret_key is empty: anyone could forge sessions; {_HOW_TO_GENERATE}"
        )
    size = len(secret.encode("utf-8", "surrogatepass"))
    if size < MIN_KEY_BYTES:
        warnings.warn(
            f"secret_key is {size} bytes; use at least {MIN_KEY_BYTES} random bytes, or "
            f"session cookies may be forged by guessing it: {_HOW_TO_GENERATE}",
            WeakSecretKeyWarning,
            stacklevel=3,
        )


def _legacy_signer(secret: str) -> Any:
    try:
        import itsdangerous
    except ImportError:  # pragma: no cover - installed with starlette's session support
        return None
    return itsdangerous.TimestampSigner(secret)
