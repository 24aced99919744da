"""PROTOCOL.md and CHANGELOG.md agree with the code: states, error codes, version."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from libchat import limits
from libchat.states import TRANSITIONS, ConnState, Role, Trigger
from tests.schemacheck import SchemaSet

PROTOCOL_DIR: Final = Path(__file__).resolve().parents[2] / "protocol"
DOCUMENT: Final = (PROTOCOL_DIR / "PROTOCOL.md").read_text(encoding="utf-8")
EDGE_RE: Final = re.compile(r"^\s*(\w+) --> (\w+) : (\w+)\s*$")


def _diagram(role: Role) -> set[tuple[ConnState, Trigger, ConnState]]:
    """The edges of the mermaid diagram after ``<!-- states:<role> -->``."""
    marker = f"<!-- states:{role.value} -->"
    assert marker in DOCUMENT
    block = DOCUMENT.split(marker, 1)[1].split("```mermaid", 1)[1].split("```", 1)[0]
    edges = set()
    for line in block.splitlines():
        match = EDGE_RE.match(line)
        if match:
            source, target, trigger = match.groups()
            edges.add((ConnState[source], Trigger(trigger), ConnState[target]))
    return edges


@pytest.mark.parametrize("role", list(Role))
def test_state_diagram_is_the_transition_table(role: Role) -> None:
    table = {
        (state, trigger, target)
        for (owner, state, trigger), target in TRANSITIONS.items()
        if owner is role
    }
    assert _diagram(role) == table


def _section(title: str) -> str:
    return DOCUMENT.split(title, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def _table_codes(section: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_every_error_code_is_documented() -> None:
    defs = SchemaSet().documents["error.json"]["$defs"]
    assert _table_codes(_section("### 8.1 HTTP")) == set(defs["http_code"]["enum"])
    assert _table_codes(_section("### 8.2 WebSocket")) == set(defs["ws_code"]["enum"])


def test_changelog_names_the_current_version() -> None:
    changelog = (PROTOCOL_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    # the newest released version: "## 1.1.0 (unreleased)" collects changes until then
    newest = re.search(r"^## (\d+\.\d+\.\d+)$", changelog, flags=re.MULTILINE)
    assert newest is not None
    assert newest.group(1) == limits.PROTOCOL_VERSION
    assert f"Version {limits.PROTOCOL_VERSION}." in DOCUMENT


def _kib(size: int) -> str:
    return f"{size // 1024} KiB"


def test_limits_table_matches_limits_module() -> None:
    rows = dict(
        re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", _section("## 10. Limits"), re.MULTILINE)
    )
    assert rows["HTTP request line + headers"] == _kib(limits.MAX_HEADER_BYTES)
    assert rows["HTTP request body"].startswith(_kib(limits.MAX_BODY_BYTES))
    assert rows["WebSocket message, after reassembly"].startswith(_kib(limits.MAX_FRAME_BYTES))
    assert rows["message body"].startswith(f"1..{limits.MAX_MESSAGE_CHARS} ")
    assert rows["client message id"].startswith(f"1..{limits.MAX_CLIENT_ID_CHARS} ")
    username = f"{limits.MIN_USERNAME_CHARS}..{limits.MAX_USERNAME_CHARS} "
    assert rows["username"].startswith(username)
    password = f"{limits.MIN_PASSWORD_CHARS}..{limits.MAX_PASSWORD_CHARS} "
    assert rows["password"].startswith(password)
    assert rows["seqs in one `delivered`"] == f"1..{limits.MAX_SEQS_PER_DELIVERED}"
    assert rows["every integer on the wire"].startswith(f"0..{limits.MAX_WIRE_INT} ")
    assert rows["users per search"] == str(limits.MAX_USERS_PER_SEARCH)
    history = f"1..{limits.MAX_HISTORY_LIMIT}, default {limits.DEFAULT_HISTORY_LIMIT}"
    assert rows["history page `limit`"] == history
    assert rows["hello timeout"].startswith(f"{limits.HELLO_TIMEOUT:g} s")
    assert rows["ping interval"] == f"{limits.PING_INTERVAL:g} s"
    assert rows["idle timeout"].startswith(f"{limits.IDLE_TIMEOUT:g} s")
    assert rows["HTTP request deadline"].startswith(f"{limits.REQUEST_TIMEOUT:g} s")
    assert rows["HTTP keep-alive timeout"].startswith(f"{limits.KEEPALIVE_TIMEOUT:g} s")
    assert rows["close handshake timeout"] == f"{limits.CLOSE_TIMEOUT:g} s"
