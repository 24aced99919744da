"""Admin changes reach a running chatd at once (issue 12): a user disabled by ``chatd
user disable``, or a token revoked by another process, closes the open WebSockets it
kills within a fraction of a second, on SQLite and on PostgreSQL, not at the server's
next poll of the store (every 2 s)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from websockets.sync.client import ClientConnection

from chatd.cli import main
from chatd.store.factory import open_store
from tests.chatd.clients import new_user
from tests.chatd.server import ChatdProcess
from tests.chatd.test_admin import hello, wait_closed

# What the change must take at most to close the connection: well under the old 2 s poll.
REACH_BOUND = 1.0  # seconds
WAIT_DEADLINE = 15.0  # seconds to wait for the close at all (a busy machine)


class Node:
    """A running chatd and the flags that point an admin command at its database."""

    def __init__(self, server: ChatdProcess, db_url: str, admin_args: list[str]) -> None:
        self.server = server
        self.db_url = db_url
        self.admin_args = admin_args


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    data, logs = tmp_path / "data", tmp_path / "logs"
    dirs = ["--data-dir", str(data), "--log-dir", str(logs)]
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            from tests.chatd.pg import pg_schema

            url = stack.enter_context(pg_schema())
            server = ChatdProcess(data, logs, db=url)
            admin_args = [*dirs, "--db", url]
        else:
            url = str(data / "chatd.db")
            server = ChatdProcess(data, logs)
            admin_args = dirs
        stack.enter_context(server.start())
        yield Node(server, url, admin_args)


def disable(node: Node, name: str, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> None:
    """``chatd user disable NAME`` (in this process: a store connection of its own)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status = main(["user", "disable", name, *node.admin_args])
    out, err = capsys.readouterr()
    assert status == 0, (out, err)


def revoke(node: Node, token: str) -> None:
    """Revoke ``token`` the way another process does: a row in the store."""
    claims = jwt.decode(token, options={"verify_signature": False})

    async def write() -> None:
        store = open_store(node.db_url)
        await store.open()
        try:
            await store.revoke_token(claims["jti"], int(claims["sub"]), int(claims["exp"]))
        finally:
            await store.close()

    asyncio.run(write())


def closed_after_change(ws: ClientConnection) -> float:
    """Seconds from now (the change is committed) until the server closes ``ws`` 4001."""
    changed = time.monotonic()
    assert wait_closed(ws, changed + WAIT_DEADLINE) == 4001
    return time.monotonic() - changed


def test_admin_changes_close_connections_at_once(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes one right after the other: a poll every 2 s would see the first at a
    random moment and every later one up to 2 s after its commit."""
    users = [new_user(node.server, "adm") for _ in range(4)]
    sockets = [hello(node.server, token) for _, token in users]
    took: list[float] = []
    for index, ((name, token), ws) in enumerate(zip(users, sockets, strict=True)):
        if index % 2:
            revoke(node, token)
        else:
            disable(node, name, capsys, monkeypatch)
        took.append(closed_after_change(ws))
    assert max(took) < REACH_BOUND, took
