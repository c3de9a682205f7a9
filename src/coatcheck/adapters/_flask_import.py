"""Reading the sessions an application had before coatcheck, once, to carry them over.

`SessionInterface(manager, import_from=...)` (`coatcheck.adapters.flask`) uses one of the
two readers here to open a request's old session when it presents no valid coatcheck
session, so that switching logs no one out:

- `FlaskCookie`: Flask's default session, an itsdangerous-signed cookie. It is verified by
  the old interface itself (`SecureCookieSessionInterface.get_signing_serializer`: the
  app's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`, its salt, digest and tagged-JSON
  serializer) and its age checked against `PERMANENT_SESSION_LIFETIME`, as Flask does.
- `FlaskSessionRedis`: Flask-Session's Redis sessions: the cookie holds an ID (signed if
  `SESSION_USE_SIGNER`), looked up under `SESSION_KEY_PREFIX` in `SESSION_REDIS`; Redis's
  own TTL is the expiry. The record is decoded as Flask-Session 0.8 writes it (msgpack or
  JSON, by msgspec), never with pickle: a record an older Flask-Session pickled is not
  imported (it reads as anonymous, logged), where Flask-Session would unpickle it.

A reader returns an `Imported` (the data as JSON values, the user, whether the session was
permanent, and what to delete once the coatcheck session is saved) or a `Rejected` (why,
for the log line). What fails a check never becomes an `Imported`: a cookie whose
signature does not verify with the app's key, one past its age, an ID that is malformed
or not in Redis, a record that does not decode to a dict.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, NamedTuple

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.sessions import SessionInterface as FlaskSessionInterface

from ..exceptions import ConfigurationError

__all__ = ["FlaskCookie", "FlaskSessionRedis", "Imported", "Reader", "Rejected", "reader_for"]

#: Flask-Login's keys: kept as they are, so `current_user` loads the same user.
USER_KEY = "_user_id"
#: Where Flask and Flask-Session keep `session.permanent`; coatcheck keeps it as the
#: session's persistent flag, not as data.
PERMANENT_KEY = "_permanent"
#: A Flask-Session ID: `secrets.token_urlsafe(SESSION_ID_LENGTH)`, 43 characters by default.
_SID = re.compile(r"[A-Za-z0-9_-]{1,256}")


class Imported(NamedTuple):
    """An old session that verified, converted for coatcheck."""

    data: dict[str, Any]
    #: Flask-Login's user (`_user_id`), bound to the coatcheck session with `login`.
    user: str | None
    persistent: bool
    #: Keys whose values JSON cannot carry (bytes, sets, objects): left behind.
    dropped: tuple[str, ...]
    #: Deletes the old session where it lives (a Redis key); run once the coatcheck
    #: session is saved, never before (a failed save leaves the old session to retry).
    delete: Callable[[], None]
    #: The reader's `source`, for the log line.
    source: str


class Rejected(NamedTuple):
    """An old cookie that did not verify (`reason` says which check, for the log only)."""

    reason: str
    #: Whether the old cookie should be cleared: not when the old store could not be
    #: asked (it may verify on the next request).
    clear: bool = True


class Reader:
    """Reads one kind of old session; `source` names it in log lines."""

    source = "?"

    def __init__(self, interface: FlaskSessionInterface) -> None:
        #: The old interface: its cookie name, path and domain (as it reads them from
        #: `app.config`) are the old cookie's.
        self.interface = interface

    def cookie_name(self, app: Flask) -> str:
        return self.interface.get_cookie_name(app)

    def cookie_path(self, app: Flask) -> str:
        return self.interface.get_cookie_path(app)

    def cookie_domain(self, app: Flask) -> str | None:
        return self.interface.get_cookie_domain(app)

    def read(self, app: Flask, value: str) -> Imported | Rejected:
        raise NotImplementedError


class FlaskCookie(Reader):
    """Flask's signed-cookie session (`SecureCookieSessionInterface`, or a subclass with
    its own salt or serializer: pass that instance as `import_from`)."""

    source = "flask"
    interface: SecureCookieSessionInterface

    def __init__(self, interface: SecureCookieSessionInterface | None = None) -> None:
        super().__init__(interface if interface is not None else SecureCookieSessionInterface())

    def read(self, app: Flask, value: str) -> Imported | Rejected:
        from itsdangerous import BadData, SignatureExpired

        serializer = self.interface.get_signing_serializer(app)
        if serializer is None:
            return Rejected("the app has no SECRET_KEY")
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            data = serializer.loads(value, max_age=max_age)
        except SignatureExpired:
            return Rejected("expired")
        except BadData:  # a bad signature, or a signed payload that does not decode
            return Rejected("signature")
        if not isinstance(data, dict):
            return Rejected("not a dict")
        return _converted(data, lambda: None, self.source)


class FlaskSessionRedis(Reader):
    """Flask-Session's Redis sessions: `client` (a `redis.Redis`), `key_prefix` and
    `use_signer` as Flask-Session was configured (`SESSION_REDIS`, `SESSION_KEY_PREFIX`,
    `SESSION_USE_SIGNER`)."""

    source = "flask-session-redis"

    def __init__(self, client: Any, key_prefix: str = "session:", use_signer: bool = False) -> None:
        super().__init__(FlaskSessionInterface())  # cookie settings: Flask's, from app.config
        self.client = client
        self.key_prefix = key_prefix
        self.use_signer = use_signer

    @classmethod
    def from_config(cls, app: Flask) -> FlaskSessionRedis:
        """The reader for the Flask-Session settings in `app.config`."""
        config = app.config
        kind = str(config.get("SESSION_TYPE", "redis")).lower()
        client = config.get("SESSION_REDIS")
        if kind != "redis" or client is None:
            raise ConfigurationError(
                'import_from="flask-session-redis" reads Flask-Session\'s settings: keep '
                'SESSION_TYPE = "redis" and SESSION_REDIS = redis.Redis(...) in app.config '
                f"(found SESSION_TYPE={kind!r}, SESSION_REDIS={type(client).__name__})"
            )
        return cls(
            client,
            key_prefix=config.get("SESSION_KEY_PREFIX", "session:"),
            use_signer=bool(config.get("SESSION_USE_SIGNER", False)),
        )

    def read(self, app: Flask, value: str) -> Imported | Rejected:
        from itsdangerous import BadSignature, Signer

        sid = value
        if self.use_signer:
            if not app.secret_key:
                return Rejected("the app has no SECRET_KEY")
            signer = Signer(app.secret_key, salt="flask-session", key_derivation="hmac")
            try:
                sid = signer.unsign(value).decode("utf-8")
            except (BadSignature, UnicodeDecodeError):
                return Rejected("signature")
        if not _SID.fullmatch(sid):  # never a store query of unexpected size or content
            return Rejected("malformed")
        key = self.key_prefix + sid
        try:
            raw = self.client.get(key)
        except Exception as exc:  # the old store is down: keep its cookie for next time
            return Rejected(f"the old store failed: {type(exc).__name__}", clear=False)
        if raw is None:
            return Rejected("unknown")  # expired (Redis's TTL) or never there
        data = _decode(raw)
        if not isinstance(data, dict):
            return Rejected("undecodable (not msgpack or JSON: pickled by an old version?)")
        return _converted(data, lambda: self.client.delete(key), self.source)


def reader_for(import_from: object, app: Flask) -> Reader:
    """The reader `import_from` names: `"flask"`, `"flask-session-redis"` (settings from
    `app.config`), a `Reader`, or the old interface itself (Flask's
    `SecureCookieSessionInterface` or a subclass; Flask-Session's `RedisSessionInterface`)."""
    if isinstance(import_from, Reader):
        return import_from
    if import_from == "flask":
        return FlaskCookie()
    if import_from == "flask-session-redis":
        return FlaskSessionRedis.from_config(app)
    if isinstance(import_from, SecureCookieSessionInterface):
        return FlaskCookie(import_from)
    try:
        from flask_session.redis import RedisSessionInterface
    except ImportError:  # Flask-Session (or redis) is not installed: it cannot be that
        RedisSessionInterface = None
    if RedisSessionInterface is not None and isinstance(import_from, RedisSessionInterface):
        return FlaskSessionRedis(
            import_from.client,
            key_prefix=import_from.key_prefix,
            use_signer=bool(import_from.use_signer),
        )
    raise ConfigurationError(
        f"import_from={import_from!r}: use 'flask' (Flask's signed cookie), "
        "'flask-session-redis' (Flask-Session with SESSION_TYPE='redis'), or the old "
        "session interface instance"
    )


def _decode(raw: bytes) -> Any:
    """A Flask-Session record as its MsgSpecSerializer writes it: msgpack (the default) or
    JSON. None for anything else; pickle is never tried."""
    import msgspec

    for decoder in (msgspec.msgpack.Decoder(), msgspec.json.Decoder()):
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError:
            continue
    return None


def _converted(data: dict[str, Any], delete: Callable[[], None], source: str) -> Imported:
    """`data` as coatcheck keeps it: JSON values. Tuples become lists (flashed messages),
    `Markup` a plain `str`, UUIDs their text, dates ISO 8601; a key whose value JSON cannot
    carry is left behind and named in `dropped`."""
    persistent = bool(data.get(PERMANENT_KEY, False))
    converted: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if key == PERMANENT_KEY:
            continue
        try:
            converted[str(key)] = _json_value(value)
        except _NotJSON:
            dropped.append(str(key))
    user = converted.get(USER_KEY)
    return Imported(
        converted,
        str(user) if user not in (None, "") else None,
        persistent,
        tuple(dropped),
        delete,
        source,
    )


class _NotJSON(Exception):
    pass


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # `Markup` (a str subclass) as plain text
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _NotJSON
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise _NotJSON
