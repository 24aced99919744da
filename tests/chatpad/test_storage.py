"""chatpad's SQLite storage and profile: the outbox survives a new process, seen seqs are
remembered, statuses never move backwards, the session file is private."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from chatpad.items import ChatItem
from chatpad.profile import Profile, Session, parse_server
from chatpad.storage import LocalStore, SqliteOutboxStorage
from libchat.outbox import Outbox
from libchat.protocol import Ack, Message


def test_outbox_survives_reopening(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chatpad.db")
    outbox = Outbox(SqliteOutboxStorage(store), random.Random(1))
    first = outbox.submit(to="bob", body="one", now=1.0)
    second = outbox.submit(to="bob", body="two 😀", now=2.0)
    store.close()

    store = LocalStore(tmp_path / "chatpad.db")
    outbox = Outbox(SqliteOutboxStorage(store), random.Random(2))
    assert [e.client_id for e in outbox.pending()] == [first.client_id, second.client_id]
    frames = outbox.on_connected(now=3.0)
    assert [f.body for f in frames] == ["one", "two 😀"]
    outbox.on_ack(Ack(id=first.client_id, seq=10, ts=5))
    store.close()

    store = LocalStore(tmp_path / "chatpad.db")
    storage = SqliteOutboxStorage(store)
    assert [e.client_id for e in storage.entries()] == [second.client_id]
    assert storage.entries()[0].attempts == 1
    assert storage.seen(10)  # an acked seq counts as seen
    store.close()


def test_seen_seqs_are_bounded_and_persist(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chatpad.db")
    storage = SqliteOutboxStorage(store, seen_capacity=3)
    outbox = Outbox(storage, random.Random(1))
    for seq in (5, 6, 7, 8):
        msg = Message(id=f"m{seq}", seq=seq, sender="bob", recipient="alice", body="x", ts=1)
        assert outbox.accept_push(msg)
        assert not outbox.accept_push(msg)
    store.close()
    store = LocalStore(tmp_path / "chatpad.db")
    storage = SqliteOutboxStorage(store, seen_capacity=3)
    assert all(storage.seen(seq) for seq in (1, 5, 6, 7, 8))  # 5 folded into the floor
    assert not storage.seen(9)
    assert store.db.execute("SELECT count(*) FROM seen").fetchone()[0] == 3
    store.close()


def item(status: str, seq: int | None = 1) -> ChatItem:
    return ChatItem(peer="bob", sender="alice", id="c1", seq=seq, body="hi", ts=1,
                    status=status, mine=True)


def test_status_never_moves_backwards(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chatpad.db")
    store.upsert(item("queued", None))
    assert store.upsert(item("delivered")).status == "delivered"
    assert store.upsert(item("sent")).status == "delivered"  # a late ack
    assert store.mark_read_up_to("alice", "bob", 1)[0].status == "read"
    assert store.page("bob", None, 50)[0].status == "read"
    store.close()


def test_another_account_wipes_local_data(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chatpad.db")
    store.claim("alice@http://a")
    Outbox(SqliteOutboxStorage(store), random.Random(1)).submit(to="bob", body="x", now=1)
    store.upsert(item("sent"))
    store.claim("alice@http://a")
    assert len(SqliteOutboxStorage(store).entries()) == 1
    store.claim("mallory@http://a")  # never send alice's outbox as mallory
    assert SqliteOutboxStorage(store).entries() == []
    assert store.page("bob", None, 50) == []
    store.close()


def test_history_is_trimmed_to_the_newest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chatpad.db")
    for seq in range(1, 21):
        store.upsert(ChatItem(peer="bob", sender="bob", id=f"m{seq}", seq=seq, body="b",
                              ts=seq, status="", mine=False))
    store.trim("bob", keep=5)
    assert [i.seq for i in store.page("bob", None, 50)] == [16, 17, 18, 19, 20]
    assert [i.seq for i in store.page("bob", 18, 2)] == [16, 17]
    store.close()


def test_session_file_is_private_and_cleared(tmp_path: Path) -> None:
    profile = Profile.named("work", tmp_path)
    session = Session(server="http://127.0.0.1:8765", username="alice", token="t0k3n",
                      expires_at=123.0)
    profile.save_session(session)
    assert profile.load_session() == session
    if os.name == "posix":
        assert stat.S_IMODE(profile.session_file.stat().st_mode) == 0o600
    assert "t0k3n" not in repr(session)
    profile.clear_session()
    assert profile.load_session() is None


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_profile_files_are_private_under_an_open_umask(tmp_path: Path) -> None:
    profile = Profile.named("work", tmp_path / "home")
    previous = os.umask(0o022)
    try:
        store = LocalStore(profile.database)
        store.set("k", "v")  # a write: the WAL and SHM files exist now
        profile.save_session(Session(server="http://127.0.0.1:8765", username="alice",
                                     token="t0k3n", expires_at=123.0))
        db = profile.database
        paths = [tmp_path / "home", profile.folder, db, db.with_name("chatpad.db-wal"),
                 db.with_name("chatpad.db-shm"), profile.session_file]
        modes = [oct(stat.S_IMODE(path.stat().st_mode)) for path in paths]
        store.close()
    finally:
        os.umask(previous)
    assert modes == ["0o700", "0o700", "0o600", "0o600", "0o600", "0o600"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_an_open_profile_is_tightened(tmp_path: Path) -> None:
    profile = Profile.named("work", tmp_path)
    LocalStore(profile.database).close()
    profile.folder.chmod(0o755)
    profile.database.chmod(0o644)
    LocalStore(profile.database).close()
    assert stat.S_IMODE(profile.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(profile.database.stat().st_mode) == 0o600


def test_profile_names_and_server_addresses() -> None:
    with pytest.raises(ValueError):
        Profile.named("../etc")
    assert parse_server("http://127.0.0.1:8765") == ("http", "127.0.0.1", 8765)
    assert parse_server("example.org") == ("http", "example.org", 80)
    assert parse_server("https://chat.example.org/") == ("https", "chat.example.org", 443)
    with pytest.raises(ValueError):
        parse_server("ftp://x")
    with pytest.raises(ValueError):
        parse_server("http://host:99999")
