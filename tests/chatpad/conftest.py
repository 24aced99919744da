"""chatpad tests run headless: SDL's dummy video driver, no audio, a temporary profile root."""

from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
os.environ["GTK_THEME"] = "Adwaita"  # the "system" theme is light, whatever the desktop

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpad.app import App, AppConfig
from tests.chatd.server import ChatdProcess


@pytest.fixture(autouse=True)
def _chatpad_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "chatpad-home"
    monkeypatch.setenv("CHATPAD_HOME", str(home))
    return home


@pytest.fixture
def chatd(tmp_path: Path) -> Iterator[ChatdProcess]:
    # a generous send rate: the tests write hundreds of messages of history quickly
    server = ChatdProcess(tmp_path / "chatd-data", tmp_path / "chatd-logs",
                         "--send-rate", "10000", "--send-burst", "10000").start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


@pytest.fixture
def app() -> Iterator[App]:
    """chatpad without a network thread, on the sign-in screen (test modules that need
    more, a user signed in, say, define their own)."""
    app = App(AppConfig(offline=True))
    try:
        yield app
    finally:
        app.close()
