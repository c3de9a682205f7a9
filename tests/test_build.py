"""Which build of coatcheck these tests run against: the compiled core or pure Python.

CI runs the suite twice: on the editable install (pure Python) and on the compiled wheel
with `COATCHECK_EXPECT_COMPILED=1`. These checks hold in both legs, so a leg that tests
the wrong build (the source tree shadowing the wheel, a wheel built without the hook, a
module dropped from the hook's list) fails instead of passing on the other build.
"""

from __future__ import annotations

import importlib
import os
import re
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from pathlib import Path

import pytest

import coatcheck
from coatcheck import RequestInfo, Session, SessionManager
from coatcheck.plans import Opening

EXPECT_COMPILED = os.environ.get("COATCHECK_EXPECT_COMPILED") == "1"

#: The modules the build hook compiles (pyproject.toml, `hooks.mypyc.include`).
COMPILED = (
    "adapters.asgi",
    "audit",
    "clientside",
    "csrf",
    "drivers",
    "ids",
    "keys",
    "manager",
    "plans",
    "records",
    "request",
    "responses",
    "revocation",
    "serverside",
    "session",
    "stores.memory",
    "stores.resp",
    "tokens",
    "transports",
)
#: Core modules that stay Python in every build (see each module's docstring).
ALWAYS_PURE = ("_fast", "_mypyc", "_protocols", "lifetimes")


def _is_extension(module_name: str) -> bool:
    module = importlib.import_module(f"coatcheck.{module_name}")
    path = module.__file__ or ""
    if path.endswith(tuple(EXTENSION_SUFFIXES)):
        assert isinstance(module.__loader__, ExtensionFileLoader)
        return True
    assert path.endswith(".py"), path
    return False


@pytest.mark.parametrize("module_name", COMPILED)
def test_core_module_is_compiled_exactly_when_expected(module_name: str) -> None:
    assert _is_extension(module_name) is EXPECT_COMPILED


@pytest.mark.parametrize("module_name", ALWAYS_PURE)
def test_uncompiled_modules_stay_python(module_name: str) -> None:
    assert _is_extension(module_name) is False


def test_compiled_flag_tells_the_build() -> None:
    assert coatcheck.compiled is EXPECT_COMPILED


def test_the_hook_compiles_the_listed_modules() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    hook = pyproject.read_text().split("[tool.hatch.build.targets.wheel.hooks.mypyc]")[1]
    include = re.search(r"^include = \[(.*?)^\]", hook, re.MULTILINE | re.DOTALL)
    assert include is not None
    listed = re.findall(r'"/src/coatcheck/([\w/]+)\.py"', include.group(1))
    assert sorted(name.replace("/", ".") for name in listed) == list(COMPILED)


def test_an_interpreted_subclass_of_the_manager_overrides_compiled_calls() -> None:
    """`SessionManager` allows interpreted subclasses (compiled, a `mypyc_attr` through
    the `_mypyc` shim); a compiled method calling `self.open` reaches the override."""
    seen: list[str | None] = []

    class Counting(SessionManager):
        def open(self, request: RequestInfo, secret: str | None = None) -> Opening:
            seen.append(secret)
            return super().open(request, secret)

    manager = Counting()
    session = manager.anonymous(RequestInfo(method="GET", headers=[], host="example.test"))
    assert seen == [""]
    assert isinstance(session, Session)


def test_the_classes_documented_as_subclassable_are() -> None:
    """docs/operating.md: besides `SessionManager` and `Cookie`, the memory stores and the
    ASGI middleware allow interpreted subclasses when compiled (`mypyc_attr`)."""
    from coatcheck.adapters.asgi import SessionMiddleware
    from coatcheck.stores.memory import MemoryRevocationStore, MemoryStore

    class Store(MemoryStore):
        pass

    class Revocations(MemoryRevocationStore):
        pass

    class Middleware(SessionMiddleware):
        pass

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    assert isinstance(Store(), MemoryStore)
    assert isinstance(Revocations(), MemoryRevocationStore)
    assert Middleware(app, SessionManager()).manager is not None


def test_the_installed_distribution_carries_the_license_and_project_urls() -> None:
    """What the package index shows and ships, read from the installed metadata: holds for
    the editable install and for the wheel alike (scripts/check-dist checks dist/)."""
    from importlib.metadata import distribution

    dist = distribution("coatcheck")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    licenses = [file for file in dist.files or () if file.name == "LICENSE"]
    assert len(licenses) == 1
    assert "BSD 3-Clause License" in licenses[0].read_text()
    assert "The coatcheck developers" in licenses[0].read_text()
    urls = dict(url.split(", ", 1) for url in dist.metadata.get_all("Project-URL") or ())
    assert set(urls) == {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
