"""System checks of `settings.COATCHECK`, run by `manage.py check` (and before
`runserver`, `migrate` and the test runner), so that a misconfiguration fails at deploy
time with a message that says how to fix it, not at the first request as a 500.

| id               | what is wrong                                                     |
|------------------|-------------------------------------------------------------------|
| `coatcheck.E001` | `COATCHECK` is not a dict                                         |
| `coatcheck.E002` | a key coatcheck does not know (the hint names the close match)    |
| `coatcheck.E003` | the store URL is not one coatcheck can read                       |
| `coatcheck.E004` | the store URL's backend needs a package that is not installed     |
| `coatcheck.E005` | a `django://<alias>` store names no entry of `DATABASES`          |
| `coatcheck.E006` | `import_from` names no session engine coatcheck can import from   |
| `coatcheck.E007` | any other setting the manager refuses (lifetimes, salt, manager)  |
| `coatcheck.E008` | `import_from` reads `db` / `cached_db` without their app installed |
| `coatcheck.E009` | `exclude` is not a list of paths, patterns or callables           |

The checks build what `get_manager` would build, which opens no file and no connection
(stores connect on first use), so `check` needs no running Redis or database.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from ...exceptions import ConfigurationError
from ...stores import from_url
from .config import DEFAULT_STORE, KEYS, build, exclude_paths, import_engine

__all__ = ["check_settings"]

DOCS = "see docs/django.md, 'Settings'"
_NEED_SESSIONS_APP = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)


@register("coatcheck")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem of `settings.COATCHECK`, one `Error` each (none when it is absent:
    the defaults apply)."""
    config = getattr(settings, "COATCHECK", {})
    if not isinstance(config, Mapping):
        return [
            Error(
                f"settings.COATCHECK must be a dict, not {type(config).__name__}",
                hint='e.g. COATCHECK = {"store": "django"}; ' + DOCS,
                id="coatcheck.E001",
            )
        ]
    errors: list[CheckMessage] = [_unknown(key) for key in sorted(set(config) - KEYS, key=str)]
    store = config.get("store", DEFAULT_STORE)
    if isinstance(store, str):
        errors += _store_url(DEFAULT_STORE if store == "django" else store)
    try:
        engine = import_engine(config)
    except ConfigurationError as exc:
        errors.append(
            Error(
                str(exc),
                hint="the previous SESSION_ENGINE, exactly as it was set",
                id="coatcheck.E006",
            )
        )
    else:
        if engine in _NEED_SESSIONS_APP and not apps.is_installed("django.contrib.sessions"):
            errors.append(
                Error(
                    f"COATCHECK['import_from'] = {engine!r} reads the old sessions' table, "
                    "whose model is in django.contrib.sessions, which is not installed",
                    hint="keep 'django.contrib.sessions' in INSTALLED_APPS while import_from "
                    "is set",
                    id="coatcheck.E008",
                )
            )
    try:
        exclude_paths(config)
    except ConfigurationError as exc:
        errors.append(
            Error(
                f"COATCHECK['exclude'] is invalid: {exc}",
                hint='e.g. "exclude": ["/healthz", "/static/", re.compile(r"^/assets/")]; ' + DOCS,
                id="coatcheck.E009",
            )
        )
    if not errors:
        try:
            build(config)
        except (ConfigurationError, TypeError, ImportError) as exc:
            errors.append(Error(f"COATCHECK is invalid: {exc}", hint=DOCS, id="coatcheck.E007"))
    return errors


def _unknown(key: object) -> Error:
    close = difflib.get_close_matches(str(key), sorted(KEYS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(KEYS))}"
    return Error(f"unknown COATCHECK key {key!r}", hint=hint, id="coatcheck.E002")


def _store_url(url: str) -> list[CheckMessage]:
    try:
        store = from_url(url)
    except ConfigurationError as exc:
        message = str(exc)
        if "pip install" in message:
            command = message[message.index("pip install") :]
            return [
                Error(
                    f"COATCHECK['store'] {_shown(url)}: {message}",
                    hint=f"{command}, or use another store",
                    id="coatcheck.E004",
                )
            ]
        return [
            Error(
                f"COATCHECK['store'] {_shown(url)} is not a store URL coatcheck can use: {message}",
                hint="e.g. 'django', 'redis://localhost:6379/0', 'postgresql://host/db'",
                id="coatcheck.E003",
            )
        ]
    alias = getattr(store, "alias", None)
    store.close()
    if alias is not None and alias not in settings.DATABASES:
        return [
            Error(
                f"COATCHECK['store'] names the Django database {alias!r}, which is not in "
                "settings.DATABASES",
                hint=f"one of: {', '.join(sorted(settings.DATABASES))}",
                id="coatcheck.E005",
            )
        ]
    return []


def _shown(url: str) -> str:
    """The URL without its password, for a message that may end up in a CI log."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        credentials, _, host = rest.partition("@")
        user = credentials.split(":", 1)[0]
        return repr(f"{scheme}://{user}:***@{host}" if ":" in credentials else url)
    return repr(url)
