"""Where one request's instructions go, function by function, for one implementation.

`bench/server_instructions.py` gives the total per request; this gives the profile behind
it. The app of `bench/e2e_app.py` (`E2E_IMPL` picks the session layer) is driven through
ASGI in one process, without an HTTP server, by a client that keeps the latest
`Set-Cookie`, as a browser does. It runs twice under `valgrind --tool=callgrind`: with 0
and with `--requests` measured requests (after 50 warm-up requests in both); the
difference over `--requests`, function by function (inclusive: a function with what it
calls), is one request's profile, start-up and imports cancelled out. With `--minus bare`
the same is taken of another implementation and subtracted from the total.

    .venv-compiled/bin/python bench/request_profile.py coatcheck-memory new
    .venv-compiled/bin/python bench/request_profile.py minimal-server new --requests 500
    .venv-compiled/bin/python bench/request_profile.py coatcheck-client read --grep coatcheck

Scenarios as in `bench/end_to_end.py`: `read` and `write` on a seeded session, `new` with no
cookie (every request creates a session). Needs `valgrind` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
]


def drive(scenario: str, requests: int) -> None:
    """Inside valgrind: 50 warm-up requests, then `requests` measured ones."""
    sys.path.insert(0, str(BENCH))
    from e2e_app import create_app
    from peers import http_scope

    app = create_app()
    jar: dict[str, str] = {}

    async def get(path: str) -> None:
        headers = list(HEADERS)
        if jar:
            cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
            headers.append((b"cookie", cookie.encode()))
        scope = http_scope(path, headers)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] != "http.response.start":
                return
            if message["status"] >= 400:
                raise SystemExit(f"{path} answered {message['status']}")
            for name, value in message["headers"]:
                if name == b"set-cookie":
                    key, _, rest = value.decode().partition("=")
                    jar[key] = rest.split(";", 1)[0]

        await app(scope, receive, send)

    async def run() -> None:
        if scenario != "new":
            await get("/seed")
        for _ in range(50 + requests):
            if scenario == "new":
                jar.clear()
            await get("/" + scenario)

    asyncio.run(run())


def profile(impl: str, scenario: str, requests: int, directory: str) -> dict[str, int]:
    """callgrind's inclusive instructions per function, for `requests` requests of `impl`."""
    out = os.path.join(directory, f"{impl}.{scenario}.{requests}.out")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            scenario,
            str(requests),
        ],
        env=dict(os.environ, E2E_IMPL=impl),
        check=True,
        capture_output=True,
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, int] = {}
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+)", line)
        if match:
            name = match.group(2).rsplit("/", 1)[-1]
            found[name] = found.get(name, 0) + int(match.group(1).replace(",", ""))
    return found


def per_request(impl: str, scenario: str, requests: int, directory: str) -> dict[str, float]:
    many = profile(impl, scenario, requests, directory)
    none = profile(impl, scenario, 0, directory)
    return {k: (many.get(k, 0) - none.get(k, 0)) / requests for k in many.keys() | none.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("impl", help="an E2E_IMPL of bench/e2e_app.py")
    parser.add_argument("scenario", choices=("read", "write", "new"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--minus", default="bare", help="the implementation to subtract")
    parser.add_argument("--grep", default="coatcheck|orjson|_hashopenssl|urandom|minimal")
    parser.add_argument("--top", type=int, default=40)
    if sys.argv[1:2] == ["--child"]:  # inside valgrind
        drive(sys.argv[2], int(sys.argv[3]))
        return
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        mine = per_request(args.impl, args.scenario, args.requests, directory)
        base = per_request(args.minus, args.scenario, args.requests, directory)
    total = mine.get("PROGRAM", 0.0)
    print(f"# {args.impl}, {args.scenario}: instructions per request (callgrind, inclusive)\n")
    print(
        f"- whole request: {total / 1000:.1f}k; {args.minus}: {base.get('PROGRAM', 0) / 1000:.1f}k"
    )
    print(f"- over {args.minus}: {(total - base.get('PROGRAM', 0)) / 1000:.1f}k\n")
    print("| k instructions | function |\n|---:|---|")
    pattern = re.compile(args.grep)
    shown = sorted(
        ((v, k) for k, v in mine.items() if pattern.search(k) and v >= 100), reverse=True
    )
    for value, name in shown[: args.top]:
        print(f"| {value / 1000:.1f} | `{name}` |")


if __name__ == "__main__":
    main()
