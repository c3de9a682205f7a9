"""Importing coatcheck does nothing but define things.

The core is sans-IO: it must be importable (and its manager constructible, see the stores'
tests) by a process that never runs an event loop, opens a database or starts a thread, and
cheaply, by every worker process and CLI call. So `import coatcheck` and
`import coatcheck.manager` load none of the modules that doing such things needs; the
stores import their drivers when one is built (`from_url`, `to_async`) or named.

Each check runs in a fresh interpreter: this process has long imported all of them.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

#: Modules whose presence after an import means something is ready to do I/O or run
#: concurrently at import time.
FORBIDDEN = ("asyncio", "sqlite3", "socket", "ssl", "threading")

_PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_by(module: str) -> list[str]:
    """The modules that `import module` loads in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@functools.cache
def loaded_by_dependencies() -> frozenset[str]:
    """What the required dependency imported with coatcheck loads on its own. On CPython
    3.10, `import orjson` imports `uuid`, whose `import platform` imports `subprocess` and
    with it `threading` (no thread is started; 3.11's and later `uuid` import neither):
    not coatcheck's to avoid, so it is not counted against coatcheck there."""
    return frozenset(imported_by("orjson"))


@pytest.mark.parametrize("module", ["coatcheck", "coatcheck.manager", "coatcheck.stores"])
def test_import_loads_no_event_loop_database_socket_or_threading(module: str) -> None:
    loaded = set(imported_by(module)) - loaded_by_dependencies()
    assert [name for name in FORBIDDEN if name in loaded] == []


def test_only_cpython_3_10_gets_threading_from_the_dependencies() -> None:
    """The allowance above is as narrow as the reason for it."""
    allowed = {"threading"} if sys.version_info < (3, 11) else set()
    assert {name for name in FORBIDDEN if name in loaded_by_dependencies()} <= allowed


def test_stores_import_their_backends_only_when_named() -> None:
    loaded = imported_by("coatcheck.stores")
    backends = ("memory", "sqlite", "redis", "postgres", "threaded", "feed")
    assert [name for name in backends if f"coatcheck.stores.{name}" in loaded] == []
