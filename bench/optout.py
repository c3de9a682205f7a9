"""What per-route opt-out costs, in instructions per request (valgrind callgrind, the same
(N requests) - (0 requests) method as `asgi_instructions.py`), through a Starlette app
with routes (Starlette's routing included), a browser's session cookie on every request:

  bare            the app alone, GET /healthz
  bare-mark       the app alone, GET /marked (Starlette matches 4 routes, not 2)
  excluded-path   coatcheck's middleware, exclude=[4 specs], GET /healthz (excluded)
  excluded-mark   coatcheck's middleware, GET /marked (an `@no_session` endpoint)
  plain-read      coatcheck's middleware, no exclude, GET / (reads the session)
  exclude-read    coatcheck's middleware, exclude=[4 specs] and a marked route, GET /
                  (not excluded: the path test and the marked-route pre-test, then as
                  plain-read)

    .venv/bin/python bench/optout.py --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from typing import Any

CASES = ("bare", "bare-mark", "excluded-path", "excluded-mark", "plain-read", "exclude-read")
HEADERS = [
    (b"host", b"app.example"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
]


def build(case: str) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware, no_session
    from coatcheck.stores import MemoryStore

    async def page(request: Request) -> Response:
        session = request.scope.get("session")
        if session.__class__.__name__ == "Session":
            session.get("user")
            if "user" not in session:
                session["user"] = "ada"
        return PlainTextResponse("ok")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def marked(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/items/{item}", healthz),
        Route("/marked", no_session(marked) if case != "plain-read" else marked),
    ]
    if case.startswith("bare"):
        return Starlette(routes=routes)
    exclude: list[Any] = []
    if case in ("excluded-path", "exclude-read"):
        exclude = ["/healthz", "/static/", re.compile(r"^/assets/.*\.js$"), "/favicon.ico"]
    manager = SessionManager(ServerSide(MemoryStore()))
    middleware = Middleware(SessionMiddleware, manager=manager, exclude=exclude)
    return Starlette(routes=routes, middleware=[middleware])


def run(case: str, requests: int) -> None:
    app = build(case)
    path = {
        "bare": "/healthz",
        "bare-mark": "/marked",
        "excluded-path": "/healthz",
        "excluded-mark": "/marked",
    }
    cookies: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def capture(message: Any) -> None:
        if message["type"] == "http.response.start":
            cookies.extend(v for k, v in message.get("headers", ()) if k == b"set-cookie")

    def scope(target: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": target,
            "raw_path": target.encode(),
            "root_path": "",
            "query_string": b"",
            "scheme": "https",
            "server": ("app.example", 443),
            "client": ("203.0.113.7", 52814),
            "headers": headers,
            "http_version": "1.1",
        }

    async def main() -> None:
        await app(scope("/", list(HEADERS)), receive, capture)  # seeds a session
        headers = list(HEADERS)
        if cookies:
            headers.append((b"cookie", b"_ga=GA1.1.1.1; " + cookies[0].split(b";")[0]))
        target = path.get(case, "/")
        for _ in range(requests):
            await app(scope(target, headers), receive, capture)

    asyncio.run(main())


def count(case: str, requests: int) -> int:
    totals = []
    for n in (0, requests):
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
            + [__file__, "--run", case, "--requests", str(n)],
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--only", nargs="*", choices=CASES)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args()
    if args.run:
        run(args.run, args.requests)
        return
    print("| case | instructions per request (thousands) |\n|---|---:|")
    for case in args.only or CASES:
        run(case, 1)  # byte-code caches written outside the count
        print(f"| {case} | {count(case, args.requests) / 1000:.1f} |", flush=True)


if __name__ == "__main__":
    main()
