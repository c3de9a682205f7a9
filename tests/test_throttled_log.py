"""`ThrottledLog`: what happens on every request during an outage is counted exactly and
written at most once per interval, with the count since the line before (issue 11, item 7:
15,703 warning lines in one outage). Times are passed in, as the adapters pass the
manager's clock."""

from __future__ import annotations

import logging
import threading

import pytest

from coatcheck.audit import ThrottledLog

logger = logging.getLogger("coatcheck.test")


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger.name]


def test_one_line_per_interval_with_the_count_since_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = ThrottledLog(logger, "store.write_dropped", "writes dropped", interval=10.0)
    written = [log.record(now, "boom") for now in (0.0, 1.0, 9.99, 10.0, 10.0, 25.0)]
    assert written == [True, False, False, True, False, True]
    assert log.total == 6
    found = lines(caplog)
    assert [(r.count, r.total) for r in found] == [(1, 1), (3, 4), (2, 6)]  # type: ignore[attr-defined]
    assert all(r.event == "store.write_dropped" for r in found)  # type: ignore[attr-defined]
    assert found[1].getMessage() == "writes dropped: 3 since the last report, 4 in all; last: boom"
    assert found[0].levelno == logging.WARNING


def test_a_clock_that_goes_back_writes_at_once(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logger, "e", "m", level=logging.ERROR)
    assert log.record(100.0) and not log.record(101.0)
    assert log.record(50.0)  # the clock was set back: not silent for 60 s
    assert [r.levelno for r in lines(caplog)] == [logging.ERROR, logging.ERROR]


def test_counts_from_many_threads_add_up(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logger, "e", "m")
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait(timeout=10)
        for _ in range(1000):
            log.record(5.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert log.total == 8000
    assert len(lines(caplog)) == 1
    assert log.record(15.0) and lines(caplog)[-1].count == 8000  # type: ignore[attr-defined]
