"""`DjangoStore` and its async twin on a Django project's own database: the store
contract on Django's SQLite backend (a file) and on PostgreSQL (the throw-away server of
`tests/servers.py`), then what only this store has: the migration's table, the URL, the
alias and vendor checks, failures as coatcheck's exceptions, and the caller's
transaction."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import django
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from adapters import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connections, transaction  # noqa: E402

from adapters.django_databases import (  # noqa: E402
    ClosingExecutor,
    database,
    postgres_options,
    sqlite_options,
)
from coatcheck.exceptions import ConfigurationError, StoreError, StoreUnavailable  # noqa: E402
from coatcheck.stores import (  # noqa: E402
    AsyncStore,
    Record,
    Store,
    from_url,
    revocations_for,
    to_async,
)
from coatcheck.stores.django import TABLE, AsyncDjangoStore, DjangoStore  # noqa: E402
from servers import PostgresServer, postgres_server_fixture  # noqa: E402, F401

from . import contract  # noqa: E402
from .contract import AsyncStoreContract, ManualClock, StoreContract  # noqa: E402


@pytest.fixture(autouse=True)
def closing_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's parallel writers are threads: each closes its own connection."""
    monkeypatch.setattr(contract, "ThreadPoolExecutor", ClosingExecutor)


@pytest.fixture(scope="module")
def sqlite_alias(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("django-store") / "db.sqlite3"
    with database("store_sqlite", sqlite_options(str(path))) as alias:
        yield alias


@pytest.fixture(scope="module")
def postgres_alias(postgres_server: PostgresServer) -> Iterator[str]:
    with database("store_postgres", postgres_options(postgres_server.port)) as alias:
        yield alias


def empty(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")  # noqa: S608


@pytest.fixture
def emptied_sqlite(sqlite_alias: str) -> str:
    """The SQLite alias with an empty table (emptied here: async fixtures may not query)."""
    empty(sqlite_alias)
    return sqlite_alias


@pytest.fixture
def emptied_postgres(postgres_alias: str) -> str:
    empty(postgres_alias)
    return postgres_alias


async def close_executor_connections() -> None:
    """Close the connections of the thread the async twin ran its queries on."""
    await sync_to_async(connections.close_all, thread_sensitive=True)()


# -- the contract ------------------------------------------------------------------------


class TestDjangoStoreOnSQLite(StoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, sqlite_alias: str, clock: ManualClock) -> Iterator[Store]:
        empty(sqlite_alias)
        yield DjangoStore(sqlite_alias, clock=clock)


class TestDjangoStoreOnSQLiteRealTime(StoreContract):
    @pytest.fixture
    def store(self, sqlite_alias: str) -> Iterator[Store]:
        empty(sqlite_alias)
        yield DjangoStore(sqlite_alias)


class TestAsyncDjangoStoreOnSQLite(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(self, emptied_sqlite: str, clock: ManualClock) -> AsyncIterator[AsyncStore]:
        store = to_async(DjangoStore(emptied_sqlite, clock=clock))
        assert isinstance(store, AsyncDjangoStore)
        yield store
        await store.aclose()
        await close_executor_connections()


@pytest.mark.service
class TestDjangoStoreOnPostgres(StoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, postgres_alias: str, clock: ManualClock) -> Iterator[Store]:
        empty(postgres_alias)
        yield DjangoStore(postgres_alias, clock=clock)


@pytest.mark.service
class TestDjangoStoreOnPostgresRealTime(StoreContract):
    @pytest.fixture
    def store(self, postgres_alias: str) -> Iterator[Store]:
        empty(postgres_alias)
        yield DjangoStore(postgres_alias)


@pytest.mark.service
class TestAsyncDjangoStoreOnPostgres(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(self, emptied_postgres: str, clock: ManualClock) -> AsyncIterator[AsyncStore]:
        store = AsyncDjangoStore(emptied_postgres, clock=clock)
        yield store
        await store.aclose()
        await close_executor_connections()


# -- this store's own ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "alias"),
    [("django://", "default"), ("django://store_sqlite", "store_sqlite"), ("DJANGO://x", "x")],
)
def test_from_url_names_the_alias(url: str, alias: str) -> None:
    store = from_url(url)
    assert isinstance(store, DjangoStore) and store.alias == alias
    twin = from_url(url, asynchronous=True)
    assert isinstance(twin, AsyncDjangoStore) and twin.sync.alias == alias


@pytest.mark.parametrize("url", ["django://default/x", "django://default?timeout=1", "django:///"])
def test_a_django_url_with_more_than_an_alias_is_refused(url: str) -> None:
    if url == "django:///":  # an empty alias is the default database
        assert isinstance(from_url(url), DjangoStore)
        return
    with pytest.raises(ConfigurationError, match="names only a database alias"):
        from_url(url)


def test_an_unknown_alias_says_so_on_first_use() -> None:
    store = DjangoStore("nowhere")  # constructing touches nothing
    with pytest.raises(ConfigurationError, match="'nowhere' is not in settings.DATABASES"):
        store.open()


def test_a_table_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigurationError, match="plain identifier"):
        DjangoStore(table="x; DROP TABLE users")


def test_the_migration_creates_the_table_with_its_indexes(sqlite_alias: str) -> None:
    connection = connections[sqlite_alias]
    with connection.cursor() as cursor:
        assert TABLE in connection.introspection.table_names(cursor)
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    indexed = {tuple(c["columns"]) for c in constraints.values() if c["index"]}
    assert {("expires_at",), ("user_id",)} <= indexed
    DjangoStore(sqlite_alias).open()


def test_a_database_without_the_migration_names_the_fix(tmp_path: Path) -> None:
    options = sqlite_options(str(tmp_path / "bare.sqlite3"))
    with database("bare", options):
        with connections["bare"].cursor() as cursor:
            cursor.execute(f"DROP TABLE {TABLE}")
        with pytest.raises(StoreError, match="manage.py migrate"):
            DjangoStore("bare").load("k")


def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    options = sqlite_options(str(tmp_path / "missing-directory" / "db.sqlite3"))
    connections.settings["unopenable"] = connections.configure_settings(
        {"default": {}, "unopenable": options}
    )["unopenable"]
    try:
        with pytest.raises(StoreUnavailable, match="'unopenable' failed"):
            DjangoStore("unopenable").load("k")
    finally:
        del connections.settings["unopenable"]


def test_an_unsupported_vendor_is_refused_on_first_use() -> None:
    connections.settings["dummy"] = connections.configure_settings(
        {"default": {}, "dummy": {"ENGINE": "django.db.backends.dummy"}}
    )["dummy"]
    try:
        with pytest.raises(ConfigurationError, match="supports SQLite and PostgreSQL"):
            DjangoStore("dummy").load("k")
    finally:
        del connections["dummy"]
        del connections.settings["dummy"]


def test_writes_inside_a_transaction_roll_back_with_it(sqlite_alias: str) -> None:
    """With `ATOMIC_REQUESTS`, a `cycle_key` in a failed view is undone with the view."""
    store = DjangoStore(sqlite_alias)
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert store.save(old, b"data", version=0, ttl=60, user="u")
    with pytest.raises(RuntimeError), transaction.atomic(using=sqlite_alias):
        assert store.rotate(old, new, b"moved", version=1, ttl=60, user="u")
        assert store.load(new) == Record(b"moved", 1)
        raise RuntimeError("the view failed")
    assert store.load(old) == Record(b"data", 1)
    assert store.load(new) is None


@pytest.mark.service
def test_postgres_rows_hold_bytes_and_the_user_index(postgres_alias: str) -> None:
    store = DjangoStore(postgres_alias)
    key, user = secrets.token_urlsafe(32), f"user-{secrets.token_hex(4)}"
    assert store.save(key, b"\x00\xff", version=0, ttl=60, user=user)
    with connections[postgres_alias].cursor() as cursor:
        cursor.execute(f"SELECT pg_typeof(data)::text, user_id FROM {TABLE} WHERE key = %s", [key])  # noqa: S608
        assert cursor.fetchone() == ("bytea", user)
    assert store.list_user(user) == [(key, Record(b"\x00\xff", 1))]


def test_the_migration_matches_the_model() -> None:
    """`makemigrations --check` exits non-zero if the model changed without a migration."""
    call_command("makemigrations", "coatcheck", check=True, dry_run=True, verbosity=0)


def test_there_is_no_revocation_store_for_a_django_url() -> None:
    """Client-side mode needs a revocation store; this backend has none (yet): it says
    so rather than failing later."""
    with pytest.raises(ConfigurationError, match="no revocation store for django:// URLs"):
        revocations_for("django://")


def test_outside_a_django_project_the_store_says_where_it_works() -> None:
    """The `coatcheck` command (or any script) without Django settings: a clear
    `ConfigurationError`, not Django's `ImproperlyConfigured` traceback."""
    code = (
        "from coatcheck.exceptions import ConfigurationError\n"
        "from coatcheck.stores import from_url\n"
        "try:\n"
        "    from_url('django://').load('k')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "manage.py coatcheck_sessions" in result.stdout
