"""RSS per session held by `MemoryStore`, and how many records it holds under churn.

    .venv/bin/python bench/memory_per_session.py                  # N = 100 000 and 1 000 000
    .venv/bin/python bench/memory_per_session.py --n 100000       # one size
    .venv/bin/python bench/memory_per_session.py --user           # every session has a user

**RSS per session.** Each N runs in a fresh interpreter: it imports coatcheck, builds the
store, reads its RSS (`/proc/self/statm`), then saves N sessions through `MemoryStore.save`,
each with a fresh 43-character key (as a session handle is) and fresh record bytes from
`coatcheck.jsonio.dumps` (orjson, as the session manager encodes a record), padded to
`--size` bytes (306 by default), and reads its RSS again. Per session is the difference
over N: everything a process keeps per session (key, record, dict slots, expiry bucket,
user index), nothing else allocated in the loop survives it. "allocated" is what the
allocator was asked for and still holds, per session, by tracemalloc over a separate sample
of 20 000 sessions: RSS counts only the pages touched, so a mostly unwritten 8 KB buffer
shows in RSS as less than 8 KB in a fresh process, and as all of it once freed memory is
reused (a long-running server).

**Churn.** With an injected clock, one new session per 0.1 simulated seconds, each with a
600 s TTL and written again on every request (10 requests per second): after 20 simulated
minutes, how many records the store holds against how many are live, without any
`purge_expired` call (the issue's soak found 5,875 held for ~730 live).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import subprocess
import sys
import tracemalloc

from coatcheck.jsonio import dumps
from coatcheck.stores import MemoryStore

TRACED = 20_000  # sessions in the tracemalloc sample


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def record(size: int) -> bytes:
    """Fresh record bytes of exactly `size` bytes, from orjson as the manager makes them."""
    doc = {"d": {"cart": [1, 2, 3], "theme": "dark"}, "c": 1.7e9, "s": 1.7e9, "r": 1.7e9}
    base = len(dumps({**doc, "pad": ""}))
    return dumps({**doc, "pad": "p" * (size - base)})


def fill(store: MemoryStore, n: int, size: int, with_user: bool) -> None:
    for i in range(n):
        key = secrets.token_urlsafe(32)
        store.save(key, record(size), version=0, ttl=3600, user=f"user-{i}" if with_user else None)


def measure(n: int, size: int, with_user: bool) -> None:
    """One child process: print RSS before, after, per session, and the bytes allocated per
    session as tracemalloc sees them (on a separate sample of TRACED sessions)."""
    assert len(record(size)) == size
    store = MemoryStore()
    before = rss()
    fill(store, n, size, with_user)
    after = rss()
    sample = MemoryStore()
    tracemalloc.start()
    fill(sample, TRACED, size, with_user)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(before, after, (after - before) / n, traced / TRACED)


def churn() -> tuple[int, int]:
    """(records held, records live) after 20 simulated minutes of traffic."""
    now = [1_700_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    data = record(306)
    keys: list[str] = []
    versions: dict[str, int] = {}
    for step in range(12_000):  # 0.1 s per step: 20 minutes
        now[0] += 0.1
        key = secrets.token_urlsafe(32)
        store.save(key, data, version=0, ttl=600, user=None)
        keys.append(key)
        versions[key] = 1
        # one more request, on a session created in the last minute (its TTL moves on)
        recent = keys[max(0, len(keys) - 600) + step % min(600, len(keys))]
        if store.save(recent, data, version=versions[recent], ttl=600, user=None):
            versions[recent] += 1
    held = len(store._records)
    live = sum(1 for key in keys if store.load(key) is not None)
    return held, live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="sessions (repeatable)")
    parser.add_argument("--size", type=int, default=306, help="record bytes per session")
    parser.add_argument("--user", action="store_true", help="save every session with a user")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [100_000, 1_000_000]
    if args.child:
        measure(sizes[0], args.size, args.user)
        return

    print(f"`{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| sessions | record | user | RSS before | RSS after | RSS per session | allocated |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for n in sizes:
        command = [sys.executable, __file__, "--child", "--n", str(n), "--size", str(args.size)]
        if args.user:
            command.append("--user")
        before, after, per, traced = subprocess.run(
            command, check=True, capture_output=True, text=True
        ).stdout.split()
        print(
            f"| {n:,} | {args.size} B | {'yes' if args.user else 'no'} "
            f"| {int(before) / 2**20:.0f} MiB | {int(after) / 2**20:.0f} MiB "
            f"| {float(per):,.0f} B | {float(traced):,.0f} B |"
        )
    held, live = churn()
    print(f"\nChurn, 20 simulated minutes, 600 s TTL: {held:,} records held, {live:,} live.")


if __name__ == "__main__":
    main()
