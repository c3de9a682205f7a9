"""The demo's processes and balancer, for real: replicas as OS processes, the asyncio
balancer in front, kill / restart through its control endpoints, clean shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coatcheck.demo.balancer import PIN_COOKIE

from .conftest import Demo, start_demo, stop_demo

GONE_TIMEOUT = 15.0  # seconds for processes to exit after their demo stopped or died


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie left for a non-reaping init counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def can_listen(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def served_by(demo: Demo, count: int, headers: dict[str, str] | None = None) -> list[str]:
    replies = [demo.request("GET", "/api/session", headers) for _ in range(count)]
    assert all(code == 200 for code, _, _ in replies)
    return [h["x-served-by"] for _, h, _ in replies]


def test_ctrl_c_stops_every_replica_and_frees_the_ports() -> None:
    demo = start_demo("--strategy", "shared", "--replicas", "3")
    try:
        pids = demo.pids()
        assert len(pids) == 3 and all(alive(p) for p in pids)
        ports = [demo.port, *demo.replicas.values()]
        # Ctrl-C signals the terminal's foreground process group: here, the demo alone.
        os.killpg(demo.process.pid, signal.SIGINT)
        assert demo.process.wait(30) == 0
        assert wait_gone(pids) == []
        assert [p for p in ports if not can_listen(p)] == []
    finally:
        stop_demo(demo.process)


def test_replicas_exit_when_the_demo_is_killed() -> None:
    demo = start_demo("--strategy", "local", "--replicas", "2")
    try:
        pids = demo.pids()
        assert len(pids) == 2
        os.kill(demo.process.pid, signal.SIGKILL)  # no chance to clean up
        demo.process.wait(10)
        assert wait_gone(pids) == []
    finally:
        stop_demo(demo.process)
        for left in Path(tempfile.gettempdir()).glob(f"coatcheck-demo-{demo.process.pid}-*"):
            shutil.rmtree(left, ignore_errors=True)


def test_round_robin_spreads_and_skips_a_dead_replica(shared_demo: Demo) -> None:
    demo = shared_demo
    assert set(served_by(demo, 4)) == {"r1", "r2"}
    code, _, _ = demo.request("POST", "/_cluster/kill?replica=r1", body="")
    assert code == 200
    assert served_by(demo, 4) == ["r2"] * 4
    assert demo.request("POST", "/_cluster/kill?replica=r2", body="")[0] == 200
    code, _, body = demo.request("GET", "/api/session")
    assert code == 502 and b"no replica is up" in body
    code, _, _ = demo.request("POST", "/_cluster/restart?replica=r1", body="")
    assert code == 200
    replicas = {r["name"]: r for r in demo.status()["replicas"]}
    assert replicas["r1"]["up"] and not replicas["r2"]["up"]
    assert replicas["r1"]["port"] == demo.replicas["r1"]  # restarted on the same port
    assert served_by(demo, 2) == ["r1", "r1"]


def test_set_cookie_passes_through_and_the_session_is_shared(shared_demo: Demo) -> None:
    demo = shared_demo
    code, headers, _ = demo.request(
        "POST", "/login", {"Accept": "application/json"}, body="user=alice"
    )
    assert code == 200
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert cookie.startswith("__Host-session=") and "Secure" in headers["set-cookie"]
    for port in demo.replicas.values():
        _, _, body = demo.request("GET", "/api/session", {"Cookie": cookie}, port=port)
        assert b'"user": "alice"' in body


def test_cluster_control_rejects_cross_site_requests(shared_demo: Demo) -> None:
    demo = shared_demo
    code, _, _ = demo.request(
        "POST", "/_cluster/kill?replica=r1", {"Sec-Fetch-Site": "cross-site"}, body=""
    )
    assert code == 403
    code, _, _ = demo.request(
        "POST", "/_cluster/kill?replica=r1", {"Origin": "http://evil.example"}, body=""
    )
    assert code == 403
    assert all(r["up"] for r in demo.status()["replicas"])
    assert demo.request("POST", "/_cluster/kill?replica=r9", body="")[0] == 404
    assert demo.request("GET", "/_cluster/kill?replica=r1")[0] == 404


def test_malformed_requests_get_400(shared_demo: Demo) -> None:
    for raw in (
        b"NONSENSE\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", shared_demo.port), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


def test_sticky_pins_then_redispatches_when_the_replica_dies(sticky_demo: Demo) -> None:
    demo = sticky_demo
    _, headers, _ = demo.request("GET", "/api/session")
    pin = headers["set-cookie"].split(";", 1)[0]
    assert pin.startswith(f"{PIN_COOKIE}=")
    first = pin.split("=", 1)[1]
    assert served_by(demo, 5, {"Cookie": pin}) == [first] * 5
    assert demo.request("POST", f"/_cluster/kill?replica={first}", body="")[0] == 200
    code, headers, _ = demo.request("GET", "/api/session", {"Cookie": pin})
    other = "r2" if first == "r1" else "r1"
    assert code == 200 and headers["x-served-by"] == other
    assert headers["set-cookie"].startswith(f"{PIN_COOKIE}={other};")


def test_a_busy_port_is_a_clean_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "coatcheck", "demo", "--port", str(port), "--replicas", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_too_many_replicas_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coatcheck", "demo", "--replicas", "17"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--replicas must be between 1 and 16" in result.stderr


def test_client_strategy_with_encrypted_tokens_on_every_replica() -> None:
    demo = start_demo("--strategy", "client", "--encrypted", "--replicas", "2")
    try:
        assert "  tokens: encrypted (JWE dir + A256GCM)" in demo.banner
        assert "  store: sqlite:///" in demo.banner
        for pid in demo.pids():  # the store URL and the key stay off the command line
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"--encrypted" in argv and not any(b"sqlite:" in a for a in argv)
        code, headers, _ = demo.request(
            "POST", "/login", {"Accept": "application/json"}, body="user=alice"
        )
        assert code == 200
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert cookie.startswith("__Host-session=") and cookie.count(".") == 4  # JWE
        for port in demo.replicas.values():  # one key for the cluster: every replica reads it
            _, _, body = demo.request("GET", "/api/session", {"Cookie": cookie}, port=port)
            assert b'"user": "alice"' in body
    finally:
        stop_demo(demo.process)
