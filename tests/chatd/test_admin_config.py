"""The admin commands take the server's settings from its TOML file: they work on its
database and audit beside its log, wherever they are run from (they used to leave a
stray ./logs in the current directory)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import chatd.config
from chatd.cli import main

PASSWORD = "correct horse battery"


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                 cwd: Path) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        cwd.mkdir()
        monkeypatch.chdir(cwd)  # where an operator happens to be

    def __call__(self, *args: object, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main([str(arg) for arg in args])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Run:
    return Run(capsys, monkeypatch, tmp_path / "somewhere")


def server_config(tmp_path: Path, **extra: object) -> Path:
    """A server's file as an operator writes it: absolute directories, and settings
    only ``serve`` uses (the admin commands must accept them)."""
    path = tmp_path / "chatd.toml"
    lines = [f'data_dir = "{tmp_path / "srv-data"}"', f'log_dir = "{tmp_path / "srv-logs"}"',
             'host = "0.0.0.0"', "port = 8443", 'sync = "normal"', "max_connections = 5000",
             *(f"{key} = {json.dumps(value)}" for key, value in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def audit_events(log_dir: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (log_dir / "chatd.log").read_text().splitlines()]


def test_admin_commands_audit_in_the_servers_log_dir(run: Run, tmp_path: Path) -> None:
    config = server_config(tmp_path)
    status, _, err = run("user", "add", "alice", "--config", config, stdin=PASSWORD + "\n")
    assert status == 0, err
    status, out, err = run("user", "list", "--json", "--config", config)
    assert status == 0, err
    assert [user["username"] for user in json.loads(out)["users"]] == ["alice"]
    assert (tmp_path / "srv-data" / "chatd.db").is_file()  # the server's database
    assert audit_events(tmp_path / "srv-logs") == ["admin.user_add", "admin.user_list"]
    assert list(Path.cwd().iterdir()) == []  # no stray ./logs (or ./data) where it ran


def test_flags_beat_the_servers_file(run: Run, tmp_path: Path) -> None:
    config = server_config(tmp_path)
    run("migrate", "--config", config)
    status, _, err = run("stats", "--config", config, "--log-dir", tmp_path / "mine")
    assert status == 0, err
    assert audit_events(tmp_path / "mine") == ["admin.stats"]
    assert audit_events(tmp_path / "srv-logs") == ["admin.migrate"]


def test_the_default_file_is_read_when_nothing_says_where_the_server_is(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chatd.config, "DEFAULT_CONFIG_FILE", server_config(tmp_path))
    assert run("migrate")[0] == 0
    assert audit_events(tmp_path / "srv-logs") == ["admin.migrate"]
    # --data-dir names another server: the default file is not its file
    assert run("migrate", "--data-dir", tmp_path / "other")[0] == 0
    assert audit_events(Path.cwd() / "logs") == ["admin.migrate"]
    monkeypatch.setattr(chatd.config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    assert run("migrate", "--data-dir", tmp_path / "other", "--log-dir", tmp_path / "l")[0] == 0


def test_a_bad_server_file_is_a_usage_error_before_anything_is_written(
    run: Run, tmp_path: Path
) -> None:
    config = server_config(tmp_path, nope=1)
    status, out, err = run("stats", "--config", config)
    assert (status, out) == (2, "")
    assert err == f"chatd: {config}: unknown setting 'nope'\n"
    config = server_config(tmp_path, log_keep_days="many")
    status, _, err = run("stats", "--config", config)
    assert status == 2
    assert err.startswith(f"chatd: --log-keep-days (log_keep_days in {config}) must be")
    status, _, err = run("stats", "--config", tmp_path / "missing.toml")
    assert status == 2 and err.startswith("chatd: cannot read ")
    assert not (tmp_path / "srv-logs").exists() and list(Path.cwd().iterdir()) == []
