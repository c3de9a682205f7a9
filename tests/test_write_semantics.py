"""What parallel requests of one session may and may not do to each other's writes
(server-side sessions; docs/operating.md, "Write semantics").

- different keys: every write survives;
- a key written without being read: the last commit wins (nothing was computed from a
  value that could be stale);
- a key read and then written, which another request changed in between: the commit
  raises `WriteConflict` and stores nothing (adapters answer 409), so no acknowledged
  write is ever undone by a stale one;
- `increment` and `append`: re-applied to the stored value, never a conflict, never lost.

The model test drives several requests through random interleavings of open, change and
commit on a real store, and checks after each commit that what is stored is exactly what
the acknowledged commits say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatcheck import ConfigurationError, ServerSide, Session, SessionManager, WriteConflict
from coatcheck.drivers import commit_session, open_session
from coatcheck.stores import MemoryStore, SQLiteStore
from helpers import FakeClock, manager_for, request


def started(manager: SessionManager, **data: Any) -> str:
    session = open_session(manager, request())
    session.update(data)
    commit_session(manager, session)
    return session.secret


@pytest.fixture(params=["memory", "sqlite"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> SessionManager:
    clock = FakeClock()
    store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "s.db", clock=clock)
    )
    return manager_for(store, clock)


def stored(manager: SessionManager, secret: str) -> dict[str, Any]:
    return dict(open_session(manager, request(secret)).data())


def test_a_stale_read_modify_write_is_refused_and_stores_nothing(
    manager: SessionManager,
) -> None:
    secret = started(manager, k=1, other=0)
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    slow["k"] = slow["k"] + 1  # computed from k=1
    slow["other"] = "from slow"
    fast["k"] = 10
    commit_session(manager, fast)  # acknowledged
    with pytest.raises(WriteConflict):
        commit_session(manager, slow)
    assert stored(manager, secret) == {"k": 10, "other": 0}  # nothing of `slow` landed


def test_last_write_wins_when_configured() -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock, on_conflict="last-write-wins")
    secret = started(manager, k=1)
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    slow["k"] = slow["k"] + 1
    fast["k"] = 10
    commit_session(manager, fast)
    commit_session(manager, slow)  # no conflict: the stale write wins, as configured
    assert stored(manager, secret)["k"] == 2


def test_an_unknown_conflict_rule_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="on_conflict"):
        SessionManager(ServerSide(MemoryStore()), on_conflict="merge")  # type: ignore[arg-type]


@pytest.mark.parametrize("read", ["get", "in", "missing"])
def test_every_kind_of_read_counts(manager: SessionManager, read: str) -> None:
    secret = started(manager, other=1) if read == "missing" else started(manager, k=[1])
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    if read == "get":
        slow["k"] = [*slow.get("k", []), 2]
    elif read == "in":
        slow["k"] = [2] if "k" not in slow else [1, 2]
    else:
        slow["k"] = slow.get("k") or [2]  # read while absent
    fast["k"] = ["fast"]
    commit_session(manager, fast)
    with pytest.raises(WriteConflict):
        commit_session(manager, slow)
    assert stored(manager, secret)["k"] == ["fast"]


def test_in_place_changes_of_a_read_value_are_read_modify_writes(
    manager: SessionManager,
) -> None:
    secret = started(manager, cart=["a"])
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    slow["cart"].append("b")
    fast["cart"] = ["c"]
    commit_session(manager, fast)
    with pytest.raises(WriteConflict):
        commit_session(manager, slow)
    assert stored(manager, secret)["cart"] == ["c"]


def test_blind_writes_and_distinct_keys_all_land(manager: SessionManager) -> None:
    secret = started(manager, k=1)
    first, second = open_session(manager, request(secret)), open_session(manager, request(secret))
    first["k"] = "first"  # not read: last write wins
    first["a"] = 1
    second["k"] = "second"
    second["b"] = 2
    commit_session(manager, second)
    commit_session(manager, first)
    assert stored(manager, secret) == {"k": "first", "a": 1, "b": 2}


def test_a_read_of_an_unchanged_key_is_no_conflict(manager: SessionManager) -> None:
    secret = started(manager, k=1, n=0)
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    slow["k"] = slow["k"] + 1
    fast["n"] = 5  # another key
    commit_session(manager, fast)
    commit_session(manager, slow)
    assert stored(manager, secret) == {"k": 2, "n": 5}


def test_parallel_increments_and_appends_are_never_lost(manager: SessionManager) -> None:
    secret = started(manager, n=0)
    sessions = [open_session(manager, request(secret)) for _ in range(20)]
    for i, session in enumerate(sessions):
        assert session.increment("n") == 1  # each saw 0
        session.increment("n", 2)
        session.append("log", i)
    for session in reversed(sessions):
        commit_session(manager, session)
    data = stored(manager, secret)
    assert data["n"] == 60
    assert sorted(data["log"]) == list(range(20))


def test_increment_and_append_refuse_values_of_another_type() -> None:
    session = Session.create({"s": "text", "n": 1}, secret="x" * 65, id="x" * 22, is_new=False)
    with pytest.raises(TypeError, match="not a number"):
        session.increment("s")
    with pytest.raises(TypeError, match="not a list"):
        session.append("n", 1)
    with pytest.raises(TypeError):
        session.increment("n", "1")  # type: ignore[arg-type]


def test_an_increment_on_a_key_that_became_text_is_a_conflict(manager: SessionManager) -> None:
    secret = started(manager, n=1)
    slow, fast = open_session(manager, request(secret)), open_session(manager, request(secret))
    slow.increment("n")
    fast["n"] = "reset"
    commit_session(manager, fast)
    with pytest.raises(WriteConflict):
        commit_session(manager, slow)
    assert stored(manager, secret)["n"] == "reset"


# -- the model: random interleavings, every acknowledged write accounted for ----------------

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "commit"]),
        st.integers(0, 5),  # which request
        st.sampled_from(["blind", "rmw", "increment", "append", "own-key"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_acknowledged_writes_are_never_undone_in_any_interleaving(
    steps: list[tuple[str, int, str]],
) -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock)
    secret = started(manager, rmw=0, blind=None, n=0, log=[])
    open_: dict[int, tuple[Session, str, int]] = {}
    expected: dict[str, Any] = {"n": 0, "log": [], "rmw": 0}
    serial = 0
    for action, who, kind in steps:
        if action == "open" and who not in open_:
            session = open_session(manager, request(secret))
            serial += 1
            if kind == "blind":
                session["blind"] = serial
            elif kind == "rmw":
                session["rmw"] = session["rmw"] + 1
            elif kind == "increment":
                session.increment("n")
            elif kind == "append":
                session.append("log", serial)
            else:
                session[f"own-{who}"] = serial
            open_[who] = (session, kind, serial)
        elif action == "commit" and who in open_:
            session, kind, mark = open_.pop(who)
            try:
                commit_session(manager, session)
            except WriteConflict:
                assert kind == "rmw"  # only a read-modify-write can conflict
                continue
            if kind == "blind":
                expected["blind"] = mark
            elif kind == "rmw":
                expected["rmw"] += 1  # it read the current value: no increment is lost
            elif kind == "increment":
                expected["n"] += 1
            elif kind == "append":
                expected["log"].append(mark)
            else:
                expected[f"own-{who}"] = mark
            data = stored(manager, secret)
            assert {k: data.get(k) for k in expected} == expected
