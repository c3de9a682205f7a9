"""The promised public surface, and an import that pulls in nothing optional."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import coatcheck

#: Web frameworks and optional dependencies. (orjson is absent on purpose: it is a core
#: dependency, chosen by `bench/codec.py`.)
FORBIDDEN = (
    "starlette",
    "fastapi",
    "flask",
    "django",
    "werkzeug",
    "redis",
    "psycopg",
    "psycopg_pool",
    "httpx",
    "joserfc",
    "jwt",
    "uvicorn",
    "anyio",
    "playwright",
)


def test_all_is_sorted_and_unique() -> None:
    assert coatcheck.__all__ == sorted(coatcheck.__all__)
    assert len(set(coatcheck.__all__)) == len(coatcheck.__all__)


@pytest.mark.parametrize("name", coatcheck.__all__)
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("coatcheck")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from coatcheck import {name}", namespace)  # noqa: S102 - a fixed, known name
    assert namespace[name] is getattr(coatcheck, name)


@pytest.mark.parametrize(
    "name",
    [
        "SessionManager",
        "Session",
        "ServerSide",
        "Cookie",
        "Header",
        "Lifetimes",
        "SessionAdmin",
        "AsyncSessionAdmin",
        "StoreUnavailable",
        "CSRFError",
        "RequestInfo",
        "KeyRing",
        "ClientSide",
    ],
)
def test_promised_names_are_exported(name: str) -> None:
    assert name in coatcheck.__all__


def test_promised_store_names() -> None:
    from coatcheck import stores

    for name in ("MemoryStore", "AsyncMemoryStore", "SQLiteStore", "AsyncSQLiteStore", "from_url"):
        assert name in stores.__all__ and hasattr(stores, name)


def test_exceptions_form_one_tree() -> None:
    from coatcheck import exceptions

    for name in exceptions.__all__:
        error = getattr(exceptions, name)
        assert issubclass(error, coatcheck.CoatcheckError)
        assert name in (exceptions.__doc__ or "")


def test_import_pulls_in_no_framework_or_optional_dependency() -> None:
    code = (
        "import json, sys\n"
        "import coatcheck, coatcheck.stores, coatcheck.drivers, coatcheck.admin\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = json.loads(out)
    assert "coatcheck" in modules
    loaded = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert loaded == []
    assert "pickle" not in modules
