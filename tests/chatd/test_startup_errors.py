"""Startup and configuration errors: one ``chatd:`` line, exit status 2, nothing created.

The bugs (issue 12): an unwritable or file-shaped directory, an unknown or misspelt
database URL, a negative token lifetime and a bad TOML value ended in a traceback with
status 1; a mistyped TOML value started a server whose upgrades then hung; a bare word
given to --db became a new SQLite file; a port in use left a new database and key behind;
a TOML syntax error did not name the file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

Case = tuple[list[str], str]  # the flags, and what the line must say


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``chatd serve`` in ``tmp_path/run`` with its data and logs below it."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    command = [
        sys.executable, "-m", "chatd", "serve", "--host", "127.0.0.1",
        "--data-dir", str(workdir / "data"), "--log-dir", str(workdir / "logs"),
    ]
    if "--port" not in flags:
        command += ["--port", "0"]
    return subprocess.run(
        [*command, *flags], capture_output=True, text=True, timeout=30, cwd=workdir
    )


def assert_refused(answer: subprocess.CompletedProcess[str], says: str, tmp_path: Path) -> None:
    lines = answer.stderr.strip().splitlines()
    assert answer.returncode == 2, answer.stderr
    assert len(lines) == 1 and lines[0].startswith("chatd: "), answer.stderr
    assert says in lines[0], lines[0]
    left = sorted(path.name for path in (tmp_path / "run").rglob("*"))
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--db", "mysql://db.example/chat"], "'mysql://db.example/chat' is not a database URL"),
        (["--db", "postgresq://db.example/chat"], "is not a database URL"),
        (["--db", "not a url"], "'not a url' is not a database URL"),
        (["--token-ttl", "-5"], "--token-ttl must be a whole number from 1"),
        (["--max-connections", "0"], "--max-connections must be a whole number from 1"),
        (["--send-rate", "0"], "--send-rate must be a number"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
         "cannot load --tls-cert /nonexistent.pem"),
    ],
)
def test_a_bad_flag_is_one_line(tmp_path: Path, flags: list[str], says: str) -> None:
    assert_refused(serve(tmp_path, *flags), says, tmp_path)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('sync = "fast"\n', "--sync (sync in {file}) must be one of full, normal, not 'fast'"),
        ('max_connections = "many"\n',
         "--max-connections (max_connections in {file}) must be a whole number"),
        ("max_connections = \n", "{file}: Invalid value"),
        ("no_presence = 3\n", "{file}: no_presence must be true or false"),
        ("colour = 1\n", "{file}: unknown setting 'colour'"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, toml: str, says: str
) -> None:
    config = tmp_path / "chatd.toml"
    config.write_text(toml)
    answer = serve(tmp_path, "--config", str(config))
    assert_refused(answer, says.format(file=config), tmp_path)


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    answer = serve(tmp_path, "--data-dir", str(blocker))
    assert_refused(answer, f"--data-dir {blocker} is not a directory", tmp_path)


def test_a_log_dir_below_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    answer = serve(tmp_path, "--log-dir", str(blocker / "logs"))
    assert_refused(answer, f"({blocker} is a file)", tmp_path)


def test_a_port_in_use_leaves_nothing_behind(tmp_path: Path, busy_port: int) -> None:
    answer = serve(tmp_path, "--port", str(busy_port))
    assert_refused(answer, f"cannot listen on 127.0.0.1:{busy_port}", tmp_path)
