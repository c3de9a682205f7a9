"""The demo in a real browser (headless Chromium): log in, fill the cart, watch the serving
replica change while the cart stays, kill a replica with its button and keep the cart.
Saves a screenshot to `test-artifacts/demo-shared.png`."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import start_demo, stop_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
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
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=CHROMIUM_ARGS)  # fmt: skip
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
