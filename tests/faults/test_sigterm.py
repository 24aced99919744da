"""SIGTERM while sends wait for a commit that cannot come: every send is answered.

The bug (issue 12): at SIGTERM the server waited a grace period for in-flight commits and
then closed the connections; sends whose commit had not come by then got no answer at
all, and their clients waited for their own timeout. Here PostgreSQL holds the messages
table locked, so the commits hang for as long as the test wants.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import psycopg

from tests.chatd.clients import TIMEOUT, anew_user, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.pg import FAST
from tests.faults.tally import Tally

BACKENDS = ("postgres",)
SENDS = 5


def waiting_inserts(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query ILIKE '%INSERT INTO messages%'"
        ).fetchone()
    return 0 if row is None else int(row[0])


@run_async
async def test_sends_waiting_for_a_commit_are_answered_before_the_close(
    make_server: Any,
) -> None:
    server = make_server(*FAST)
    assert server.db is not None and server.proc is not None
    _, token = await anew_user(server)
    bob, _ = await anew_user(server)
    peer = await ws_connect(server, token)
    with psycopg.connect(server.db) as locker:
        locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # until rollback
        for index in range(SENDS):
            await peer.send({"type": "send", "id": f"held-{index}", "to": bob, "body": "x"})
        deadline = time.monotonic() + TIMEOUT
        while await asyncio.to_thread(waiting_inserts, server.db) == 0:
            assert time.monotonic() < deadline, "the commit never reached the lock"
        server.proc.send_signal(signal.SIGTERM)
        errors = [await peer.recv("error", timeout=15) for _ in range(SENDS)]
        assert sorted(error["ref"] for error in errors) == [f"held-{i}" for i in range(SENDS)]
        assert {error["code"] for error in errors} == {"internal_error"}
        tally = Tally("SIGTERM while commits hang")
        for index in range(SENDS):
            tally.send(f"held-{index}")
        for error in errors:
            tally.answer(error)
        tally.check()
        assert await peer.wait_closed() == 1001
        assert peer.untaken("ack") == []
        locker.rollback()
    assert await asyncio.to_thread(server.proc.wait, 15) == 0
