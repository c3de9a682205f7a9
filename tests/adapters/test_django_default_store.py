"""The Django engine's default store is the project's own database (`DjangoStore` on
`default`), not a `sessions.db` in whatever directory the server was started from; and
the engine runs end to end on `DjangoStore`, on SQLite and on PostgreSQL, with
`django.contrib.auth` on top."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from coatcheck import SessionAdmin  # noqa: E402
from coatcheck.adapters.django import get_manager  # noqa: E402
from coatcheck.adapters.django.config import build  # noqa: E402
from coatcheck.adapters.django.models import SessionRecord  # noqa: E402
from coatcheck.ids import handle_of  # noqa: E402
from coatcheck.stores.django import AsyncDjangoStore, DjangoStore  # noqa: E402
from servers import PostgresServer, postgres_server_fixture  # noqa: E402, F401

from .django_databases import COATCHECK_MIDDLEWARE, database, migrate_default, postgres_options  # noqa: E402

COOKIE = "sessionid"


@pytest.fixture(scope="module", autouse=True)
def migrated() -> None:
    migrate_default("ada")


@pytest.mark.parametrize("config", [{}, {"store": "django"}, {"store": "django://default"}])
def test_the_default_store_is_the_default_database(config: dict[str, str]) -> None:
    manager = build(config)
    store = manager.mode.store
    assert isinstance(store, DjangoStore) and store.alias == "default"
    assert isinstance(manager.mode.async_store, AsyncDjangoStore)


def test_without_coatcheck_settings_sessions_go_to_the_database_not_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with override_settings(COATCHECK={}, MIDDLEWARE=COATCHECK_MIDDLEWARE):
        del settings.COATCHECK  # absent, as in a project that never set it
        browser = Client()
        assert browser.get("/login/ada").status_code == 200
        assert browser.get("/whoami").json() == {"user": "ada"}
        key = str(browser.cookies[COOKIE].value)
        record = SessionRecord.objects.get(key=handle_of(key))
        assert record.user_id == str(User.objects.get(username="ada").pk)
        assert key.encode() not in bytes(record.data)  # only the handle and a hash
        assert browser.get("/logout").status_code == 200
        assert not SessionRecord.objects.filter(key=handle_of(key)).exists()
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def postgres_alias(postgres_server: PostgresServer) -> Iterator[str]:
    # Only the sessions there: users stay in `default`, as with a sessions-only database.
    with database("engine_postgres", postgres_options(postgres_server.port)) as alias:
        yield alias


@pytest.mark.service
def test_the_engine_on_postgres_through_djangos_connections(postgres_alias: str) -> None:
    config = {"store": f"django://{postgres_alias}"}
    with override_settings(COATCHECK=config, MIDDLEWARE=COATCHECK_MIDDLEWARE):
        browser = Client()
        browser.get("/set?key=cart&value=3")
        assert browser.get("/login/ada").status_code == 200  # (cycle_key: a rotate)
        key = str(browser.cookies[COOKIE].value)
        assert browser.get("/dump").json()["data"]["cart"] == "3"
        user = str(User.objects.get(username="ada").pk)
        listed = SessionAdmin(get_manager()).sessions(user)
        assert [info.id for info in listed] == [handle_of(key)]
        rows = SessionRecord.objects.using(postgres_alias).filter(user_id=user)
        assert [row.key for row in rows] == [handle_of(key)]
        assert not SessionRecord.objects.filter(key=handle_of(key)).exists()  # not `default`
