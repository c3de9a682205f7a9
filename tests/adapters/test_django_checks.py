"""`manage.py check` validates `settings.COATCHECK`: each misconfiguration is one clear
`Error` with its id and a hint, at deploy time, not a 500 at the first request. Checked
through Django's own `run_checks` and `call_command("check")`, and once through a real
`manage.py check` in a subprocess (the missing extra: a package that cannot be imported
there)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.core.checks import Error, run_checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import SystemCheckError  # noqa: E402
from django.test import override_settings  # noqa: E402

from coatcheck import Lifetimes, ServerSide, SessionManager  # noqa: E402
from coatcheck.adapters.django.checks import check_settings  # noqa: E402
from coatcheck.stores import MemoryStore  # noqa: E402


def errors(config: Any) -> list[Error]:
    with override_settings(COATCHECK=config):
        found = run_checks(tags=["coatcheck"])
    assert all(isinstance(e, Error) for e in found)
    return list(found)  # type: ignore[arg-type]


def one(config: Any, id: str) -> Error:
    found = errors(config)
    assert [e.id for e in found] == [id], [str(e) for e in found]
    return found[0]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"store": "django"},
        {"store": "django://default"},
        {"store": "memory://"},
        {"store": "redis://localhost:6379/0"},  # not reached: check needs no server
        {"store": "postgresql://app:secret@localhost/db?max_connections=5"},
        {"store": "sqlite:///sessions.db", "lifetimes": {"idle": 600}},
        {"store": MemoryStore()},
        {"lifetimes": Lifetimes(idle=3600), "import_from": "django.contrib.sessions.backends.db"},
        {"manager": SessionManager(ServerSide(MemoryStore()))},
    ],
)
def test_a_valid_configuration_passes(config: Any) -> None:
    assert errors(config) == []


def test_no_coatcheck_setting_passes() -> None:
    with override_settings(COATCHECK={}):
        del settings.COATCHECK
        assert check_settings() == []


def test_not_a_dict_is_e001() -> None:
    error = one("redis://localhost", "coatcheck.E001")
    assert "must be a dict, not str" in error.msg


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("stroe", "'store'"), ("lifetime", "'lifetimes'"), ("importfrom", "'import_from'")],
)
def test_a_typo_is_e002_and_names_the_close_match(key: str, suggestion: str) -> None:
    error = one({key: "x"}, "coatcheck.E002")
    assert repr(key) in error.msg
    assert error.hint == f"did you mean {suggestion}?"


def test_an_unknown_key_with_no_close_match_lists_the_known_ones() -> None:
    error = one({"colour": "blue"}, "coatcheck.E002")
    assert error.hint is not None and "store" in error.hint and "import_from" in error.hint


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mongodb://host/db", "unknown store URL scheme 'mongodb://'"),
        ("sqlite://relative.db", "three slashes"),
        ("django://default/extra", "names only a database alias"),
        ("http://[::1", "not a valid URL"),
        ("redis://localhost:6379/0?max_connections=none", "not a whole number"),
    ],
)
def test_a_bad_store_url_is_e003(url: str, says: str) -> None:
    error = one({"store": url}, "coatcheck.E003")
    assert says in error.msg


def test_a_store_url_never_shows_its_password() -> None:
    error = one({"store": "mongodb://app:hunter2@db/sessions"}, "coatcheck.E003")
    assert "hunter2" not in error.msg and "app:***@db" in error.msg


def test_an_unknown_database_alias_is_e005() -> None:
    error = one({"store": "django://replica"}, "coatcheck.E005")
    assert "'replica'" in error.msg and error.hint == "one of: default"


def test_an_engine_coatcheck_cannot_import_from_is_e006() -> None:
    error = one({"import_from": "django.contrib.sessions.backends.redis"}, "coatcheck.E006")
    assert "django.contrib.sessions.backends.signed_cookies" in error.msg


def test_importing_from_the_db_engine_without_its_app_is_e008() -> None:
    apps = [a for a in settings.INSTALLED_APPS if a != "django.contrib.sessions"]
    config = {"import_from": "django.contrib.sessions.backends.db"}
    with override_settings(INSTALLED_APPS=apps, COATCHECK=config):
        [error] = check_settings()
    assert error.id == "coatcheck.E008"
    assert "django.contrib.sessions" in (error.hint or "")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"lifetimes": {"idle": -5}}, "Lifetimes.idle"),
        ({"lifetimes": {"idel": 5}}, "idel"),
        ({"lifetimes": "30m"}, "must be a Lifetimes or a dict"),
        ({"manager": "no.such.module.manager"}, "no.such.module"),
        ({"manager": SessionManager(ServerSide(MemoryStore())), "store": "memory://"}, "excludes"),
        ({"store": 42}, "takes a store or a URL"),
    ],
)
def test_any_other_refused_setting_is_e007(config: dict[str, Any], says: str) -> None:
    error = one(config, "coatcheck.E007")
    assert says in error.msg


def test_call_command_check_fails_with_every_error() -> None:
    with override_settings(COATCHECK={"stroe": "x", "store": "mongodb://h"}):
        with pytest.raises(SystemCheckError) as failure:
            call_command("check")
    text = str(failure.value)
    assert "coatcheck.E002" in text and "did you mean 'store'?" in text
    assert "coatcheck.E003" in text


PROJECT = """
SECRET_KEY = "test-only"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "coatcheck.adapters.django"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "coatcheck.adapters.django"
COATCHECK = {"store": "redis://localhost:6379/0"}
"""
MANAGE = """
import sys
sys.modules["redis"] = None  # as if the redis extra were not installed
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", *sys.argv[1:]])
"""


def test_manage_py_check_names_the_extra_to_install_when_it_is_missing(tmp_path: Path) -> None:
    (tmp_path / "project_settings.py").write_text(textwrap.dedent(PROJECT))
    (tmp_path / "manage.py").write_text(textwrap.dedent(MANAGE))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project_settings", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "coatcheck.E004" in result.stderr
    assert "pip install 'coatcheck[redis]'" in result.stderr
    assert "Traceback" not in result.stderr
