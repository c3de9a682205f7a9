"""Memory of a process's local revocation list, and the cost of checking it.

    .venv/bin/python bench/revocation_memory.py [COUNT]

Applies COUNT (default 100 000) session revocations (128-bit sids, as ClientSide issues)
plus COUNT/100 per-user "log out everywhere" entries to a `RevocationList`, measures the
memory it holds with tracemalloc, then times `is_revoked` for a revoked and a live sid,
and shows that expired entries are dropped at the next sync.
"""

from __future__ import annotations

import secrets
import sys
import time
import tracemalloc

from coatcheck.revocation import Revocation, RevocationList


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = time.time()
    tracemalloc.start()
    revocations = RevocationList()
    # Entries arrive from the change feed with their own strings: build them inside the
    # measured window, then drop everything but what the list keeps.
    entries = [Revocation("sid", secrets.token_urlsafe(16), now, now + 3600) for _ in range(count)]
    entries += [Revocation("user", f"user-{i}", now, now + 3600) for i in range(count // 100)]
    total = len(entries)
    probe_revoked = entries[count // 2].subject
    revocations.apply(entries, cursor=total, now=now)
    del entries
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    probe_live = secrets.token_urlsafe(16)
    assert revocations.is_revoked(probe_revoked, None, now - 1, now + 1)
    assert not revocations.is_revoked(probe_live, "nobody", now - 1, now + 1)
    rounds = 200_000
    t0 = time.perf_counter_ns()
    for _ in range(rounds):
        revocations.is_revoked(probe_live, "user-7", now + 5, now + 1)
    check_ns = (time.perf_counter_ns() - t0) / rounds

    revocations.apply([], cursor=total, now=now + 3601)
    print("| entries | memory held | per entry | is_revoked (live sid) | after expiry |")
    print("|---|---|---|---|---|")
    print(
        f"| {total:,} | {held / 2**20:.1f} MiB | {held / total:.0f} B "
        f"| {check_ns:.0f} ns | {len(revocations)} entries |"
    )


if __name__ == "__main__":
    main()
