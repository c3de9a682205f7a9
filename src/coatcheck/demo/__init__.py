"""`coatcheck demo`: a replicated app on this machine, to watch what each session strategy
survives.

`run` starts a `Cluster` of replica processes of the demo app (`app`) behind a `Balancer`
and serves until Ctrl-C or SIGTERM; `check.run_checks` drives real clusters with a
scripted client and judges each strategy against its `Strategy.expect`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from .balancer import Balancer
from .cluster import Cluster, ReplicaFailed
from .strategies import Strategy

__all__ = ["DemoError", "run"]


class DemoError(RuntimeError):
    """The demo could not start (port in use, a replica failed); the message says why."""


def run(
    strategy: Strategy,
    *,
    replicas: int = 3,
    port: int = 8000,
    store_url: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Serve the demo until interrupted. `port=0` picks a free port; the first line
    printed to `out` is always `coatcheck demo: http://localhost:PORT/`."""
    reason = strategy.unavailable(store_url)
    if reason is not None:
        raise DemoError(f"strategy {strategy.name!r} cannot run here: {reason}")
    # Named after this process, so whoever kills it with SIGKILL can find what it left.
    run_dir = Path(tempfile.mkdtemp(prefix=f"coatcheck-demo-{os.getpid()}-"))
    try:
        if strategy.shared_store and store_url is None:
            store_url = f"sqlite:///{run_dir / 'sessions.db'}"
        cluster = Cluster(strategy, replicas, run_dir, store_url if strategy.shared_store else None)
        atexit.register(cluster.stop)
        try:
            asyncio.run(_serve(cluster, strategy, port, out))
        finally:
            cluster.stop()
            atexit.unregister(cluster.stop)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def _serve(cluster: Cluster, strategy: Strategy, port: int, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        balancer = Balancer(cluster, strategy.balancing)
        try:
            server = await balancer.serve("127.0.0.1", port)
        except OSError as exc:
            raise DemoError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                            "pick another port with --port") from None  # fmt: skip
        async with server:
            start = asyncio.ensure_future(cluster.start())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not start.done():  # interrupted while the replicas were starting
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, ReplicaFailed):
                    await start
                return
            try:
                start.result()
            except ReplicaFailed as exc:
                stopped.cancel()
                raise DemoError(str(exc)) from None
            bound = server.sockets[0].getsockname()[1]
            print(f"coatcheck demo: http://localhost:{bound}/", file=out, flush=True)
            print(f"strategy {strategy.name}: {strategy.summary}", file=out)
            for replica in cluster.replicas:
                print(f"  replica {replica.name}: http://127.0.0.1:{replica.port}/", file=out)
            print("Ctrl-C stops the demo and every replica.", file=out, flush=True)
            await stopped
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

