"""The one way a test runs async code: a fresh event loop per call (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]]) -> T:
    """Await ``body()`` in a fresh event loop and return its result."""

    async def main() -> T:
        return await body()

    return asyncio.run(main())


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Decorate an ``async def`` test so pytest runs it through :func:`run`."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run(lambda: test(*args, **kwargs))

    return wrapper
