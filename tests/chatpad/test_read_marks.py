"""Read receipts tell the truth: a message that arrives while the reader is scrolled up
to older messages is read only once it has been scrolled into view."""

from __future__ import annotations

from typing import Any

import pygame
import pytest

from chatpad.scenes import ConversationScene
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_offline import open_bob
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui


def frames_until_typing(bob: Peer) -> list[dict[str, Any]]:
    """bob's frames up to alice's next typing signal (sent after anything before it)."""
    frames = []
    while True:
        frame = bob.recv()
        frames.append(frame)
        if frame["type"] == "typing" and frame["from"] == "alice":
            return frames


def is_read_of(seq: int) -> Any:
    return lambda f: f["type"] == "receipt" and f["status"] == "read" and f["up_to"] >= seq


def test_a_message_below_the_view_is_not_read_until_scrolled_to(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        for n in range(30):  # several screens of history
            bob.send_frame({"type": "send", "id": f"old{n}", "to": "alice", "body": f"old {n}"})
        convo = open_bob(driver)
        driver.until(lambda: convo.thread.find("old 29"), "history shown")
        old = convo.thread.find("old 29")
        bob.recv_until(is_read_of(old.seq))  # at the bottom: read at once
        while convo.view.top > 0:  # up to the oldest message
            driver.wheel(10)
        assert not convo.view.at_bottom

        bob.send_frame({"type": "send", "id": "new", "to": "alice", "body": "new one"})
        new = driver.until(lambda: convo.thread.find("new one"), "the new message arrives")
        rect = convo.view.item_rect(new)
        assert rect is not None and not convo.view.rect.colliderect(rect)  # out of sight
        driver.step(30)
        driver.type("x")  # a typing signal: sent after any read mark chatpad sent before
        assert not any(is_read_of(new.seq)(f) for f in frames_until_typing(bob))

        while not convo.view.at_bottom:
            driver.key(pygame.K_PAGEDOWN)
        assert isinstance(driver.app.scene, ConversationScene)
        bob.recv_until(is_read_of(new.seq))  # seen now: read
    finally:
        driver.close()
        bob.close()


def test_leaving_while_scrolled_up_keeps_the_unseen_message_unread(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        for n in range(30):
            bob.send_frame({"type": "send", "id": f"old{n}", "to": "alice", "body": f"old {n}"})
        convo = open_bob(driver)
        driver.until(lambda: convo.thread.find("old 29"), "history shown")
        while convo.view.top > 0:
            driver.wheel(10)
        bob.send_frame({"type": "send", "id": "new", "to": "alice", "body": "new one"})
        driver.until(lambda: convo.thread.find("new one"), "the new message arrives")
        driver.step(10)

        driver.key(pygame.K_ESCAPE)  # back to the list without having seen it
        model = driver.app.model
        driver.until(lambda: [s.unread for s in model.conversations if s.peer == "bob"] == [1],
                     "bob's row counts the unseen message")
        assert driver.app.notifier.unread_total() == 1
        assert driver.app.notifier.window_title().startswith("(1) ")
    finally:
        driver.close()
        bob.close()
