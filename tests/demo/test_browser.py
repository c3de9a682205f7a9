"""The demo in a real browser (headless Chromium): log in, fill the cart, watch the serving
replica change while the cart stays, kill a replica with its button and keep the cart.
Saves screenshots to `test-artifacts/demo-shared.png` and `test-artifacts/demo-header.png`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from .conftest import start_demo, stop_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000


@pytest.mark.browser
def test_shared_strategy_in_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    demo = start_demo("--strategy", "shared", "--replicas", "3")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"http://localhost:{demo.port}/")
                page.get_by_role("button", name="log in as alice").click()
                page.wait_for_selector("text=logged in as")
                for product in ("coat", "hat"):
                    page.get_by_role("button", name=f"+ {product}").click()
                    page.wait_for_load_state()
                served = set()
                for _ in range(6):
                    page.reload()
                    assert page.locator("#cart").inner_text() == "coat, hat"
                    assert "logged in as alice" in page.locator("body").inner_text()
                    served.add(page.locator("#replica").inner_text())
                assert len(served) >= 2, served  # round-robin: the replica changes

                # Kill the replica that served this page with its own button.
                victim = page.locator("#replica").inner_text()
                row = page.locator("#cluster tr", has_text=victim)
                row.get_by_role("button", name="kill").click()
                page.wait_for_selector(f"#cluster tr:has-text('{victim}') >> text=down")
                for _ in range(3):
                    page.reload()
                    assert page.locator("#replica").inner_text() != victim
                    assert page.locator("#cart").inner_text() == "coat, hat"
                page.wait_for_selector("#cluster table")
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "demo-shared.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop_demo(demo.process)


@pytest.mark.browser
def test_header_strategy_in_chromium() -> None:
    """Header transport: the page's script (coatcheck.js) holds the token and sends every
    request with fetch; the replica changes from request to request, the cart stays, and
    the browser has no session cookie at all."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if not files("coatcheck").joinpath("static/coatcheck.js").is_file():
        pytest.skip("coatcheck.js is not part of this build")
    from playwright.sync_api import Request, expect, sync_playwright

    demo = start_demo("--strategy", "header", "--replicas", "3")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                sent: list[tuple[str, str | None]] = []

                def record(request: Request) -> None:
                    if "/api/" in request.url or request.method == "POST":
                        sent.append((request.url, request.headers.get("authorization")))

                page.on("request", record)
                page.goto(f"http://localhost:{demo.port}/")
                page.get_by_role("button", name="log in as alice").click()
                expect(page.locator("#app")).to_contain_text("logged in as alice")
                logins = [i for i, (url, _) in enumerate(sent) if "/login?" in url]
                assert len(logins) == 1 and sent[logins[0]][1] is None  # no token yet
                page.get_by_role("button", name="+ coat").click()
                expect(page.locator("#cart")).to_have_text("coat")
                page.get_by_role("button", name="+ hat").click()
                expect(page.locator("#cart")).to_have_text("coat, hat")

                token = page.evaluate("sessionStorage.getItem('coatcheck.token')")
                assert isinstance(token, str) and token.count(".") == 2  # a JWS
                assert [c["name"] for c in context.cookies() if "session" in c["name"]] == []
                served = set()
                for _ in range(6):
                    with page.expect_response(lambda r: "/api/state" in r.url):
                        page.get_by_role("button", name="refresh").click()
                    expect(page.locator("#cart")).to_have_text("coat, hat")
                    served.add(page.locator("#replica").inner_text())
                assert len(served) >= 2, served  # round-robin: the replica changes
                page.reload()  # the token survives in this tab's sessionStorage
                expect(page.locator("#app")).to_contain_text("logged in as alice")
                expect(page.locator("#cart")).to_have_text("coat, hat")
                # Every request after the login carried the token in the header.
                assert sent[logins[0] + 1 :] and all(
                    a is not None and a.startswith("Bearer ") for _, a in sent[logins[0] + 1 :]
                )
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "demo-header.png"), full_page=True)

                page.get_by_role("button", name="log out", exact=True).click()
                expect(page.locator("#app")).to_contain_text("not logged in")
                assert page.evaluate("sessionStorage.getItem('coatcheck.token')") is None
            finally:
                browser.close()
    finally:
        stop_demo(demo.process)
