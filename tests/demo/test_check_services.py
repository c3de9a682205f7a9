"""`coatcheck demo --check` on the `shared` strategy with real Redis and PostgreSQL stores,
and the `sessions` CLI against them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coatcheck.cli import EXIT_STORE
from servers import (  # noqa: F401 - fixtures
    PostgresServer,
    RedisServer,
    postgres_server_fixture,
    redis_server_fixture,
)


def coatcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coatcheck", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_shared(url: str) -> dict[str, object]:
    result = coatcheck(
        "demo", "--check", "--strategy", "shared", "--store", url, "--requests", "12", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)
    assert isinstance(row, dict)
    return row


@pytest.mark.service
def test_shared_on_redis(redis_server: RedisServer) -> None:
    row = check_shared(redis_server.url)
    assert row["ok"] is True and row["right_session"] == 1.0
    assert row["survived_replica_death"] is True and row["revocation_ms"] is not None


@pytest.mark.service
def test_shared_on_postgres(postgres_server: PostgresServer) -> None:
    row = check_shared(postgres_server.url)
    assert row["ok"] is True and row["right_session"] == 1.0
    assert row["survived_replica_death"] is True and row["revocation_ms"] is not None


@pytest.mark.service
def test_sessions_cli_on_redis(redis_server: RedisServer) -> None:
    result = coatcheck(
        "sessions", "list", "--user", "nobody", "--store", redis_server.url, "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_unreachable_redis_is_a_clean_store_error() -> None:
    result = coatcheck("sessions", "list", "--user", "alice", "--store", "redis://127.0.0.1:1/0")
    assert result.returncode == EXIT_STORE, result.stderr
    assert result.stderr.startswith("coatcheck: error: the store failed")
    assert "Traceback" not in result.stderr


@pytest.mark.service
def test_client_keeps_its_revocations_on_redis(redis_server: RedisServer) -> None:
    result = coatcheck(
        "demo",
        "--check",
        "--strategy",
        "client",
        "--store",
        redis_server.url,
        "--requests",
        "12",
        "--replicas",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--store is not used" not in result.stderr
    (row,) = json.loads(result.stdout)
    assert row["ok"] is True and row["revocation_ms"] is not None
