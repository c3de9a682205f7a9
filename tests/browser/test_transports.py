"""Both transports in a real browser: headless Chromium loads pages from a real ASGI server.

Cookie path: the cookie as the browser stored it, a session that survives a reload, logout
that clears it, and no token visible to the page's script. Header path (`coatcheck.js`):
the token is attached, rotations are followed, tabs stay in step, parallel requests do not
lose the session, a dead token gets a 401 the client acts on, and no other origin gets the
token unless allowed, nor sets or clears it (through an open redirect, an injected `<base>`,
or a helper that is not told where the request goes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from .app import digest
from .conftest import Server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.browser

TOKEN = re.compile(r"[A-Za-z0-9_-]{65}")


def open_header_page(context: BrowserContext, site: Server, query: str = "") -> Page:
    """A tab with the header-transport page, its client loaded and ready."""
    page = context.new_page()
    page.goto(f"{site.origin}/header.html{query}")
    page.wait_for_function("window.ready !== undefined")
    assert page.evaluate("window.ready") is True
    return page


def call(page: Page, url: str, method: str = "GET", **init: Any) -> Any:
    """`session.fetch(url)` in the page; returns {status, body}."""
    args = [url, {"method": method, **init}]
    return page.evaluate("([url, init]) => window.call(url, init)", args)


def me(page: Page) -> Any:
    result = call(page, "/api/me")
    assert result["status"] == 200
    return result["body"]


# -- cookie transport ----------------------------------------------------------------


def test_cookie_as_stored_by_the_browser(context: BrowserContext, site: Server) -> None:
    page = context.new_page()
    page.goto(f"{site.origin}/cookie.html")
    assert page.text_content("#user") == "anonymous"
    status = page.evaluate("async () => (await fetch('/api/login', {method: 'POST'})).status")
    assert status == 200

    (cookie,) = context.cookies()
    assert cookie["name"] == "__Host-session"
    assert TOKEN.fullmatch(cookie["value"])
    assert cookie["domain"] == "localhost"  # host-only: no Domain attribute
    assert cookie["path"] == "/"
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["expires"] == -1  # a session cookie: gone when the browser closes

    # HttpOnly: the page's script cannot read the session ID.
    assert cookie["value"] not in page.evaluate("document.cookie")
    assert "__Host-session" not in page.evaluate("document.cookie")

    page.reload()
    assert page.text_content("#user") == "alice"  # the session survives the reload


def test_cookie_logout_clears_the_cookie(context: BrowserContext, site: Server) -> None:
    page = context.new_page()
    page.goto(f"{site.origin}/cookie.html")
    page.evaluate("async () => { await fetch('/api/login', {method: 'POST'}) }")
    page.reload()
    assert page.text_content("#user") == "alice"
    assert [c["name"] for c in context.cookies()] == ["__Host-session"]

    page.evaluate("async () => { await fetch('/api/logout', {method: 'POST'}) }")
    assert context.cookies() == []
    page.reload()
    assert page.text_content("#user") == "anonymous"


def test_cookie_session_rejects_cross_origin_post(
    context: BrowserContext, site: Server, third_party: Server
) -> None:
    page = context.new_page()
    page.goto(f"{site.origin}/cookie.html")
    page.evaluate("async () => { await fetch('/api/login', {method: 'POST'}) }")
    # Another port of localhost is the same site, so the Lax cookie does go along: the
    # CSRF check (Sec-Fetch-Site: same-site) is what stops the write.
    other = context.new_page()
    other.goto(f"{third_party.origin}/")
    other.evaluate(
        "async (url) => {"
        " await fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}) }",
        f"{site.origin}/api/count",
    )
    n = page.evaluate("async () => (await (await fetch('/api/me')).json()).n")
    assert n == 0


# -- header transport ----------------------------------------------------------------


def test_header_path_attaches_and_follows_rotation(
    context: BrowserContext, site: Server, artifacts: Path
) -> None:
    page = open_header_page(context, site)
    assert me(page) == {"user": None, "n": 0, "auth": None}  # no token yet: none sent

    login = call(page, "/api/login", "POST", exclusive=True)
    assert login["status"] == 200
    assert page.evaluate("window.session.hasToken") is True
    assert page.evaluate("window.events") == ["login"]
    assert context.cookies() == []  # the header path sets no cookie

    first = me(page)
    assert first["user"] == "alice"
    assert first["auth"] is not None  # the token went along

    assert call(page, "/api/regenerate", "POST", exclusive=True)["status"] == 200
    second = me(page)
    assert second["user"] == "alice"
    assert second["auth"] not in (None, first["auth"])  # the rotated token is used now

    # Memory storage (the default) leaves nothing in Web Storage or cookies.
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    page.screenshot(path=str(artifacts / "header-transport.png"))


def test_two_tabs_stay_in_step(context: BrowserContext, site: Server) -> None:
    one = open_header_page(context, site)
    two = open_header_page(context, site)
    call(one, "/api/login", "POST", exclusive=True)
    two.wait_for_function("window.session.hasToken")
    assert two.evaluate("window.events") == ["login"]
    assert me(two)["auth"] == me(one)["auth"]

    call(one, "/api/regenerate", "POST", exclusive=True)
    rotated = me(one)["auth"]
    two.wait_for_function("window.session.hasToken")
    assert me(two) == me(one) == {"user": "alice", "n": 0, "auth": rotated}

    # A tab opened later asks the open ones for the token (memory storage).
    three = open_header_page(context, site)
    assert me(three)["auth"] == rotated

    call(two, "/api/logout", "POST", exclusive=True)
    for tab in (one, three):
        tab.wait_for_function("!window.session.hasToken")
        assert tab.evaluate("window.events") == ["login", "logout"]
        assert me(tab)["user"] is None


@pytest.mark.parametrize("query", ["", "?nolocks"], ids=["web-locks", "in-page-queue"])
def test_parallel_requests_do_not_lose_the_session(
    context: BrowserContext, site: Server, query: str
) -> None:
    page = open_header_page(context, site, query)
    assert page.evaluate("navigator.locks === undefined") is (query == "?nolocks")
    # Without a token, each request could start a session of its own; serialised, the
    # first one creates it and the others join it.
    page.evaluate(
        "() => Promise.all([1, 2, 3, 4].map(() => window.call('/api/count', {method: 'POST'})))"
    )
    assert me(page)["n"] == 4

    call(page, "/api/login", "POST", exclusive=True)
    results = page.evaluate(
        """() => Promise.all([
            window.call('/api/count', {method: 'POST'}),
            window.call('/api/regenerate', {method: 'POST', exclusive: true}),
            window.call('/api/count', {method: 'POST'}),
            window.call('/api/regenerate', {method: 'POST', exclusive: true}),
            window.call('/api/count', {method: 'POST'}),
        ])"""
    )
    assert [r["status"] for r in results] == [200] * 5
    after = me(page)
    assert (after["user"], after["n"]) == ("alice", 7)
    assert page.evaluate("window.events") == ["login"]  # never lost in between


@pytest.mark.parametrize("query", ["", "?nolocks"], ids=["web-locks", "in-page-queue"])
def test_parallel_writes_to_a_client_side_session_all_land(
    context: BrowserContext, site: Server, query: str
) -> None:
    # Client-side mode: each write answers with a whole new token (the data its request's
    # token held, plus its own change) and the client keeps one. Sent in parallel with the
    # same token, 20 writes would leave one key; serialised, each carries the token the
    # previous one returned, and all 20 land (issue 11).
    page = open_header_page(context, site, query)
    assert page.evaluate("navigator.locks === undefined") is (query == "?nolocks")
    assert call(page, "/client/set/start", "POST")["body"] == {"keys": ["start"]}
    keys = [f"k{i:02}" for i in range(20)]
    results = page.evaluate(
        "(keys) => Promise.all(keys.map((k) => window.call(`/client/set/${k}`, {method: 'POST'})))",
        keys,
    )
    assert [r["status"] for r in results] == [200] * 20
    final = call(page, "/client/keys")
    assert final["status"] == 200
    assert final["body"]["keys"] == sorted(["start", *keys])
    # Each answer saw every write answered before it: 2, 3, ... 21 keys, in some order.
    assert sorted(len(r["body"]["keys"]) for r in results) == list(range(2, 22))


def test_reads_stay_parallel_and_writes_may_opt_out(context: BrowserContext, site: Server) -> None:
    page = open_header_page(context, site)
    call(page, "/client/set/start", "POST")  # a token: first requests no longer serialised
    # The server answers a `?together` request only once a second one has arrived: both
    # succeed only if the page sent them at the same time.
    # (Two URLs: Chromium's cache would hold back a second GET of the same one.)
    both = """(init) => Promise.all([
        window.call('/client/keys?together&n=1', init),
        window.call('/client/keys?together&n=2', init),
    ])"""
    assert [r["status"] for r in page.evaluate(both, {"method": "GET"})] == [200, 200]
    assert [r["status"] for r in page.evaluate(both, {"method": "HEAD"})] == [200, 200]
    # `exclusive: false` lets a write run beside others (and lose to them, in this mode).
    writes = """() => Promise.all(['a', 'b'].map((k) =>
        window.call(`/client/set/${k}?together`, {method: 'POST', exclusive: false})))"""
    assert [r["status"] for r in page.evaluate(writes)] == [200, 200]


def test_session_storage_survives_reload(context: BrowserContext, site: Server) -> None:
    page = open_header_page(context, site, "?storage=session")
    call(page, "/api/login", "POST", exclusive=True)
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    page.wait_for_function("window.ready !== undefined")
    assert page.evaluate("window.session.hasToken") is True
    assert me(page)["user"] == "alice"


def test_local_storage_only_when_asked(context: BrowserContext, site: Server) -> None:
    page = open_header_page(context, site, "?storage=local")
    call(page, "/api/login", "POST", exclusive=True)
    assert page.evaluate("Object.keys(localStorage)") == ["coatcheck.token"]
    page.close()
    # No tab is open to hand the token over: it comes from localStorage.
    later = open_header_page(context, site, "?storage=local")
    assert later.evaluate("window.session.hasToken") is True
    assert me(later)["user"] == "alice"
    call(later, "/api/logout", "POST", exclusive=True)
    assert later.evaluate("localStorage.length") == 0


def test_memory_storage_forgets_on_reload(context: BrowserContext, site: Server) -> None:
    page = open_header_page(context, site)
    call(page, "/api/login", "POST", exclusive=True)
    page.reload()
    page.wait_for_function("window.ready !== undefined")
    assert page.evaluate("window.ready") is True
    assert page.evaluate("window.session.hasToken") is False
    assert me(page)["user"] is None


def test_dead_token_gets_401_and_the_client_forgets_it(
    context: BrowserContext, site: Server
) -> None:
    page = open_header_page(context, site)
    call(page, "/api/login", "POST", exclusive=True)
    assert call(page, "/api/private")["status"] == 200
    # End the session behind the client's back (plain fetch: the client sees no answer).
    page.evaluate(
        "async () => {"
        " await fetch('/api/logout', {method: 'POST', headers: window.session.headers()}) }"
    )
    assert page.evaluate("window.session.hasToken") is True
    denied = call(page, "/api/private")
    assert denied["status"] == 401
    assert page.evaluate("window.session.hasToken") is False
    assert page.evaluate("window.events") == ["login", "expired"]


def test_token_goes_to_allowed_origins_only(
    context: BrowserContext, site: Server, third_party: Server, allowed_origin: Server
) -> None:
    page = open_header_page(context, site, f"?allow={allowed_origin.origin}")
    call(page, "/api/login", "POST", exclusive=True)
    token_hash = me(page)["auth"]

    assert call(page, f"{third_party.origin}/echo")["status"] == 200
    assert call(page, f"{third_party.origin}/echo", "POST", body="x")["status"] == 200
    assert third_party.app.seen == [{"authorization": None, "session-transport": None}] * 2

    assert call(page, f"{allowed_origin.origin}/echo")["status"] == 200
    ((seen),) = allowed_origin.app.seen
    assert seen["authorization"] is not None
    assert digest(seen["authorization"]) == token_hash


def test_no_token_to_third_party_before_login(
    context: BrowserContext, site: Server, third_party: Server
) -> None:
    page = open_header_page(context, site)
    call(page, f"{third_party.origin}/echo")
    # Not even the header that asks for a new session goes to another origin.
    assert third_party.app.seen == [{"authorization": None, "session-transport": None}]


def test_late_stale_response_does_not_overwrite_a_newer_token(
    context: BrowserContext, site: Server
) -> None:
    page = open_header_page(context, site)
    call(page, "/api/count", "POST")  # an anonymous session: the client holds a token
    # Both requests leave with that token (they opt out of the lock, which would otherwise
    # send the login only after the count: the staging of an unannounced rotation, such as
    # a periodic renewal). The server holds the count back until the login has answered: by
    # then the login destroyed the old ID, so the count starts a new anonymous session and
    # hands out its token, which reaches the page last. Taking it would log the user out;
    # the client ignores it, as its request predates the login.
    page.evaluate(
        """() => Promise.all([
            window.call('/api/count?after=login', {method: 'POST', exclusive: false}),
            window.call('/api/login', {method: 'POST', exclusive: false}),
        ])"""
    )
    assert me(page)["user"] == "alice"
    assert page.evaluate("window.events") == ["login"]


# -- header transport: other origins neither set, clear nor receive the token ----------


def via_open_redirect(target: str) -> str:
    """A same-origin URL that the site's open redirect sends on to `target`."""
    return f"/redirect?to={quote(target, safe='')}"


def signed_in(context: BrowserContext, site: Server, query: str = "") -> tuple[Page, str]:
    """A header page signed in as alice, and the digest of the token it sends."""
    page = open_header_page(context, site, query)
    call(page, "/api/login", "POST", exclusive=True)
    token_hash = me(page)["auth"]
    assert token_hash is not None
    return page, token_hash


@pytest.mark.parametrize(
    ("answer", "status"),
    [("token=attacker", 200), ("token=", 200), ("status=401", 401)],
    ids=["new-token", "empty-token", "401"],
)
def test_redirect_to_another_origin_leaves_the_token_alone(
    context: BrowserContext, site: Server, third_party: Server, answer: str, status: int
) -> None:
    page, token_hash = signed_in(context, site)
    # The request starts on the page's own origin (so the token goes along) and ends on the
    # attacker's, which answers with its own token (session swap: the page would then act
    # as the attacker's account), an empty one, or a 401 (both would log the user out).
    result = call(page, via_open_redirect(f"{third_party.origin}/echo?{answer}"))
    assert result == {"status": status, "body": {}}  # followed: the answer is the attacker's
    # Browsers drop Authorization on a cross-origin redirect.
    assert third_party.app.seen == [{"authorization": None, "session-transport": None}]
    assert page.evaluate("window.session.hasToken") is True
    assert page.evaluate("window.events") == ["login"]
    assert me(page) == {"user": "alice", "n": 0, "auth": token_hash}


def test_redirect_to_an_allowed_origin_still_applies_its_token(
    context: BrowserContext, site: Server, allowed_origin: Server
) -> None:
    page, _ = signed_in(context, site, f"?allow={allowed_origin.origin}")
    call(page, via_open_redirect(f"{allowed_origin.origin}/echo?token=rotated"))
    assert page.evaluate("window.session.headers('/')") == {"Authorization": "Bearer rotated"}


def test_opaque_redirect_changes_nothing(
    context: BrowserContext, site: Server, third_party: Server
) -> None:
    page, token_hash = signed_in(context, site)
    target = via_open_redirect(f"{third_party.origin}/echo?status=401")
    result = page.evaluate(
        """async (url) => {
            const response = await window.session.fetch(url, { redirect: "manual" });
            window.session.accept(response);  // its URL is the request's own: still ignored
            return [response.type, response.status];
        }""",
        target,
    )
    assert result == ["opaqueredirect", 0]
    assert third_party.app.seen == []  # not followed
    assert me(page)["auth"] == token_hash


def test_accept_ignores_answers_from_other_origins(
    context: BrowserContext, site: Server, third_party: Server
) -> None:
    page, token_hash = signed_in(context, site)
    # An XMLHttpRequest used as the docs show for axios (whose response keeps the request
    # as `request`): it followed the open redirect, so its answer is the attacker's.
    final_url = page.evaluate(
        """async (url) => {
            const xhr = new XMLHttpRequest();
            const headers = {};
            const ticket = window.session.attach(headers, url);
            xhr.open("GET", url);
            for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
            await new Promise((resolve) => { xhr.onloadend = resolve; xhr.send(); });
            const token = xhr.getResponseHeader("Session-Token") ?? undefined;
            const response = { status: xhr.status, headers: { "session-token": token } };
            window.session.accept({ ...response, request: xhr }, ticket);
            return xhr.responseURL;
        }""",
        via_open_redirect(f"{third_party.origin}/echo?token=attacker"),
    )
    assert final_url == f"{third_party.origin}/echo?token=attacker"
    assert page.evaluate("window.events") == ["login"]
    assert me(page)["auth"] == token_hash


def test_accept_needs_to_know_where_the_answer_came_from(
    context: BrowserContext, site: Server
) -> None:
    page, token_hash = signed_in(context, site)
    outcome = page.evaluate(
        """() => {
            try {
                window.session.accept({ status: 401, headers: {} });
            } catch (error) {
                return { error: error.name, message: error.message };
            }
            return { error: null };
        }"""
    )
    assert outcome["error"] == "TypeError"
    assert "url" in outcome["message"]
    assert page.evaluate("window.session.hasToken") is True
    # A plain object that says where it came from is fine.
    page.evaluate("window.session.accept({ status: 200, headers: {}, url: location.href })")
    assert me(page)["auth"] == token_hash


def test_relative_urls_resolve_against_the_document_base(
    context: BrowserContext, site: Server, third_party: Server, allowed_origin: Server
) -> None:
    page, token_hash = signed_in(context, site, f"?allow={allowed_origin.origin}")
    # Markup injected into the page (no script needed) moves every relative URL elsewhere.
    set_base = """(href) => {
        document.querySelector("base")?.remove();
        const base = document.createElement("base");
        base.href = href;
        document.head.prepend(base);
        return document.baseURI;
    }"""
    assert page.evaluate(set_base, f"{third_party.origin}/") == f"{third_party.origin}/"
    assert page.evaluate("window.session.allows('relative/path')") is False
    assert page.evaluate("window.session.headers('relative/path')") == {}
    assert page.evaluate("window.session.headers(new Request('relative'))") == {}
    attached = (
        "() => { const headers = {}; window.session.attach(headers, 'relative'); return headers }"
    )
    assert page.evaluate(attached) == {}

    # What that protects: XMLHttpRequest sends a relative URL where the base says.
    xhr = """async (url) => {
        const xhr = new XMLHttpRequest();
        xhr.open("GET", url);
        for (const [name, value] of Object.entries(window.session.headers(url))) {
            xhr.setRequestHeader(name, value);
        }
        await new Promise((resolve) => { xhr.onloadend = resolve; xhr.send(); });
        return xhr.status;
    }"""
    assert page.evaluate(xhr, "echo") == 200
    assert third_party.app.seen == [{"authorization": None, "session-transport": None}]

    # A base on an allowed origin does get the token, as a request there should.
    page.evaluate(set_base, f"{allowed_origin.origin}/")
    assert page.evaluate(xhr, "echo") == 200
    ((seen),) = allowed_origin.app.seen
    assert seen["authorization"] is not None
    assert digest(seen["authorization"]) == token_hash


def test_attach_needs_the_url(context: BrowserContext, site: Server) -> None:
    page, _ = signed_in(context, site)
    outcome = page.evaluate(
        """() => {
            const headers = {};
            try {
                window.session.attach(headers);
            } catch (error) {
                return { error: error.name, message: error.message, headers };
            }
            return { error: null, headers };
        }"""
    )
    assert outcome["error"] == "TypeError"
    assert "url" in outcome["message"]
    assert outcome["headers"] == {}
