"""Every ```python block in README.md and docs/**/*.md runs, so an example cannot rot.

Each Markdown file's blocks run in order in one namespace (a later block may use what an
earlier one defined), in a fresh temporary working directory, with `COATCHECK_KEYS` set to
a freshly generated key ring (the examples that call `KeyRing.from_env()` say to set it).
A block that cannot run on its own (it needs a running server, or it is a fragment of a
larger program) is marked by an HTML comment on the line before its fence, which renders
as nothing:

    <!-- not-run: needs a Redis server -->
    ```python
    ...
    ```

A marked block must still compile, and the marker must give a reason. Any unmarked block
that raises fails its file's test, with the traceback pointing at the Markdown line.
Files are found when the test runs, so a new page's blocks are covered without a change
here.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coatcheck.keys import generate_key

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the block's first line of code
    code: str
    skip_reason: str | None  # None: the block runs


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/, sorted."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def python_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The file's fenced Python blocks in order, with the `not-run` marker each carries."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        language = info.split()[0].lower() if info else ""
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence))
            and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        if language in PYTHON:
            indent = len(opening["indent"])
            code = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
            blocks.append(Block(path, index + 2, code, _marker(lines, index)))
        index = end + 1
    return blocks


def _marker(lines: list[str], fence_index: int) -> str | None:
    """The reason of a `<!-- not-run: reason -->` on the last non-blank line before the
    fence; None if there is none. A marker without a reason is an error."""
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous < 0:
        return None
    marked = MARKER.match(lines[previous])
    if marked is None:
        return None
    reason = marked["reason"].strip()
    if not reason:
        raise ValueError(f"line {previous + 1}: a not-run marker must say why")
    return reason


def run_blocks(blocks: list[Block]) -> dict[str, Any]:
    """Run the unmarked blocks in order in one namespace; compile the marked ones.

    The namespace is a module's, registered in `sys.modules` while the blocks run, since
    frameworks resolve a handler's annotations through its module (Litestar, FastAPI).
    """
    module = types.ModuleType("docs_example")
    sys.modules[module.__name__] = module
    try:
        for block in blocks:
            # Padding puts the code on its Markdown line numbers for tracebacks.
            source = "\n" * (block.line - 1) + block.code
            compiled = compile(source, str(block.path), "exec")
            if block.skip_reason is None:
                exec(compiled, module.__dict__)  # noqa: S102 - the project's own documentation
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COATCHECK_KEYS", generate_key())
    # An example may set logging up (a Litestar app configures the root logger when it is
    # built); the rest of the suite keeps the logging it had.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield tmp_path
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


FILES = [path for path in markdown_files() if python_blocks(path)]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_every_python_block_runs(path: Path, example_env: Path) -> None:
    run_blocks(python_blocks(path))


def test_the_docs_have_runnable_examples() -> None:
    """The discovery finds the pages it is meant to cover, and most of their blocks run."""
    names = {str(path.relative_to(ROOT)) for path in FILES}
    assert {"README.md", "docs/asgi.md", "docs/client-side.md", "docs/transports.md"} <= names
    blocks = [block for path in FILES for block in python_blocks(path)]
    running = [block for block in blocks if block.skip_reason is None]
    assert len(running) >= len(blocks) - len(running)


SAMPLE = """\
Intro.

```python
x = 1
```

<!-- not-run: needs a server -->

```py
raise RuntimeError("never run")
```

    ```python
    y = x + 1
    ```

````markdown
```python
z = 1
```
````

```sh
echo not python
```
"""


def test_extraction_finds_blocks_markers_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "sample.md"
    blocks = python_blocks(path, SAMPLE)
    assert [(b.line, b.code, b.skip_reason) for b in blocks] == [
        (4, "x = 1\n", None),
        (10, 'raise RuntimeError("never run")\n', "needs a server"),
        (14, "y = x + 1\n", None),
    ]
    assert run_blocks(blocks)["y"] == 2


def test_an_unmarked_failing_block_fails_at_its_markdown_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.md"
    text = "# Broken\n\n```python\nfrom coatcheck import Nothing\n```\n"
    with pytest.raises(ImportError) as raised:
        run_blocks(python_blocks(path, text))
    frames = [(frame.filename, frame.lineno) for frame in _frames(raised.value)]
    assert (str(path), 4) in frames


def test_a_marked_block_must_compile_and_give_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "marked.md"
    with pytest.raises(SyntaxError):
        run_blocks(python_blocks(path, "<!-- not-run: fragment -->\n```python\ndef (\n```\n"))
    with pytest.raises(ValueError, match="must say why"):
        python_blocks(path, "<!-- not-run: -->\n```python\nx = 1\n```\n")


def _frames(error: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(error.__traceback__))
