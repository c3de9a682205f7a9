"""Under load and faults: three uvicorn processes on one store, 200 concurrent clients.

Each client keeps its session cookie, as a browser does, and sends its requests round-robin
to the three processes; every request increments a counter in the session
(`Session.increment`, which never conflicts). With the store healthy, every response is a
200 and every session's counter equals the number of 200s its client got. With the store
killed and restarted mid-run (Redis with an fsync-always append-only file, PostgreSQL
stopped in fast mode), responses are 200 or 503 only, no acknowledged increment is missing
afterwards, and every request sent `RECOVERY` seconds or more after the restart is a 200.

Default settings throughout: the stores are built from their URLs with no tuning. The run
is bounded (`COATCHECK_LOAD_REQUESTS` requests in all, 2,000 by default; CI runs that), on
loopback only.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import free_port, running_postgres, running_redis

PROCESSES = 3
CLIENTS = 200
REQUESTS = int(os.environ.get("COATCHECK_LOAD_REQUESTS", "2000"))
RECOVERY = 1.0  # seconds from the store's restart to the first 200

APP = textwrap.dedent(
    """
    import os
    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware

    manager = SessionManager(ServerSide(store=os.environ["STORE_URL"]))

    async def endpoint(scope, receive, send):
        session = scope["session"]
        if scope["method"] == "POST":
            session.increment("n")
        body = str(session.get("n", 0)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    app = SessionMiddleware(endpoint, manager=manager)
    """
)
COOKIE = "__Host-session"
HEADERS = {"sec-fetch-site": "same-origin"}


@contextmanager
def replicas(url: str, directory: Path) -> Iterator[list[int]]:
    (directory / "load_app.py").write_text(APP)
    env = dict(os.environ, STORE_URL=url, PYTHONPATH=str(directory))
    ports = [free_port() for _ in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "load_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                # no keep-alive race: a connection closed while idle would fail a request
                "--timeout-keep-alive",
                "120",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "a replica did not start"
                    time.sleep(0.05)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            # no traceback ever: store failures are answers (503), not crashes
            assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]


@dataclass
class Outcome:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    acked: dict[str, int] = field(default_factory=dict)  # cookie -> 200s it got
    seen: dict[str, int] = field(default_factory=dict)  # cookie -> counter stored at the end
    down_at: float | None = None  # set by the fault as it stops the store
    restarted_at: float | None = None  # and once the store is back
    met_outage: int = 0  # requests in flight at some point while the store was down
    dropped: int = 0  # connections closed with no answer (the request was sent again)
    late_failures: int = 0  # non-200s to requests sent `RECOVERY` s or more after the restart


async def drive(
    ports: list[int], outcome: Outcome, fault: Callable[[], None] | None = None
) -> None:
    """`CLIENTS` clients send `REQUESTS` requests in all; with a `fault` (run in a thread
    once a third of them are done) they go on until 2 s after the store is back."""
    done = 0
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        fault_task: asyncio.Future[None] | None = None

        def finished() -> bool:
            if done < REQUESTS:
                return False
            if fault is None:
                return True
            back = outcome.restarted_at
            return back is not None and time.monotonic() > back + 2

        async def client(number: int) -> None:
            nonlocal done, fault_task
            cookie: str | None = None
            i = 0
            while not finished():
                port = ports[(number + i) % len(ports)]
                i += 1
                headers = dict(HEADERS)
                if cookie:
                    headers["cookie"] = f"{COOKIE}={cookie}"
                sent_at = time.monotonic()
                url = f"http://127.0.0.1:{port}/"
                try:
                    response = await http.post(url, headers=headers)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # The connection closed before any answer: a browser sends the request
                    # again on a new connection, and so does this client, once; counted.
                    outcome.dropped += 1
                    response = await http.post(url, headers=headers)
                http.cookies.clear()  # only the cookie this client holds
                outcome.statuses[response.status_code] += 1
                down, back = outcome.down_at, outcome.restarted_at
                if down is not None and (back is None or sent_at < back):
                    outcome.met_outage += 1  # answered after the stop, sent before the restart
                if back is not None and sent_at >= back + RECOVERY and response.status_code != 200:
                    outcome.late_failures += 1
                if response.status_code == 200:
                    cookie = _sent_cookie(response) or cookie
                    if cookie:
                        outcome.acked[cookie] = outcome.acked.get(cookie, 0) + 1
                else:
                    await asyncio.sleep(0.05)  # a failing store answers at once: back off
                done += 1
                if fault is not None and fault_task is None and done >= REQUESTS // 3:
                    fault_task = asyncio.ensure_future(asyncio.to_thread(fault))

        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        if fault_task is not None:
            await fault_task
        for cookie in outcome.acked:
            response = await http.get(
                f"http://127.0.0.1:{ports[0]}/", headers={"cookie": f"{COOKIE}={cookie}"}
            )
            assert response.status_code == 200
            outcome.seen[cookie] = int(response.text)


def stores() -> list[Any]:
    return [
        "sqlite",
        pytest.param("redis", marks=pytest.mark.service),
        pytest.param("postgres", marks=pytest.mark.service),
    ]


@contextmanager
def store_url(kind: str, directory: Path) -> Iterator[tuple[str, Any]]:
    if kind == "sqlite":
        yield f"sqlite:///{directory}/sessions.db", None
    elif kind == "redis":
        with running_redis(durable=True) as server:
            yield server.url, server
    else:
        with running_postgres() as server:
            yield server.url, server


@pytest.mark.parametrize("kind", stores())
def test_no_error_while_the_store_is_healthy(kind: str, tmp_path: Path) -> None:
    outcome = Outcome()
    with store_url(kind, tmp_path) as (url, _), replicas(url, tmp_path) as ports:
        asyncio.run(drive(ports, outcome))
    assert set(outcome.statuses) == {200}, dict(outcome.statuses)
    assert outcome.dropped == 0
    assert outcome.statuses[200] >= REQUESTS
    assert outcome.seen == outcome.acked  # every increment counted exactly once


@pytest.mark.parametrize("kind", [p for p in stores() if not isinstance(p, str)])
def test_a_store_killed_and_restarted_loses_no_acknowledged_write(
    kind: str, tmp_path: Path
) -> None:
    outcome = Outcome()
    with store_url(kind, tmp_path) as (url, server), replicas(url, tmp_path) as ports:

        def fault() -> None:
            outcome.down_at = time.monotonic()
            server.stop()
            time.sleep(0.5)  # the outage: real time, since real processes must notice it
            server.start()
            outcome.restarted_at = time.monotonic()

        asyncio.run(drive(ports, outcome, fault))
    assert set(outcome.statuses) <= {200, 503}, dict(outcome.statuses)
    assert outcome.dropped <= 1, outcome.dropped  # see docs/operating.md, "Pool sizing"
    assert outcome.met_outage > 0  # requests met the outage (503, or waited it out)
    for cookie, acked in outcome.acked.items():
        assert outcome.seen[cookie] >= acked  # nothing acknowledged is missing
    assert outcome.late_failures == 0  # all well again within RECOVERY of the restart


def _sent_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            return rest.split(";", 1)[0] or None
    return None
