"""`Session`: MutableMapping semantics, change tracking, lifecycle intents. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from coatcheck import Session
from coatcheck.ids import handle_of, new_secret
from coatcheck.session import DELETED

SECRET = new_secret()


def make(data: dict[str, Any] | None = None, *, is_new: bool = False) -> Session:
    return Session.create(
        dict(data or {}),
        secret=SECRET,
        id=handle_of(SECRET),
        is_new=is_new,
        now=100.0,
        created_at=50.0,
        last_seen=90.0,
        rotated_at=50.0,
    )


def test_behaves_like_a_dict() -> None:
    session = make({"a": 1})
    session["b"] = [1, 2]
    assert session["a"] == 1
    assert session.get("missing") is None
    assert session.get("missing", 5) == 5
    assert "a" in session and "zz" not in session
    assert sorted(session) == ["a", "b"]
    assert len(session) == 2
    assert dict(session.items()) == {"a": 1, "b": [1, 2]}
    assert session == {"a": 1, "b": [1, 2]}
    assert session.pop("a") == 1
    assert session.setdefault("c", "x") == "x"
    session.update({"d": 4}, e=5)
    assert session.data() == {"b": [1, 2], "c": "x", "d": 4, "e": 5}
    with pytest.raises(KeyError):
        session["a"]
    with pytest.raises(KeyError):
        del session["a"]
    session.clear()
    assert len(session) == 0


def test_keys_must_be_str() -> None:
    session = make()
    with pytest.raises(TypeError):
        session[1] = "x"  # type: ignore[index]


def test_fresh_session_is_neither_accessed_nor_modified() -> None:
    session = make({"a": 1})
    assert not session.accessed
    assert not session.modified
    assert session.changes() == {}


Action = Callable[[Session], object]


def _empty_lists(values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, list):
            value.clear()


READS: list[tuple[str, Action]] = [
    ("getitem", lambda s: s["a"]),
    ("get", lambda s: s.get("a")),
    ("get-missing", lambda s: s.get("nope")),
    ("contains", lambda s: "a" in s),
    ("iter", lambda s: list(s)),
    ("len", lambda s: len(s)),
    ("items", lambda s: list(s.items())),
    ("values", lambda s: list(s.values())),
]


@pytest.mark.parametrize(("name", "action"), READS, ids=[r[0] for r in READS])
def test_reads_mark_accessed_but_not_modified(name: str, action: Action) -> None:
    session = make({"a": {"nested": [1]}, "b": 2})
    action(session)
    assert session.accessed
    assert not session.modified
    assert session.changes() == {}


WRITES: list[tuple[str, Action, dict[str, Any]]] = [
    ("set-new", lambda s: s.__setitem__("n", 1), {"n": 1}),
    ("set-same-value", lambda s: s.__setitem__("a", [1]), {"a": [1]}),
    ("delete", lambda s: s.__delitem__("b"), {"b": DELETED}),
    ("pop", lambda s: s.pop("b"), {"b": DELETED}),
    ("update", lambda s: s.update(n=1), {"n": 1}),
    ("setdefault-new", lambda s: s.setdefault("n", []).append(1), {"n": [1]}),
    ("append-in-place", lambda s: s["a"].append(2), {"a": [1, 2]}),
    ("get-then-append", lambda s: s.get("a", []).append(2), {"a": [1, 2]}),
    ("nested-dict-in-place", lambda s: s["d"]["k"].update(x=1), {"d": {"k": {"x": 1}}}),
    ("values-in-place", lambda s: _empty_lists(s.values()), {"a": []}),
    ("clear", lambda s: s.clear(), {"a": DELETED, "b": DELETED, "d": DELETED}),
]


@pytest.mark.parametrize(("name", "action", "expected"), WRITES, ids=[w[0] for w in WRITES])
def test_writes_are_tracked(name: str, action: Action, expected: dict[str, Any]) -> None:
    session = make({"a": [1], "b": 2, "d": {"k": {}}})
    action(session)
    assert session.accessed
    assert session.modified
    assert session.changes() == expected


def test_in_place_mutation_reverted_is_not_a_change() -> None:
    session = make({"a": [1]})
    session["a"].append(2)
    session["a"].pop()
    assert not session.modified


def test_set_then_mutate_saves_the_final_value() -> None:
    session = make()
    session["cart"] = []
    session["cart"].append("apple")
    assert session.changes() == {"cart": ["apple"]}


def test_modified_can_be_forced() -> None:
    session = make({"a": 1})
    session.modified = True
    assert session.modified
    session.modified = False
    assert not session.modified


def test_login_records_user_and_rotation() -> None:
    session = make()
    session.login("alice")
    assert session.user == "alice"
    assert session.authenticated_at == 100.0
    assert session.created_at == 100.0  # the absolute timeout counts from the login
    assert session._state.rotate == "login"
    assert session.modified
    session.regenerate()  # a login already rotates without a grace alias; keep that
    assert session._state.rotate == "login"


@pytest.mark.parametrize("user", ["", None, 42])
def test_login_needs_a_user(user: Any) -> None:
    with pytest.raises(TypeError):
        make().login(user)


def test_regenerate_keeps_data() -> None:
    session = make({"a": 1})
    session.regenerate()
    assert session._state.rotate == "regenerate"
    assert session.modified
    assert session.changes() == {}
    assert session.data() == {"a": 1}


@pytest.mark.parametrize("method", ["logout", "invalidate"])
def test_logout_ends_and_empties(method: str) -> None:
    session = make({"a": [1], "b": 2})
    session.login("alice")
    session["a"].append(2)
    _ = session.csrf_token
    session.set_persistent()
    getattr(session, method)()
    assert session.ended
    assert session.modified
    assert len(session.data()) == 0
    assert session.user is None and session.authenticated_at is None
    assert session.csrf_secret is None and not session.persistent
    assert session._state.rotate is None


def test_logout_other_devices_needs_a_user() -> None:
    session = make()
    with pytest.raises(ValueError):
        session.logout_other_devices()
    session.login("alice")
    session.logout_other_devices()
    assert session._state.logout_others


def test_set_persistent_only_changes_on_change() -> None:
    session = make()
    session.set_persistent(False)
    assert not session.modified
    session.set_persistent()
    assert session.persistent and session._state.reissue and session.modified


def test_csrf_token_is_stable_and_marks_modified() -> None:
    session = make()
    token = session.csrf_token
    assert len(token) >= 43
    assert session.csrf_token == token
    assert session.modified


def test_repr_and_info_hold_no_secret() -> None:
    session = make({"k": "v"})
    session.login("alice")
    assert SECRET not in repr(session)
    assert SECRET not in repr(session.info())
    assert session.info().id == handle_of(SECRET)
    assert session.secret == SECRET


def test_unbind_user_forgets_the_user_and_keeps_the_session() -> None:
    session = make({"a": 1})
    session.login("alice")
    session._state.rotate = None  # as if the login had been committed
    session._state.meta_changed = False
    session.unbind_user()
    assert session.user is None and session.authenticated_at is None
    assert session["a"] == 1 and not session.ended
    assert session.modified and session._state.rotate is None  # saved, same secret
    anonymous = make()
    anonymous.unbind_user()
    assert not anonymous.modified  # nothing to forget: nothing to save


def test_renew_handle_rotates_like_a_login_and_keeps_user_and_data() -> None:
    session = make({"a": 1})
    session.user = "alice"
    created = session.created_at
    session.renew_handle()
    assert session._state.rotate == "login" and session.modified
    assert session.user == "alice" and session["a"] == 1 and session.created_at == created
    replaced = make({"a": 1})
    replaced.user = "alice"
    replaced._state.superseded = True  # presented a secret a renewal already replaced
    replaced.renew_handle()
    assert replaced._state.rotate == "login" and replaced.is_new  # a new session...
    assert replaced.user is None and "a" not in replaced  # ...with nothing of the old one
