"""Waiting on a condition instead of sleeping a fixed time (lab tests).

``wait_for(probe, until)`` calls ``probe`` until ``until(value)`` holds and returns that
value; after ``timeout`` seconds it fails the test with the last value seen, so a slow
machine only makes a test slower, never wrong, and a real failure says what was last
observed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], until: Callable[[T], object] = bool,
             timeout: float = 10.0, interval: float = 0.05, what: str = "the condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {value!r})")
        time.sleep(interval)
