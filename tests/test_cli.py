"""The `coatcheck` command line against real stores: sessions list / revoke / revoke-user /
purge, output formats, and clean errors with documented exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coatcheck import Lifetimes, RequestInfo, ServerSide, SessionManager
from coatcheck.cli import (
    EXIT_FAILED,
    EXIT_KEYS,
    EXIT_PIPE,
    EXIT_STORE,
    EXIT_USAGE,
    main,
    render_table,
)
from coatcheck.clientside import ClientSide
from coatcheck.drivers import commit_session, open_session
from coatcheck.keys import JWS_HS256, KeyRing
from coatcheck.stores import SQLiteStore
from coatcheck.tokens import JWECodec, JWSCodec


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
    assert rows[0]["assurance"] == "aal1"  # the level of the login (the lowest)


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
        (
            ["sessions", "list", "--user", "a", "--store", "sqlite://host/x.db"],
            EXIT_USAGE,
            "bad store URL",
        ),
        (["sessions", "revoke", "not an id", "--store", "memory://"], EXIT_USAGE, "base64url"),
        (
            ["sessions", "list", "--user", "a", "--store", "sqlite:////nonexistent/dir/x.db"],
            EXIT_STORE,
            "the store failed",
        ),
    ],
)
def test_clean_errors(
    argv: list[str],
    code: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("COATCHECK_STORE", raising=False)
    assert run(*argv)[0] == code
    err = capsys.readouterr().err
    assert err.startswith("coatcheck: error: ") and message in err
    assert "Traceback" not in err


def test_console_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coatcheck",
            "sessions",
            "purge",
            "--store",
            f"sqlite:///{tmp_path}/missing/dir/x.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_STORE
    assert result.stderr.startswith("coatcheck: error: the store failed")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv", [["keys", "new", "--count", "16"], ["keys", "check"], ["keys", "check", "--json"]]
)
def test_a_closed_pipe_ends_quietly(argv: list[str], keys: str) -> None:
    """`coatcheck keys check | head`: the reader is gone before the output is written. The
    pipe's read end is closed before the command starts, so every write fails (as the
    writes after `head` exits do), deterministically."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "coatcheck", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""  # no traceback, no "Exception ignored"
    assert result.returncode == EXIT_PIPE


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


# -- keys and tokens ------------------------------------------------------------------------


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> str:
    code, out = run("keys", "new", "--json")
    assert code == 0
    (key,) = json.loads(out)["keys"]
    monkeypatch.setenv("COATCHECK_KEYS", key)
    return str(key)


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sid": "s" * 22,
        "sub": "alice",
        "iat": now - 60,
        "exp": now + 3600,
        "idl": now + 600,
        "dat": {"cart": ["coat"]},
        "csrf": "per-session-secret",
        **extra,
    }


def test_keys_new_makes_keys_the_ring_loads() -> None:
    code, out = run("keys", "new", "--count", "2")
    assert code == 0
    ring = KeyRing.parse(out)
    assert len(ring) == 2


def test_keys_check_names_keys_without_printing_them(keys: str) -> None:
    code, out = run("keys", "check")
    assert code == 0 and keys not in out
    assert out.startswith("1 valid key(s) in $COATCHECK_KEYS")
    code, out = run("keys", "check", "--json")
    (row,) = json.loads(out)["keys"]
    assert row["current"] is True and row["jws_kid"] == KeyRing.parse(keys).current(JWS_HS256).kid


def test_keys_check_from_a_file(tmp_path: Path, keys: str) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"# newest first\n{run('keys', 'new')[1]}{keys}\n")
    code, out = run("keys", "check", "--keys-file", str(path), "--json")
    assert code == 0 and [k["current"] for k in json.loads(out)["keys"]] == [True, False]


@pytest.mark.parametrize("value", [None, "", "short", "not base64!"])
def test_missing_or_bad_keys_exit_4(
    value: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if value is None:
        monkeypatch.delenv("COATCHECK_KEYS", raising=False)
    else:
        monkeypatch.setenv("COATCHECK_KEYS", value)
    assert run("keys", "check")[0] == EXIT_KEYS
    err = capsys.readouterr().err
    assert err.startswith("coatcheck: error: ") and "coatcheck keys new" in err
    if value:
        assert value not in err.removeprefix("coatcheck: error: ").split("Generate")[0]


@pytest.mark.parametrize("codec", [JWSCodec, JWECodec])
def test_token_inspect_valid(keys: str, codec: type[JWSCodec] | type[JWECodec]) -> None:
    token = codec(KeyRing.parse(keys)).encode(claims())
    code, out = run("token", "inspect", token, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True and report["current_key"] is True
    assert report["claims"]["sub"] == "alice" and report["claims"]["dat"] == {"cart": ["coat"]}
    assert "per-session-secret" not in out  # the CSRF secret is hidden
    assert set(report["deadlines"]) >= {"iat", "exp", "idl"}
    assert report["revoked"] is None  # no store given
    assert keys not in out


def test_token_inspect_text_and_older_key(keys: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = JWSCodec(KeyRing.parse(keys)).encode(claims())
    monkeypatch.setenv("COATCHECK_KEYS", f"{run('keys', 'new')[1].strip()},{keys}")
    code, out = run("token", "inspect", token)
    assert code == 0
    assert "an older key (would be re-issued)" in out and "status    valid" in out


def test_token_inspect_expired_and_forged(keys: str) -> None:
    now = int(time.time())
    expired = JWSCodec(KeyRing.parse(keys)).encode(claims(idl=now - 5))
    code, out = run("token", "inspect", expired, "--json")
    assert code == EXIT_FAILED and json.loads(out)["problem"] == "token past its idle deadline"
    forged = JWSCodec(KeyRing.generate()).encode(claims())
    code, out = run("token", "inspect", forged, "--json")
    assert code == EXIT_FAILED and json.loads(out)["valid"] is False
    assert "claims" not in json.loads(out)  # nothing unverified is shown as claims
    code, _ = run("token", "inspect", "not-a-token")
    assert code == EXIT_FAILED


def test_client_side_sessions_listed_revoked_and_seen_revoked(keys: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sessions.db"
    manager = SessionManager(
        ClientSide(KeyRing.parse(keys), store=url), lifetimes=Lifetimes(renewal=None)
    )
    session = open_session(manager, RequestInfo(headers=[("user-agent", "Firefox")]))
    session.login("alice")
    headers = commit_session(manager, session)
    token = next(v for k, v in headers if k == "set-cookie").split(";")[0].split("=", 1)[1]
    code, out = run(
        "sessions", "list", "--user", "alice", "--store", url, "--client-side", "--json"
    )
    (row,) = json.loads(out)
    assert code == 0 and row["id"] == session.id and row["user_agent"] == "Firefox"
    code, out = run("token", "inspect", token, "--store", url, "--json")
    assert code == 0 and json.loads(out)["revoked"] is False
    code, _ = run("sessions", "revoke", session.id, "--store", url, "--client-side")
    assert code == 0
    code, out = run("token", "inspect", token, "--store", url)
    assert code == EXIT_FAILED and "revoked   YES" in out


@pytest.mark.parametrize("verb", ["revoke", "revoke-user"])
def test_client_side_sessions_are_never_revoked_as_server_side_ones(
    keys: str, tmp_path: Path, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --client-side the CLI used to delete the registry record, say "revoked" and
    exit 0 while the token kept working. Now it refuses, says which flag revokes for real,
    and changes nothing; with the flag the token is refused."""
    url = f"sqlite:///{tmp_path}/sessions.db"
    manager = SessionManager(
        ClientSide(KeyRing.parse(keys), store=url), lifetimes=Lifetimes(renewal=None)
    )
    session = open_session(manager, RequestInfo())
    session.login("alice")
    headers = commit_session(manager, session)
    token = next(v for k, v in headers if k == "set-cookie").split(";")[0].split("=", 1)[1]
    target = session.id if verb == "revoke" else "alice"
    code, _ = run("sessions", verb, target, "--store", url)
    error = capsys.readouterr().err
    assert code == EXIT_USAGE and "--client-side" in error and "Nothing was revoked" in error
    code, out = run(
        "sessions", "list", "--user", "alice", "--store", url, "--client-side", "--json"
    )
    assert [row["id"] for row in json.loads(out)] == [session.id]  # still listed
    code, out = run("token", "inspect", token, "--store", url, "--json")
    assert code == 0 and json.loads(out)["revoked"] is False
    code, out = run("sessions", verb, target, "--store", url, "--client-side")
    assert code == 0 and ("revoked 1 session" in out or f"revoked {session.id}" in out)
    code, out = run("token", "inspect", token, "--store", url)
    assert code == EXIT_FAILED and "revoked   YES" in out


@pytest.mark.parametrize("dash_id", ["-" + "A" * 21, "-_" + "b" * 20])
def test_ids_that_begin_with_a_dash_are_ids_not_options(
    db: tuple[str, SQLiteStore], dash_id: str
) -> None:
    url, store = db
    store.save(dash_id, b"{}", version=0, ttl=60, user="alice")
    code, out = run("sessions", "revoke-user", "alice", "--keep", dash_id, "--store", url)
    assert code == 0 and store.load(dash_id) is not None
    code, out = run("sessions", "revoke", dash_id, "--store", url, "--json")
    assert code == 0 and json.loads(out) == {"id": dash_id, "revoked": True}
    assert store.load(dash_id) is None
