"""The search index of the local cache (FTS5): kept in step with every write, built for a
database of an older chatpad, and safe with any input; and removing a profile's data."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from chatpad.items import ChatItem
from chatpad.profile import Profile, Session
from chatpad.storage import _SCHEMA, LocalStore, match_query

BODIES = [
    "Are we still on for the climbing gym tonight?",
    "Café afterwards? I found a place with great crêpes.",
    'She said "never" and left *immediately*',
    "The menu is in English, Deutsch and 日本語 too.",
    "50% off: C++ books AND NEAR(x) col:body",
    "Naïve question: do they have vegan options? 😄",
]


def message(n: int, body: str, peer: str = "bob", mine: bool = False) -> ChatItem:
    return ChatItem(peer=peer, sender="alice" if mine else peer, id=f"m{n}", seq=n,
                    body=body, ts=1_000 * n, status="sent" if mine else "", mine=mine)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "chatpad.db")
    with store.db:
        for n, body in enumerate(BODIES, 1):
            store.upsert(message(n, body))
        store.upsert(message(20, "climbing with carol", peer="carol", mine=True))
    return store


def bodies(store: LocalStore, text: str, peer: str | None = None) -> list[str]:
    return [hit.item.body for hit in store.search(text, peer)]


def test_words_prefixes_and_folding(store: LocalStore) -> None:
    assert bodies(store, "climbing") == ["climbing with carol", BODIES[0]]  # newest first
    assert bodies(store, "climbing", peer="bob") == [BODIES[0]]
    assert bodies(store, "clim") == bodies(store, "climbing")  # the last word is a prefix
    assert bodies(store, "clim ") == []  # ... unless it was finished with a space
    assert bodies(store, "cafe crepes") == [BODIES[1]]  # diacritics and case fold
    assert bodies(store, "NAIVE") == [BODIES[5]]
    assert bodies(store, "cafe\u0301") == [BODIES[1]]  # typed decomposed (NFD)
    assert bodies(store, "gym carol") == []  # every word must match
    assert bodies(store, "日本") == [BODIES[3]]


def test_odd_input_is_plain_text(store: LocalStore) -> None:
    for text in ['"', '""', '"never', "never\"", "*", "**", "immediately*", "AND", "OR x",
                 "NEAR(x", "col:body", "body:", "-", "^", "(", ")", "'", "\\", "😄", "%",
                 "C++", "\x00", "a" * 5000, "   "]:
        store.search(text)  # never raises
    assert bodies(store, '"never"') == [BODIES[2]]
    assert bodies(store, "*immediately*") == [BODIES[2]]
    assert bodies(store, "AND near(x) col:body") == [BODIES[4]]
    assert bodies(store, "C++ books") == [BODIES[4]]
    assert bodies(store, "😄") == []  # no word in it: nothing to look for
    assert match_query("😄 *") is None
    assert match_query('say "hi') == '"say" """hi"*'


def test_snippet_marks_the_match(store: LocalStore) -> None:
    [hit] = store.search("crep")
    assert ("crêpes", True) in hit.snippet
    assert "".join(text for text, _ in hit.snippet) == BODIES[1]
    assert hit.item.peer == "bob" and hit.item.seq == 2


def test_index_follows_updates_trims_and_claims(store: LocalStore) -> None:
    store.upsert(message(1, BODIES[0]))  # the same message again (an upsert): one hit
    assert len(store.search("gym")) == 1
    store.trim("bob", keep=2)
    assert bodies(store, "gym") == []
    assert bodies(store, "naive") == [BODIES[5]]
    store.claim("mallory@http://a")
    assert bodies(store, "naive") == bodies(store, "climbing") == []
    store.upsert(message(30, "fresh start", peer="dave"))
    assert bodies(store, "fresh") == ["fresh start"]
    check = store.db.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    assert check.fetchall() == []  # the index matches the table


def test_a_database_of_an_older_chatpad_is_indexed(tmp_path: Path) -> None:
    path = tmp_path / "chatpad.db"
    db = apsw.Connection(str(path))  # schema 1, as chatpad wrote it before search
    with db:
        db.execute(_SCHEMA)
        db.execute("INSERT INTO kv (key, value) VALUES ('schema_version', '1')")
        for n, body in enumerate(BODIES, 1):
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       ("bob", f"m{n}", "bob", n, body, n, "", 0))
    db.close()
    store = LocalStore(path)
    assert store.get("schema_version") == "2"
    assert bodies(store, "crêpe") == [BODIES[1]]
    store.upsert(message(40, "written after the upgrade"))
    assert bodies(store, "upgrade") == ["written after the upgrade"]
    store.close()
    store = LocalStore(path)  # opening again changes nothing
    assert len(store.search("crêpe")) == 1
    store.close()


def test_page_around_a_search_result(store: LocalStore) -> None:
    for n in range(7, 100):
        store.upsert(message(n, f"filler {n}"))
    assert [i.seq for i in store.page_around("bob", 50, before=5)] == list(range(45, 100))
    assert [i.seq for i in store.page_around("bob", 3, before=5)] == list(range(1, 100))


def test_remove_local_data(tmp_path: Path) -> None:
    profile = Profile.named("work", tmp_path)
    store = LocalStore(profile.database)
    store.upsert(message(1, "secret"))
    profile.save_session(Session(server="http://a", username="alice", token="t",
                                 expires_at=1.0))
    store.close()
    assert profile.database.exists() and profile.session_file.exists()
    assert profile.remove_local_data() == []
    assert [p for p in profile.local_data_files() if p.exists()] == []
    assert LocalStore(profile.database).search("secret") == []  # a new, empty database
