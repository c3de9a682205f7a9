"""The `coatcheck` command line against real stores: sessions list / revoke / revoke-user /
purge, output formats, and clean errors with documented exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coatcheck import Lifetimes, RequestInfo, ServerSide, SessionManager
from coatcheck.cli import EXIT_STORE, EXIT_USAGE, main, render_table
from coatcheck.drivers import commit_session, open_session
from coatcheck.stores import SQLiteStore


def login(store: SQLiteStore, user: str, agent: str = "test-agent") -> str:
    """Create a real logged-in session of `user` in `store`; returns its public ID."""
    manager = SessionManager(ServerSide(store), lifetimes=Lifetimes(renewal=None))
    session = open_session(
        manager, RequestInfo(headers=[("user-agent", agent)], client_ip="192.0.2.7")
    )
    session.login(user)
    session["cart"] = ["coat"]
    commit_session(manager, session)
    return session.id


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, SQLiteStore]:
    path = tmp_path / "sessions.db"
    return f"sqlite:///{path}", SQLiteStore(path)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_list_shows_a_users_sessions_as_a_table(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    first = login(store, "alice", "Firefox")
    second = login(store, "alice", "Chromium")
    login(store, "bob")
    code, out = run("sessions", "list", "--user", "alice", "--store", url)
    assert code == 0
    assert out.startswith("2 session(s) of alice\n")
    assert first in out and second in out
    assert "Firefox" in out and "192.0.2.7" in out


def test_list_json(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    key = login(store, "alice", "Firefox")
    code, out = run("sessions", "list", "--user", "alice", "--store", url, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [key]
    assert rows[0]["user"] == "alice" and rows[0]["user_agent"] == "Firefox"


def test_store_from_environment(
    db: tuple[str, SQLiteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, store = db
    login(store, "bob")
    monkeypatch.setenv("COATCHECK_STORE", url)
    code, out = run("sessions", "list", "--user", "bob", "--json")
    assert code == 0 and len(json.loads(out)) == 1


def test_revoke_one_session(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    gone, kept = login(store, "alice"), login(store, "alice")
    code, out = run("sessions", "revoke", gone, "--store", url, "--json")
    assert code == 0
    assert json.loads(out) == {"id": gone, "revoked": True}
    assert store.load(gone) is None and store.load(kept) is not None
    code, out = run("sessions", "revoke", gone, "--store", url)
    assert code == 0 and "nothing to revoke" in out


def test_revoke_user_keeps_one(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    keep = login(store, "alice")
    others = [login(store, "alice") for _ in range(2)]
    bob = login(store, "bob")
    code, out = run("sessions", "revoke-user", "alice", "--keep", keep, "--store", url)
    assert code == 0 and out == "revoked 2 session(s) of alice\n"
    assert store.load(keep) is not None and store.load(bob) is not None
    assert all(store.load(key) is None for key in others)


def test_purge(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    store.save("expired", b"{}", version=0, ttl=0.0, user="alice")
    live = login(store, "alice")
    code, out = run("sessions", "purge", "--store", url, "--json")
    assert code == 0 and json.loads(out) == {"purged": 1}
    assert store.load(live) is not None


def test_memory_store_starts_empty() -> None:
    code, out = run("sessions", "list", "--user", "alice", "--store", "memory://", "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["sessions", "list", "--user", "a"], EXIT_USAGE, "no store"),
        (["sessions", "list", "--user", "a", "--store", "ftp://x"], EXIT_USAGE, "bad store URL"),
        (["sessions", "list", "--user", "a", "--store", "sqlite://host/x.db"], EXIT_USAGE,
         "bad store URL"),
        (["sessions", "revoke", "not-an-id", "--store", "memory://"], EXIT_USAGE, "43 base64url"),
        (["sessions", "list", "--user", "a", "--store", "sqlite:////nonexistent/dir/x.db"],
         EXIT_STORE, "the store failed"),
    ],
)  # fmt: skip
def test_clean_errors(
    argv: list[str], code: int, message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("COATCHECK_STORE", raising=False)
    assert run(*argv)[0] == code
    err = capsys.readouterr().err
    assert err.startswith("coatcheck: error: ") and message in err
    assert "Traceback" not in err


def test_console_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coatcheck", "sessions", "purge", "--store",
         f"sqlite:///{tmp_path}/missing/dir/x.db"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == EXIT_STORE
    assert result.stderr.startswith("coatcheck: error: the store failed")
    assert "Traceback" not in result.stderr


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sessions", "frobnicate"])
    assert exc.value.code == EXIT_USAGE


def test_render_table() -> None:
    table = render_table(["a", "long header"], [["xyz", None], [True, 2.0]])
    assert table.splitlines() == [
        "a    long header",
        "---  -----------",
        "xyz  -",
        "yes  2.0",
    ]
