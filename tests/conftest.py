"""Shared fixtures. With CI=true, a skipped test marked `service` or `browser` fails the run:
CI must exercise the real servers and the real browser, never silently skip them."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
MUST_RUN = ("service", "browser")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if IN_CI and report.skipped and any(item.get_closest_marker(m) for m in MUST_RUN):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where it must run: {report.longrepr}"
    return report


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
