"""Transports: cookie parsing and rendering, configuration checks, the header transport."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck import ConfigurationError, RequestInfo
from coatcheck.exceptions import SessionTooLarge
from coatcheck.transports import Cookie, Header, cookie_names, find_cookie

VALUE = "Ab3_-" * 8 + "xyz"


def cookies(*headers: str) -> RequestInfo:
    return RequestInfo(headers=[("cookie", h) for h in headers])


def test_default_cookie_is_strict() -> None:
    cookie = Cookie()
    assert cookie.render(VALUE) == (
        f"__Host-session={VALUE}; Path=/; HttpOnly; Secure; SameSite=Lax"
    )
    assert cookie.render(VALUE, max_age=3600) == (
        f"__Host-session={VALUE}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax"
    )
    assert cookie.render(VALUE, max_age=-5).count("Max-Age=0") == 1
    assert cookie.render_clear() == (
        "__Host-session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        "HttpOnly; Secure; SameSite=Lax"
    )


def test_relaxed_cookie_renders_its_options() -> None:
    cookie = Cookie(
        name="sid",
        path="/app",
        domain="example.com",
        secure=False,
        http_only=False,
        same_site="strict",
    )
    assert cookie.render("v") == "sid=v; Path=/app; Domain=example.com; SameSite=Strict"
    partitioned = Cookie(same_site="none", partitioned=True)
    assert partitioned.render("v").endswith("; Secure; SameSite=None; Partitioned")


@pytest.mark.parametrize(
    "options",
    [
        {"name": "bad name"},
        {"name": "semi;colon"},
        {"name": ""},
        {"path": "no-slash"},
        {"path": "/a;b"},
        {"domain": "a b"},
        {"same_site": "sometimes"},
        {"secure": False},  # __Host- needs Secure
        {"path": "/app"},  # __Host- needs Path=/
        {"domain": "example.com"},  # __Host- forbids Domain
        {"name": "__Secure-s", "secure": False},
        {"name": "s", "same_site": "none", "secure": False},
        {"name": "s", "partitioned": True, "secure": False},
    ],
    ids=repr,
)
def test_cookie_misconfiguration_raises(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Cookie(**options)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", None),
        ("__Host-session=abc", "abc"),
        ("a=1; __Host-session=abc; b=2", "abc"),
        ("a=1;__Host-session=abc;b=2", "abc"),
        ("  __Host-session  =  abc  ", "abc"),
        ('__Host-session="abc"', "abc"),
        ('__Host-session="', '"'),
        ("__Host-session=", ""),
        ("__Host-session=a=b", "a=b"),
        ("__Host-session=one; __Host-session=two", "one"),
        ("bad pair; __Host-session=abc", "abc"),
        ("x__Host-session=abc", None),
        ("__host-session=abc", None),  # names are case-sensitive
        ("__Host-session", None),
        (";;;", None),
    ],
)
def test_find_cookie(header: str, expected: str | None) -> None:
    assert find_cookie(header, "__Host-session") == expected


def _split_pairs(header: str, name: str) -> str | None:
    """The obvious parser, `find_cookie`'s oracle: split into pairs, compare names."""
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return None


PIECES = st.sampled_from([*'ab=; \t"s.\n\r\xa0', "sess", "sess.0"])


@given(st.lists(PIECES, max_size=24).map("".join), st.sampled_from(["sess", "s", "sess.0", "a"]))
def test_find_cookie_scans_as_splitting_into_pairs_would(header: str, name: str) -> None:
    assert find_cookie(header, name) == _split_pairs(header, name)


@given(st.text(), st.text())
def test_find_cookie_never_raises(header: str, name: str) -> None:
    result = find_cookie(header, name)
    assert result is None or isinstance(result, str)
    cookie_names(header)


COOKIE_OCTETS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters='";\\,'),
)


@given(COOKIE_OCTETS, COOKIE_OCTETS)
def test_find_cookie_round_trips_cookie_octets(value: str, other: str) -> None:
    header = f"a={other}; __Host-session={value}; z={other}"
    assert find_cookie(header, "__Host-session") == value


def test_read_takes_the_first_cookie_header_that_has_it() -> None:
    cookie = Cookie()
    assert cookie.read(cookies("a=1", "__Host-session=x", "__Host-session=y")) == "x"
    assert cookie.read(cookies("a=1")) is None
    assert cookie.read(RequestInfo()) is None


def test_chunked_value_round_trips_and_too_large_raises() -> None:
    cookie = Cookie(max_size=300, max_chunks=3)
    value = "v" * 500
    headers = cookie.issue(value)
    assert len(headers) >= 2
    pairs = [h.split(";", 1)[0] for _, h in headers]
    assert all(len(h) <= 300 for _, h in headers)
    assert cookie.read(cookies("; ".join(pairs))) == value
    with pytest.raises(SessionTooLarge):
        cookie.issue("v" * 2000)


def test_issue_clears_chunks_the_client_still_holds() -> None:
    cookie = Cookie(max_size=300, max_chunks=3)
    request = cookies("__Host-session.0=old; __Host-session.1=old")
    headers = cookie.issue("short", request=request)
    assert headers[0] == ("set-cookie", cookie.render("short"))
    cleared = sorted(h.split("=", 1)[0] for _, h in headers[1:])
    assert cleared == ["__Host-session.0", "__Host-session.1"]
    assert all("Max-Age=0" in h for _, h in headers[1:])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearerabc", None),
    ],
)
def test_header_transport_reads_bearer_tokens(value: str | None, expected: str | None) -> None:
    headers = [] if value is None else [("authorization", value)]
    assert Header().read(RequestInfo(headers=headers)) == expected


def test_header_transport_issue_and_forget() -> None:
    header = Header()
    assert header.issue("tok") == [
        ("session-token", "tok"),
        ("access-control-expose-headers", "Session-Token"),
    ]
    assert header.clear()[0] == ("session-token", "")
    assert not header.ambient and Cookie().ambient
    assert (
        Header(name="X-Session", scheme=None).read(RequestInfo(headers=[("x-session", " tok ")]))
        == "tok"
    )


@pytest.mark.parametrize(
    "options", [{"name": "bad name"}, {"response_header": "a:b"}, {"scheme": "Bea rer"}]
)
def test_header_misconfiguration_raises(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Header(**options)
