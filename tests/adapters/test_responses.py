"""`coatcheck.responses`: the one merge of a session's headers into a response, in both
string types, and the client script's answers. Sans-IO: no framework runs here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck import RequestInfo
from coatcheck.responses import Answer, ClientScript, merge_headers, title_case

COOKIE = ("set-cookie", "id=abc; Path=/; HttpOnly")


@pytest.mark.parametrize(
    ("app", "session", "merged"),
    [
        ([], [("vary", "Cookie")], [("vary", "Cookie")]),
        ([("Vary", "Accept")], [("vary", "Cookie")], [("Vary", "Accept, Cookie")]),
        ([("Vary", "cookie")], [("vary", "Cookie")], [("Vary", "cookie")]),
        ([("VARY", "Accept, COOKIE")], [("vary", "Cookie")], [("VARY", "Accept, COOKIE")]),
        ([("Vary", "*")], [("vary", "Cookie")], [("Vary", "*")]),
        (
            [("Vary", "Accept"), ("Vary", "Cookie")],
            [("vary", "Cookie")],
            [("Vary", "Accept"), ("Vary", "Cookie")],
        ),
        (
            [("Vary", "Accept"), ("Vary", "Origin")],
            [("vary", "Cookie")],
            [("Vary", "Accept, Cookie"), ("Vary", "Origin")],
        ),
        ([("Vary", "")], [("vary", "Cookie")], [("Vary", "Cookie")]),
        (
            [("Cache-Control", "public, max-age=600"), ("cache-control", "immutable")],
            [COOKIE, ("cache-control", "no-store")],
            [COOKIE, ("cache-control", "no-store")],
        ),
        ([("Set-Cookie", "theme=dark")], [COOKIE], [("Set-Cookie", "theme=dark"), COOKIE]),
        ([("Content-Type", "text/plain")], [], [("Content-Type", "text/plain")]),
        (
            [("Content-Type", "text/plain"), ("Content-Length", "2")],
            [COOKIE, ("vary", "Cookie"), ("cache-control", "no-store")],
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", "2"),
                COOKIE,
                ("vary", "Cookie"),
                ("cache-control", "no-store"),
            ],
        ),
    ],
    ids=[
        "vary-new",
        "vary-appended",
        "vary-present",
        "vary-case",
        "vary-star",
        "vary-second-line",
        "vary-first-line",
        "vary-empty",
        "cache-control-replaced",
        "cookies-never-combined",
        "nothing",
        "appended-as-they-are",
    ],
)
def test_merge_headers(
    app: list[tuple[str, str]], session: list[tuple[str, str]], merged: list[tuple[str, str]]
) -> None:
    assert merge_headers(app, session) == merged
    # The same policy for ASGI's bytes:
    as_bytes = [(k.encode(), v.encode()) for k, v in app]
    assert merge_headers(as_bytes, session, encode=True) == [
        (k.encode(), v.encode()) for k, v in merged
    ]


def test_merge_headers_leaves_the_application_list_alone() -> None:
    app = [("Vary", "Accept")]
    assert merge_headers(app, [("vary", "Cookie")]) == [("Vary", "Accept, Cookie")]
    assert app == [("Vary", "Accept")]


def test_title_cased_session_headers_merge_alike() -> None:
    session = title_case([COOKIE, ("cache-control", "no-store"), ("vary", "Cookie")])
    assert session[0][0] == "Set-Cookie" and session[2] == ("Vary", "Cookie")
    merged = merge_headers([("Vary", "Accept"), ("Cache-Control", "max-age=60")], session)
    assert merged == [("Vary", "Accept, Cookie"), session[0], ("Cache-Control", "no-store")]


NAMES = st.sampled_from(["Vary", "vary", "Cache-Control", "Set-Cookie", "Content-Type", "X"])
TOKENS = st.sampled_from(["Cookie", "cookie", "*", "Accept", "", " , "])


@given(app=st.lists(st.tuples(NAMES, TOKENS)), token=st.sampled_from(["Cookie", "authorization"]))
def test_vary_token_appears_once(app: list[tuple[str, str]], token: str) -> None:
    def varies(headers: list[tuple[str, str]]) -> list[str]:
        parts = [p for k, v in headers if k.lower() == "vary" for p in v.split(",")]
        return [p.strip().lower() for p in parts if p.strip()]

    merged = merge_headers(app, [("vary", token), ("cache-control", "no-store")])
    before, after = varies(app), varies(merged)
    # Added once unless present (or `*`); what the application wrote is left as it was.
    expected = before if token.lower() in before or "*" in before else [*before, token.lower()]
    assert sorted(after) == sorted(expected)
    assert [v for k, v in merged if k.lower() == "cache-control"] == ["no-store"]


def test_answer_headers() -> None:
    answer = Answer(401, "Unauthorized", b"no", (("www-authenticate", "Bearer"),))
    assert answer.status_line == "401 Unauthorized"
    assert answer.headers() == [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", "2"),
        ("cache-control", "no-store"),
        ("www-authenticate", "Bearer"),
    ]


def test_client_script_answers() -> None:
    script = ClientScript()
    status, headers, body = script.answer(RequestInfo("GET"))
    assert (status, body) == (200, script.body) and ("etag", script.etag) in headers
    head = script.answer(RequestInfo("HEAD"))
    assert head[0] == 200 and head[2] == b""
    for tags in ([script.etag], [f"W/{script.etag}"], [f'"x", {script.etag}'], ["*"]):
        request = RequestInfo("GET", [("if-none-match", t) for t in tags])
        assert script.answer(request)[:3:2] == (304, b"")
    assert script.answer(RequestInfo("GET", [("if-none-match", '"other"')]))[0] == 200
    status, headers, _ = script.answer(RequestInfo("POST"))
    assert status == 405 and ("allow", "GET, HEAD") in headers
