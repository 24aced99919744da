"""chatpad's command line where there is no console (the windowed Windows build: no
standard output or error), its --report file, and its private, bounded diagnostics log."""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

import chatpad
from chatpad import __main__ as cli
from chatpad import demo

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")


@pytest.fixture
def no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)


@pytest.mark.usefixtures("no_console")
def test_version_and_self_test_without_a_console_write_their_reports(
        tmp_path: Path, _chatpad_home: Path) -> None:
    assert cli.main(["--version", "--report", str(tmp_path / "v.txt")]) == 0
    assert (tmp_path / "v.txt").read_text("utf-8") == f"chatpad {chatpad.__version__}\n"
    assert cli.main(["--self-test", "--report", str(tmp_path / "s.txt")]) == 0
    report = (tmp_path / "s.txt").read_text("utf-8").splitlines()
    assert report[0] == f"chatpad {chatpad.__version__} self-test ok: {', '.join(demo.SCREENS)}"
    assert report[-1] == f"log: {_chatpad_home / cli.LOG_NAME}"
    assert report[0] in (_chatpad_home / cli.LOG_NAME).read_text("utf-8")
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["--help"])
    assert help_exit.value.code == 0
    with pytest.raises(SystemExit) as bad:
        cli.main(["--no-such-option"])
    assert bad.value.code == cli.EXIT_USAGE


def test_version_prints_when_there_is_a_console(capsys: pytest.CaptureFixture[str],
                                                _chatpad_home: Path) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"chatpad {chatpad.__version__}\n"
    assert not _chatpad_home.exists()  # --version leaves no trace on disk


def test_report_goes_with_version_or_self_test(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as bad:
        cli.main(["--report", str(tmp_path / "r.txt")])
    assert bad.value.code == cli.EXIT_USAGE


@pytest.mark.usefixtures("no_console")
def test_a_failed_self_test_exits_1_with_the_traceback_in_report_and_log(
        tmp_path: Path, _chatpad_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out_dir: Path | None = None) -> list[str]:
        raise RuntimeError("no screens today")

    monkeypatch.setattr(demo, "tour", broken)
    assert cli.main(["--self-test", "--report", str(tmp_path / "s.txt")]) == cli.EXIT_FAILED
    report = (tmp_path / "s.txt").read_text("utf-8")
    assert "self-test FAILED: RuntimeError('no screens today')" in report
    log = (_chatpad_home / cli.LOG_NAME).read_text("utf-8")
    assert "Traceback" in log and "no screens today" in log


@pytest.mark.usefixtures("no_console")
def test_an_uncaught_error_in_the_app_goes_to_the_log(
        _chatpad_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chatpad.app

    class Exploding:
        def __init__(self, config: object) -> None:
            raise ZeroDivisionError("boom in the app")

    monkeypatch.setattr(chatpad.app, "App", Exploding)
    assert cli.main([]) == cli.EXIT_FAILED
    log = (_chatpad_home / cli.LOG_NAME).read_text("utf-8")
    assert "CRITICAL chatpad: chatpad stopped on an unexpected error" in log
    assert "ZeroDivisionError: boom in the app" in log


def test_a_thread_s_uncaught_error_goes_to_the_log(_chatpad_home: Path) -> None:
    def fail() -> None:
        raise KeyError("lost in a thread")

    hook = threading.excepthook
    with cli.diagnostics() as path:
        thread = threading.Thread(target=fail, name="worker-7")
        thread.start()
        thread.join()
    assert path == _chatpad_home / cli.LOG_NAME
    log = path.read_text("utf-8")
    assert "thread worker-7 stopped on an unexpected error" in log and "lost in a thread" in log
    assert threading.excepthook is hook  # put back afterwards


def _probe() -> str:
    with cli.diagnostics() as path:
        assert path is not None
        logging.getLogger("chatpad.probe").debug("a debug line")
        logging.getLogger("chatpad.probe").info("an info line")
    return path.read_text("utf-8")


def test_chatpad_log_raises_the_log_level(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("CHATPAD_HOME", str(tmp_path / "a"))
    quiet = _probe()
    assert "an info line" in quiet and "a debug line" not in quiet
    monkeypatch.setenv("CHATPAD_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("CHATPAD_LOG", "debug")
    assert "a debug line" in _probe()
    monkeypatch.setenv("CHATPAD_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("CHATPAD_LOG", "chatty")
    log = _probe()
    assert "CHATPAD_LOG=CHATTY is not a level" in log and "an info line" in log


def test_the_log_goes_to_standard_error_too(monkeypatch: pytest.MonkeyPatch,
                                            _chatpad_home: Path) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with cli.diagnostics():
        logging.getLogger("chatpad.probe").info("not on the console by default")
        logging.getLogger("chatpad.probe").warning("a warning for the console")
    assert "a warning for the console" in stderr.getvalue()
    assert "not on the console" not in stderr.getvalue()


@posix_only
def test_the_log_is_private_and_bounded(_chatpad_home: Path) -> None:
    line = "x" * 200
    with cli.diagnostics() as path:
        assert path is not None
        for _ in range(3 * cli.LOG_BYTES // len(line)):
            logging.getLogger("chatpad.probe").info(line)
    files = sorted(p.name for p in _chatpad_home.iterdir())
    assert files == [cli.LOG_NAME, f"{cli.LOG_NAME}.1"]  # rotated, one backup kept
    for name in files:
        info = (_chatpad_home / name).stat()
        assert info.st_size <= cli.LOG_BYTES
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(_chatpad_home.stat().st_mode) == 0o700


def test_an_unwritable_log_leaves_chatpad_running(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("CHATPAD_HOME", str(blocker))
    with cli.diagnostics() as path:
        assert path is None
