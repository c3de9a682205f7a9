"""`Cluster`: the replica processes of one demo, started, killed and restarted on demand.

Each replica is a separate OS process (`coatcheck.demo.replica`) on its own loopback port,
in its own process group so that a Ctrl-C in the terminal reaches only the demo, which
then stops them in order. `stop` is idempotent and safe to call from `atexit`; replicas
also exit by themselves if the demo dies without stopping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .strategies import Settings, Strategy

__all__ = ["STORE_ENV", "Cluster", "Replica", "ReplicaFailed", "free_port", "watch_parent"]

#: The environment variable that hands replicas the store URL: unlike a command-line
#: argument, a process's environment is not shown to other users (`ps`), and store URLs
#: may carry passwords.
STORE_ENV = "COATCHECK_DEMO_STORE"

START_TIMEOUT = 20.0  # seconds a replica may take to accept connections
STOP_TIMEOUT = 3.0  # seconds a replica may take to exit after SIGTERM before SIGKILL
PARENT_POLL = 0.5  # seconds between checks that a process's parent still runs


class ReplicaFailed(RuntimeError):
    """A replica did not start; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def watch_parent(parent: int, on_orphaned: Callable[[], None]) -> None:
    """Call `on_orphaned` (in a daemon thread) once process `parent` is no longer this
    process's parent: it died and we were re-parented. Keeps children from outliving a
    demo that was killed without a chance to stop them."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        on_orphaned()

    threading.Thread(target=watch, name="coatcheck-parent-watch", daemon=True).start()


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "port": self.port,
            "up": self.up,
            "pid": self.process.pid if self.up and self.process else None,
        }


class Cluster:
    """`size` replicas of the demo app for `strategy` with `settings`, logging to files in
    `run_dir`."""

    def __init__(
        self, strategy: Strategy, size: int, run_dir: Path, settings: Settings | None = None
    ) -> None:
        self.strategy = strategy
        self.settings = settings if settings is not None else Settings()
        self.run_dir = run_dir
        self.replicas = [
            Replica(f"r{i}", free_port(), run_dir / f"r{i}.log") for i in range(1, size + 1)
        ]
        self._stopped = False
        self._environment = {**os.environ, **strategy.environment()}
        self._environment.pop(STORE_ENV, None)
        if self.settings.store_url is not None:
            self._environment[STORE_ENV] = self.settings.store_url

    def get(self, name: str) -> Replica | None:
        return next((r for r in self.replicas if r.name == name), None)

    async def start(self) -> None:
        """Start every replica and wait until all accept connections."""
        for replica in self.replicas:
            self._spawn(replica)
        await asyncio.gather(*(self._wait_ready(r) for r in self.replicas))

    def kill(self, replica: Replica) -> None:
        """SIGKILL the replica, as a crash would: no goodbye, in-memory sessions gone."""
        if replica.process is not None and replica.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(replica.process.pid, signal.SIGKILL)
            replica.process.wait()

    async def restart(self, replica: Replica) -> None:
        """Start the replica again on the same port (killing it first if it runs)."""
        self.kill(replica)
        self._spawn(replica)
        await self._wait_ready(replica)

    def stop(self) -> None:
        """SIGTERM every replica, then SIGKILL those still running after `STOP_TIMEOUT`."""
        if self._stopped:
            return
        self._stopped = True
        running = [r.process for r in self.replicas if r.process and r.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _spawn(self, replica: Replica) -> None:
        command = [
            sys.executable,
            "-m",
            "coatcheck.demo.replica",
            "--strategy",
            self.strategy.name,
            "--name",
            replica.name,
            "--port",
            str(replica.port),
            "--parent",
            str(os.getpid()),
        ]
        if self.settings.encrypted:
            command.append("--encrypted")
        with open(replica.log, "ab") as log:
            replica.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=self._environment,
            )

    async def _wait_ready(self, replica: Replica) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not replica.up:
                raise ReplicaFailed(f"replica {replica.name} exited at start\n{_tail(replica.log)}")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", replica.port), 1.0
                )
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        self.kill(replica)
        raise ReplicaFailed(
            f"replica {replica.name} did not start within {START_TIMEOUT:.0f} s\n"
            f"{_tail(replica.log)}"
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
