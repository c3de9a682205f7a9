"""Fixtures that run the real `coatcheck demo` as a subprocess (replicas, balancer and
all) and talk to it over loopback HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

START_TIMEOUT = 60.0  # seconds for a demo cluster to come up on a busy machine


@dataclass
class Demo:
    """A running `coatcheck demo`: its process, balancer port, replica ports and what it
    printed when it started."""

    process: subprocess.Popen[bytes]
    port: int
    replicas: dict[str, int] = field(default_factory=dict)
    banner: str = ""

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        port: int | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        target = self.port if port is None else port
        connection = http.client.HTTPConnection("127.0.0.1", target, timeout=20)
        try:
            all_headers = {"Host": f"localhost:{target}", **(headers or {})}
            if body is not None:
                all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            headers_out = {k.lower(): v for k, v in response.getheaders()}
            headers_out["set-cookie"] = "\n".join(response.headers.get_all("set-cookie") or [])
            return response.status, headers_out, data
        finally:
            connection.close()

    def status(self) -> dict[str, Any]:
        code, _, body = self.request("GET", "/_cluster/status")
        assert code == 200
        result: dict[str, Any] = json.loads(body)
        return result

    def pids(self) -> list[int]:
        return [r["pid"] for r in self.status()["replicas"] if r["pid"] is not None]


def start_demo(*args: str) -> Demo:
    """Start `coatcheck demo --port 0 ARGS` in its own process group and wait for its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "coatcheck", "demo", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    text = ""
    while time.monotonic() < deadline and "Ctrl-C" not in text:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            text += chunk.decode()
        elif process.poll() is not None:
            break
    if "Ctrl-C" not in text:
        stop_demo(process)
        pytest.fail(f"demo did not start: {text}")
    demo = Demo(process, int(text.split("http://localhost:", 1)[1].split("/", 1)[0]), banner=text)
    for line in text.splitlines():
        if line.strip().startswith("replica "):
            name = line.split()[1].rstrip(":")
            demo.replicas[name] = int(line.rsplit(":", 1)[1].strip("/"))
    return demo


def stop_demo(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def shared_demo() -> Iterator[Demo]:
    demo = start_demo("--strategy", "shared", "--replicas", "2")
    yield demo
    stop_demo(demo.process)


@pytest.fixture
def sticky_demo() -> Iterator[Demo]:
    demo = start_demo("--strategy", "sticky", "--replicas", "2")
    yield demo
    stop_demo(demo.process)
