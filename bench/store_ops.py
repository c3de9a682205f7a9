"""Store operations per request, per strategy: what each replica asks of the shared store.

The capacity plan in docs/scaling.md needs, for each way of keeping sessions, how many
commands a request sends to the shared store and how many bytes cross the wire, so that
"requests per second" turns into "store commands per second". This counts them on a real
Redis (`tests/servers.py`, a throw-away server on a free port) from what Redis itself
reports: its `MONITOR` stream (every command a client sent, one round trip each, and every
command a Lua script ran, marked `lua`) and `INFO stats` (`total_net_input_bytes`,
`total_net_output_bytes`), between marks before and after each scenario's requests,
divided by their number. A mark's own traffic (an `ECHO`, an `INFO`, the monitor stream)
is taken off.

Each strategy is coatcheck's ASGI middleware in this process, driven through ASGI by a
client that keeps the latest `Set-Cookie` (as a browser does):

  server        ServerSide("redis://...")
  client        ClientSide(keys, store="redis://..."): the registry and the revocation list
  client-anon   the same with list_anonymous=True (every new visitor registered)
  stateless     ClientSide(keys, store=None): nothing shared

Scenarios (each `--requests` times; a fresh session per request where it needs one):

  new      no cookie; the view sets one key (a new visitor)
  read     a seeded session; the view reads its keys
  write    the same; the view sets one key to a new value
  no-touch the view does not touch the session
  login    an anonymous session logs in (`session.login(user)`)
  logout   a logged-in session logs out

Then, for the client-side strategies, what one replica's revocation list costs while it
serves reads for 3 s: its polls of the revocation store (at most one per `staleness`
second, on a request) per second.

    .venv/bin/python bench/store_ops.py                    # ~20 s
    .venv/bin/python bench/store_ops.py --output bench/RESULTS-store-ops.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))
from peers import http_scope, keyring  # noqa: E402
from servers import running_redis  # noqa: E402

STRATEGIES = ("server", "client", "client-anon", "stateless")
SCENARIOS = ("new", "read", "write", "no-touch", "login", "logout")
SEED = {"theme": "dark", "lang": "en", "cart": [1, 2, 3], "counter": 0}

Scope = dict[str, Any]
Message = dict[str, Any]


async def endpoint(scope: Scope, receive: Any, send: Callable[[Message], Awaitable[None]]) -> None:
    """One view per path: what each scenario asks of the session."""
    session = scope["session"]
    path = scope["path"]
    if path == "/seed":
        session.update(SEED)
    elif path == "/read":
        assert session.get("theme") == "dark", "the seeded session was not loaded"
    elif path in ("/write", "/new"):
        session["counter"] = session.get("counter", 0) + 1
    elif path == "/login":
        session.login("user-" + str(id(session)))
    elif path == "/logout":
        session.logout()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Browser:
    """Sends ASGI requests to `app`, keeping the latest `Set-Cookie` of each cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.jar: dict[str, str] = {}

    async def get(self, path: str) -> None:
        headers = [(b"host", b"app.example")]
        if self.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
            headers.append((b"cookie", cookie.encode()))
        scope = http_scope(path, headers, "https")

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        status: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] != "http.response.start":
                return
            status.append(message["status"])
            for name, value in message["headers"]:
                if name == b"set-cookie":
                    key, _, rest = value.decode().partition("=")
                    cookie = rest.split(";", 1)[0]
                    if cookie:
                        self.jar[key] = cookie
                    else:
                        self.jar.pop(key, None)

        await self.app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"{path}: answered {status}")


def build(strategy: str, url: str) -> tuple[Any, Any]:
    from coatcheck import ClientSide, ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware

    mode: Any
    if strategy == "server":
        mode = ServerSide(url)
    elif strategy == "stateless":
        mode = ClientSide(keyring(), store=None)
    else:
        mode = ClientSide(keyring(), store=url, list_anonymous=strategy == "client-anon")
    manager = SessionManager(mode)
    return SessionMiddleware(endpoint, manager=manager), manager


class Monitor:
    """Redis's `MONITOR` stream, read on a thread: which commands clients sent (one round
    trip each, pipelined or not) and which ran inside a Lua script (`[0 lua]`), plus the
    bytes Redis received and sent (`INFO stats`, less this stream and the INFO replies)."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.lines: list[bytes] = []
        self.streamed = 0
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.info = socket.create_connection(("127.0.0.1", port))
        self.marks = 0
        self.seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self._last = self._stats()
        self.mark()

    def _read(self) -> None:
        buffer = b""
        while chunk := self.sock.recv(65536):
            with self.seen:
                self.streamed += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\r\n")
                self.lines += lines
                self.seen.notify_all()

    def _stats(self) -> tuple[int, int]:
        self.info.sendall(b"INFO stats\r\n")
        reply = b""
        while not reply.endswith(b"\r\n\r\n") or reply.count(b"\r\n") < 3:
            reply += self.info.recv(65536)
        fields = dict(line.split(":", 1) for line in reply.decode().splitlines()[1:] if ":" in line)
        return int(fields["total_net_input_bytes"]), int(fields["total_net_output_bytes"])

    def mark(self) -> dict[str, float]:
        """What moved since the last mark: `sent:<cmd>` and `lua:<cmd>` counts, bytes."""
        self.marks += 1
        token = f"coatcheck-bench-mark-{self.marks}".encode()
        self.info.sendall(b"ECHO " + token + b"\r\n")
        self.info.recv(1024)
        with self.seen:
            self.seen.wait_for(lambda: any(token in line for line in self.lines[-50:]))
            lines, self.lines = self.lines, []
            streamed, self.streamed = self.streamed, 0
        sent_in, sent_out = self._stats()
        moved: dict[str, float] = {}
        for line in lines:
            if token in line or b'"ECHO"' in line or b'"INFO"' in line or b"] " not in line:
                continue
            where, _, command = line.partition(b"] ")
            name = command.split(b" ", 1)[0].strip(b'"').decode().lower()
            kind = "lua" if where.endswith(b"lua") else "sent"
            moved[f"{kind}:{name}"] = moved.get(f"{kind}:{name}", 0) + 1
        moved["bytes_in"] = sent_in - self._last[0]
        moved["bytes_out"] = sent_out - self._last[1] - streamed
        self._last = (sent_in, sent_out)
        return moved


async def prepare(app: Any, name: str, requests: int) -> list[Browser]:
    """The browsers of `name`, each holding the session the measured request needs."""
    browsers = [Browser(app) for _ in range(requests)]
    if name != "new":
        for browser in browsers:
            await browser.get("/seed")
            if name == "logout":
                await browser.get("/login")
    return browsers


async def measure(strategy: str, url: str, monitor: Monitor, requests: int) -> dict[str, Any]:
    app, manager = build(strategy, url)
    results: dict[str, Any] = {}
    warm = Browser(app)
    await warm.get("/seed")
    await warm.get("/read")
    monitor.mark()
    baseline = monitor.mark()  # a mark's own bytes (its ECHO and INFO), taken off below

    def moved() -> dict[str, float]:
        found = monitor.mark()
        found["bytes_in"] -= baseline["bytes_in"]
        found["bytes_out"] -= baseline["bytes_out"]
        return found

    for name in SCENARIOS:
        browsers = await prepare(app, name, requests)
        path = {"no-touch": "/untouched"}.get(name, "/" + name)
        monitor.mark()
        for browser in browsers:
            await browser.get(path)
        results[name] = {k: v / requests for k, v in moved().items()}
    if strategy.startswith("client"):
        # One replica's standing cost: its revocation list polls the store at most once per
        # `staleness` (1 s) while requests come in. Caught up first (the scenarios revoked
        # sessions), then reads for a few seconds show the steady rate.
        await asyncio.sleep(1.1)
        await warm.get("/read")
        seconds = 3.0
        monitor.mark()
        started = time.monotonic()
        reads = 0
        while time.monotonic() - started < seconds:
            await warm.get("/read")
            reads += 1
        elapsed = time.monotonic() - started
        results["busy"] = {k: v / elapsed for k, v in moved().items()}
        results["busy_reads"] = reads / elapsed
    mode = manager.mode
    if hasattr(mode, "aclose"):
        await mode.aclose()
    return results


def summary(moved: dict[str, float]) -> tuple[float, str, float, float]:
    """Round trips (commands sent), the mix (with what ran inside scripts), bytes in/out."""
    sent = sum(v for k, v in moved.items() if k.startswith("sent:"))
    mix = ", ".join(
        f"{k.partition(':')[2]}{' (in Lua)' if k.startswith('lua:') else ''} {v:.2g}"
        for k, v in sorted(moved.items(), key=lambda kv: (kv[0].startswith("lua:"), kv[0]))
        if not k.startswith("bytes") and v >= 0.005
    )
    return sent, mix or "—", max(moved["bytes_in"], 0.0), max(moved["bytes_out"], 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import redis

    import coatcheck

    lines = [
        "# Store operations per request, per strategy (Redis)",
        "",
        f"Command: `.venv/bin/python bench/store_ops.py --requests {args.requests}`",
        "",
        f"- coatcheck {coatcheck.__version__} ({'compiled' if coatcheck.compiled else 'pure'});"
        f" Python {platform.python_version()}; {args.requests} requests per scenario",
        "- counted by Redis: commands from its `MONITOR` stream (a round trip per command"
        " sent; *(in Lua)*: run by a script the request sent), bytes from `INFO stats`:"
        " exact, whatever the load",
        "",
        "| strategy | scenario | round trips / request | commands | bytes to Redis"
        " | bytes from Redis |",
        "|---|---|---:|---|---:|---:|",
    ]
    busy_lines: list[str] = []
    with running_redis() as server:
        client = redis.Redis.from_url(server.url)
        monitor = Monitor(server.port)
        for strategy in args.strategies.split(","):
            client.flushall()
            results = asyncio.run(measure(strategy, server.url, monitor, args.requests))
            for name in SCENARIOS:
                sent, mix, received, answered = summary(results[name])
                lines.append(
                    f"| {strategy} | {name} | {sent:.2f} | {mix} | {received:.0f} |"
                    f" {answered:.0f} |"
                )
            if "busy" in results:
                sent, mix, received, answered = summary(results["busy"])
                busy_lines.append(
                    f"| {strategy} | {results['busy_reads']:.0f} | {sent:.2f} | {mix} |"
                    f" {received:.0f} | {answered:.0f} |"
                )
        client.close()
    lines += [
        "",
        "One replica serving reads (its revocation list keeping up), per second:",
        "",
        "| strategy | reads / s | round trips / s | commands | bytes to Redis / s"
        " | bytes from Redis / s |",
        "|---|---:|---:|---|---:|---:|",
        *busy_lines,
        "",
        f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
