"""The `SessionManager` of a Django project, built once from `settings.COATCHECK`.

```python
COATCHECK = {
    "store": "django",    # the project's database (the default); a store URL, a Store,
                          # or ServerSide(...)
    "lifetimes": {"idle": 30 * 60, "absolute": 12 * 60 * 60},   # or a Lifetimes
    "import_from": "django.contrib.sessions.backends.db",   # see `importing`
    "session_limit": SessionLimit(3),   # optional: at most 3 live sessions per user
    "exclude": ["/healthz", "/static/"],   # routes with no session (`coatcheck.routes`)
}
```
or `COATCHECK = {"manager": SessionManager(...)}` (or its dotted path) for full control.
Without `store` (or without `COATCHECK`), sessions live in the project's `default`
database (`coatcheck.stores.django.DjangoStore`, table created by `manage.py migrate`),
never in a file relative to the current directory; `"django"` is short for
`"django://default"`, `"django://<alias>"` names another entry of `DATABASES`.
Without `lifetimes`, sessions follow Django's settings: idle timeout `SESSION_COOKIE_AGE`,
absolute timeout the longer of that and 30 days, ID renewal every 15 minutes. Log lines
are salted with a key derived from `SECRET_KEY`, so every replica hashes IDs alike.
The manager is rebuilt when a test overrides one of these settings.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ...clientside import ClientSide
from ...exceptions import ConfigurationError
from ...lifetimes import Lifetimes
from ...manager import ServerSide, SessionManager
from ...routes import Exclusions, exclusions

__all__ = ["SETTINGS", "get_manager", "import_from"]

KEYS = frozenset(
    {
        "manager",
        "store",
        "lifetimes",
        "log_salt",
        "clock",
        "import_from",
        "session_limit",
        "exclude",
    }
)
#: The store when `COATCHECK` names none: the project's own default database.
DEFAULT_STORE = "django://default"
#: Django's session engines whose sessions `import_from` can carry over (`importing`).
IMPORTABLE_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
    "django.contrib.sessions.backends.file",
    "django.contrib.sessions.backends.signed_cookies",
)
DEFAULT_ABSOLUTE = 30 * 24 * 60 * 60  # 30 days, seconds
WATCHED = frozenset({"COATCHECK", "SESSION_COOKIE_AGE", "SECRET_KEY"})

_lock = threading.Lock()
_manager: SessionManager | None = None
#: `import_engine` of the settings, once read: (engine or None,).
_import: tuple[str | None] | None = None


def get_manager() -> SessionManager:
    """The project's manager (built on first use from `settings.COATCHECK`)."""
    global _manager
    manager = _manager
    if manager is None:
        with _lock:
            if _manager is None:
                _manager = build(getattr(settings, "COATCHECK", {}))
            manager = _manager
    return manager


def import_from() -> str | None:
    """The project's `COATCHECK["import_from"]` engine (None: none), read once."""
    global _import
    found = _import
    if found is None:
        config = getattr(settings, "COATCHECK", {})
        found = _import = (import_engine(config) if isinstance(config, Mapping) else None,)
    return found[0]


def build(config: Mapping[str, Any]) -> SessionManager:
    """A manager from a `COATCHECK` settings dict; `ConfigurationError` says what to fix."""
    if not isinstance(config, Mapping):
        raise ConfigurationError("settings.COATCHECK must be a dict")
    unknown = set(config) - KEYS
    if unknown:
        raise ConfigurationError(
            f"unknown COATCHECK settings {sorted(unknown)}; known: {sorted(KEYS)}"
        )
    import_engine(config)
    exclude_paths(config)
    if "manager" in config:
        if len(set(config) - {"import_from", "exclude"}) > 1:
            raise ConfigurationError(
                "COATCHECK['manager'] excludes every other COATCHECK key but 'import_from' "
                "and 'exclude'"
            )
        manager = config["manager"]
        if isinstance(manager, str):
            try:
                manager = import_string(manager)
            except ImportError as exc:
                raise ConfigurationError(
                    f"COATCHECK['manager'] = {manager!r} cannot be imported ({exc})"
                ) from None
        if not isinstance(manager, SessionManager):
            raise ConfigurationError("COATCHECK['manager'] must be a SessionManager or its path")
    else:
        store = config.get("store", DEFAULT_STORE)
        if store == "django":
            store = DEFAULT_STORE
        mode = store if isinstance(store, (ServerSide, ClientSide)) else ServerSide(store)
        options: dict[str, Any] = {"lifetimes": _lifetimes(config.get("lifetimes"))}
        salt = config.get("log_salt")
        if salt is None:
            secret = str(settings.SECRET_KEY).encode()
            salt = hmac.new(secret, b"coatcheck log salt", hashlib.sha256).digest()
        options["log_salt"] = salt.encode() if isinstance(salt, str) else salt
        if "clock" in config:
            options["clock"] = config["clock"]
        if "session_limit" in config:
            options["session_limit"] = config["session_limit"]
        manager = SessionManager(mode, **options)
    if manager.mode.name == "client":
        raise ConfigurationError(
            "Django's session engine keeps sessions server-side (the cookie holds a session "
            "key); use ServerSide(store=...), or Django's signed_cookies engine"
        )
    return manager


def import_engine(config: Mapping[str, Any]) -> str | None:
    """`COATCHECK["import_from"]`: the Django session engine whose sessions are carried
    over on first sight (None: none); `ConfigurationError` for one it cannot read."""
    engine = config.get("import_from")
    if engine is None:
        return None
    if engine not in IMPORTABLE_ENGINES:
        raise ConfigurationError(
            f"COATCHECK['import_from'] must name one of Django's session engines: "
            f"{', '.join(IMPORTABLE_ENGINES)}; not {engine!r}"
        )
    return str(engine)


def exclude_paths(config: Mapping[str, Any]) -> Exclusions | None:
    """`COATCHECK["exclude"]`: the paths (matched against `request.path_info`) that get no
    session (`coatcheck.routes.Exclusions`); None: none. `ConfigurationError` for a bad
    entry."""
    return exclusions(config.get("exclude"))


def _lifetimes(value: Any) -> Lifetimes:
    if isinstance(value, Lifetimes):
        return value
    if isinstance(value, Mapping):
        return Lifetimes(**value)
    if value is not None:
        raise ConfigurationError(
            "COATCHECK['lifetimes'] must be a Lifetimes or a dict of its fields"
        )
    age = float(settings.SESSION_COOKIE_AGE)
    return Lifetimes(
        idle=age, absolute=max(age, DEFAULT_ABSOLUTE), touch_interval=min(60.0, age / 2)
    )


class SessionSettings:
    """Django's session settings, read from `settings` once (`load`, by the first
    `SessionStore` or `SessionMiddleware`) and kept: every `settings.X` is a Python call of
    `LazySettings.__getattribute__`, and a request would read up to a dozen. Read again
    as soon as a test overrides one of them. (Plain attributes: a `__getattr__` on the
    class would make every read of them a slower, unspecialised look-up.)"""

    NAMES = frozenset(
        {
            "SESSION_COOKIE_AGE",
            "SESSION_COOKIE_DOMAIN",
            "SESSION_COOKIE_HTTPONLY",
            "SESSION_COOKIE_NAME",
            "SESSION_COOKIE_PATH",
            "SESSION_COOKIE_SAMESITE",
            "SESSION_COOKIE_SECURE",
            "SESSION_EXPIRE_AT_BROWSER_CLOSE",
            "SESSION_SAVE_EVERY_REQUEST",
        }
    )

    loaded = False
    SESSION_COOKIE_AGE: Any
    SESSION_COOKIE_DOMAIN: Any
    SESSION_COOKIE_HTTPONLY: Any
    SESSION_COOKIE_NAME: Any
    SESSION_COOKIE_PATH: Any
    SESSION_COOKIE_SAMESITE: Any
    SESSION_COOKIE_SECURE: Any
    SESSION_EXPIRE_AT_BROWSER_CLOSE: Any
    SESSION_SAVE_EVERY_REQUEST: Any
    #: What users of these settings derive from them (`SessionMiddleware`'s cookie
    #: template), forgotten when they change.
    derived: dict[str, Any]
    #: `COATCHECK["exclude"]`, read with the rest (None: nothing excluded), and the
    #: error that reading it raised, for `SessionMiddleware` to raise at construction.
    exclude: Exclusions | None = None
    exclude_error: ConfigurationError | None = None

    def load(self) -> None:
        for name in self.NAMES:
            setattr(self, name, getattr(settings, name))
        self.derived = {}
        self.exclude, self.exclude_error = None, None
        config = getattr(settings, "COATCHECK", {})
        if isinstance(config, Mapping):
            try:
                self.exclude = exclude_paths(config)
            except ConfigurationError as exc:  # reported by `manage.py check` (E009)
                self.exclude_error = exc
        self.loaded = True


#: The session settings every request reads (see `SessionSettings`).
SETTINGS = SessionSettings()


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _manager, _import
    if (setting in SessionSettings.NAMES or setting == "COATCHECK") and SETTINGS.loaded:
        SETTINGS.load()
    if setting in WATCHED:
        with _lock:
            _manager = None
            _import = None


setting_changed.connect(_reset, dispatch_uid="coatcheck.adapters.django.config")
