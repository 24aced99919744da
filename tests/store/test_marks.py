"""DeliveredMarks on its own: which calls share a statement, and who gets what."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from chatd.store.base import StoreError, StoreUnavailable
from chatd.store.postgres.marks import DeliveredMarks
from libchat.protocol import Message
from tests.support.aio import run


def message(seq: int) -> Message:
    return Message.trusted(id=f"c{seq}", seq=seq, sender="alice", recipient="bob",
                           body="hi", ts=1)


class Statements:
    """A fake mark statement that waits for ``release`` and keeps what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[tuple[int, list[int]]]] = []
        self.release = asyncio.Event()
        self.fail: type[Exception] | None = None

    async def mark_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        self.asked.append([(recipient, list(seqs)) for recipient, seqs in marks])
        await self.release.wait()
        if self.fail is not None and (len(marks) > 1 or marks[0][1] == [666]):
            raise self.fail("refused")
        return [[message(seq) for seq in seqs] for _, seqs in marks]


def test_calls_made_while_a_statement_runs_go_together_in_the_next() -> None:
    async def body() -> None:
        statements = Statements()
        marks = DeliveredMarks(statements.mark_many)
        first = asyncio.ensure_future(marks.mark([(1, [10])], 5))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert statements.asked == [[(1, [10])]]  # on the wire
        second = asyncio.ensure_future(marks.mark([(1, [11]), (2, [12])], 6))
        third = asyncio.ensure_future(marks.mark([(3, [13])], 7))
        statements.release.set()
        assert [[m.seq for m in entry] for entry in await first] == [[10]]
        assert [[m.seq for m in entry] for entry in await second] == [[11], [12]]
        assert [[m.seq for m in entry] for entry in await third] == [[13]]
        assert statements.asked == [[(1, [10])], [(1, [11]), (2, [12]), (3, [13])]]

    run(body)


def test_a_call_that_fails_the_shared_statement_fails_alone() -> None:
    async def body() -> None:
        statements = Statements()
        statements.fail = StoreError
        statements.release.set()
        marks = DeliveredMarks(statements.mark_many)
        bad, good = await asyncio.gather(marks.mark([(1, [666])], 5), marks.mark([(1, [7])], 5),
                                         return_exceptions=True)
        assert isinstance(bad, StoreError)
        assert isinstance(good, list) and [m.seq for m in good[0]] == [7]
        assert statements.asked == [[(1, [666]), (1, [7])], [(1, [666])], [(1, [7])]]

    run(body)


def test_an_unreachable_database_fails_every_call_at_once() -> None:
    async def body() -> None:
        statements = Statements()
        statements.fail = StoreUnavailable
        statements.release.set()
        marks = DeliveredMarks(statements.mark_many)
        outcomes = await asyncio.gather(marks.mark([(1, [1])], 5), marks.mark([(1, [2])], 5),
                                        return_exceptions=True)
        assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes)
        assert len(statements.asked) == 1

    run(body)


def test_a_cancelled_caller_leaves_the_others_their_statement() -> None:
    async def body() -> None:
        statements = Statements()
        marks = DeliveredMarks(statements.mark_many)
        first = asyncio.ensure_future(marks.mark([(1, [1])], 5))
        second = asyncio.ensure_future(marks.mark([(1, [2])], 5))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first.cancel()
        statements.release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert [m.seq for m in (await second)[0]] == [2]

    run(body)
