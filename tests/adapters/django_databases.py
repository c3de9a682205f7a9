"""Django databases added to the test project at run time, for `DjangoStore` and the
tests of the Django engine on it: a SQLite file (threads of one test share it, which
Django's `:memory:` database does not allow) and a database on the throw-away PostgreSQL
server of `tests/servers.py`, whose port is only known once it runs.

`django.test.override_settings(DATABASES=...)` is not an option (Django warns that it
does not reconnect); `database()` adds an alias to `connections.settings` (the dict
`settings.DATABASES` is), migrates it, and removes it again, closing this thread's
connection. Threads a test starts close their own (`closing_connections`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections

__all__ = [
    "COATCHECK_MIDDLEWARE",
    "ClosingExecutor",
    "database",
    "migrate_default",
    "postgres_options",
    "sqlite_options",
]

#: The test project's middleware with coatcheck's in place of Django's session middleware.
COATCHECK_MIDDLEWARE = [
    "coatcheck.adapters.django.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

T = TypeVar("T")


def migrate_default(*users: str) -> None:
    """Migrate the default database and make sure `users` exist there."""
    from django.contrib.auth.models import User

    call_command("migrate", run_syncdb=True, verbosity=0)
    for name in users:
        User.objects.get_or_create(username=name)


def sqlite_options(path: str) -> dict[str, Any]:
    # A generous busy timeout: 8 contract writers on one file under a loaded machine.
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path, "OPTIONS": {"timeout": 30}}


def postgres_options(port: int, name: str = "postgres") -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }


@contextlib.contextmanager
def database(alias: str, options: dict[str, Any]) -> Iterator[str]:
    """`alias` in `DATABASES` for the block, with the coatcheck app's table migrated."""
    assert alias not in connections.settings, alias
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: {}, alias: dict(options)})
    connections.settings[alias] = configured[alias]
    try:
        call_command("migrate", "coatcheck", database=alias, verbosity=0)
        yield alias
    finally:
        connections[alias].close()
        with contextlib.suppress(AttributeError):
            del connections[alias]
        del connections.settings[alias]


def _closing(function: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()  # this worker thread's, as Django asks of own threads

    return run


class ClosingExecutor(ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose tasks close their thread's Django connections when
    they end, as Django asks of threads an application starts."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_closing(fn), *args, **kwargs)
