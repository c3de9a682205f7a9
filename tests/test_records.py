"""The stored record format: compact JSON, strict decoding, never pickle."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck import Session, SessionDataError
from coatcheck.exceptions import StoreCorrupted
from coatcheck.ids import handle_of, new_secret
from coatcheck.records import Credentials, Stored, decode, dumps, encode


def make(data: dict[str, Any]) -> Session:
    secret = new_secret()
    return Session.create(
        data,
        secret=secret,
        id=handle_of(secret),
        is_new=True,
        now=5.0,
        created_at=1.0,
        last_seen=2.5,
        rotated_at=3.0,
    )


def test_round_trip_with_all_metadata() -> None:
    session = make({"cart": ["a", "ü"], "n": 1, "nested": {"x": None}})
    session.login("alice")
    session.ip, session.user_agent = "192.0.2.1", "agent/1.0"
    session.set_persistent()
    token = session.csrf_token
    stored = decode(encode(session))
    assert stored == Stored(
        data={"cart": ["a", "ü"], "n": 1, "nested": {"x": None}},
        created_at=5.0,
        last_seen=2.5,
        rotated_at=3.0,
        user="alice",
        authenticated_at=5.0,
        ip="192.0.2.1",
        user_agent="agent/1.0",
        persistent=True,
        csrf_secret=token,
        credentials=None,
    )


def test_minimal_record_is_compact_and_holds_no_secret() -> None:
    session = make({})
    raw = encode(session)
    assert raw == b'{"d":{},"c":1.0,"s":2.5,"r":3.0}'
    assert session.secret.encode() not in raw


def test_credentials_round_trip_and_hold_only_hashes() -> None:
    session = make({})
    current = Credentials("v" * 43)
    renewed = Credentials("w" * 43, "v" * 43, 12.5)
    assert decode(encode(session, None, current)).credentials == current
    raw = encode(session, None, renewed)
    assert decode(raw).credentials == renewed
    assert session.secret.encode() not in raw


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"x", object(), float("nan"), float("-inf"), {"k": {("t",): 1}}, [1, {2}]],
    ids=repr,
)
def test_non_json_values_raise_session_data_error(value: Any) -> None:
    with pytest.raises(SessionDataError):
        encode(make({"bad": value}))
    with pytest.raises(SessionDataError):
        dumps(value)


def _record(**fields: Any) -> bytes:
    doc: dict[str, Any] = {"d": {}, "c": 1, "s": 1, "r": 1}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


CORRUPT = [
    ("empty", b""),
    ("not-utf8", b"\xff\xfe"),
    ("not-json", b"{nope"),
    ("pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."),
    ("list", b"[1, 2]"),
    ("string", b'"m"'),
    ("number", b"5"),
    ("null", b"null"),
    ("data-not-dict", _record(d=[1])),
    ("no-data", _record(d=...)),
    ("no-created", _record(c=...)),
    ("created-string", _record(c="1")),
    ("created-bool", _record(c=True)),
    ("created-null", _record(c=None)),
    ("created-nan", b'{"d":{},"c":NaN,"s":1,"r":1}'),
    ("seen-infinity", b'{"d":{},"c":1,"s":Infinity,"r":1}'),
    ("created-huge-int", b'{"d":{},"c":' + b"9" * 400 + b',"s":1,"r":1}'),
    ("auth-string", _record(a="x")),
    ("user-int", _record(u=5)),
    ("verifier-int", _record(v=5)),
    ("previous-int", _record(v="x", pv=5, pe=1)),
    ("previous-without-until", _record(v="x", pv="y")),
    ("previous-until-string", _record(v="x", pv="y", pe="1")),
    ("alias-of-0.1", b'{"m":"target"}'),
    ("ip-list", _record(ip=[1])),
    ("csrf-dict", _record(x={})),
    ("alias-int", b'{"m":1}'),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000),
]


@pytest.mark.parametrize(("name", "raw"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupted_records_raise_store_corrupted(name: str, raw: bytes) -> None:
    with pytest.raises(StoreCorrupted):
        decode(raw)


@given(st.binary())
def test_any_bytes_decode_or_raise_store_corrupted(raw: bytes) -> None:
    try:
        result = decode(raw)
    except StoreCorrupted:
        return
    assert isinstance(result, Stored)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, {"deep": [2**100]}])
def test_integers_beyond_64_bits_raise_session_data_error(value: Any) -> None:
    # Records and tokens are JSON that other readers (JavaScript, orjson) must read back
    # exactly: integers past 64 bits would come back as floats, so they are refused.
    with pytest.raises(SessionDataError, match="64-bit"):
        encode(make({"n": value}))


@given(st.dictionaries(st.text(), JSON, max_size=5))
def test_any_json_data_round_trips(data: dict[str, Any]) -> None:
    stored = decode(encode(make(data)))
    assert isinstance(stored, Stored)
    assert stored.data == data
