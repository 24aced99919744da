"""Wait for a state nobody announces: poll a condition until it holds or a deadline passes.

Tests never sleep to wait. ``poll`` (plain code) and ``apoll`` (inside an event loop)
call ``condition`` until it returns something truthy and return that value; after
``timeout`` seconds they fail with an ``AssertionError`` that says what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 10.0  # seconds: generous on a busy 2-core machine
INTERVAL = 0.02  # seconds between two looks: short, but leaves the core to the others

What = str | Callable[[], str]


def poll(condition: Callable[[], T], what: What, *, timeout: float = TIMEOUT,
         interval: float = INTERVAL) -> T:
    """``condition()`` once it is truthy; ``what`` names it (or, as a function, describes
    the last state seen) in the failure."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        _check(deadline, timeout, what)
        time.sleep(interval)  # the poll interval, not a wait for the state
    return result


async def apoll(condition: Callable[[], T | Awaitable[T]], what: What, *,
                timeout: float = TIMEOUT, interval: float = INTERVAL) -> T:
    """:func:`poll` in an event loop; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        _check(deadline, timeout, what)
        await asyncio.sleep(interval)  # the poll interval, not a wait for the state


def _check(deadline: float, timeout: float, what: What) -> None:
    if time.monotonic() >= deadline:
        described = what() if callable(what) else what
        raise AssertionError(f"not within {timeout:g} s: {described}")
