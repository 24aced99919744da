"""``chatd migrate-data``: a SQLite deployment with 10,000 messages moves to PostgreSQL.

The SQLite database is built through ``SqliteStore`` (fast: big batches), with real
argon2 hashes for two users. The real command runs twice (the second run copies
nothing). Then a PostgreSQL-backed chatd serves it: the old passwords log in, and every
conversation list and history page, with its delivery and read times and unread counts,
is what the SQLite store itself answers.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from argon2 import PasswordHasher

from chatd.store.base import NewMessage, Store, User
from chatd.store.factory import schema_from_url
from chatd.store.sqlite import SqliteStore
from libchat import protocol
from tests.chatd.clients import PASSWORD, http, login, new_user, ws_connect
from tests.chatd.conftest import _shut, run_async
from tests.chatd.pg import pg_schema
from tests.chatd.server import ChatdProcess

OTHERS = 20  # users besides alice and bob, with placeholder hashes (they never log in)
BASE_TS = 1_700_000_000_000  # Unix ms of the first message
PAGE = 200  # the largest history page


def plan() -> list[tuple[str, str]]:
    """(sender, recipient) of 10,000 messages: 4,000 between alice and bob, then 300
    with each other user (the first half talk to alice, the rest to bob)."""
    pairs = [("alice", "bob") if i % 3 else ("bob", "alice") for i in range(4000)]
    for k in range(OTHERS):
        me, other = ("alice" if k < OTHERS // 2 else "bob"), f"user{k:02d}"
        pairs += [(me, other) if i % 2 else (other, me) for i in range(300)]
    assert len(pairs) == 10000
    return pairs


async def build(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        hashed = PasswordHasher().hash(PASSWORD)
        users: dict[str, User] = {}
        for n, name in enumerate(["alice", "bob"] + [f"user{k:02d}" for k in range(OTHERS)]):
            user = await store.create_user(name, hashed if n < 2 else "x", BASE_TS - 1000 + n)
            assert user is not None
            users[name] = user
        batch = [
            NewMessage(
                sender_id=users[s].id, sender=s, recipient_id=users[r].id, recipient=r,
                client_id=f"m{i}", body=f"message {i} from {s}", ts=BASE_TS + i,
            )
            for i, (s, r) in enumerate(plan())
        ]
        stored: list[protocol.Message] = []
        for start in range(0, len(batch), 2500):
            stored += await store.submit(batch[start:start + 2500])
        alice, bob = users["alice"], users["bob"]
        # bob has seen alice's messages up to the middle and read a quarter of them;
        # alice has read all of bob's; the others' messages to alice are delivered
        # (not read) for the first half, and their messages to bob are untouched.
        to_bob = [m.seq for m in stored if m.sender == "alice" and m.recipient == "bob"]
        await store.mark_delivered(bob.id, to_bob[: len(to_bob) // 2], BASE_TS + 20_000)
        await store.mark_read(bob.id, alice.id, to_bob[len(to_bob) // 4], BASE_TS + 30_000)
        to_alice_from_bob = [m.seq for m in stored if m.sender == "bob" and m.recipient == "alice"]
        await store.mark_read(alice.id, bob.id, to_alice_from_bob[-1], BASE_TS + 40_000)
        to_alice = [m.seq for m in stored if m.recipient == "alice" and m.sender != "bob"]
        await store.mark_delivered(alice.id, to_alice[: len(to_alice) // 2], BASE_TS + 50_000)
        await store.revoke_token("jti-old-1", alice.id, 4_000_000_000)
        await store.revoke_token("jti-old-2", bob.id, 4_000_000_000)
    finally:
        await store.close()


def body_json(body: object) -> object:
    return orjson.loads(protocol.encode_body(body))


async def expected_views(path: Path) -> dict[str, object]:
    """What alice and bob must see: their conversation lists and every history page,
    as JSON, answered by the SQLite store."""
    store = SqliteStore(path)
    await store.open()
    try:
        views: dict[str, object] = {}
        for name in ("alice", "bob"):
            user = await store.user_by_name(name)
            assert user is not None
            conversations = await store.conversations(user.id)
            listing = tuple(protocol.Conversation(peer=peer, last_message=last, unread=unread)
                            for peer, last, unread in conversations)
            views[f"{name} conversations"] = body_json(
                protocol.ConversationList(conversations=listing)
            )
            for peer, _, _ in conversations:
                views[f"{name} {peer}"] = await all_pages(store, user.id, peer)
        return views
    finally:
        await store.close()


async def all_pages(store: Store, user_id: int, peer: str) -> list[object]:
    peer_user = await store.user_by_name(peer)
    assert peer_user is not None
    pages: list[object] = []
    before: int | None = None
    while True:
        messages, has_more = await store.history(user_id, peer_user.id, before, PAGE)
        pages.append(body_json(protocol.MessagePage(messages=tuple(messages), has_more=has_more)))
        if not has_more:
            return pages
        before = messages[0].seq


def served_views(server: ChatdProcess, tokens: dict[str, str]) -> dict[str, Any]:
    """The same views, asked of a running chatd over HTTP."""
    views: dict[str, Any] = {}
    for name, token in tokens.items():
        listing = http(server, "GET", "/v1/conversations", token=token)
        assert listing.status == 200, listing
        views[f"{name} conversations"] = listing.json
        for conversation in listing.json["conversations"]:
            peer = conversation["peer"]
            pages: list[object] = []
            query = f"limit={PAGE}"
            while True:
                page = http(server, "GET", f"/v1/conversations/{peer}/messages?{query}",
                            token=token)
                assert page.status == 200, page
                pages.append(page.json)
                if not page.json["has_more"]:
                    break
                query = f"limit={PAGE}&before={page.json['messages'][0]['seq']}"
            views[f"{name} {peer}"] = pages
    return views


def migrate(source: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "migrate-data", "--from", str(source), "--to", url],
        capture_output=True, text=True, timeout=120,
    )


def table_lines(stdout: str) -> dict[str, tuple[int, int, int]]:
    """table -> (rows in SQLite, rows in PostgreSQL, copied) from lines ending "verified"."""
    found = re.findall(
        r"^(\w+): (\d+) in SQLite, (\d+) in PostgreSQL, (\d+) copied by this run, "
        r"checksum \w+: verified$", stdout, re.MULTILINE,
    )
    return {name: (int(a), int(b), int(c)) for name, a, b, c in found}


@pytest.fixture
def url() -> Iterator[str]:
    with pg_schema() as schema_url:
        yield schema_url


@pytest.mark.pg
@run_async
async def test_migrate_data_then_serve_from_postgres(tmp_path: Path, url: str) -> None:
    source = tmp_path / "data" / "chatd.db"
    source.parent.mkdir()
    await build(source)
    expected = await expected_views(source)

    first = await asyncio.to_thread(migrate, source, url)
    assert first.returncode == 0, first.stderr
    assert table_lines(first.stdout) == {
        "users": (22, 22, 22), "messages": (10000, 10000, 10000), "revoked_tokens": (2, 2, 2),
        "retired_tokens": (0, 0, 0), "revoked_families": (0, 0, 0),
        "token_families": (0, 0, 0),
    }, first.stdout
    assert "verified: 6 tables, 10024 rows, counts and checksums match" in first.stdout

    with psycopg.connect(url) as conn:  # the URL's schema (search_path), not public
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (10000,)

    again = await asyncio.to_thread(migrate, source, url)  # safe: nothing is duplicated
    assert again.returncode == 0, again.stderr
    assert table_lines(again.stdout) == {
        "users": (22, 22, 0), "messages": (10000, 10000, 0), "revoked_tokens": (2, 2, 0),
        "retired_tokens": (0, 0, 0), "revoked_families": (0, 0, 0),
        "token_families": (0, 0, 0),
    }, again.stdout

    server = ChatdProcess(tmp_path / "pg-data", tmp_path / "pg-logs", db=url).start()
    try:
        tokens = {name: await asyncio.to_thread(login, server, name) for name in ("alice", "bob")}
        served = await asyncio.to_thread(served_views, server, tokens)
        assert served.keys() == expected.keys()
        for view, pages in expected.items():
            assert served[view] == pages, view
        unread = {c["peer"]: c["unread"] for c in served["bob conversations"]["conversations"]}
        assert unread["alice"] > 0 and unread["user19"] == 150  # not everything was read
        assert {c["peer"]: c["unread"] for c in served["alice conversations"]["conversations"]
                }["bob"] == 0

        # New messages continue after the migrated seqs.
        alice = await ws_connect(server, tokens["alice"])
        try:
            await alice.send({"type": "send", "id": "after-move", "to": "bob", "body": "hi"})
            ack = await alice.recv("ack")
            assert ack["seq"] > 10000
        finally:
            await alice.close()
    finally:
        _shut(server)


def test_migrate_data_refuses_a_missing_file_or_a_non_postgres_url(tmp_path: Path) -> None:
    missing = migrate(tmp_path / "nope.db", "postgresql://postgres@127.0.0.1:1/never")
    assert missing.returncode == 2
    assert "no such SQLite database" in missing.stderr
    wrong = migrate(tmp_path / "nope.db", "sqlite:///elsewhere.db")
    assert wrong.returncode == 2
    assert "postgresql:// URL" in wrong.stderr


@pytest.mark.parametrize(("url", "schema"), [
    ("postgresql://chat@db/chat", None),
    ("postgresql://chat@db/chat?options=-csearch_path%3Dchat_eu", "chat_eu"),
    ("postgres://db/chat?sslmode=require&options=-c%20search_path%3Dchat_eu,public", "chat_eu"),
    ("postgresql://db/chat?options=-cstatement_timeout%3D5000", None),
])
def test_the_schema_comes_from_the_urls_search_path(url: str, schema: str | None) -> None:
    assert schema_from_url(url) == schema


def test_the_other_commands_do_not_load_the_postgresql_driver() -> None:
    """migrate-data's parser is one of chatd's, but PostgreSQL's driver (a quarter of a
    second) loads only when the copy runs: `chatd user`, `chatd health` and the rest
    start without it."""
    code = (
        "import sys\n"
        "from chatd.cli import build_parser\n"
        "build_parser().parse_args(['user', 'list', '--data-dir', 'x'])\n"
        "print('psycopg' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_a_server_on_sqlite_does_not_load_the_postgresql_driver(
    make_server: Callable[..., ChatdProcess],
) -> None:
    """PostgreSQL's store and bus import psycopg only for a PostgreSQL ``--db``: a
    SQLite chatd, serving, has none of the driver's libraries mapped."""
    server = make_server()
    new_user(server)  # it served a sign-up and a login
    assert server.proc is not None
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "psycopg" not in maps and "libpq" not in maps
