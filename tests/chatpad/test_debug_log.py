"""Issue 14, bug 7: ``CHATPAD_LOG=DEBUG`` tells what the network thread does (connects,
HTTP calls with their status, reconnects and backoff, outbox sends and acks) and never a
message body, a password or a token."""

from __future__ import annotations

import logging

import pygame
import pytest

from chatpad.scenes import ConversationScene
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import PASSWORD, sign_up

pytestmark = pytest.mark.gui

BODY = "a secret only bob may read"


def test_debug_log_tells_what_the_network_does(chatd: ChatdProcess,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chatpad")
    Peer(chatd.url, "bob").register()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        driver.app.open_conversation("bob")
        convo = driver.app.scene
        assert isinstance(convo, ConversationScene)
        driver.type(BODY)
        driver.key(pygame.K_RETURN)
        driver.until(lambda: (i := convo.thread.find(BODY)) and i.status == "sent", "acked")
        saved = driver.app.profile.load_session()
        assert saved is not None
        token = saved.token
        chatd.stop()
        driver.until(lambda: driver.app.model.status.state == "reconnecting", "reconnecting")
        driver.until(lambda: "reconnecting in" in caplog.text, "the backoff logged")
    finally:
        driver.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("chatpad")]
    text = "\n".join(lines)
    for expected in (
        "registering alice at http://127.0.0.1:",
        "signed in as alice",
        "(http): connecting to 127.0.0.1:",
        "(websocket): connecting to 127.0.0.1:",
        "connected as alice",
        "HTTP GET /v1/conversations -> 200",
        "HTTP GET /v1/conversations/bob/messages -> 200",
        "to bob (26 characters); sending now",
        "as seq 1",
        "status connected",
        "disconnected (",
        "reconnecting in",
    ):
        assert expected in text, f"{expected!r} not logged:\n{text}"
    assert BODY not in text and PASSWORD not in text and token not in text
