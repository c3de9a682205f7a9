"""What the per-route opt-out tests share: stores that record every call made to them (to
prove an excluded route touches none), managers in both modes, and a forged cookie."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, SessionManager
from coatcheck.stores import AsyncSQLiteStore, MemoryStore, SQLiteStore
from helpers import FakeClock

#: The store methods whose use counts as touching the store.
STORE_METHODS = frozenset(
    {"load", "save", "rotate", "delete", "list_user", "delete_user", "purge_expired"}
)

#: Both modes, and the stores of the server-side one.
MODES = ["server-memory", "server-sqlite", "client"]


def recording(base: type) -> type:
    """A subclass of the store class `base` that lists, in `calls`, every store method
    looked up on it (by the core or by the store itself)."""

    class Recording(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            object.__setattr__(self, "calls", [])
            super().__init__(*args, **kwargs)

        def __getattribute__(self, name: str) -> Any:
            if name in STORE_METHODS:
                object.__getattribute__(self, "calls").append(name)
            return super().__getattribute__(name)

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


RecordingMemory = recording(MemoryStore)
RecordingSQLite = recording(SQLiteStore)
RecordingAsyncSQLite = recording(AsyncSQLiteStore)


def manager_in(
    mode: str, tmp_path: Path, clock: FakeClock, *, asynchronous: bool = False
) -> tuple[SessionManager, Any]:
    """A manager in `mode` (one of `MODES`), and its recording store (None client-side:
    there is no store, and what must not happen is a token verification)."""
    options: dict[str, Any] = {
        "lifetimes": Lifetimes(renewal=None),
        "clock": clock,
        "log_salt": b"test-salt",
    }
    if mode == "client":
        return SessionManager(ClientSide(KeyRing.generate(), store=None), **options), None
    store: Any
    if mode == "server-memory":
        store = RecordingMemory(clock=clock)
    elif asynchronous:
        store = RecordingAsyncSQLite(tmp_path / "sessions.db", clock=clock)
    else:
        store = RecordingSQLite(tmp_path / "sessions.db", clock=clock, purge_interval=1e9)
    return SessionManager(ServerSide(store=store), **options), store


def forged(secret: str) -> str:
    """`secret` with its last character changed: well-formed, and verifying nowhere."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def security_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "coatcheck.security"]


def watch_security(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="coatcheck.security")


#: The headers coatcheck adds to a response it has a session for.
COATCHECK_HEADERS = ("set-cookie", "vary", "cache-control")
