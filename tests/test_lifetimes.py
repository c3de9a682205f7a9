"""`Lifetimes`: validation at construction and the timeout arithmetic, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from coatcheck import ConfigurationError, Lifetimes
from coatcheck.lifetimes import RENEW, TOUCH, Expiry


def test_defaults_follow_asvs_level_2() -> None:
    lifetimes = Lifetimes()
    assert (lifetimes.idle, lifetimes.absolute, lifetimes.renewal) == (1800, 43200, 900)
    assert lifetimes.touch_interval < lifetimes.idle


@pytest.mark.parametrize(
    "options",
    [
        {"idle": 0},
        {"idle": -1},
        {"absolute": 0},
        {"idle": float("nan")},
        {"absolute": float("inf")},
        {"grace": -1},
        {"grace": float("nan")},
        {"touch_interval": -0.5},
        {"renewal": 0},
        {"renewal": -5},
        {"renewal": float("nan")},
        {"renewal": "60"},
        {"idle": "1800"},
        {"idle": True},
        {"idle": 60, "touch_interval": 60},  # a busy session could idle out between touches
        {"idle": 60, "touch_interval": 120},
    ],
    ids=repr,
)
def test_invalid_settings_raise_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="Lifetimes"):
        Lifetimes(**options)


@pytest.mark.parametrize(
    "options",
    [{"renewal": None}, {"grace": 0}, {"touch_interval": 0}, {"idle": 100, "absolute": 50}],
    ids=repr,
)
def test_valid_edge_settings(options: dict[str, Any]) -> None:
    Lifetimes(**options)


L = Lifetimes(idle=100, absolute=1000, renewal=50, touch_interval=10)


@pytest.mark.parametrize(
    ("now", "created", "last_seen", "expected"),
    [
        (0, 0, 0, None),
        (99, 0, 0, None),
        (100, 0, 0, Expiry.IDLE),
        (999, 0, 900, None),
        (1000, 0, 999, Expiry.ABSOLUTE),
        (1000, 0, 800, Expiry.ABSOLUTE),  # both over: absolute is reported
        (-5, 0, 0, None),  # a clock that stepped back does not end sessions
    ],
)
def test_expiry(now: float, created: float, last_seen: float, expected: Expiry | None) -> None:
    assert L.expiry(now=now, created_at=created, last_seen=last_seen) == expected


@pytest.mark.parametrize(("now", "due"), [(0, False), (49.9, False), (50, True), (500, True)])
def test_renewal_is_due(now: float, due: bool) -> None:
    # Created and seen just now: only the age of the ID decides.
    assert (L.assess(now, now, now, 0) == RENEW) is due
    assert Lifetimes(renewal=None).assess(10**9, 10**9, 10**9, 0) is None


@pytest.mark.parametrize(("now", "due"), [(0, False), (9.99, False), (10, True)])
def test_touch_is_due(now: float, due: bool) -> None:
    assert (L.assess(now, 0, 0, now) == TOUCH) is due


@pytest.mark.parametrize(
    ("now", "created", "ttl"),
    [(0, 0, 100), (899, 0, 100), (950, 0, 50), (1000, 0, 0), (2000, 0, 0)],
)
def test_ttl_is_idle_capped_by_absolute_deadline(now: float, created: float, ttl: float) -> None:
    assert L.ttl(now=now, created_at=created) == ttl
