"""The examples of docs/testing.md run as written: the FastAPI app and its two tests are
written to files and run by pytest in a fresh interpreter (as a reader would run them),
and the development-cookie block is executed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "testing.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks() -> dict[str, str]:
    """The doc's Python blocks, by the file name of their first comment line (or their
    position, for a block that names none)."""
    found: dict[str, str] = {}
    for i, code in enumerate(BLOCK.findall(DOC.read_text())):
        first = code.splitlines()[0]
        match = re.match(r"# (\w+\.py):", first)
        found[match.group(1) if match else f"block{i}"] = code
    return found


def test_the_fastapi_app_and_its_tests_pass(tmp_path: Path) -> None:
    code = blocks()
    for name in ("app.py", "test_app.py", "test_app_httpx.py"):
        (tmp_path / name).write_text(code[name])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_development_cookie_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # its store is sqlite:///sessions.db, in the current directory
    (dev,) = [c for c in blocks().values() if "secure=False" in c]
    namespace: dict[str, object] = {}
    exec(compile(dev, str(DOC), "exec"), namespace)  # noqa: S102 - the doc's own example
    manager = namespace["manager"]
    cookie = manager.transport  # type: ignore[attr-defined]
    assert cookie.name == "session" and cookie.secure is False
    manager.mode.store.close()  # type: ignore[attr-defined]
