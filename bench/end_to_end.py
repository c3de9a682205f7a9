"""End-to-end throughput and latency over real HTTP: coatcheck against peer session libraries.

One Starlette app (`bench/e2e_app.py`) served by uvicorn (one process, pinned to one CPU)
and loaded by wrk (pinned to the other CPU) through `bench/e2e_wrk.lua`, once per session
implementation:

  bare                  the app alone (the views use one plain dict)
  starlette-cookie      Starlette's SessionMiddleware (signed cookie)
  starsessions-memory   starsessions 2 (SessionMiddleware + autoload), InMemoryStore
  starsessions-redis    the same on its RedisStore
  coatcheck-memory      coatcheck SessionMiddleware, ServerSide(MemoryStore())
  coatcheck-sqlite      ServerSide(SQLiteStore(<temp file>))
  coatcheck-redis       ServerSide("redis://...")
  coatcheck-client      ClientSide(KeyRing, store=None): a signed token, stateless
  floor-server          the bare app + the headers coatcheck-memory sends, as fixed bytes
  floor-client          the bare app + the headers coatcheck-client sends, as fixed bytes

A *floor* row is a `floor-` implementation's req/s over the peer's: the most a layer can
reach that sends coatcheck's response headers (`Set-Cookie`, `Vary`, `Cache-Control`,
which stay) and does nothing else, in this server.

Both Redis implementations use one throw-away `redis-server` (from tests/servers.py),
emptied before each server start and pinned to wrk's CPU, so the app's CPU is the app's.

Scenarios: every wrk connection is one browser with a session of its own (wrk runs one
thread per connection, and a thread's Lua state is that connection's cookie jar):
  read   the first request gets a seeded session (5 small keys), then each request reads them
  write  the same, then each request sets one key to a new value (the session's counter + 1)
  new    no cookie is ever sent: every request creates a session

Checks: each server start is checked with urllib first (a session cookie is set and sent
back, reads see the seed and fail without the cookie, writes count up); under load, the
Lua script counts non-2xx answers, responses that should set a cookie and did not, and
write counters that do not follow the one before (a stale or lost cookie). Any of these,
or an error in a server's log, is listed under "Problems" and the script exits with 1.

Method: `--repeats` rounds; each round starts every implementation's server in turn (the
order rotated by one each round), checks it, and runs each scenario (also rotated) for a
`--warmup` run then a `--duration` run. Tables give the median over rounds.

    .venv/bin/python bench/end_to_end.py                      # ~8-9 min on 2 cores
    .venv/bin/python bench/end_to_end.py --quick              # 1 round of 2 s runs, ~1.5 min
    .venv/bin/python bench/end_to_end.py --only coatcheck-memory,starsessions-memory \\
        --scenarios write --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))
from e2e_app import FLOORS, IMPLS  # noqa: E402
from peers import coatcheck_build, cpu_model  # noqa: E402
from servers import free_port, running_redis  # noqa: E402

SCENARIOS = ("read", "write", "new")
LABELS = {
    "bare": "bare Starlette app",
    "starlette-cookie": "Starlette `SessionMiddleware` (signed cookie)",
    "starsessions-memory": "starsessions 2, `InMemoryStore`",
    "starsessions-redis": "starsessions 2, `RedisStore`",
    "coatcheck-memory": "coatcheck server-side, `MemoryStore`",
    "coatcheck-sqlite": "coatcheck server-side, `SQLiteStore`",
    "coatcheck-redis": "coatcheck server-side, Redis (URL)",
    "coatcheck-client": "coatcheck client-side, JWS cookie, `store=None`",
    "floor-server": "bare app + coatcheck server-side's headers (fixed bytes)",
    "floor-client": "bare app + coatcheck client-side's headers (fixed bytes)",
    "minimal-server": "least server-side layer with coatcheck's defaults (bench/minimal.py)",
    "minimal-client": "least client-side layer with coatcheck's defaults (bench/minimal.py)",
}
# The floor- implementation that sends the same headers as a coatcheck one.
FLOOR_OF = {
    "coatcheck-memory": "floor-server",
    "coatcheck-sqlite": "floor-server",
    "coatcheck-redis": "floor-server",
    "coatcheck-client": "floor-client",
}
# The hand-written least layer with the same security defaults as a coatcheck one.
MINIMAL_OF = {"coatcheck-memory": "minimal-server", "coatcheck-client": "minimal-client"}
# (numerator, denominator, target): req/s ratios reported for each scenario.
RATIOS = (
    ("coatcheck-memory", "starsessions-memory", 1.2),
    ("coatcheck-client", "starlette-cookie", 1.2),
    ("coatcheck-redis", "starsessions-redis", 1.2),
    ("coatcheck-sqlite", "starsessions-memory", None),
)
LUA = BENCH / "e2e_wrk.lua"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0

Run = dict[str, float]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def server_options() -> tuple[str, str]:
    """uvicorn's `--loop` and `--http`: uvloop and httptools only if installed."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


# -- the server -----------------------------------------------------------------------------


def uvicorn_command(port: int, loop: str, http: str) -> list[str]:
    """uvicorn serving `e2e_app` on loopback `port` (the app reads E2E_IMPL)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH),
        "e2e_app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--http",
        http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]


class Server:
    """One uvicorn process serving `e2e_app` for `impl`, pinned to `cpu`."""

    def __init__(self, impl: str, cpu: int, env: dict[str, str], logfile: Path) -> None:
        self.impl = impl
        self.port = free_port()
        self.logfile = logfile
        command = ["taskset", "-c", str(cpu), *uvicorn_command(self.port, *server_options())]
        with open(logfile, "ab") as out:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **env, "E2E_IMPL": impl},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"{impl}: uvicorn exited with {self.process.returncode} at start:\n"
                    + logfile.read_text(errors="replace")[-3000:]
                )
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{impl}: uvicorn did not listen within {START_TIMEOUT:g} s")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# -- the check before the load ----------------------------------------------------------------


def get(url: str, cookie: str | None) -> tuple[int, str, list[str]]:
    """GET with an optional Cookie header: status, body and the Set-Cookie headers."""
    headers = {"Sec-Fetch-Site": "same-origin", "User-Agent": "end_to_end.py check"}
    if cookie is not None:
        headers["Cookie"] = cookie
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback, http)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return (
                response.status,
                response.read().decode(),
                response.headers.get_all("set-cookie") or [],
            )
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get_all("set-cookie") or []


def check(server: Server) -> str:
    """Fail loudly unless sessions work over plain HTTP the way the wrk script uses them.
    Returns the session cookie's attributes (for the report)."""
    impl, url = server.impl, server.url
    bare = impl == "bare" or impl in FLOORS  # a floor's cookie is fixed bytes: no session

    def fail(message: str) -> None:
        raise SystemExit(f"check failed for {impl}: {message}")

    status, _, cookies = get(f"{url}/seed", None)
    if status != 200 or len(cookies) != (0 if impl == "bare" else 1):
        fail(f"/seed answered {status} with {len(cookies)} Set-Cookie headers, want 200 and 1")
    if bare:
        for path, want in (("/read", "ok"), ("/new", "ok")):
            status, body, _ = get(url + path, None)
            if (status, body) != (200, want):
                fail(f"{path} answered {status} {body!r}")
        return ""
    name, _, rest = cookies[0].partition("=")
    value, _, attributes = rest.partition(";")
    if "secure" not in attributes.lower():
        fail(f"the session cookie is not Secure: {cookies[0]!r}")
    jar = f"{name}={value}"

    def keep(set_cookies: list[str]) -> None:
        nonlocal jar
        if len(set_cookies) > 1:  # wrk's Lua sees one header per name: the last one
            fail(f"{len(set_cookies)} Set-Cookie headers in one response: {set_cookies}")
        if set_cookies:
            jar = set_cookies[0].split(";", 1)[0]

    status, body, set_cookies = get(f"{url}/read", jar)
    if (status, body) != (200, "ok"):
        fail(f"/read with the session cookie answered {status} {body!r}")
    keep(set_cookies)
    status, body, _ = get(f"{url}/read", None)
    if status != 409:
        fail(f"/read without a cookie answered {status} {body!r}, want 409 (no session)")
    for want in ("1", "2", "3"):
        status, body, set_cookies = get(f"{url}/write", jar)
        if (status, body) != (200, want):
            fail(f"/write answered {status} {body!r}, want 200 {want!r}: cookie not kept")
        keep(set_cookies)
    status, _, set_cookies = get(f"{url}/new", None)
    if status != 200 or len(set_cookies) != 1:
        fail(f"/new answered {status} with {len(set_cookies)} Set-Cookie headers, want 200 and 1")
    return f"`{name}`;" + attributes


# -- wrk ------------------------------------------------------------------------------------


def wrk(url: str, scenario: str, bare: bool, connections: int, seconds: int, cpu: int) -> Run:
    """One wrk run; the figures `e2e_wrk.lua` prints, plus wrk's own CPU seconds."""
    command = [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(LUA),
        url + "/",
        "--",
        scenario,
        "0" if bare else "1",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run: Run = {}
    for line in done.stdout.splitlines():
        if line.startswith("e2e "):
            _, name, value = line.split()
            run[name] = float(value)
    if done.returncode != 0 or "requests" not in run:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    run["client_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run["rps"] = run["requests"] / (run["duration_us"] / 1e6)
    return run


def measure(server: Server, scenario: str, args: argparse.Namespace, redis_pid: int | None) -> Run:
    bare = server.impl == "bare" or server.impl in FLOORS
    if args.warmup > 0:
        wrk(server.url, scenario, bare, args.connections, args.warmup, args.client_cpu)
    cpu = server.cpu_seconds()
    redis_cpu = process_cpu(redis_pid)
    started = time.perf_counter()
    run = wrk(server.url, scenario, bare, args.connections, args.duration, args.client_cpu)
    wall = time.perf_counter() - started
    run["server_cpu"] = server.cpu_seconds() - cpu
    run["server_share"] = run["server_cpu"] / wall
    run["client_share"] = run["client_cpu"] / wall
    run["redis_share"] = (process_cpu(redis_pid) - redis_cpu) / wall if redis_pid else 0.0
    return run


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


# -- the run --------------------------------------------------------------------------------


def rotate(items: Sequence[str], by: int) -> list[str]:
    by %= max(1, len(items))
    return [*items[by:], *items[:by]]


@contextmanager
def maybe_redis(needed: bool, cpu: int) -> Iterator[Any]:
    if not needed:
        yield None
        return
    with running_redis() as server:
        assert server.process is not None
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(server.process.pid)],
            check=True,
            capture_output=True,
        )
        yield server


def flush(redis_server: Any) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.flushall()
    client.close()


Results = dict[str, dict[str, list[Run]]]


def run_all(
    args: argparse.Namespace, tmp: Path, redis_server: Any
) -> tuple[Results, dict[str, str], list[str]]:
    results: Results = {i: {s: [] for s in args.scenarios} for i in args.impls}
    cookies: dict[str, str] = {}
    problems: list[str] = []
    env = {"E2E_SQLITE": "", "E2E_REDIS": redis_server.url if redis_server else ""}
    total = args.repeats * len(args.impls)
    step = 0
    for repeat in range(args.repeats):
        for impl in rotate(args.impls, repeat):
            step += 1
            if impl.endswith("-redis"):
                flush(redis_server)
            env["E2E_SQLITE"] = str(tmp / f"sessions-{repeat}.db")
            logfile = tmp / f"{impl}-{repeat}.log"
            server = Server(impl, args.server_cpu, env, logfile)
            try:
                cookies[impl] = check(server)
                for scenario in rotate(args.scenarios, repeat):
                    run = measure(
                        server,
                        scenario,
                        args,
                        redis_server.process.pid if impl.endswith("-redis") else None,
                    )
                    results[impl][scenario].append(run)
                    log(
                        f"[{step}/{total}] {impl:20} {scenario:5} {run['rps']:8.0f} req/s  "
                        f"p50 {run['p50_us'] / 1000:6.1f} ms  p99 {run['p99_us'] / 1000:6.1f} ms"
                        f"  non-2xx {run['non2xx']:.0f}  server CPU "
                        f"{run['server_share']:.0%}  load {loadavg()}"
                    )
            finally:
                server.stop()
            errors = [
                line
                for line in logfile.read_text(errors="replace").splitlines()
                if "Traceback" in line or "ERROR" in line or "Error" in line
            ]
            if errors:
                problems.append(
                    f"{impl} (round {repeat + 1}): {len(errors)} error lines in the server "
                    f"log, first: `{errors[0][:200]}`"
                )
    return results, cookies, problems


def find_problems(args: argparse.Namespace, results: Results) -> list[str]:
    problems = []
    for impl, by_scenario in results.items():
        for scenario, runs in by_scenario.items():
            for repeat, run in enumerate(runs, 1):
                where = f"{impl} {scenario} (run {repeat})"
                found = [
                    (run["non2xx"], "non-2xx responses"),
                    (run["connect_errors"], "connect errors"),
                    (run["read_errors"], "read errors"),
                    (run["write_errors"], "write errors"),
                    (run["timeouts"], "timeouts (no response within wrk's 2 s)"),
                    (run["missing_cookie"], "responses that should have set a cookie and did not"),
                    (run["wrong_counter"], "write counters out of sequence (stale or lost cookie)"),
                ]
                if scenario != "new":
                    short = args.connections - run["seeds"]
                    found.append((short, "connections that never got their session"))
                problems += [f"{where}: {n:.0f} {what}" for n, what in found if n > 0]
    return problems


# -- the report -----------------------------------------------------------------------------


def med(runs: list[Run], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def git_rev() -> str:
    def git(*command: str) -> str:
        try:
            return subprocess.run(
                ["git", *command], capture_output=True, text=True, cwd=ROOT, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    rev = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--", "src/coatcheck"):
        rev += " + uncommitted changes in src/coatcheck"
    return rev


def _interpreter() -> str:
    """This interpreter as the command line names it: relative to the checkout if inside."""
    path = Path(sys.executable)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine(redis_server: Any) -> list[str]:
    cpu = cpu_model()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    loop, http = server_options()
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} logical CPUs; {platform.system()} "
        f"{platform.release()} {platform.machine()}",
        f"Python {platform.python_version()}; uvicorn {version('uvicorn')} "
        f"(`--loop {loop} --http {http}`: uvloop {'' if loop == 'uvloop' else 'not '}"
        f"installed, httptools {'' if http == 'httptools' else 'not '}installed); "
        f"starlette {version('starlette')}, starsessions {version('starsessions')}, "
        f"coatcheck {version('coatcheck')} (git {git_rev()}, {coatcheck_build()})",
        f"wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}",
    ]
    if redis_server is not None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=redis_server.port)
        server_version = client.info("server")["redis_version"]
        client.close()
        hiredis = importlib.util.find_spec("hiredis") is not None
        lines.append(
            f"Redis {server_version} on loopback TCP, no persistence; redis-py "
            f"{version('redis')} ({'hiredis' if hiredis else 'pure-Python parser'})"
        )
    return lines


def contention(args: argparse.Namespace, results: Results) -> list[str]:
    """A warning when the server did not get its CPU while measured."""
    shares = [run["server_share"] for by in results.values() for r in by.values() for run in r]
    if not shares:
        return []
    share = statistics.median(shares)
    line = (
        f"- the server used {share:.0%} of its CPU while measured (median over runs; "
        f"lowest {min(shares):.0%})"
    )
    if share < 0.8:
        line += (
            ": **other processes took the rest**, so requests/s and latencies are lower and "
            "noisier than on an idle machine; compare the CPU-time ratios and columns"
        )
    return [line, ""]


def report(
    args: argparse.Namespace,
    results: Results,
    cookies: dict[str, str],
    problems: list[str],
    meta: dict[str, Any],
) -> str:
    scenarios, impls = args.scenarios, args.impls
    loop, http = server_options()
    lines = [
        "# End-to-end: sessions over real HTTP (uvicorn + wrk)",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- date: {meta['date']}; took {meta['elapsed']:.0f} s",
        *[f"- {m}" for m in meta["machine"]],
        f"- server: uvicorn, one process, `--loop {loop} --http {http} --no-access-log`, "
        f"pinned to CPU {args.server_cpu}; client: wrk `-t{args.connections} "
        f"-c{args.connections} -d{args.duration}s --latency` (one thread per connection: "
        f"each is one browser with its own cookie jar), pinned to CPU {args.client_cpu}"
        + (", with Redis on the same CPU" if meta["redis"] else ""),
        f"- {args.repeats} round(s), order rotated each round; a {args.warmup} s warm-up "
        "run before each measured run; figures are medians over rounds",
        f"- load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}",
        "",
        *contention(args, results),
        "Session cookies as the apps set them (wrk sends them back over plain http: "
        "a client sends what it stored whatever `Secure` says, and no app checks the "
        "scheme):",
        "",
    ]
    for impl in impls:
        if cookies.get(impl):
            lines.append(f"- {impl}: {cookies[impl]}")
    lines += [
        "",
        "## Requests per second",
        "",
        "Median over rounds [lowest–highest].",
        "",
        "| implementation | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    for impl in impls:
        cells = []
        for s in scenarios:
            rps = [r["rps"] for r in results[impl][s]]
            cells.append(f"{statistics.median(rps):,.0f} [{min(rps):,.0f}–{max(rps):,.0f}]")
        lines.append(f"| {LABELS[impl]} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Ratios",
        "",
        "Requests per second of the first over the second (medians); in brackets, the "
        "same ratio from server CPU time per request (second's / first's), which other "
        "load on the machine disturbs less. A *ceiling* row is the ratio the bare app "
        "reaches over that peer: what a session layer costing nothing would reach, since "
        "HTTP parsing and the server take most of each request's time. A *floor* row is "
        "the ratio the bare app sending coatcheck's response headers (and nothing else) "
        "reaches over that peer: the most a layer sending those headers can reach.",
        "",
        "| ratio | " + " | ".join(scenarios) + " | target |",
        "|---|" + "---:|" * len(scenarios) + "---|",
    ]
    ceilings: set[tuple[str, str]] = set()
    for first, second, target in RATIOS:
        if first not in results or second not in results:
            continue
        cells = []
        for s in scenarios:
            a, b = results[first][s], results[second][s]
            ratio = med(a, "rps") / med(b, "rps")
            cpu = (med(b, "server_cpu") / med(b, "requests")) / (
                med(a, "server_cpu") / med(a, "requests")
            )
            mark = "" if target is None else (" ✓" if ratio >= target else " ✗")
            cells.append(f"{ratio:.2f}{mark} ({cpu:.2f})")
        want = "—" if target is None else f"≥ {target:g}"
        lines.append(f"| {first} / {second} | " + " | ".join(cells) + f" | {want} |")
        for bound, label, what in (
            ("bare", "ceiling", "a session layer costing nothing"),
            (FLOOR_OF.get(first, ""), "floor", "coatcheck's headers, no other work"),
            (MINIMAL_OF.get(first, ""), "least", "coatcheck's defaults, no other work"),
        ):
            if bound not in results or (second, bound) in ceilings:
                continue
            ceilings.add((second, bound))
            cells = []
            for s in scenarios:
                a, b = results[bound][s], results[second][s]
                cpu = (med(b, "server_cpu") / med(b, "requests")) / (
                    med(a, "server_cpu") / med(a, "requests")
                )
                cells.append(f"{med(a, 'rps') / med(b, 'rps'):.2f} ({cpu:.2f})")
            lines.append(
                f"| *{label}: {bound} / {second}* | " + " | ".join(cells) + f" | ({what}) |"
            )

    lines += [
        "",
        "## Latency",
        "",
        "wrk's p50 / p99 in ms (medians over rounds), with "
        f"{args.connections} connections always busy.",
        "",
        "| implementation | " + " | ".join(f"{s} p50 | {s} p99" for s in scenarios) + " |",
        "|---|" + "---:|---:|" * len(scenarios),
    ]
    for impl in impls:
        cells = []
        for s in scenarios:
            runs = results[impl][s]
            cells += [f"{med(runs, 'p50_us') / 1000:.1f}", f"{med(runs, 'p99_us') / 1000:.1f}"]
        lines.append(f"| {LABELS[impl]} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Errors, checks and CPU",
        "",
        "Summed over rounds: requests, non-2xx answers, socket errors and timeouts, "
        "lost sessions (a `/seed` or `/new` answer without a cookie, or a `/write` counter "
        "out of sequence). Medians: responses carrying a `Set-Cookie`, server CPU time "
        "per request, and the share of a CPU the server, wrk and Redis used while measured.",
        "",
        "| implementation | scenario | requests | non-2xx | socket err. | lost sessions "
        "| Set-Cookie / resp. | server CPU µs/req | server CPU | wrk CPU | Redis CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for impl in impls:
        for s in scenarios:
            runs = results[impl][s]

            def total(*keys: str, runs: list[Run] = runs) -> float:
                return sum(run[k] for run in runs for k in keys)

            socket_errors = total("connect_errors", "read_errors", "write_errors", "timeouts")
            cookie_rate = statistics.median(r["with_cookie"] / r["responses"] for r in runs)
            per_request = statistics.median(r["server_cpu"] / r["requests"] for r in runs)
            redis_share = f"{med(runs, 'redis_share'):.0%}" if impl.endswith("-redis") else "—"
            lines.append(
                f"| {impl} | {s} | {total('requests'):,.0f} | {total('non2xx'):.0f} "
                f"| {socket_errors:.0f} | {total('missing_cookie', 'wrong_counter'):.0f} "
                f"| {cookie_rate:.2f} | {per_request * 1e6:.0f} "
                f"| {med(runs, 'server_share'):.0%} | {med(runs, 'client_share'):.0%} "
                f"| {redis_share} |"
            )

    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in problems] if problems else ["None: every check passed."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="rounds")
    parser.add_argument("--only", help="comma-separated implementations: " + ", ".join(IMPLS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. read,write")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats = 2, 1, 1
    args.impls = IMPLS if not args.only else tuple(args.only.split(","))
    args.scenarios = tuple(args.scenarios.split(","))
    for name, chosen, known in (
        ("--only", args.impls, IMPLS),
        ("--scenarios", args.scenarios, SCENARIOS),
    ):
        unknown = set(chosen) - set(known)
        if unknown:
            parser.error(f"{name}: unknown {', '.join(sorted(unknown))}")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found on PATH")
    if args.server_cpu == args.client_cpu or max(args.server_cpu, args.client_cpu) >= (
        os.cpu_count() or 1
    ):
        parser.error("--server-cpu and --client-cpu must be two different CPUs of this machine")

    given = list(argv) if argv is not None else sys.argv[1:]
    meta: dict[str, Any] = {
        "command": " ".join([_interpreter(), "bench/end_to_end.py", *given]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": loadavg(),
    }
    log(f"load average before: {meta['load_before']}")
    started = time.perf_counter()
    needs_redis = any(i.endswith("-redis") for i in args.impls)
    with (
        maybe_redis(needs_redis, args.client_cpu) as redis_server,
        tempfile.TemporaryDirectory(prefix="e2e-") as tmp,
    ):
        results, cookies, problems = run_all(args, Path(tmp), redis_server)
        meta["machine"] = machine(redis_server)
    meta["redis"] = needs_redis
    meta["elapsed"] = time.perf_counter() - started
    meta["load_after"] = loadavg()
    log(f"load average after: {meta['load_after']}")
    problems = find_problems(args, results) + problems
    text = report(args, results, cookies, problems, meta)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
