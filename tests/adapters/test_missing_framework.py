"""Importing an adapter without its framework names the extra that installs it.

Each case runs in a fresh interpreter in which the framework's module is blocked
(`sys.modules[name] = None`, which makes `import name` raise `ModuleNotFoundError` as if
it were not installed): this process has every framework imported already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
try:
    import {module}
except ImportError as exc:
    print(json.dumps({{"type": type(exc).__name__, "message": str(exc), "name": exc.name}}))
else:
    print(json.dumps(None))
"""


def import_without(module: str, *blocked: str) -> dict[str, str] | None:
    """What importing `module` raises while `blocked` modules are missing (None: nothing)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, blocked=blocked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    error: dict[str, str] | None = json.loads(result.stdout)
    return error


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("coatcheck.adapters.flask", ("flask",), "flask"),
        ("coatcheck.adapters.flask", ("werkzeug",), "flask"),
        ("coatcheck.adapters.fastapi", ("fastapi",), "fastapi"),
        ("coatcheck.adapters.fastapi", ("starlette", "fastapi"), "fastapi"),
        ("coatcheck.adapters.django", ("django",), "django"),
    ],
)
def test_missing_framework_names_the_extra(
    module: str, blocked: tuple[str, ...], extra: str
) -> None:
    error = import_without(module, *blocked)
    assert error is not None, f"{module} imported without {blocked}"
    assert error["type"] == "ModuleNotFoundError"  # an ImportError, as before
    assert f"pip install 'coatcheck[{extra}]'" in error["message"]
    assert error["name"].split(".")[0] in blocked  # which module is missing, for code


@pytest.mark.parametrize("module", ["coatcheck.adapters.starlette", "coatcheck.adapters.asgi"])
def test_pure_asgi_adapters_need_no_framework(module: str) -> None:
    """The Starlette drop-in and the ASGI middleware are pure ASGI: they import (and work)
    without Starlette, so there is no extra to name."""
    assert import_without(module, "starlette", "fastapi") is None
