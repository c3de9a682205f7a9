"""The strategy table: stores, keys and expectations, without starting clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from coatcheck import ClientSide, Cookie, Header, KeyRing
from coatcheck.demo import redact, resolve_store
from coatcheck.demo.strategies import STALENESS, STRATEGIES, Settings
from coatcheck.keys import DEFAULT_ENV


def test_five_strategies_with_their_expectations() -> None:
    assert list(STRATEGIES) == ["local", "sticky", "shared", "client", "header"]
    for name in ("client", "header"):
        strategy = STRATEGIES[name]
        assert strategy.client_side and strategy.shared_store
        assert strategy.expect.keeps_sessions and strategy.expect.survives_replica_death
        assert strategy.expect.revocation_within == STALENESS
    assert STRATEGIES["header"].carrier == "header"
    assert STRATEGIES["shared"].expect.revocation_within == 0.0


def test_client_side_replicas_share_the_cluster_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = (STRATEGIES["client"].environment() for _ in range(2))
    assert set(first) == {DEFAULT_ENV} and first != second  # one fresh key per cluster
    KeyRing.parse(first[DEFAULT_ENV])  # in the format KeyRing loads
    monkeypatch.setenv(DEFAULT_ENV, first[DEFAULT_ENV])
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'sessions.db'}", encrypted=True)
    for name, transport in (("client", Cookie), ("header", Header)):
        manager = STRATEGIES[name].manager(settings)
        assert isinstance(manager.mode, ClientSide) and manager.mode.encrypted
        assert manager.mode.staleness == STALENESS
        assert isinstance(manager.transport, transport)


def test_client_side_strategies_keep_revocations_in_the_store_given(tmp_path: Path) -> None:
    # Redis and PostgreSQL have revocation stores: client-side strategies use --store as is.
    for url in ("redis://localhost:6379/0", "postgresql://localhost/db"):
        assert resolve_store(STRATEGIES["client"], url, tmp_path) == (url, None)
        assert resolve_store(STRATEGIES["header"], url, tmp_path) == (url, None)
        assert resolve_store(STRATEGIES["shared"], url, tmp_path) == (url, None)
        assert resolve_store(STRATEGIES["local"], url, tmp_path) == (None, None)
    sqlite = f"sqlite:///{tmp_path / 'other.db'}"
    assert resolve_store(STRATEGIES["client"], sqlite, tmp_path) == (sqlite, None)
    default = f"sqlite:///{tmp_path / 'sessions.db'}"
    assert resolve_store(STRATEGIES["client"], None, tmp_path) == (default, None)


def test_printed_store_urls_hide_passwords() -> None:
    assert redact("redis://:s3cret@localhost:6379/0") == "redis://:***@localhost:6379/0"
    assert redact("postgresql://me:pw@db/x") == "postgresql://me:***@db/x"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
