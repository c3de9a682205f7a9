"""CSRF defence, sans-IO: the origin check table and the token check."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck import CSRFError, Header, RequestInfo
from coatcheck.csrf import MAX_FORM_BYTES, check_origin, check_token, form_limit, form_token
from coatcheck.drivers import open_session
from coatcheck.stores import MemoryStore
from helpers import FakeClock, manager_for, request


def req(
    method: str = "POST", host: str | None = "app.example", scheme: str = "https", **headers: str
) -> RequestInfo:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return RequestInfo(method=method, headers=pairs, scheme=scheme, host=host)


CASES = [
    # (name, request, passes)
    ("get-cross-site", req("GET", sec_fetch_site="cross-site"), True),
    ("head-cross-origin", req("HEAD", origin="https://evil.example"), True),
    ("options", req("OPTIONS", origin="https://evil.example"), True),
    ("lowercase-get", req("get", origin="https://evil.example"), True),
    ("post-no-headers", req(), True),
    ("post-same-origin", req(origin="https://app.example"), True),
    (
        "post-same-origin-port",
        req(host="app.example:8443", origin="https://app.example:8443"),
        True,
    ),
    ("post-fetch-same-origin", req(sec_fetch_site="same-origin"), True),
    ("post-fetch-none", req(sec_fetch_site="none"), True),
    ("post-cross-origin", req(origin="https://evil.example"), False),
    ("post-other-port", req(origin="https://app.example:444"), False),
    ("post-subdomain", req(origin="https://sub.app.example"), False),
    ("post-null-origin", req(origin="null"), False),
    ("post-garbage-origin", req(origin="http://[::1"), False),
    ("post-no-host", req(host=None, origin="https://app.example"), False),
    ("post-fetch-cross-site", req(sec_fetch_site="cross-site"), False),
    ("post-fetch-same-site", req(sec_fetch_site="same-site"), False),
    (
        "fetch-wins-over-origin",
        req(sec_fetch_site="cross-site", origin="https://app.example"),
        False,
    ),
    ("put-cross", req("PUT", origin="https://evil.example"), False),
    ("delete-cross", req("DELETE", sec_fetch_site="cross-site"), False),
    # Origin without Sec-Fetch-Site: scheme, host and port all count, default ports filled in.
    ("post-http-origin-to-https", req(origin="http://app.example"), False),
    ("post-https-origin-to-http", req(scheme="http", origin="https://app.example"), False),
    ("post-http-same-origin", req(scheme="http", origin="http://app.example"), True),
    ("post-host-default-port", req(host="app.example:443", origin="https://app.example"), True),
    ("post-origin-default-port", req(origin="https://app.example:443"), True),
    (
        "post-http-host-default-port",
        req(scheme="http", host="app.example:80", origin="http://app.example"),
        True,
    ),
    ("post-http-port-on-https", req(host="app.example:80", origin="https://app.example"), False),
    ("post-host-case", req(host="App.Example", origin="https://app.example"), True),
    ("post-ipv6-host", req(host="[::1]:8443", origin="https://[::1]:8443"), True),
    ("post-ipv6-other-port", req(host="[::1]:8443", origin="https://[::1]"), False),
    ("post-origin-userinfo", req(origin="https://evil.example@app.example"), False),
    ("post-origin-path", req(origin="https://app.example/"), False),
    ("post-origin-bad-port", req(origin="https://app.example:99999"), False),
    ("post-no-scheme-origin", req(origin="app.example"), False),
    (
        "wss-handshake-https-origin",
        req("WEBSOCKET", scheme="wss", origin="https://app.example"),
        True,
    ),
    (
        "wss-handshake-http-origin",
        req("WEBSOCKET", scheme="wss", origin="http://app.example"),
        False,
    ),
    ("trusted-origin", req(origin="https://partner.example"), True),
    (
        "trusted-origin-even-cross-site",
        req(origin="https://partner.example", sec_fetch_site="cross-site"),
        True,
    ),
]


@pytest.mark.parametrize(("name", "request_", "passes"), CASES, ids=[c[0] for c in CASES])
def test_check_origin(name: str, request_: RequestInfo, passes: bool) -> None:
    assert check_origin(request_, frozenset({"https://partner.example"})) is passes


SCHEMES = st.sampled_from(["http", "https", "ws", "wss", "HTTPS", "ftp", ""])


@given(origin=st.text(), host=st.none() | st.text(), scheme=SCHEMES)
def test_check_origin_never_raises(origin: str, host: str | None, scheme: str) -> None:
    request_ = req(host=host, scheme=scheme, origin=origin)
    assert check_origin(request_) in (True, False)


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("content_type", "body", "token"),
    [
        (FORM, b"a=1&csrf_token=tok&b=2", "tok"),
        ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", b"csrf_token=tok", "tok"),
        (FORM, b"csrf_token=first&csrf_token=second", "first"),
        (FORM, b"csrf_token=t%C3%B6k", "t\u00f6k"),
        (FORM, b"a=1", None),
        (FORM, b"csrf_token=", None),
        (FORM, b"", None),
        (None, b"csrf_token=tok", None),
        ("text/plain", b"csrf_token=tok", None),
        ("multipart/form-data; boundary=x", b"csrf_token=tok", None),
        ("application/x-www-form-urlencodedx", b"csrf_token=tok", None),
        (FORM, b"&".join(b"f%d=1" % i for i in range(1000)) + b"&csrf_token=tok", None),
        (FORM, b"csrf_token=tok&" + b"a=" + b"x" * (1024 * 1024), None),
        (FORM, b"csrf_token=%ff%fe&a=\xff", "\ufffd\ufffd"),
    ],
    ids=[
        "form",
        "content-type-case-and-charset",
        "first-wins",
        "percent-utf8",
        "no-token",
        "empty-token",
        "empty-body",
        "no-content-type",
        "text",
        "multipart",
        "not-quite-form",
        "too-many-fields",
        "too-large",
        "not-utf8",
    ],
)
def test_form_token(content_type: str | None, body: bytes, token: str | None) -> None:
    assert form_token(content_type, body) == token


@given(content_type=st.none() | st.just(FORM) | st.text(), body=st.binary())
def test_form_token_never_raises(content_type: str | None, body: bytes) -> None:
    assert form_token(content_type, body) is None or content_type is not None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (FORM, b"csrf_token=%zz%"),  # malformed percent-escapes
        (FORM, b"=&&==&csrf_token"),  # fields without names or values
        (FORM, b"csrf_token=a;b=c"),  # `;` is no separator
        (FORM + "; charset=utf-16", "csrf_token=tok".encode("utf-16")),  # another charset
        (FORM, b"\x00\xff\xfe" * 1000),  # binary noise
        (
            "multipart/form-data; boundary=--x",
            b'--x\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\ntok\r\n--x--',
        ),  # multipart is not searched
        ("multipart/form-data", b"--\r\n\r\n"),  # a broken multipart body
        (FORM, b"a" * (MAX_FORM_BYTES + 1)),  # too large
        (FORM, b"&" * 5000),  # empty fields, many
    ],
    ids=[
        "bad-escapes",
        "no-names",
        "semicolon",
        "utf-16",
        "binary",
        "multipart",
        "bad-multipart",
        "too-large",
        "many-ampersands",
    ],
)
def test_form_token_refuses_hostile_bodies(content_type: str, body: bytes) -> None:
    token = form_token(content_type, body)
    assert token is None or token != "tok"


@pytest.mark.parametrize(
    ("content_type", "content_length", "limit"),
    [
        (FORM, "15", 15),
        (FORM, " 15 ", 15),
        (FORM, None, MAX_FORM_BYTES),  # chunked (ASGI, HTTP/2): read up to the limit
        (FORM, str(MAX_FORM_BYTES), MAX_FORM_BYTES),
        (FORM, str(MAX_FORM_BYTES + 1), 0),
        (FORM, "9" * 5000, 0),  # int() would refuse it (over 4300 digits)
        (FORM, "0", 0),
        (FORM, "", 0),
        (FORM, "-1", 0),
        (FORM, "+1", 0),
        (FORM, "1_0", 0),
        (FORM, "\u0663", 0),  # an Arabic-Indic 3: int() takes it, HTTP does not
        (FORM, "1e3", 0),
        ("text/plain", "15", 0),
        ("multipart/form-data; boundary=x", "15", 0),
        (None, "15", 0),
    ],
)
def test_form_limit(content_type: str | None, content_length: str | None, limit: int) -> None:
    assert form_limit(content_type, content_length) == limit


@given(content_type=st.none() | st.just(FORM) | st.text(), content_length=st.none() | st.text())
def test_form_limit_never_raises(content_type: str | None, content_length: str | None) -> None:
    assert 0 <= form_limit(content_type, content_length) <= MAX_FORM_BYTES


@pytest.mark.parametrize(
    ("expected", "submitted", "ok"),
    [
        ("tok", "tok", True),
        ("tok", "tok ", False),
        ("tok", "TOK", False),
        ("tok", "", False),
        ("tok", None, False),
        (None, "tok", False),
        (None, None, False),
        ("tok", "\ud800", False),  # a lone surrogate is a wrong token, not a crash
        ("tok", "tök", False),
    ],
)
def test_check_token(expected: str | None, submitted: str | None, ok: bool) -> None:
    if ok:
        check_token(expected, submitted)
    else:
        with pytest.raises(CSRFError):
            check_token(expected, submitted)


@given(st.text(), st.text())
def test_check_token_only_raises_csrf_error(expected: str, submitted: str) -> None:
    try:
        check_token(expected, submitted)
    except CSRFError:
        assert expected != submitted
    else:
        assert expected == submitted


def test_manager_check_csrf(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock)
    session = open_session(manager, request())
    token = session.csrf_token
    cross = request(method="POST", headers=[("origin", "https://evil.example")])
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    with pytest.raises(CSRFError):
        manager.check_csrf(cross, session)
    assert any("csrf.rejected" in r.getMessage() for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)
    manager.check_csrf(cross, session, token)  # form field
    with_header = request(
        method="POST", headers=[("origin", "https://evil.example"), ("x-csrf-token", token)]
    )
    manager.check_csrf(with_header, session)
    with pytest.raises(CSRFError):
        manager.check_csrf(with_header, session, "wrong")  # the form field is what counts


def test_manager_check_csrf_can_be_disabled() -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock, csrf=False)
    session = open_session(manager, request())
    manager.check_csrf(request(method="POST", headers=[("origin", "https://x.example")]), session)


def test_header_transport_needs_no_csrf_check() -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock, transport=Header())
    session = open_session(manager, request())
    cross = request(method="POST", headers=[("sec-fetch-site", "cross-site")])
    manager.check_csrf(cross, session)  # a browser never attaches the header by itself
