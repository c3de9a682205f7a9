"""Instructions per request of session middlewares, counted by valgrind: deterministic where
wall-clock and CPU time on a shared machine are not.

Each (implementation, scenario) runs twice under `valgrind --tool=callgrind`: once with 0
requests and once with `--requests` requests; the difference divided by the request count
is the cost of one request (start-up, imports and set-up cancel out). Requests go straight
through ASGI, without Starlette's routing, to a bare ASGI endpoint:

  read   cookie present, the endpoint reads the session's 5 small keys, changes nothing
  write  cookie present, the endpoint sets one key (a new value every request)
  new    no cookie, the endpoint sets one key: a new visitor's session is created

Implementations: `bare` (the endpoint with a plain dict), `starsessions` (starsessions 2 with
its `InMemoryStore`), `coatcheck-memory` and `coatcheck-sqlite` (the ASGI middleware on
`MemoryStore` / `SQLiteStore` in a temporary file). Overhead = implementation - bare.

    .venv/bin/python bench/asgi_instructions.py             # all 12 runs (~6 min, 1 core)
    .venv/bin/python bench/asgi_instructions.py --only coatcheck-memory:read --requests 500
    PYTHONPATH=../other/src .venv/bin/python bench/asgi_instructions.py   # another tree

Needs `valgrind` on the PATH. One request is also run once, outside valgrind, first, so that
byte-code caches are written before counting.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

IMPLS = ("bare", "starsessions", "coatcheck-memory", "coatcheck-sqlite")
SCENARIOS = ("read", "write", "new")
HEADERS = [
    (b"host", b"app.example"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"same-origin"),
]
SEED = {
    "user_id": 4217,
    "theme": "dark",
    "lang": "en-GB",
    "cart": [3, 14, 15],
    "flash": "Welcome back!",
}

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
_counter = itertools.count()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY = {"type": "http.response.body", "body": b"ok"}


def endpoint(scenario: str) -> ASGIApp:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        if scenario == "read":
            for key in SEED:
                session[key]
        elif scenario == "write":
            session["counter"] = next(_counter)
        elif scenario == "new":
            session["visits"] = 1
        else:  # seed
            session.update(SEED)
        await send(dict(START, headers=list(START["headers"])))
        await send(dict(BODY))

    return app


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def drop(message: Message) -> None:
    return None


def build(impl: str, scenario: str, tmp: str) -> tuple[ASGIApp, ASGIApp]:
    """The app for `impl` and `scenario`, and the app that seeds a session for it."""
    if impl == "bare":

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            scope["session"] = dict(SEED)
            await endpoint(scenario)(scope, receive, send)

        return bare, bare
    if impl == "starsessions":
        from starsessions import InMemoryStore, SessionAutoloadMiddleware, SessionMiddleware

        store = InMemoryStore()
        return tuple(  # type: ignore[return-value]
            SessionMiddleware(SessionAutoloadMiddleware(endpoint(s)), store=store)
            for s in (scenario, "seed")
        )
    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware as Coatcheck
    from coatcheck.stores import MemoryStore, SQLiteStore

    backend = MemoryStore() if impl == "coatcheck-memory" else SQLiteStore(f"{tmp}/s.db")
    manager = SessionManager(ServerSide(backend))
    return Coatcheck(endpoint(scenario), manager=manager), Coatcheck(endpoint("seed"), manager)


def run(impl: str, scenario: str, requests: int) -> None:
    """Seed a session, then serve `requests` requests of `scenario` (inside valgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        app, seed = build(impl, scenario, tmp)
        base = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "scheme": "https",
            "client": ("203.0.113.7", 52814),
        }
        cookies: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookies.extend(v for k, v in message["headers"] if k == b"set-cookie")

        async def main() -> None:
            await seed(dict(base, headers=list(HEADERS)), receive, capture)
            headers = list(HEADERS)
            if scenario != "new" and impl != "bare":
                cookie = b"_ga=GA1.1.123456789.1700000000; " + cookies[0].split(b";")[0]
                headers.append((b"cookie", cookie))
            for _ in range(requests):
                await app(dict(base, headers=headers), receive, drop)

        asyncio.run(main())


def count(impl: str, scenario: str, requests: int) -> int:
    """Instructions of one request: (run of `requests`) - (run of 0), divided."""
    totals = []
    for n in (0, requests):
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--run",
                f"{impl}:{scenario}",
                "--requests",
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        assert found is not None, done.stderr[-2000:]
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--only", nargs="*", help="impl:scenario pairs (default: all)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args()
    if args.run:
        impl, scenario = args.run.split(":")
        run(impl, scenario, args.requests)
        return
    pairs = args.only or [f"{i}:{s}" for i in IMPLS for s in SCENARIOS]
    results: dict[str, dict[str, int]] = {}
    for pair in pairs:
        impl, scenario = pair.split(":")
        run(impl, scenario, 1)  # write byte-code caches outside the count
        results.setdefault(impl, {})[scenario] = count(impl, scenario, args.requests)
        print(f"{pair}: {results[impl][scenario]} instructions/request", flush=True)
    bare = results.get("bare", {})
    print("\n| implementation | " + " | ".join(SCENARIOS) + " |")
    print("|---|" + "---:|" * len(SCENARIOS))
    for impl, row in results.items():
        cells = []
        for s in SCENARIOS:
            if s not in row:
                cells.append("")
            elif impl != "bare" and s in bare:
                cells.append(f"{row[s] / 1000:.1f}k (+{(row[s] - bare[s]) / 1000:.1f}k)")
            else:
                cells.append(f"{row[s] / 1000:.1f}k")
        print(f"| {impl} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
