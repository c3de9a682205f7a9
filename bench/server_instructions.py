"""Instructions per request inside the HTTP server: end to end, without the noise.

`bench/end_to_end.py` measures req/s with wrk, which the machine's other load disturbs.
This counts what the same uvicorn process (`bench/e2e_app.py`, `--loop asyncio --http
h11`) executes per request, with `valgrind --tool=callgrind`: every implementation in
its own server under callgrind, driven over one keep-alive connection by a client that
keeps the latest `Set-Cookie`, as a browser does (the client runs outside valgrind and is
not counted). For each scenario: `--warmup` requests, callgrind's counters dumped and
discarded, `--requests` requests, dumped again; the second dump over `--requests` is the
figure. Everything the server does per request is in it: h11 parsing the request and
validating each response header, asyncio, Starlette, the session layer.

The server is CPU-bound under wrk (`end_to_end.py` reports ~100% of its CPU), so the
peer's instructions per request over coatcheck's approximate the req/s ratio without
another process's noise; it does not see cache misses or system calls (CPU time does).

    .venv-compiled/bin/python bench/server_instructions.py            # ~5 min
    .venv-compiled/bin/python bench/server_instructions.py --only bare,coatcheck-memory \\
        --scenarios new --requests 100

Checks, as end_to_end.py's: /seed and /new set a cookie, /read answers 200 with the
seeded session, /write counts up by one each time; any failure stops the run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))
from e2e_app import FLOORS, IMPLS  # noqa: E402
from end_to_end import FLOOR_OF, LABELS, MINIMAL_OF, RATIOS, SCENARIOS, uvicorn_command  # noqa: E402
from peers import coatcheck_build  # noqa: E402
from servers import free_port, running_redis  # noqa: E402

BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.5",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "same-origin",
}


class Browser:
    """One keep-alive connection with a cookie jar (the latest value of each cookie)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.jar: dict[str, str] = {}

    def get(self, path: str) -> tuple[int, str, bool]:
        headers = dict(BROWSER_HEADERS)
        if self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        self.connection.request("GET", path, headers=headers)
        response = self.connection.getresponse()
        body = response.read().decode()
        set_cookies = response.headers.get_all("set-cookie") or []
        for header in set_cookies:
            name, _, rest = header.partition("=")
            self.jar[name.strip()] = rest.split(";", 1)[0]
        return response.status, body, bool(set_cookies)


class Counted:
    """`impl`'s uvicorn under callgrind; `dump()` returns the instructions since the last."""

    def __init__(self, impl: str, tmp: Path, env: dict[str, str], loop: str, parser: str) -> None:
        self.port = free_port()
        self.out = tmp / f"{impl}.cg"
        self.log = tmp / f"{impl}.log"
        self.dumps = 0
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.out}",
            *uvicorn_command(self.port, loop, parser),
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, **env, "E2E_IMPL": impl}, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{impl}: the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=1).connect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{impl}: no server after 180 s") from None
                time.sleep(0.5)

    def dump(self) -> int:
        subprocess.run(
            ["callgrind_control", "--dump", str(self.process.pid)],
            check=True,
            capture_output=True,
        )
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 60
        while not (path.exists() and b"\ntotals:" in path.read_bytes()):
            if time.monotonic() > deadline:
                raise SystemExit(f"callgrind wrote no {path}")
            time.sleep(0.1)
        found = re.search(rb"^summary: (\d+)", path.read_bytes(), re.MULTILINE)
        assert found is not None
        return int(found.group(1))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def count(impl: str, scenario: str, args: argparse.Namespace, server: Counted) -> float:
    """Instructions per `scenario` request in `server`, after the checks."""
    browser = Browser(server.port)
    plain = impl == "bare" or impl in FLOORS
    path = f"/{scenario}"
    if scenario != "new":
        status, _, cookie = browser.get("/seed")
        if status != 200 or not (cookie or impl == "bare"):
            raise SystemExit(f"{impl}: /seed answered {status}, cookie set: {cookie}")
    counter = 0

    def one() -> None:
        nonlocal counter
        if scenario == "new":
            browser.jar.clear()
        status, body, cookie = browser.get(path)
        if status != 200:
            raise SystemExit(f"{impl} {path}: {status} {body!r}")
        if scenario == "new" and not cookie and impl != "bare":
            raise SystemExit(f"{impl} /new set no cookie")
        if scenario == "write" and not plain:
            if int(body) != counter + 1:
                raise SystemExit(f"{impl} /write: {body} after {counter}: cookie not kept")
            counter = int(body)

    for _ in range(args.warmup):
        one()
    server.dump()
    for _ in range(args.requests):
        one()
    per_request = server.dump() / args.requests
    browser.connection.close()
    return per_request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated implementations: " + ", ".join(IMPLS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--warmup", type=int, default=50, help="requests before counting")
    parser.add_argument("--requests", type=int, default=300, help="requests counted")
    parser.add_argument("--loop", default="asyncio", help="uvicorn's --loop (asyncio, uvloop)")
    parser.add_argument("--http", default="h11", help="uvicorn's --http (h11, httptools)")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    impls = IMPLS if not args.only else tuple(args.only.split(","))
    scenarios = tuple(args.scenarios.split(","))
    if "bare" not in impls:
        impls = ("bare", *impls)
    started = time.perf_counter()
    counts: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="server-instr-") as tmp_name:
        tmp = Path(tmp_name)
        needs_redis = any(i.endswith("-redis") for i in impls)
        with running_redis() if needs_redis else nullcontext() as redis_server:
            env = {
                "E2E_SQLITE": str(tmp / "sessions.db"),
                "E2E_REDIS": redis_server.url if redis_server else "",
            }
            for impl in impls:
                server = Counted(impl, tmp, env, args.loop, args.http)
                try:
                    counts[impl] = {s: count(impl, s, args, server) for s in scenarios}
                finally:
                    server.stop()
                print(
                    f"{impl:22}"
                    + "".join(f" {s} {counts[impl][s] / 1000:8.1f}k" for s in scenarios),
                    file=sys.stderr,
                )
    text = report(args, impls, scenarios, counts, time.perf_counter() - started, argv)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


def report(
    args: argparse.Namespace,
    impls: Sequence[str],
    scenarios: Sequence[str],
    counts: dict[str, dict[str, float]],
    elapsed: float,
    argv: Sequence[str] | None,
) -> str:
    given = " ".join(list(argv) if argv is not None else sys.argv[1:])
    interpreter = os.path.relpath(sys.executable, ROOT)
    bare = counts["bare"]
    lines = [
        f"# Instructions per request in the server (uvicorn, {args.loop} + {args.http}; callgrind)",
        "",
        f"Command: `{' '.join([interpreter, 'bench/server_instructions.py', given]).strip()}`",
        "",
        f"- {coatcheck_build()}; Python {sys.version.split()[0]}; took {elapsed:.0f} s",
        f"- {args.warmup} warm-up requests, then {args.requests} counted, per scenario, on "
        "one keep-alive connection with a cookie jar",
        "",
        "## Per request, k instructions: the whole request, and over the bare app",
        "",
        "| implementation | " + " | ".join(f"{s} | {s} − bare" for s in scenarios) + " |",
        "|---|" + "---:|---:|" * len(scenarios),
    ]
    for impl in impls:
        cells = []
        for s in scenarios:
            cells += [f"{counts[impl][s] / 1000:.1f}", f"{(counts[impl][s] - bare[s]) / 1000:.1f}"]
        lines.append(f"| {LABELS[impl]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Ratios",
        "",
        "The peer's instructions per whole request over coatcheck's: what the req/s ratio "
        "is when the server is CPU-bound (target ≥ 1.2). In brackets, coatcheck's "
        "instructions over the bare app divided by the peer's. A *ceiling* row is the bare "
        "app's ratio (a layer costing nothing); a *floor* row the ratio of the bare app "
        "sending coatcheck's headers and doing nothing else; a *least* row the ratio of the "
        "hand-written layer that does only what coatcheck's security defaults require "
        "(`bench/minimal.py`).",
        "",
        "| ratio | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    shown: set[tuple[str, str]] = set()
    for first, second, target in RATIOS:
        if first not in counts or second not in counts:
            continue
        rows = [(f"{first} / {second}", first)]
        for impl, kind in (
            ("bare", "ceiling"),
            (FLOOR_OF.get(first, ""), "floor"),
            (MINIMAL_OF.get(first, ""), "least"),
        ):
            if impl in counts and (impl, second) not in shown:
                shown.add((impl, second))
                rows.append((f"*{kind}: {impl} / {second}*", impl))
        for label, impl in rows:
            cells = []
            for s in scenarios:
                whole = counts[second][s] / counts[impl][s]
                over = counts[impl][s] - bare[s]
                peer_over = counts[second][s] - bare[s]
                mark = " ✓" if impl == first and target and whole >= target else ""
                mark = " ✗" if impl == first and target and whole < target else mark
                cells.append(f"{whole:.2f}{mark} ({over / peer_over:.2f})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
