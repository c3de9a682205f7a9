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
from urllib.parse import urlsplit, urlunsplit

from .balancer import Balancer
from .cluster import Cluster, ReplicaFailed
from .strategies import Settings, Strategy, describe_tokens

__all__ = ["DemoError", "resolve_store", "run"]


class DemoError(RuntimeError):
    """The demo could not start (port in use, a replica failed); the message says why."""


def run(
    strategy: Strategy,
    *,
    replicas: int = 3,
    port: int = 8000,
    store_url: str | None = None,
    encrypted: bool = False,
    out: TextIO = sys.stdout,
) -> None:
    """Serve the demo until interrupted. `port=0` picks a free port; the first line
    printed to `out` is always `coatcheck demo: http://localhost:PORT/`. `encrypted`
    makes client-side strategies issue encrypted (JWE) tokens instead of signed ones."""
    # Named after this process, so whoever kills it with SIGKILL can find what it left.
    run_dir = Path(tempfile.mkdtemp(prefix=f"coatcheck-demo-{os.getpid()}-"))
    try:
        store, note = resolve_store(strategy, store_url, run_dir)
        settings = Settings(store_url=store, encrypted=encrypted)
        reason = strategy.unavailable(settings)
        if reason is not None:
            raise DemoError(f"strategy {strategy.name!r} cannot run here: {reason}")
        cluster = Cluster(strategy, replicas, run_dir, settings)
        atexit.register(cluster.stop)
        try:
            asyncio.run(_serve(cluster, strategy, port, out, note))
        finally:
            cluster.stop()
            atexit.unregister(cluster.stop)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def redact(url: str) -> str:
    """`url` without the password in it, if any: printing is not a place for secrets."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def resolve_store(
    strategy: Strategy, store_url: str | None, run_dir: Path
) -> tuple[str | None, str | None]:
    """The store URL the replicas of `strategy` use, and a note when it is not the one
    asked for: None for strategies without a shared store, else `store_url`, or a SQLite
    file in `run_dir` when none was given or the strategy cannot use the one given."""
    if not strategy.shared_store:
        return None, None
    fallback = f"sqlite:///{run_dir / 'sessions.db'}"
    if store_url is None:
        return fallback, None
    problem = strategy.store_problem(store_url)
    if problem is None:
        return store_url, None
    note = f"--store is not used by the {strategy.name} strategy ({problem}); it uses a SQLite file"
    return fallback, note


async def _serve(
    cluster: Cluster, strategy: Strategy, port: int, out: TextIO, note: str | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        balancer = Balancer(cluster, strategy.balancing)
        try:
            server = await balancer.serve("127.0.0.1", port)
        except OSError as exc:
            raise DemoError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another port with --port"
            ) from None
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
            if cluster.settings.store_url is not None:
                print(f"  store: {redact(cluster.settings.store_url)}", file=out)
            if note is not None:
                print(f"  note: {note}", file=out)
            if strategy.client_side:
                print(f"  tokens: {describe_tokens(cluster.settings)}", file=out)
            for replica in cluster.replicas:
                print(f"  replica {replica.name}: http://127.0.0.1:{replica.port}/", file=out)
            print("Ctrl-C stops the demo and every replica.", file=out, flush=True)
            await stopped
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
