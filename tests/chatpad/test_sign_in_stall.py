"""Signing in against a server that never answers, or hangs up at once: the form shows
an error within the HTTP timeout, and works again once the address is corrected."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpad.app import App, AppConfig
from chatpad.net import NetConfig
from chatpad.scenes import ConversationsScene, LoginScene
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import PASSWORD, sign_up

pytestmark = pytest.mark.gui

HTTP_TIMEOUT = 2.0  # seconds: short, so the test sees the timeout itself


class Listener:
    """A real socket on 127.0.0.2 that accepts connections and then either keeps them
    open without a word (``silent``) or closes them at once."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.sock = socket.create_server(("127.0.0.2", 0))
        self.url = f"http://127.0.0.2:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.silent:
                self.held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(params=["silent", "closes"])
def listener(request: pytest.FixtureRequest) -> Iterator[Listener]:
    server = Listener(silent=request.param == "silent")
    try:
        yield server
    finally:
        server.close()


def test_sign_in_against_a_dead_server_fails_then_the_form_works(
        listener: Listener, chatd: ChatdProcess, tmp_path: Path) -> None:
    Peer(chatd.url, "alice", PASSWORD).register()
    driver = Driver(listener.url)
    driver.app.close()  # the driver's app, remade with a short HTTP timeout
    driver.app = App(AppConfig(server=listener.url, net=NetConfig(
        backoff_base=0.2, backoff_cap=0.5, http_timeout=HTTP_TIMEOUT)))
    try:
        scene = driver.app.scene
        assert isinstance(scene, LoginScene)
        sign_up(driver, "alice", create=False)
        assert scene.busy
        driver.until(lambda: not scene.busy, "an error", timeout=HTTP_TIMEOUT + 10)
        assert "cannot be reached" in scene.error_text or "not answer" in scene.error_text
        scene.server.set_text(chatd.url)
        driver.click(scene.sign_in)
        driver.until(lambda: isinstance(driver.app.scene, ConversationsScene), "signed in")
    finally:
        driver.close()
