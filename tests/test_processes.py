"""Four OS processes, each a uvicorn server with coatcheck on one SQLite file: they see
each other's sessions, and parallel requests spread over all four lose no write."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import free_port

PROCESSES = 4
WRITES = 60

APP = textwrap.dedent(
    """
    import os
    from coatcheck import Cookie, Lifetimes, ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware

    manager = SessionManager(
        ServerSide(store="sqlite:///" + os.environ["SESSIONS_DB"]),
        transport=Cookie(name="session", secure=False),
        lifetimes=Lifetimes(renewal=None),
    )

    async def endpoint(scope, receive, send):
        session = scope["session"]
        if scope["path"] == "/write":
            key = scope["query_string"].decode()
            session[key] = os.getpid()
        body = ",".join(sorted(session)).encode()
        headers = [(b"content-type", b"text/plain"), (b"x-pid", str(os.getpid()).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    app = SessionMiddleware(endpoint, manager=manager)
    """
)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[str]]:
    (tmp_path / "app_under_test.py").write_text(APP)
    env = dict(os.environ, SESSIONS_DB=str(tmp_path / "sessions.db"), PYTHONPATH=str(tmp_path))
    ports = [free_port() for _ in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app_under_test:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    httpx.get(url + "/", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def test_four_processes_share_sessions_and_lose_no_write(servers: list[str]) -> None:
    async def scenario() -> tuple[set[str], list[str]]:
        async with httpx.AsyncClient(timeout=10) as client:
            first = await client.get(servers[0] + "/write?start")
            cookie = first.headers["set-cookie"].split(";", 1)[0]
            headers = {"cookie": cookie}

            async def write(i: int) -> str:
                url = f"{servers[i % PROCESSES]}/write?k{i}"
                response = await client.get(url, headers=headers)
                assert response.status_code == 200
                assert "set-cookie" not in response.headers  # the same session, no new ID
                return response.headers["x-pid"]

            pids = await asyncio.gather(*(write(i) for i in range(WRITES)))
            reads = [(await client.get(url + "/", headers=headers)).text for url in servers]
            return set(pids), reads

    pids, reads = asyncio.run(scenario())
    assert len(pids) == PROCESSES  # every process served some of the writes
    expected = ",".join(sorted(["start", *(f"k{i}" for i in range(WRITES))]))
    assert reads == [expected] * PROCESSES  # each process sees every write
