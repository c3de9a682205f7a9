"""`RevocationList` (the per-process copy) and its rules.

The revocation stores are tested beside the session stores: the revocation contract that
every backend passes is in `tests/stores/contract.py`, what is particular to each store in
`tests/stores/test_<backend>.py`, and the change and push feeds through managers in
`test_revocation_feeds.py`.
"""

from __future__ import annotations

import threading

from coatcheck.revocation import Revocation, RevocationList

T = 1_800_000_000.0


def sid(subject: str, at: float = T, expires_at: float = T + 100) -> Revocation:
    return Revocation("sid", subject, at, expires_at)


def user(subject: str, at: float = T, expires_at: float = T + 100) -> Revocation:
    return Revocation("user", subject, at, expires_at)


# -- RevocationList ------------------------------------------------------------------------


def test_a_revoked_sid_is_refused_from_its_time_on() -> None:
    lst = RevocationList()
    lst.apply([sid("s", at=T + 30)], 1, T)  # a grace window: revoked 30 s from now
    assert not lst.is_revoked("s", None, issued_at=T - 5, now=T + 29.9)
    assert lst.is_revoked("s", None, issued_at=T - 5, now=T + 30)
    assert lst.is_revoked("s", "anyone", issued_at=T + 1000, now=T + 31)
    assert not lst.is_revoked("other", None, issued_at=T - 5, now=T + 31)


def test_a_user_entry_refuses_only_tokens_issued_up_to_it() -> None:
    lst = RevocationList()
    lst.apply([user("ann", at=T)], 1, T)
    assert lst.is_revoked("s1", "ann", issued_at=T - 0.001, now=T + 1)
    assert lst.is_revoked("s2", "ann", issued_at=T, now=T + 1)  # a tie: revocation last
    assert not lst.is_revoked("s2", "ann", issued_at=T + 0.001, now=T + 1)
    assert not lst.is_revoked("s3", "ann", issued_at=T + 5, now=T + 6)
    assert not lst.is_revoked("s4", "bob", issued_at=T - 100, now=T + 1)
    assert not lst.is_revoked("s5", None, issued_at=T - 100, now=T + 1)


def test_user_entries_each_hold_until_their_own_expiry_in_any_order() -> None:
    early = user("ann", at=T, expires_at=T + 500)
    late = user("ann", at=T + 10, expires_at=T + 200)
    forward, backward = RevocationList(), RevocationList()
    forward.apply([early, late], 2, T)
    backward.apply([late], 2, T)
    backward.apply([early], 2, T)
    for lst in (forward, backward):
        assert lst.is_revoked("s", "ann", issued_at=T + 9, now=T + 11)
        assert lst.is_revoked("s", "ann", issued_at=T - 1, now=T + 11)
        assert not lst.is_revoked("s", "ann", issued_at=T + 10.001, now=T + 11)
        lst.apply([], 2, T + 300)  # past `late`'s expiry (its tokens are dead), within `early`'s
        assert len(lst) == 1
        assert lst.is_revoked("s", "ann", issued_at=T - 1, now=T + 300)
        lst.apply([], 2, T + 500)
        assert len(lst) == 0


def test_a_later_user_entry_with_a_longer_life_replaces_an_earlier_one() -> None:
    lst = RevocationList()
    lst.apply(
        [user("ann", at=T, expires_at=T + 100), user("ann", at=T + 5, expires_at=T + 200)], 2, T
    )
    assert len(lst) == 1


def test_applying_the_same_entries_again_changes_nothing() -> None:
    entries = [sid("a"), sid("b", at=T + 3), user("ann", at=T + 1)]
    once, twice = RevocationList(), RevocationList()
    once.apply(entries, 3, T)
    twice.apply(entries, 3, T)
    twice.apply(entries, 3, T)
    for lst in (once, twice):
        assert len(lst) == 3
        verdicts = [
            lst.is_revoked("a", None, T, T + 1),
            lst.is_revoked("b", None, T, T + 2),
            lst.is_revoked("b", None, T, T + 3),
            lst.is_revoked("x", "ann", T + 0.5, T + 4),
        ]
        assert verdicts == [True, False, True, True]


def test_expired_entries_are_forgotten_at_their_expiry() -> None:
    lst = RevocationList()
    lst.apply(
        [
            sid("short", expires_at=T + 10),
            sid("long", expires_at=T + 20),
            user("ann", expires_at=T + 10),
        ],
        3,
        T,
    )
    lst.apply([], 3, T + 9.999)
    assert len(lst) == 3
    lst.apply([], 3, T + 10)  # expires_at == now: the token it guards has expired too
    assert len(lst) == 1
    assert lst.is_revoked("long", None, T, T + 10)
    assert not lst.is_revoked("short", None, T, T + 10)


def test_an_entry_that_arrives_already_expired_is_not_kept() -> None:
    lst = RevocationList()
    lst.apply([sid("stale", expires_at=T - 1)], 1, T)
    assert len(lst) == 0


def test_memory_is_bounded_by_live_entries() -> None:
    """10,000 revocations over time, each living 60 s: the list never holds more than the
    ones still alive, whatever the history."""
    lst = RevocationList()
    most = 0
    for step in range(100):
        now = T + step * 6
        batch = [sid(f"{step}-{i}", at=now, expires_at=now + 60) for i in range(100)]
        lst.apply(batch, step + 1, now)
        most = max(most, len(lst))
    assert most == 1000  # 10 steps of 100 entries are alive at any time
    lst.apply([], 100, T + 100 * 6 + 60)
    assert len(lst) == 0


def test_cursor_never_goes_back_and_sync_time_is_recorded() -> None:
    lst = RevocationList()
    assert lst.due(T, 1.0)  # never synced
    lst.apply([], 7, T)
    assert (lst.cursor, lst.synced_at) == (7, T)
    lst.apply([], 3, T + 1)
    assert lst.cursor == 7
    assert not lst.due(T + 1.999, 1.0)
    assert lst.due(T + 2, 1.0)
    assert lst.due(T + 1, 0.0)  # strict: due on every request


def test_a_pushed_entry_leaves_cursor_and_sync_time_alone() -> None:
    """A push may overtake entries not polled yet: the next poll must still run on time and
    from the old cursor."""
    lst = RevocationList()
    lst.apply([], 5, T)
    lst.apply_one(sid("pushed"))
    lst.apply_one(user("ann", at=T + 1))
    assert (lst.cursor, lst.synced_at) == (5, T)
    assert lst.is_revoked("pushed", None, T, T)
    assert lst.is_revoked("s", "ann", T, T + 2)
    assert lst.due(T + 1, 1.0)


def test_pushes_and_polls_may_merge_from_different_threads() -> None:
    """A listener thread pushes while request threads poll (and prune): no merge is lost
    and iteration never trips over a concurrent insert."""
    lst = RevocationList()
    errors: list[BaseException] = []

    def push() -> None:
        try:
            for i in range(20_000):
                lst.apply_one(sid(f"pushed-{i}", expires_at=T + 1e6))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def poll() -> None:
        try:
            for i in range(2_000):
                lst.apply([sid(f"polled-{i}", expires_at=T + 1 + i)], i, T + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push), threading.Thread(target=poll)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert all(lst.is_revoked(f"pushed-{i}", None, T, T) for i in range(20_000))


def test_the_list_repr_shows_counts_only() -> None:
    lst = RevocationList()
    lst.apply([sid("secret-looking-sid"), user("alice")], 2, T)
    assert repr(lst) == "<RevocationList sids=1 users=1>"
