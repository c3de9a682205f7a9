"""`coatcheck demo --check` end to end: real clusters, the scripted client, the table."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from coatcheck.cli import EXIT_STORE, EXIT_USAGE
from coatcheck.demo.check import CheckResult, check_strategy, judge
from coatcheck.demo.strategies import STRATEGIES


def coatcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coatcheck", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_check_every_strategy_prints_the_table_and_exits_0() -> None:
    result = coatcheck("demo", "--check", "--requests", "12")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["strategy", "requests", "right"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"local", "sticky", "shared", "client", "header"}
    assert all(row.rstrip().endswith(" ok") for row in rows.values())
    assert "[shared] killed " in result.stderr  # progress while it runs
    assert "[header] device B revoked device A: gone on every replica" in result.stderr


def test_check_json_numbers_for_shared() -> None:
    result = coatcheck("demo", "--check", "--strategy", "shared", "--requests", "12", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["strategy"] == "shared" and row["ok"] is True
    assert row["right_session"] == 1.0 and row["requests"] >= 12
    assert row["read_back"] == "3/3"
    assert row["survived_replica_death"] is True
    assert row["revocation_ms"] is not None and row["logout_everywhere"] is True
    assert row["latency_p50_ms"] <= row["latency_p99_ms"]


def test_check_json_header_with_encrypted_tokens() -> None:
    result = coatcheck(
        "demo",
        "--check",
        "--strategy",
        "header",
        "--encrypted",
        "--requests",
        "12",
        "--replicas",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)
    assert row["strategy"] == "header" and row["ok"] is True
    assert row["right_session"] == 1.0 and row["read_back"] == "2/2"
    assert row["survived_replica_death"] is True and row["logout_everywhere"] is True
    assert row["revocation_ms"] is not None and row["revocation_late"] is False
    assert row["revocation_bound_ms"] == 250.0


def test_check_json_local_loses_sessions() -> None:
    result = coatcheck(
        "demo", "--check", "--strategy", "local", "--requests", "12", "--json", "--replicas", "2"
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["right_session"] < 1.0 and row["survived_replica_death"] is False


def test_check_needs_two_replicas() -> None:
    result = coatcheck("demo", "--check", "--replicas", "1")
    assert result.returncode == EXIT_USAGE
    assert "at least 2 replicas" in result.stderr and "Traceback" not in result.stderr


def test_bad_or_unreachable_store_fails_before_any_cluster_starts() -> None:
    result = coatcheck("demo", "--check", "--strategy", "shared", "--store", "nosuch://x")
    assert result.returncode == EXIT_USAGE
    assert "bad store URL" in result.stderr and "Traceback" not in result.stderr
    result = coatcheck("demo", "--store", "sqlite:////nonexistent/dir/sessions.db")
    assert result.returncode == EXIT_STORE
    assert "the store failed" in result.stderr and "Traceback" not in result.stderr


def test_an_unavailable_strategy_is_skipped_with_a_reason() -> None:
    lines: list[str] = []
    strategy = replace(
        STRATEGIES["shared"],
        name="future",
        unavailable=lambda url: "needs a capability not built yet",
    )
    result = check_strategy(strategy, replicas=2, requests=5, store_url=None, progress=lines.append)
    assert result.skipped == "needs a capability not built yet"
    assert lines == ["[future] skipped: needs a capability not built yet"]
    assert result.as_dict()["ok"] is False and result.as_dict()["failures"] == []


def test_plot_draws_every_strategy(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from coatcheck.demo.plot import plot_results

    rows = []
    for name, strategy in STRATEGIES.items():
        result = CheckResult(
            name,
            requests=10,
            right=10 if strategy.expect.keeps_sessions else 0,
            survived=strategy.expect.survives_replica_death,
            latencies=[0.002, 0.003],
        )
        if strategy.expect.revocation_within is not None:
            result.revocation_ms = 120.0
            result.revocation_bound_ms = strategy.expect.revocation_within * 1000
        rows.append(result.as_dict())
    path = tmp_path / "check.png"
    plot_results(rows, str(path))
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def as_expected(name: str) -> CheckResult:
    """A result that matches what strategy `name` must show (shared and client-side)."""
    return CheckResult(
        name,
        requests=10,
        right=10,
        before_death=8,
        right_before_death=8,
        replicas=3,
        read_back=3,
        survived=True,
        revocation_ms=120.0,
        logout_everywhere=True,
    )


def test_judge_flags_late_revocation_cookies_on_the_header_and_lost_sessions() -> None:
    for name in ("shared", "client", "header"):
        result = as_expected(name)
        judge(STRATEGIES[name], result)
        assert result.failures == []
    late = replace(as_expected("client"), revocation_late=True)
    judge(STRATEGIES["client"], late)
    assert late.failures == [
        "a replica still accepted a revoked session more than 250 ms after the revocation"
    ]
    cookies = replace(as_expected("header"), stray_cookies=2)
    judge(STRATEGIES["header"], cookies)
    assert cookies.failures == ["the header transport answered with 2 Set-Cookie"]
    lost = replace(as_expected("client"), right_before_death=7, revocation_ms=None)
    judge(STRATEGIES["client"], lost)
    assert len(lost.failures) == 2  # a lost session, and a revocation that never showed
