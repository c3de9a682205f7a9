"""`coatcheck demo --check --plot FILE.png`: the results table as a chart.

Needs matplotlib, which is optional: importing this module raises `ImportError` without it
(the CLI turns that into a clear message before any cluster starts).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["plot_results"]

# Imported by name so that type checking does not require matplotlib to be installed.
_matplotlib: Any = importlib.import_module("matplotlib")
_matplotlib.use("Agg")  # files only, no display needed
_pyplot: Any = importlib.import_module("matplotlib.pyplot")


def plot_results(rows: list[dict[str, Any]], path: str) -> None:
    """Draw, per strategy: share of requests that saw the right session, whether the
    session survived its replica's death, revocation delay (with the bound the strategy
    promises, if any), and median / p99 latency."""
    rows = [r for r in rows if not r["skipped"]]
    names = [r["strategy"] for r in rows]
    colours = ["#2a9d8f" if r["ok"] else "#c1121f" for r in rows]
    figure, axes = _pyplot.subplots(1, 4, figsize=(15, 3.8))
    right = axes[0]
    right.bar(names, [100 * r["right_session"] for r in rows], color=colours)
    right.set_ylim(0, 100)
    right.set_title("right session (% of requests)")
    survived = axes[1]
    survived.bar(names, [1 if r["survived_replica_death"] else 0 for r in rows], color=colours)
    survived.set_ylim(0, 1)
    survived.set_yticks([0, 1], ["lost", "kept"])
    survived.set_title("session after its replica died")
    revoked = axes[2]
    revoked.bar(names, [r["revocation_ms"] or 0 for r in rows], color=colours)
    for x, r in enumerate(rows):
        if r["revocation_ms"] is None:
            revoked.annotate(
                r["revocation_note"] or "n/a",
                (x, 0),
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90,
            )
    bounds = [
        (x, r["revocation_bound_ms"])
        for x, r in enumerate(rows)
        if r.get("revocation_bound_ms") is not None
    ]
    if bounds:
        revoked.scatter(
            [x for x, _ in bounds],
            [b for _, b in bounds],
            marker="_",
            s=600,
            color="#222",
            label="bound",
            zorder=3,
        )
        revoked.legend()
    revoked.set_xticks(range(len(rows)), names)
    revoked.set_title("revocation on every replica (ms)")
    latency = axes[3]
    xs = range(len(rows))
    latency.bar(
        [x - 0.2 for x in xs], [r["latency_p50_ms"] or 0 for r in rows], 0.4, label="median"
    )
    latency.bar([x + 0.2 for x in xs], [r["latency_p99_ms"] or 0 for r in rows], 0.4, label="p99")
    latency.set_xticks(list(xs), names)
    latency.set_title("latency (ms)")
    latency.legend()
    figure.suptitle("coatcheck demo --check (green: as expected, red: not)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    _pyplot.close(figure)
