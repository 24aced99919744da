"""Private files and bounded logs: what chatd writes to disk is its owner's alone, and a
hostile client cannot fill the disk through the log or reach an operator's terminal
through ``chatd messages``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from libchat import limits
from tests.chatd.clients import http, new_user, unique_name, ws_connect
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import REMOTE_IP
from tests.support.poll import poll

BACKENDS = ("sqlite", "postgres")
REPO = Path(__file__).resolve().parents[2]
OPEN_UMASK = 0o022  # the usual default: files 0644 and directories 0755 unless told
RUN_TIMEOUT = 60.0  # seconds one chatd command may take on a very busy machine
WAIT = 15.0  # seconds for a log line to reach the file on a busy machine
HUGE_NAME_CHARS = limits.MAX_BODY_BYTES - 200  # the largest username a request can carry
REFUSED_LOGINS = 100
LOG_GROWTH_LIMIT = 64 * 1024  # what 100 refused logins may add to the log, at most


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask for the block: a chatd started inside inherits it."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chatd(*args: object) -> subprocess.CompletedProcess[str]:
    """Run ``chatd ARGS`` in a new process under the open umask; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "chatd", *map(str, args)], capture_output=True, text=True,
        timeout=RUN_TIMEOUT, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        umask=OPEN_UMASK,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def store_flags(server: ChatdProcess, log_dir: Path) -> list[object]:
    flags: list[object] = ["--data-dir", server.data_dir, "--log-dir", log_dir]
    return flags + (["--db", server.db] if server.db is not None else [])


def log_events(server: ChatdProcess) -> list[dict[str, object]]:
    path = server.log_dir / "chatd.log"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def logged(server: ChatdProcess, event: str, **fields: object) -> bool:
    return any(
        line["event"] == event and all(line.get(k) == v for k, v in fields.items())
        for line in log_events(server)
    )


def test_created_files_and_directories_are_private(
    make_server: Callable[..., ChatdProcess], backend: str, tmp_path: Path
) -> None:
    with umask(OPEN_UMASK):
        server = make_server()
    new_user(server)  # a write: the database, its WAL and the log file all exist now
    poll(lambda: logged(server, "login.ok"), "the login line", timeout=WAIT)

    private_dirs = [server.data_dir, server.log_dir]
    private_files = [server.data_dir / "token.key", server.log_dir / "chatd.log"]
    if backend == "sqlite":
        db = server.data_dir / "chatd.db"
        private_files += [db, db.with_name("chatd.db-wal"), db.with_name("chatd.db-shm")]
        backups = tmp_path / "backups"
        backups.mkdir()  # the operator's directory: chatd only writes the file into it
        chatd("backup", backups / "copy.db", *store_flags(server, tmp_path / "admin-logs"))
        private_files.append(backups / "copy.db")
        private_dirs.append(tmp_path / "admin-logs")
        private_files.append(tmp_path / "admin-logs" / "chatd.log")
    canary = tmp_path / "canary" / "canary.json"
    chatd("health", "--url", server.url, "--canary", "--canary-file", canary)
    private_dirs.append(canary.parent)
    private_files.append(canary)

    modes = {str(path): oct(mode(path)) for path in private_dirs + private_files}
    assert modes == {
        **{str(path): oct(0o700) for path in private_dirs},
        **{str(path): oct(0o600) for path in private_files},
    }


def test_existing_open_data_files_are_tightened_at_startup(
    make_server: Callable[..., ChatdProcess], backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the database files are SQLite's; PostgreSQL keeps its own")
    first = make_server()
    new_user(first)
    assert first.stop() == 0
    db = first.data_dir / "chatd.db"
    key = first.data_dir / "token.key"
    db.chmod(0o644)
    key.chmod(0o644)
    first.data_dir.chmod(0o755)

    second = make_server(data_dir=first.data_dir)
    new_user(second)  # the restarted server still works on the tightened files
    assert (mode(db), mode(key)) == (0o600, 0o600)
    assert mode(first.data_dir) == 0o755  # a directory may be shared: only a warning
    poll(lambda: logged(second, "file.mode_open", path=str(first.data_dir)),
         "the warning about the open data directory", timeout=WAIT)
    assert logged(second, "file.mode_tightened", path=str(db), old_mode="0o644")
    assert logged(second, "file.mode_tightened", path=str(key), old_mode="0o644")


def test_huge_usernames_in_refused_logins_do_not_fill_the_log(
    make_server: Callable[..., ChatdProcess],
) -> None:
    server = make_server()
    poll(lambda: logged(server, "server.start"), "the start line", timeout=WAIT)
    log_file = server.log_dir / "chatd.log"
    size_before = log_file.stat().st_size
    statuses = []
    for n in range(REFUSED_LOGINS):
        huge = f"{n:03d}\x1b[31m" + "x" * HUGE_NAME_CHARS
        answer = http(server, "POST", "/v1/login", {"username": huge, "password": "wrong pass"},
                      source_ip=REMOTE_IP)
        statuses.append(answer.status)
    assert set(statuses) == {401, 429}, statuses
    # A line logged after all of them: once it is in the file, theirs are too.
    marker, _ = new_user(server)
    poll(lambda: logged(server, "login.ok", user=marker), "the marker login", timeout=WAIT)

    growth = log_file.stat().st_size - size_before
    assert growth < LOG_GROWTH_LIMIT, f"{growth} bytes for {REFUSED_LOGINS} refused logins"
    text = log_file.read_text("utf-8")
    assert "\x1b" not in text and "\\u001b" not in text  # escaped before JSON: "\\x1b"
    refused = [line for line in log_events(server) if line["event"] == "login.rate_limited"]
    assert refused and all(len(str(line["user"])) < 200 for line in refused)

    metrics = http(server, "GET", "/metrics").raw.decode()
    counted = re.search(r'chatd_refusals_total\{reason="login.rate_limited"\} (\d+)', metrics)
    assert counted is not None, metrics
    assert int(float(counted.group(1))) == statuses.count(429)


def test_messages_command_escapes_terminal_controls(server: ChatdProcess, tmp_path: Path
                                                    ) -> None:
    body = "look\x1b[2J\x1b]0;owned\x07 here\u009b31m\nsecond line"

    async def send() -> tuple[str, str]:
        (alice, alice_token), (bob, _) = new_user(server), new_user(server)
        peer = await ws_connect(server, alice_token)
        try:
            await peer.send({"type": "send", "id": unique_name("m"), "to": bob, "body": body})
            await peer.recv("ack")
        finally:
            await peer.close()
        return alice, bob

    alice, bob = asyncio.run(send())
    shown = chatd("messages", alice, bob, *store_flags(server, tmp_path / "logs")).stdout
    assert "\x1b" not in shown and "\x07" not in shown and "\u009b" not in shown
    assert "look\\x1b[2J\\x1b]0;owned\\x07 here\\x9b31m\n    second line" in shown
    as_json = chatd("messages", alice, bob, "--json",
                    *store_flags(server, tmp_path / "logs")).stdout
    assert "\x1b" not in as_json  # JSON escapes it; the body itself comes back exact
    assert orjson.loads(as_json)["messages"][0]["body"] == body
