"""Gathered with a limit (the PostgreSQL message writer's MAX_BATCH): how calls made
while a statement runs are cut into the next statements, and waiting for them all."""

from __future__ import annotations

import asyncio

from chatd.store.postgres.gather import Gathered
from tests.support.aio import run


class Statements:
    """A fake statement that waits for ``release`` and keeps what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.release = asyncio.Event()

    async def many(self, asks: list[str]) -> list[int]:
        self.asked.append(list(asks))
        await self.release.wait()
        return [len(ask) for ask in asks]


def test_calls_waiting_go_in_statements_of_at_most_the_limit_in_order() -> None:
    """Sizes 2, 3 and 4 behind a limit of 5: the first two together (5), then the third;
    an ask larger than the limit still goes, alone."""

    async def body() -> None:
        statements = Statements()
        gathered = Gathered(statements.many, "test", limit=5, size=len)
        calls = [asyncio.ensure_future(gathered.ask(ask))
                 for ask in ("a", "bb", "ccc", "dddd", "eeeeeeee")]
        statements.release.set()
        assert await asyncio.gather(*calls) == [1, 2, 3, 4, 8]
        assert statements.asked == [["a", "bb"], ["ccc"], ["dddd"], ["eeeeeeee"]]

    run(body)


def test_idle_returns_once_every_call_made_is_answered() -> None:
    async def body() -> None:
        statements = Statements()
        gathered = Gathered(statements.many, "test", limit=2, size=len)
        calls = [asyncio.ensure_future(gathered.ask(ask)) for ask in ("aa", "bb")]
        await asyncio.sleep(0)
        idle = asyncio.ensure_future(gathered.idle())
        await asyncio.sleep(0)
        assert not idle.done()  # "aa" is on the wire, "bb" waits
        statements.release.set()
        await idle
        assert all(call.done() for call in calls)
        assert statements.asked == [["aa"], ["bb"]]
        await gathered.idle()  # nothing waiting: at once

    run(body)
