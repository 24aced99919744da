"""One server per SQLite database: a second ``serve``, or ``migrate-data`` from a live
database, stops with a line naming the holder (issue 12: nothing stopped either)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.chatd.clients import new_user
from tests.chatd.server import ChatdProcess


def chatd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args], capture_output=True, text=True, timeout=60
    )


def test_a_second_server_on_one_database_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ChatdProcess(data, tmp_path / "logs") as first:
        assert first.proc is not None
        second = chatd("serve", "--port", "0", "--data-dir", str(data),
                       "--log-dir", str(tmp_path / "logs2"))
        assert second.returncode == 2
        assert second.stderr == (
            f"chatd: {data / 'chatd.db'} is in use by another chatd (pid {first.proc.pid})\n"
        )
        new_user(first)  # the first one is undisturbed


def test_the_lock_dies_with_its_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ChatdProcess(data, tmp_path / "logs").start()
    first.kill()  # SIGKILL: the kernel releases the lock
    with ChatdProcess(data, tmp_path / "logs") as second:
        new_user(second)


def test_migrate_data_refuses_a_live_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ChatdProcess(data, tmp_path / "logs") as server:
        assert server.proc is not None
        answer = chatd("migrate-data", "--from", str(data / "chatd.db"),
                       "--to", "postgresql://nobody@127.0.0.1:1/none")
        assert answer.returncode == 2
        assert f"in use by another chatd (pid {server.proc.pid})" in answer.stderr
        assert "chatd backup" in answer.stderr
